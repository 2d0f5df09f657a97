//! `umdflow export --format tensorboard|mlflow`: every cached instance of a pipeline as a finished
//! run for the tracking tools, read from the cache alone (never runs a stage). Stages write
//! nothing for these tools: what they show is what the cache holds (`docs/decisions.md`).
//!
//! Curves are found without knowing any kind: every CSV output with a `step` column gives one
//! curve per other numeric column, named `<file without .csv>/<column>` (`loss_curve/total`,
//! `gmcoord/rho`). Artifacts are the CSVs, plots and `metrics.json`; checkpoints stay in the cache.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use umdflow_cache::{Cache, Record};
use umdflow_report::{Artifact, Curve, TrackedRun};

use crate::commands::Loaded;
use crate::expand::{Instance, SEED_AXIS, display_value};
use crate::report::{flatten_metrics, visit_leaves};
use crate::resolve::{Resolution, resolve_all};
use crate::scheduler::file_safe;

/// Output files shipped as MLflow artifacts: tables, plots and the metrics document.
const ARTIFACT_EXTENSIONS: [&str; 3] = ["csv", "png", "svg"];
const METRICS_FILE: &str = "metrics.json";

/// `--format tensorboard`: `out/<instance>/events.out.tfevents.*` for every cached instance.
pub fn export_tensorboard(loaded: &Loaded, out: &Path) -> Result<Vec<PathBuf>> {
    let runs = cached_runs(loaded)?;
    umdflow_report::write_tensorboard(&runs, out)
        .with_context(|| format!("writing TensorBoard event files to {}", out.display()))
}

/// `--format mlflow`: an MLflow file store `out/mlruns/` with one experiment named after the
/// pipeline and one run per cached instance.
pub fn export_mlflow(loaded: &Loaded, out: &Path) -> Result<Vec<PathBuf>> {
    let runs = cached_runs(loaded)?;
    umdflow_report::write_mlflow(&loaded.expanded.name, &runs, out)
        .with_context(|| format!("writing an MLflow file store to {}", out.display()))
}

/// The runs of every cached instance, in instance order; says on stderr which were left out.
fn cached_runs(loaded: &Loaded) -> Result<Vec<TrackedRun>> {
    let cache = crate::commands::open_cache(&loaded.cache_dir)?;
    let expanded = &loaded.expanded;
    let resolutions = resolve_all(expanded, &cache, &loaded.deps, &|_| false)?;
    let mut runs = Vec::new();
    let mut not_cached = Vec::new();
    for (instance, resolution) in expanded.instances.iter().zip(&resolutions) {
        match resolution {
            Resolution::Cached(record) => runs.push(tracked_run(loaded, instance, record, &cache)?),
            Resolution::Run { .. } => not_cached.push(instance.id.as_str()),
        }
    }
    if !not_cached.is_empty() {
        eprintln!(
            "{} instances have not run and are not exported: {}",
            not_cached.len(),
            not_cached.join(", ")
        );
    }
    Ok(runs)
}

