//! Per-cell statistics of an ablation: mean and interval over seeds, paired difference to the
//! baseline, and footnotes saying which results are missing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::bootstrap::{PairedBootstrap, RESAMPLES, paired_bootstrap};
use crate::error::ReportError;
use crate::input::{ReportInput, Row};
use crate::stats::{CONFIDENCE, Estimate};

/// The ablation table, computed; every table format is written from this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub title: String,
    /// Confidence level of every interval (0.95).
    pub confidence: f64,
    pub metrics: Vec<String>,
    /// Label of the baseline row, when there is one.
    pub baseline: Option<String>,
    pub rows: Vec<RowSummary>,
    /// Footnotes on missing results; [`Cell::note`] and [`Difference::note`] index into this
    /// (shown numbered from 1). Cells missing the same results share one note.
    pub notes: Vec<String>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowSummary {
    pub label: String,
    pub axes: Vec<(String, String)>,
    /// Number of replicates listed for the row, whether they have results or not.
    pub seeds: usize,
    pub is_baseline: bool,
    /// One cell per metric, in [`Summary::metrics`] order.
    pub cells: Vec<Cell>,
}

/// One metric of one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub metric: String,
    /// Mean and interval over the seeds that have this metric; `None` when none has it.
    pub estimate: Option<Estimate>,
    /// Paired difference to the baseline; `None` for the baseline row or without a baseline.
    pub difference: Option<Difference>,
    /// Why some seeds lack this metric, one line per seed (empty when all have it).
    pub missing: Vec<String>,
    /// Index into [`Summary::notes`] when `missing` is not empty.
    pub note: Option<usize>,
}

/// This row minus the baseline, seed by seed, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// Over seeds that both rows have; `None` when they share no seed with results.
    pub estimate: Option<Estimate>,
    /// The interval has width and lies entirely above or below zero.
    pub excludes_zero: bool,
    /// The paired bootstrap over test items, one per seed where both rows saved per-item
    /// outcomes of this metric (empty otherwise).
    pub within_seed: Vec<PairedBootstrap>,
    /// Index into [`Summary::notes`] when some of this row's seeds lack the metric or have no
    /// baseline partner.
    pub note: Option<usize>,
}

/// Checks `input` and computes every cell.
pub fn summarize(input: &ReportInput) -> Result<Summary, ReportError> {
    validate(input)?;
    let mut notes = Notes::default();
    let baseline_row = input.baseline.map(|index| &input.rows[index]);
    let mut rows = Vec::with_capacity(input.rows.len());
    for (row_index, row) in input.rows.iter().enumerate() {
        let is_baseline = input.baseline == Some(row_index);
        let mut cells = Vec::with_capacity(input.metrics.len());
        for metric in &input.metrics {
            let (values, missing) = values_of(row, metric);
            let estimate = Estimate::of(&values.iter().map(|(_, v)| *v).collect::<Vec<_>>());
            let note = notes.add(&missing);
            let difference = match baseline_row {
                Some(baseline) if !is_baseline => Some(difference(
                    row, &values, &missing, baseline, metric, &mut notes,
                )),
                _ => None,
            };
            cells.push(Cell {
                metric: metric.clone(),
                estimate,
                difference,
                missing,
                note,
            });
        }
        rows.push(RowSummary {
            label: row.label.clone(),
            axes: row.axes.clone(),
            seeds: row.replicates.len(),
            is_baseline,
            cells,
        });
    }
    Ok(Summary {
        title: input.title.clone(),
        confidence: CONFIDENCE,
        metrics: input.metrics.clone(),
        baseline: baseline_row.map(|row| row.label.clone()),
        rows,
        notes: notes.texts,
    })
}

