//! `ablation.md`: the means table and the paired-difference table, GitHub-flavoured Markdown with
//! footnotes.

use std::fmt::Write;

use crate::cell_text::{CellMarkup, difference_cell, mean_cell};
use crate::summary::Summary;

/// The whole Markdown document.
pub fn to_markdown(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}: ablation\n", escape(&summary.title));
    let _ = writeln!(
        out,
        "Mean ± half-width of the {}% confidence interval over seeds (Student t, n − 1 degrees of \
         freedom). `n` is shown where only some of the row's seeds have a value, and for a \
         single seed.\n",
        percent(summary.confidence)
    );
    header(&mut out, &summary.metrics, true);
    for row in &summary.rows {
        let mut line = format!("| {} | {} |", escape(&row.label), row.seeds);
        for cell in &row.cells {
            let _ = write!(line, " {} |", mean_cell(row, cell).render(&MARKUP));
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(baseline) = &summary.baseline {
        let _ = writeln!(
            out,
            "\n## Difference to the baseline ({})\n",
            escape(baseline)
        );
        let _ = writeln!(
            out,
            "Paired by seed: mean ± half-width of the {}% confidence interval of (row − baseline). \
             \\* marks an interval that has width and excludes 0.\n",
            percent(summary.confidence)
        );
        header(&mut out, &summary.metrics, false);
        for row in summary.rows.iter().filter(|row| !row.is_baseline) {
            let mut line = format!("| {} |", escape(&row.label));
            for cell in &row.cells {
                let text = difference_cell(row, cell).map(|text| text.render(&MARKUP));
                let _ = write!(line, " {} |", text.unwrap_or_default());
            }
            let _ = writeln!(out, "{line}");
        }
    }
    bootstrap_section(&mut out, summary);
    if !summary.notes.is_empty() {
        out.push('\n');
        for (index, note) in summary.notes.iter().enumerate() {
            let _ = writeln!(out, "[^{}]: Not available: {}.", index + 1, escape(note));
        }
    }
    out
}

/// One line per (row, metric, seed) with a paired bootstrap over test items; nothing when no
/// replicate carried per-item outcomes.
fn bootstrap_section(out: &mut String, summary: &Summary) {
    let mut lines = Vec::new();
    for row in summary.rows.iter().filter(|row| !row.is_baseline) {
        for cell in &row.cells {
            for b in cell.difference.iter().flat_map(|d| &d.within_seed) {
                lines.push(format!(
                    "| {} | {} | {} | {} | {:.4} | [{:.4}, {:.4}]{} |",
                    escape(&row.label),
                    escape(&cell.metric),
                    escape(&b.seed),
                    b.items,
                    b.mean,
                    b.low,
                    b.high,
                    if b.excludes_zero { " \\*" } else { "" }
                ));
            }
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Paired bootstrap over test items, within each seed\n\n\
         (row − baseline) on the same test items, {} resamples, {}% percentile interval; \\* marks \
         an interval with width that excludes 0.\n",
        crate::bootstrap::RESAMPLES,
        percent(summary.confidence)
    );
    let _ = writeln!(
        out,
        "| Arm | Metric | Seed | Items | Mean difference | Interval |\n|---|---|---|---:|---:|---:|"
    );
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
}

fn header(out: &mut String, metrics: &[String], with_seeds: bool) {
    let mut names = String::from("| Arm |");
    let mut rule = String::from("|---|");
    if with_seeds {
        names.push_str(" Seeds |");
        rule.push_str("---:|");
    }
    for metric in metrics {
        let _ = write!(names, " {} |", escape(metric));
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{names}\n{rule}");
}

const MARKUP: CellMarkup = CellMarkup {
    missing: "—",
    plus_minus: " ± ",
    star: " \\*",
    math: false,
    count: |n| format!(" (n={n})"),
    footnote: |n| format!("[^{n}]"),
};

pub(crate) fn percent(confidence: f64) -> String {
    format!("{}", (confidence * 100.0).round())
}

/// Backslash-escapes characters that Markdown or a table row would read as syntax.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}
