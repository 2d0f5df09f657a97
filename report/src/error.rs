//! Errors of report generation; each names the record and field it is about.

use std::path::PathBuf;

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "report input: `baseline` is {index}, but there are only {rows} rows (expected an index below {rows})"
    )]
    BaselineOutOfRange { index: usize, rows: usize },
    #[error("report input: two rows are labelled {label:?} (expected unique row labels)")]
    DuplicateRow { label: String },
    #[error("report input: metric {metric:?} is listed twice in `metrics` (expected unique names)")]
    DuplicateMetric { metric: String },
    #[error("report input: row {row:?} has seed {seed:?} twice (expected one replicate per seed)")]
    DuplicateSeed { row: String, seed: String },
    #[error(
        "report input: row {row:?}, seed {seed:?}, metric {metric:?} is {value}, expected a finite number"
    )]
    NonFiniteMetric {
        row: String,
        seed: String,
        metric: String,
        value: f64,
    },
    #[error(
        "report input: row {row:?} has {axis}={value:?}, expected a number to plot against `x_axis` {axis:?}"
    )]
    NonNumericAxis {
        row: String,
        axis: String,
        value: String,
    },
    #[error(
        "report input: no row has the axis {axis:?} named by `x_axis` (expected it among some row's `axes`)"
    )]
    NoRowHasAxis { axis: String },
    #[error(
        "report input: curve {curve:?}, series {series:?}, point {index} is ({x}, {y}), expected finite numbers"
    )]
    NonFinitePoint {
        curve: String,
        series: String,
        index: usize,
        x: f64,
        y: f64,
    },
    #[error(
        "tracking export: runs {first:?} and {second:?} have the same {what} {value:?} (expected one per run)"
    )]
    DuplicateRun {
        what: &'static str,
        value: String,
        first: String,
        second: String,
    },
    #[error(
        "tracking export: run {run:?} has the id {id:?}, expected 32 lower-case hexadecimal digits"
    )]
    BadRunId { run: String, id: String },
    #[error(
        "tracking export: run {run:?} has the artifact path {path:?}, expected a relative path inside the run"
    )]
    ArtifactPath { run: String, path: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the ablation table as JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("cannot draw {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

impl ReportError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn read(path: &std::path::Path, source: std::io::Error) -> Self {
        ReportError::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}
