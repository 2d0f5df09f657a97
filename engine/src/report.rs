//! `umdflow report` and `umdflow export` (its tracking-tool formats are in `tracking.rs`): gather cached results (never run anything) into the
//! report crate's input: one row per sweep point without the seed, seeds as replicates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use umdflow_cache::{Cache, Record};
use umdflow_report::{CurveSet, Replicate, ReportInput, Row, Series};

use crate::commands::Loaded;
use crate::expand::{Expanded, SEED_AXIS, display_value};
use crate::resolve::{Resolution, resolve_all};
use crate::spec::{Design, RawCurve};

/// Calls `visit` with every leaf of a JSON document and its dotted name (`vqa.overall`): nested
/// objects are walked, anything else (an empty object too) is a leaf.
pub fn visit_leaves(prefix: &str, value: &Value, visit: &mut impl FnMut(&str, &Value)) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                visit_leaves(&name, item, visit);
            }
        }
        leaf => visit(prefix, leaf),
    }
}

/// Numeric leaves of a metrics document, nested names joined with dots (`vqa.overall`).
pub fn flatten_metrics(value: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    visit_leaves("", value, &mut |name, leaf| {
        let number = match leaf {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        };
        if let Some(x) = number {
            out.insert(name.to_string(), x);
        }
    });
    out
}

/// The per-test-item outcomes a stage saved under `items` in its metrics.json (metric name →
/// one number per test item), for the report's paired bootstrap. Entries that are not arrays of
/// numbers are left out.
pub fn item_outcomes(value: &Value) -> BTreeMap<String, Vec<f64>> {
    let Some(Value::Object(items)) = value.get("items") else {
        return BTreeMap::new();
    };
    items
        .iter()
        .filter_map(|(metric, outcomes)| {
            let values: Option<Vec<f64>> = outcomes.as_array()?.iter().map(Value::as_f64).collect();
            Some((metric.clone(), values?))
        })
        .collect()
}

/// The value index of every non-seed axis at a point: what identifies a row.
fn row_key(expanded: &Expanded, point: &[usize]) -> Vec<usize> {
    expanded
        .axes
        .iter()
        .enumerate()
        .filter(|(_, axis)| axis.name != SEED_AXIS)
        .map(|(a, _)| point[a])
        .collect()
}

fn seed_of(expanded: &Expanded, point: &[usize]) -> String {
    expanded
        .axes
        .iter()
        .position(|axis| axis.name == SEED_AXIS)
        .map(|a| display_value(&expanded.axes[a].values[point[a]]))
        .unwrap_or_else(|| "-".into())
}

/// `full, ratio=0.5`: mapping-valued axes show their name, others `axis=value`.
fn row_label(expanded: &Expanded, point: &[usize]) -> (String, Vec<(String, String)>) {
    let mut parts = Vec::new();
    let mut axes = Vec::new();
    for (a, axis) in expanded.axes.iter().enumerate() {
        if axis.name == SEED_AXIS {
            continue;
        }
        let value = &axis.values[point[a]];
        let shown = display_value(value);
        parts.push(if value.is_object() {
            shown.clone()
        } else {
            format!("{}={shown}", axis.name)
        });
        axes.push((axis.name.clone(), shown));
    }
    let label = if parts.is_empty() {
        expanded.name.clone()
    } else {
        parts.join(", ")
    };
    (label, axes)
}

/// Does the point match every `axis: value` of a baseline mapping?
fn matches_baseline(
    expanded: &Expanded,
    point: &[usize],
    baseline: &serde_json::Map<String, Value>,
) -> bool {
    baseline.iter().all(|(name, wanted)| {
        expanded
            .axes
            .iter()
            .position(|a| &a.name == name)
            .is_some_and(|a| {
                let value = &expanded.axes[a].values[point[a]];
                value == wanted
                    || (value.is_object() && wanted.as_str() == Some(display_value(value).as_str()))
            })
    })
}

fn read_curve(cache: &Cache, record: &Record, curve: &RawCurve) -> Result<Vec<(f64, f64)>> {
    let entry = record
        .files
        .iter()
        .find(|entry| entry.path == curve.file)
        .with_context(|| format!("{} has no output file `{}`", record.instance, curve.file))?;
    let text = std::fs::read_to_string(cache.blob_path(&entry.hash))
        .with_context(|| format!("reading `{}` of {}", curve.file, record.instance))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).with_context(|| {
            format!(
                "`{}` of {} has no column `{name}` (columns: {})",
                curve.file,
                record.instance,
                header.join(", ")
            )
        })
    };
    let (xi, yi) = (column(&curve.x)?, column(&curve.y)?);
    let mut points = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if let (Some(x), Some(y)) = (cells.get(xi), cells.get(yi))
            && let (Ok(x), Ok(y)) = (x.parse::<f64>(), y.parse::<f64>())
        {
            points.push((x, y));
        }
    }
    Ok(points)
}

