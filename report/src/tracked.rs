//! The input of the tracking-tool exports ([`crate::tensorboard`], [`crate::mlflow`]): finished
//! runs as plain data. The engine fills them from its cache; nothing here knows what a stage is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::ReportError;

/// One finished run (for umdflow, one cached stage instance).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedRun {
    /// Human-readable name, e.g. `tune[seed=0]`.
    pub name: String,
    /// A file-system-safe form of `name`, unique among the runs of one export: the run's folder.
    pub dir_name: String,
    /// 32 lower-case hex digits, unique among the runs and stable across exports of the same
    /// result (MLflow's run id): exporting again replaces a run instead of adding a copy.
    pub id: String,
    /// Tags in a fixed order, e.g. `("seed", "0")`.
    pub tags: Vec<(String, String)>,
    /// Parameters as text, e.g. `("optim.lr", "0.001")`.
    pub params: Vec<(String, String)>,
    /// The run's final metrics.
    pub metrics: Vec<(String, f64)>,
    /// Values per training step, e.g. `loss_curve/total`.
    pub curves: Vec<Curve>,
    /// Files to ship with the run (MLflow artifacts).
    pub artifacts: Vec<Artifact>,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    /// Unix time in milliseconds; also the time stamp of every value written, so that an export
    /// depends on the runs alone, never on when it was made.
    pub finished_at_ms: u64,
}

/// One scalar over training steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub name: String,
    /// `(step, value)`, in the order they were logged.
    pub points: Vec<(i64, f64)>,
}

/// A file that belongs to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where it goes inside the run's artifacts, `/`-separated and relative, e.g. `gmcoord.csv`.
    pub path: String,
    /// Where to copy it from.
    pub source: PathBuf,
}

/// Two runs in one folder would mix their files: refuse before writing anything.
pub(crate) fn check_unique_dirs(runs: &[TrackedRun]) -> Result<(), ReportError> {
    check_unique(runs, "folder", |run| &run.dir_name)
}

/// MLflow's run folders are named by id: each must be a well-formed id of its own.
pub(crate) fn check_unique_ids(runs: &[TrackedRun]) -> Result<(), ReportError> {
    if let Some(run) = runs.iter().find(|run| {
        run.id.len() != 32
            || !run
                .id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }) {
        return Err(ReportError::BadRunId {
            run: run.name.clone(),
            id: run.id.clone(),
        });
    }
    check_unique(runs, "id", |run| &run.id)
}

fn check_unique(
    runs: &[TrackedRun],
    what: &'static str,
    field: impl Fn(&TrackedRun) -> &String,
) -> Result<(), ReportError> {
    let mut seen = BTreeMap::new();
    for run in runs {
        if let Some(first) = seen.insert(field(run).as_str(), run.name.as_str()) {
            return Err(ReportError::DuplicateRun {
                what,
                value: field(run).clone(),
                first: first.to_string(),
                second: run.name.clone(),
            });
        }
    }
    Ok(())
}
