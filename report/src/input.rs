//! What the engine hands over: plain data read from its cache, nothing computed yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything one report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    /// Pipeline name; the heading of every table and the HTML page.
    pub title: String,
    /// Metric names in column order. A metric named here and absent from a replicate's results
    /// counts as missing for that replicate.
    pub metrics: Vec<String>,
    /// One row per arm or sweep point, with its seeds as replicates.
    pub rows: Vec<Row>,
    /// Index into `rows` of the arm every other row is compared with (paired by seed).
    pub baseline: Option<usize>,
    /// An axis name such as `"ratio"`: each metric is plotted against its (numeric) values, one
    /// line per group of rows that agree on every other axis.
    pub x_axis: Option<String>,
    /// Line charts drawn as given: loss curves, calibration loss, GM-Coord's rho over steps.
    pub curves: Vec<CurveSet>,
}

/// One arm or sweep point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Unique label shown in the first column, e.g. `"full"` or `"full ratio=0.5"`.
    pub label: String,
    /// The axis values that name this row, e.g. `[("arm", "full"), ("ratio", "0.5")]`.
    pub axes: Vec<(String, String)>,
    /// One entry per seed, present or not.
    pub replicates: Vec<Replicate>,
}

/// One seed of one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replicate {
    /// The seed's name; differences to the baseline pair replicates with equal seeds.
    pub seed: String,
    /// The metrics this seed produced, or `None` when its stages have not run.
    pub metrics: Option<BTreeMap<String, f64>>,
    /// Why results are absent, e.g. `"evaluate[arm=full,seed=2] has not run"`; shown in footnotes.
    pub missing: Option<String>,
    /// Per-test-item outcomes of a metric that is a mean over items (e.g. 1/0 per answer for an
    /// accuracy), in the test set's order: what the paired bootstrap within a seed resamples.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<String, Vec<f64>>,
}

/// One line chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSet {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// One line of a chart, as `(x, y)` points in drawing order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}
