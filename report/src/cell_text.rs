//! How an estimate reads in a table: rounded so the half-width keeps two significant digits, with
//! `n` shown when it is below the row's seed count. Each format adds its own markup around this.

use crate::stats::Estimate;
use crate::summary::{Cell, RowSummary};

/// The pieces of one table cell, as plain text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CellText {
    /// Nothing to show; `note` is the footnote (1-based) that says why.
    Missing { note: Option<usize> },
    Value {
        mean: String,
        /// `None` when n = 1.
        half_width: Option<String>,
        /// Shown when fewer values than seeds were available, or when n = 1.
        n: Option<usize>,
        /// Marks a difference whose interval excludes zero.
        excludes_zero: bool,
        note: Option<usize>,
    },
}

impl CellText {
    /// The footnote number this cell cites, if any.
    pub(crate) fn note(&self) -> Option<usize> {
        match self {
            CellText::Missing { note } | CellText::Value { note, .. } => *note,
        }
    }

    /// The cell in one format's markup.
    pub(crate) fn render(&self, markup: &CellMarkup) -> String {
        let footnote = |note: &Option<usize>| note.map(markup.footnote).unwrap_or_default();
        match self {
            CellText::Missing { note } => format!("{}{}", markup.missing, footnote(note)),
            CellText::Value {
                mean,
                half_width,
                n,
                excludes_zero,
                note,
            } => {
                let mut estimate = mean.clone();
                if let Some(hw) = half_width {
                    estimate.push_str(markup.plus_minus);
                    estimate.push_str(hw);
                }
                let count = n.map(markup.count).unwrap_or_default();
                let star = if *excludes_zero { markup.star } else { "" };
                // In math mode the star is a superscript of the estimate, so it goes before `n`.
                let body = if markup.math {
                    format!("${estimate}{star}${count}")
                } else {
                    format!("{estimate}{count}{star}")
                };
                body + &footnote(note)
            }
        }
    }
}

/// How one output format writes the pieces of a cell.
pub(crate) struct CellMarkup {
    /// What stands in an empty cell.
    pub missing: &'static str,
    /// Between the mean and the half-width, spaces included.
    pub plus_minus: &'static str,
    /// Marks a difference whose interval excludes zero.
    pub star: &'static str,
    /// The estimate and its star are typeset as math (`$…$`).
    pub math: bool,
    /// The value count, e.g. ` (n=2)`.
    pub count: fn(usize) -> String,
    /// A reference to footnote `n`.
    pub footnote: fn(usize) -> String,
}

/// The cell of the means table.
pub(crate) fn mean_cell(row: &RowSummary, cell: &Cell) -> CellText {
    text_of(cell.estimate.as_ref(), row.seeds, false, false, cell.note)
}

/// The cell of the differences table, or `None` where the row has no difference (the baseline).
pub(crate) fn difference_cell(row: &RowSummary, cell: &Cell) -> Option<CellText> {
    let difference = cell.difference.as_ref()?;
    Some(text_of(
        difference.estimate.as_ref(),
        row.seeds,
        true,
        difference.excludes_zero,
        difference.note,
    ))
}

fn text_of(
    estimate: Option<&Estimate>,
    seeds: usize,
    signed: bool,
    excludes_zero: bool,
    note: Option<usize>,
) -> CellText {
    let note = note.map(|index| index + 1);
    let Some(estimate) = estimate else {
        return CellText::Missing { note };
    };
    let half_width = estimate.interval.map(|i| i.half_width);
    let decimals = decimals_for(estimate.mean, half_width);
    CellText::Value {
        mean: fixed(estimate.mean, decimals, signed),
        half_width: half_width.map(|hw| fixed(hw, decimals, false)),
        n: (estimate.n < seeds || estimate.n == 1).then_some(estimate.n),
        excludes_zero,
        note,
    }
}

/// Decimal places: two significant digits of the half-width, or four of the mean without one
/// (or with one that is only rounding noise, as when every seed gave the same value).
pub(crate) fn decimals_for(mean: f64, half_width: Option<f64>) -> usize {
    let (magnitude, digits) = match half_width {
        Some(hw) if hw > 1e-9 * mean.abs() && hw > 1e-300 => (hw, 2),
        _ if mean.abs() > 1e-300 => (mean.abs(), 4),
        _ => return 3,
    };
    let leading = magnitude.log10().floor() as i32;
    (digits - 1 - leading).clamp(0, 8) as usize
}

/// `value` with `decimals` places; a leading `+` when `signed`, and never a negative zero.
pub(crate) fn fixed(value: f64, decimals: usize, signed: bool) -> String {
    let text = format!("{value:.decimals$}");
    let is_zero = text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.');
    let text = if is_zero {
        text.trim_start_matches('-').to_string()
    } else {
        text
    };
    if signed && !text.starts_with('-') {
        format!("+{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_width_keeps_two_significant_digits() {
        assert_eq!(decimals_for(0.8123, Some(0.0234)), 3);
        assert_eq!(decimals_for(0.8123, Some(0.0096)), 4);
        assert_eq!(decimals_for(41.7, Some(1.5)), 1);
        assert_eq!(decimals_for(1234.0, Some(230.0)), 0);
    }

    #[test]
    fn without_interval_the_mean_keeps_four_digits() {
        assert_eq!(decimals_for(0.8123, None), 4);
        assert_eq!(decimals_for(0.8, Some(0.0)), 4);
        assert_eq!(decimals_for(12.5, None), 2);
        assert_eq!(decimals_for(0.0, None), 3);
        assert_eq!(decimals_for(0.0, Some(0.0)), 3);
        // A half-width of rounding noise says nothing about precision.
        assert_eq!(decimals_for(0.08, Some(1.4e-17)), 5);
    }

    #[test]
    fn fixed_signs_and_negative_zero() {
        assert_eq!(fixed(0.01234, 3, true), "+0.012");
        assert_eq!(fixed(-0.01234, 3, true), "-0.012");
        assert_eq!(fixed(-0.0001, 3, false), "0.000");
        assert_eq!(fixed(-0.0001, 3, true), "+0.000");
        assert_eq!(fixed(2.0, 0, false), "2");
    }
}