fn tracked_run(
    loaded: &Loaded,
    instance: &Instance,
    record: &Record,
    cache: &Cache,
) -> Result<TrackedRun> {
    let expanded = &loaded.expanded;
    let stage = expanded.stage_of(instance);
    let mut tags = vec![
        ("instance".to_string(), instance.id.clone()),
        ("stage".to_string(), stage.name.clone()),
        ("kind".to_string(), stage.kind.name().to_string()),
        ("key".to_string(), record.key.clone()),
        ("pipeline".to_string(), expanded.name.clone()),
    ];
    if let Some((_, seed)) = instance.assignment.iter().find(|(r, _)| r == SEED_AXIS) {
        tags.push(("seed".to_string(), display_value(seed)));
    }
    if let Some(device) = &record.device {
        tags.push(("device".to_string(), device.clone()));
    }

    let mut curves = Vec::new();
    let mut artifacts = Vec::new();
    for entry in &record.files {
        let blob = cache.blob_path(&entry.hash);
        let extension = Path::new(&entry.path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if extension == "csv" {
            let text = std::fs::read_to_string(&blob)
                .with_context(|| format!("reading `{}` of {}", entry.path, instance.id))?;
            let prefix = entry.path.strip_suffix(".csv").unwrap_or(&entry.path);
            curves.extend(step_curves(prefix, &text));
        }
        if ARTIFACT_EXTENSIONS.contains(&extension) || entry.path == METRICS_FILE {
            artifacts.push(Artifact {
                path: entry.path.clone(),
                source: blob,
            });
        }
    }

    Ok(TrackedRun {
        name: instance.id.clone(),
        dir_name: file_safe(&instance.id),
        id: run_id(&record.key, &instance.id),
        tags,
        params: flatten_params(&instance.params),
        metrics: record
            .metrics
            .as_ref()
            .map(|m| flatten_metrics(m).into_iter().collect())
            .unwrap_or_default(),
        curves,
        artifacts,
        started_at_ms: record.started_at_ms,
        finished_at_ms: record.finished_at_ms,
    })
}

/// 32 hex digits from the key and the instance id: stable for a cached result, and distinct for
/// two instances that happen to share a key.
fn run_id(key: &str, instance: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(key.as_bytes());
    hasher.update(b"\0");
    hasher.update(instance.as_bytes());
    hasher.finalize().to_hex()[..32].to_string()
}

/// Params with nested names joined by dots (`optim.lr`); strings as written, other values as JSON.
fn flatten_params(params: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in params {
        visit_leaves(key, value, &mut |name, leaf| {
            let text = match leaf {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.push((name.to_string(), text));
        });
    }
    out
}

/// One curve per numeric column of a CSV with an integer `step` column; empty cells (a loss term
/// a run does not use) are no point. A CSV without one is not a curve file; one whose `step` is
/// not an integer is left out with a warning rather than given made-up steps.
fn step_curves(prefix: &str, text: &str) -> Vec<Curve> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let Some(step_column) = header.iter().position(|h| *h == "step") else {
        return Vec::new();
    };
    let mut curves: Vec<Curve> = header
        .iter()
        .map(|column| Curve {
            name: format!("{prefix}/{column}"),
            points: Vec::new(),
        })
        .collect();
    for (row, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(Ok(step)) = cells.get(step_column).map(|s| s.parse::<i64>()) else {
            tracing::warn!(
                "`{prefix}.csv` row {}: step {:?} is not an integer; not exported as curves",
                row + 2,
                cells.get(step_column).copied().unwrap_or_default()
            );
            return Vec::new();
        };
        for (column, cell) in cells.iter().enumerate() {
            if column == step_column {
                continue;
            }
            if let (Some(curve), Ok(value)) = (curves.get_mut(column), cell.parse::<f64>()) {
                curve.points.push((step, value));
            }
        }
    }
    curves.remove(step_column);
    curves.retain(|curve| !curve.points.is_empty());
    curves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_numeric_column_of_a_step_csv_is_a_curve() {
        let csv = "step,epoch,lr,total,mim,note\n0,0,1e-4,2.5,,a\n1,0,2e-4,2.0,1.5,b\n";
        let curves = step_curves("loss_curve", csv);
        let names: Vec<&str> = curves.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "loss_curve/epoch",
                "loss_curve/lr",
                "loss_curve/total",
                "loss_curve/mim"
            ]
        );
        assert_eq!(curves[1].points, [(0, 1e-4), (1, 2e-4)]);
        assert_eq!(curves[3].points, [(1, 1.5)], "an empty cell is no point");
    }

    #[test]
    fn csvs_without_an_integer_step_are_no_curves() {
        assert!(step_curves("t", "epoch,loss\n0,1\n").is_empty());
        assert!(step_curves("t", "step,loss\n0.5,1\n").is_empty());
        assert!(step_curves("t", "").is_empty());
    }

    #[test]
    fn params_are_flattened_with_dots() {
        let params = serde_json::json!({
            "lr": 0.001, "device": "cpu", "optim": {"beta1": 0.9, "kind": "adamw"},
            "list": [1, 2], "empty": {}
        });
        let flat = flatten_params(params.as_object().unwrap());
        assert_eq!(
            flat,
            [
                ("device", "cpu"),
                ("empty", "{}"),
                ("list", "[1,2]"),
                ("lr", "0.001"),
                ("optim.beta1", "0.9"),
                ("optim.kind", "adamw"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn run_ids_are_32_hex_digits_per_key_and_instance() {
        let id = run_id("abc", "train[seed=0]");
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, run_id("abc", "train[seed=1]"));
        assert_eq!(id, run_id("abc", "train[seed=0]"));
    }
}