/// The instances of one stage that differ only by seed, and the table rows that use them.
struct CurveGroup {
    rows: Vec<String>,
    instances: Vec<usize>,
}

impl CurveGroup {
    /// The rows using this instance: a pre-training shared by four arms is labelled by two of them
    /// and a count, so the legend stays readable.
    fn label(&self) -> String {
        match self.rows.as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            [one, two] => format!("{one} / {two}"),
            [one, two, rest @ ..] => format!("{one} / {two} (+{} more)", rest.len()),
        }
    }
}

/// Groups a stage's instances by everything but the seed, in row order.
fn curve_groups(
    expanded: &Expanded,
    stage: usize,
    point_rows: &[usize],
    rows: &[Row],
) -> Vec<CurveGroup> {
    let mut keys: Vec<Vec<(String, Value)>> = Vec::new();
    let mut groups: Vec<CurveGroup> = Vec::new();
    for (p, &row) in point_rows.iter().enumerate() {
        let instance = expanded.point_instances[stage][p];
        let key: Vec<(String, Value)> = expanded.instances[instance]
            .assignment
            .iter()
            .filter(|(reference, _)| reference != SEED_AXIS)
            .cloned()
            .collect();
        let g = match keys.iter().position(|k| *k == key) {
            Some(g) => g,
            None => {
                keys.push(key);
                groups.push(CurveGroup {
                    rows: Vec::new(),
                    instances: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[g];
        if !group.rows.contains(&rows[row].label) {
            group.rows.push(rows[row].label.clone());
        }
        if !group.instances.contains(&instance) {
            group.instances.push(instance);
        }
    }
    groups
}

/// The pointwise mean of several curves, at the x values every one of them has.
fn mean_curve(curves: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, f64)> = curves.iter().flatten().copied().collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut mean = Vec::new();
    for same_x in all.chunk_by(|a, b| a.0 == b.0) {
        if same_x.len() == curves.len() {
            let sum: f64 = same_x.iter().map(|(_, y)| y).sum();
            mean.push((same_x[0].0, sum / same_x.len() as f64));
        }
    }
    mean
}

/// Builds the report input from the cache alone.
pub fn gather(loaded: &Loaded, cache: &Cache) -> Result<ReportInput> {
    let expanded = &loaded.expanded;
    let Some(spec) = &loaded.source.raw.report else {
        bail!(
            "{} has no `report:` section; add one naming the stage whose metrics to tabulate (see docs/pipeline-reference.md)",
            loaded.source.file.display()
        );
    };
    let (stage_names, prefixed) = spec.metric_stages();
    let stages: Vec<usize> = stage_names
        .iter()
        .map(|name| {
            expanded
                .stages
                .iter()
                .position(|s| &s.name == name)
                .context("report stages were validated")
        })
        .collect::<Result<_>>()?;
    let resolutions = resolve_all(expanded, cache, &loaded.deps, &|_| false)?;
    let record_of = |instance: usize| match &resolutions[instance] {
        Resolution::Cached(record) => Some(record.as_ref()),
        Resolution::Run { .. } => None,
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut row_keys: Vec<Vec<usize>> = Vec::new();
    let mut row_points: Vec<Vec<usize>> = Vec::new();
    let mut all_metrics = std::collections::BTreeSet::new();
    // The table row of every point (points differ from rows only by seed).
    let mut point_rows: Vec<usize> = Vec::new();
    for (p, point) in expanded.points.iter().enumerate() {
        let key = row_key(expanded, point);
        let row = match row_keys.iter().position(|k| *k == key) {
            Some(row) => row,
            None => {
                let (label, axes) = row_label(expanded, point);
                rows.push(Row {
                    label,
                    axes,
                    replicates: Vec::new(),
                });
                row_keys.push(key);
                row_points.push(point.clone());
                rows.len() - 1
            }
        };
        point_rows.push(row);
        let seed = seed_of(expanded, point);
        let mut merged = BTreeMap::new();
        let mut items = BTreeMap::new();
        let mut missing = Vec::new();
        for (&stage, name) in stages.iter().zip(&stage_names) {
            let instance = expanded.point_instances[stage][p];
            let full_name = |metric: String| {
                if prefixed {
                    format!("{name}.{metric}")
                } else {
                    metric
                }
            };
            match record_of(instance).map(|r| r.metrics.as_ref()) {
                Some(Some(metrics)) => {
                    for (metric, value) in flatten_metrics(metrics) {
                        merged.insert(full_name(metric), value);
                    }
                    for (metric, outcomes) in item_outcomes(metrics) {
                        items.insert(full_name(metric), outcomes);
                    }
                }
                Some(None) => missing.push(format!(
                    "{} wrote no metrics.json",
                    expanded.instances[instance].id
                )),
                None => missing.push(format!("{} has not run", expanded.instances[instance].id)),
            }
        }
        all_metrics.extend(merged.keys().cloned());
        let replicate = if missing.is_empty() {
            Replicate {
                seed,
                metrics: Some(merged),
                missing: None,
                items,
            }
        } else {
            Replicate {
                seed,
                metrics: None,
                missing: Some(missing.join("; ")),
                items: BTreeMap::new(),
            }
        };
        rows[row].replicates.push(replicate);
    }

    let baseline_spec = spec.baseline.clone().or_else(|| match expanded.design {
        Design::OneAtATime => loaded.source.raw.baseline.clone(),
        _ => None,
    });
    let baseline = baseline_spec.and_then(|b| {
        row_points
            .iter()
            .position(|point| matches_baseline(expanded, point, &b))
    });

    let mut curves = Vec::new();
    for curve in &spec.curves {
        let Some(stage) = expanded.stages.iter().position(|s| s.name == curve.stage) else {
            continue;
        };
        let mut series = Vec::new();
        let mut averaged = false;
        for group in curve_groups(expanded, stage, &point_rows, &rows) {
            let mut per_seed = Vec::new();
            for &instance in &group.instances {
                if let Some(record) = record_of(instance) {
                    per_seed.push(read_curve(cache, record, curve)?);
                }
            }
            averaged |= per_seed.len() > 1;
            let points = mean_curve(&per_seed);
            if !points.is_empty() {
                series.push(Series {
                    label: group.label(),
                    points,
                });
            }
        }
        curves.push(CurveSet {
            title: curve
                .title
                .clone()
                .unwrap_or_else(|| format!("{} {} ({})", curve.stage, curve.y, curve.file)),
            x_label: curve.x.clone(),
            // Said on the axis, not in the title: the title names the plot's files.
            y_label: if averaged {
                format!("{} (mean over seeds)", curve.y)
            } else {
                curve.y.clone()
            },
            series,
        });
    }

    Ok(ReportInput {
        title: expanded.name.clone(),
        metrics: if spec.metrics.is_empty() {
            all_metrics.into_iter().collect()
        } else {
            spec.metrics.clone()
        },
        rows,
        baseline,
        x_axis: spec.x_axis.clone(),
        curves,
    })
}

/// `pipelines/ablation.yaml` -> `pipelines/ablation-report/`
pub fn default_report_dir(pipeline: &Path) -> PathBuf {
    let stem = pipeline
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "pipeline".into());
    pipeline.with_file_name(format!("{stem}-report"))
}

/// `umdflow report`: writes the tables, plots and HTML page; returns the files written.
pub fn report(loaded: &Loaded, out: &Path) -> Result<Vec<PathBuf>> {
    let cache = crate::commands::open_cache(&loaded.cache_dir)?;
    let input = gather(loaded, &cache)?;
    let written = umdflow_report::render(&input, out)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    Ok(written.files().into_iter().map(Path::to_path_buf).collect())
}

/// What `umdflow export` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The pipeline, its lock file, every metric and the report, for a reviewer.
    #[default]
    Bundle,
    /// One TensorBoard run per cached instance (`tensorboard --logdir DIR`).
    Tensorboard,
    /// An MLflow file store, `DIR/mlruns/` (`mlflow ui --backend-store-uri DIR/mlruns`).
    Mlflow,
}

/// `umdflow export`: writes `format` into `out`; returns the files written.
pub fn export(loaded: &Loaded, out: &Path, format: ExportFormat) -> Result<Vec<PathBuf>> {
    match format {
        ExportFormat::Bundle => export_bundle(loaded, out),
        ExportFormat::Tensorboard => crate::tracking::export_tensorboard(loaded, out),
        ExportFormat::Mlflow => crate::tracking::export_mlflow(loaded, out),
    }
}

/// A folder with the pipeline, its lock file, every metric and the report.
fn export_bundle(loaded: &Loaded, out: &Path) -> Result<Vec<PathBuf>> {
    let cache = crate::commands::open_cache(&loaded.cache_dir)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let expanded = &loaded.expanded;
    let mut written = Vec::new();

    let pipeline_copy = out.join(loaded.source.file.file_name().unwrap_or_default());
    std::fs::copy(&loaded.source.file, &pipeline_copy)
        .with_context(|| format!("copying {}", loaded.source.file.display()))?;
    written.push(pipeline_copy);

    let resolutions = resolve_all(expanded, &cache, &loaded.deps, &|_| false)?;
    let outcomes: Vec<crate::scheduler::Outcome> = resolutions
        .iter()
        .map(|resolution| match resolution {
            Resolution::Cached(record) => crate::scheduler::Outcome {
                status: crate::scheduler::Status::Cached,
                key: Some(record.key.clone()),
                reason: "cached".into(),
                seconds: 0.0,
                record: Some((**record).clone()),
                log_tail: None,
            },
            Resolution::Run { key, reason } => crate::scheduler::Outcome {
                status: crate::scheduler::Status::Skipped,
                key: key.clone(),
                reason: reason.clone(),
                seconds: 0.0,
                record: None,
                log_tail: None,
            },
        })
        .collect();
    // The lock file of the last run if it describes exactly these instances and keys; otherwise,
    // e.g. after a run with other `--set`s, one rendered from the cache (each record carries the
    // thread count and device that produced it).
    let beside = crate::lockfile::lock_path(&loaded.source.file);
    let lock_path = out.join(beside.file_name().unwrap_or_default());
    let last_run = std::fs::read_to_string(&beside).ok();
    match last_run {
        Some(text) if lock_matches(&text, expanded, &outcomes, &loaded.sets) => {
            std::fs::write(&lock_path, text)?;
        }
        other => {
            if other.is_some() {
                eprintln!(
                    "{} belongs to another run (other --set values or results); writing a lock file from the cache",
                    beside.display()
                );
            }
            let lock = crate::lockfile::render(expanded, &outcomes, &loaded.sets);
            std::fs::write(&lock_path, lock)?;
        }
    }
    written.push(lock_path);

    let metrics: serde_json::Map<String, Value> = expanded
        .instances
        .iter()
        .zip(&outcomes)
        .filter_map(|(instance, outcome)| {
            outcome
                .record
                .as_ref()
                .and_then(|r| r.metrics.clone())
                .map(|m| (instance.id.clone(), m))
        })
        .collect();
    let metrics_path = out.join("metrics.json");
    std::fs::write(
        &metrics_path,
        serde_json::to_string_pretty(&Value::Object(metrics))? + "\n",
    )?;
    written.push(metrics_path);

    if loaded.source.raw.report.is_some() {
        let input = gather(loaded, &cache)?;
        let report = umdflow_report::render(&input, &out.join("report"))?;
        written.extend(report.files().into_iter().map(Path::to_path_buf));
    }
    Ok(written)
}

/// Whether a lock file was written for these overrides and exactly these instances and keys.
fn lock_matches(
    text: &str,
    expanded: &crate::expand::Expanded,
    outcomes: &[crate::scheduler::Outcome],
    sets: &[String],
) -> bool {
    let Ok(lock) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let overrides: Vec<&str> = sets.iter().map(String::as_str).collect();
    let locked_overrides: Option<Vec<&str>> = lock["overrides"]
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect());
    if locked_overrides.as_deref() != Some(overrides.as_slice()) {
        return false;
    }
    let Some(locked) = lock["instances"].as_array() else {
        return false;
    };
    locked.len() == expanded.instances.len()
        && locked
            .iter()
            .zip(expanded.instances.iter().zip(outcomes))
            .all(|(entry, (instance, outcome))| {
                entry["id"].as_str() == Some(instance.id.as_str())
                    && outcome.key.is_some()
                    && entry["key"].as_str() == outcome.key.as_deref()
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_outcomes_are_read_beside_the_metrics_and_never_become_metrics() {
        let metrics = serde_json::json!({
            "classification": {"accuracy": 0.5},
            "items": {"classification.accuracy": [1, 0], "bad": [1, "x"], "scalar": 3}
        });
        let items = item_outcomes(&metrics);
        assert_eq!(items.len(), 1);
        assert_eq!(items["classification.accuracy"], vec![1.0, 0.0]);
        assert_eq!(
            flatten_metrics(&metrics).keys().collect::<Vec<_>>(),
            vec!["classification.accuracy", "items.scalar"]
        );
        assert!(item_outcomes(&serde_json::json!({"a": 1})).is_empty());
    }

    #[test]
    fn curves_average_over_seeds_where_every_seed_has_a_point() {
        let a = vec![(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)];
        let b = vec![(0.0, 3.0), (1.0, 5.0)];
        assert_eq!(mean_curve(&[a, b]), vec![(0.0, 2.0), (1.0, 4.0)]);
        assert!(mean_curve(&[]).is_empty());
    }

    #[test]
    fn a_shared_instance_is_labelled_by_two_rows_and_a_count() {
        let group = |rows: &[&str]| CurveGroup {
            rows: rows.iter().map(|r| r.to_string()).collect(),
            instances: vec![0],
        };
        assert_eq!(group(&["full-umd"]).label(), "full-umd");
        assert_eq!(group(&["a", "b"]).label(), "a / b");
        assert_eq!(group(&["a", "b", "c", "d"]).label(), "a / b (+2 more)");
    }
}