fn validate(input: &ReportInput) -> Result<(), ReportError> {
    if let Some(index) = input.baseline
        && index >= input.rows.len()
    {
        return Err(ReportError::BaselineOutOfRange {
            index,
            rows: input.rows.len(),
        });
    }
    let mut metrics = BTreeSet::new();
    for metric in &input.metrics {
        if !metrics.insert(metric) {
            return Err(ReportError::DuplicateMetric {
                metric: metric.clone(),
            });
        }
    }
    let mut labels = BTreeSet::new();
    for row in &input.rows {
        if !labels.insert(&row.label) {
            return Err(ReportError::DuplicateRow {
                label: row.label.clone(),
            });
        }
        let mut seeds = BTreeSet::new();
        for replicate in &row.replicates {
            if !seeds.insert(&replicate.seed) {
                return Err(ReportError::DuplicateSeed {
                    row: row.label.clone(),
                    seed: replicate.seed.clone(),
                });
            }
            // Only listed metrics are shown, so only they must be numbers.
            for (metric, &value) in replicate.metrics.iter().flatten() {
                if metrics.contains(metric) && !value.is_finite() {
                    return Err(ReportError::NonFiniteMetric {
                        row: row.label.clone(),
                        seed: replicate.seed.clone(),
                        metric: metric.clone(),
                        value,
                    });
                }
            }
        }
    }
    Ok(())
}

/// `(seed, value)` of every replicate that has `metric`, and one line per replicate that lacks it.
fn values_of<'a>(row: &'a Row, metric: &str) -> (Vec<(&'a str, f64)>, Vec<String>) {
    let mut values = Vec::new();
    let mut missing = Vec::new();
    for replicate in &row.replicates {
        match replicate.metrics.as_ref().map(|m| m.get(metric)) {
            Some(Some(&value)) => values.push((replicate.seed.as_str(), value)),
            lacking => {
                let reason = match (&replicate.missing, lacking) {
                    (Some(reason), _) => reason.clone(),
                    (None, None) => "no results".to_string(),
                    (None, Some(_)) => format!("no metric {metric:?} in its results"),
                };
                missing.push(format!("{}, seed {}: {reason}", row.label, replicate.seed));
            }
        }
    }
    (values, missing)
}

fn difference(
    row: &Row,
    values: &[(&str, f64)],
    missing: &[String],
    baseline: &Row,
    metric: &str,
    notes: &mut Notes,
) -> Difference {
    let (baseline_values, _) = values_of(baseline, metric);
    let by_seed: BTreeMap<&str, f64> = baseline_values.into_iter().collect();
    let within_seed = row
        .replicates
        .iter()
        .filter_map(|replicate| {
            let items = replicate.items.get(metric)?;
            let partner = baseline
                .replicates
                .iter()
                .find(|b| b.seed == replicate.seed)?;
            paired_bootstrap(
                &replicate.seed,
                items,
                partner.items.get(metric)?,
                RESAMPLES,
            )
        })
        .collect();
    let mut differences = Vec::new();
    // The row's own gaps shrink the difference's n too, so its note repeats them.
    let mut unpaired = missing.to_vec();
    for &(seed, value) in values {
        match by_seed.get(seed) {
            Some(&base) => differences.push(paired_difference(value, base)),
            None => unpaired.push(format!(
                "difference to {}: seed {seed} has no {metric:?} in the baseline",
                baseline.label
            )),
        }
    }
    let estimate = Estimate::of(&differences);
    Difference {
        excludes_zero: estimate.is_some_and(|e| e.excludes_zero()),
        within_seed,
        estimate,
        note: notes.add(&unpaired),
    }
}

/// `value - base`, with rounding noise of equal values snapped to exactly zero: two arms that
/// agree on a seed must not produce a "significant" difference of 1e-17.
fn paired_difference(value: f64, base: f64) -> f64 {
    let difference = value - base;
    let scale = value.abs().max(base.abs());
    if difference.abs() <= 1e-12 * scale {
        0.0
    } else {
        difference
    }
}

/// Footnote texts, deduplicated so that every cell missing the same results cites one note.
#[derive(Default)]
struct Notes {
    texts: Vec<String>,
    index: BTreeMap<String, usize>,
}

impl Notes {
    fn add(&mut self, lines: &[String]) -> Option<usize> {
        if lines.is_empty() {
            return None;
        }
        let text = lines.join("; ");
        let next = self.texts.len();
        let index = *self.index.entry(text.clone()).or_insert(next);
        if index == next {
            self.texts.push(text);
        }
        Some(index)
    }
}
