//! An MLflow file store (`mlruns/`), laid out as MLflow's own `FileStore` writes it, so that
//! `mlflow ui --backend-store-uri DIR/mlruns` and `MlflowClient("file:DIR/mlruns")` read it:
//!
//! ```text
//! mlruns/.trash/
//! mlruns/0/meta.yaml                         the "Default" experiment MLflow creates with a store
//! mlruns/<experiment id>/meta.yaml           one experiment
//! mlruns/<experiment id>/<run id>/meta.yaml  one finished run
//!     params/<name>                          the value, no newline
//!     metrics/<name>                         one line per value: "<ms timestamp> <value> <step>"
//!     tags/<name>                            the value, no newline (`mlflow.runName` among them)
//!     artifacts/<path>                       copies of the run's files
//! ```
//!
//! Names may hold slashes (`loss_curve/total` is `metrics/loss_curve/total`); characters MLflow
//! refuses in names become `_`.

use std::path::{Path, PathBuf};

use crate::error::ReportError;
use crate::tracked::TrackedRun;

/// RunStatus.FINISHED in MLflow's protos.
const STATUS_FINISHED: u32 = 3;
/// SourceType.LOCAL.
const SOURCE_LOCAL: u32 = 4;
/// The tag MLflow shows as the run's name.
const RUN_NAME_TAG: &str = "mlflow.runName";

/// Writes the experiment `experiment` with one run per entry of `runs` under `out/mlruns/`.
/// The experiment's id is derived from its name, and each run's id is its [`TrackedRun::id`]:
/// exporting again replaces those runs (their folders are removed first) and leaves other
/// experiments and runs in the store alone. Returns the files written.
pub fn write_mlflow(
    experiment: &str,
    runs: &[TrackedRun],
    out: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    crate::tracked::check_unique_ids(runs)?;
    let store = std::path::absolute(out.join("mlruns")).map_err(|e| ReportError::io(out, e))?;
    let mut files = Files::default();
    files.dir(&store.join(".trash"))?;
    let default_meta = store.join("0").join("meta.yaml");
    if !default_meta.exists() {
        files.write(
            &default_meta,
            &experiment_meta("0", "Default", &store.join("0"), 0, 0),
        )?;
    }

    let experiment_id = experiment_id(experiment);
    let experiment_dir = store.join(&experiment_id);
    let created = runs.iter().map(|r| r.started_at_ms).min().unwrap_or(0);
    let updated = runs.iter().map(|r| r.finished_at_ms).max().unwrap_or(0);
    files.write(
        &experiment_dir.join("meta.yaml"),
        &experiment_meta(
            &experiment_id,
            experiment,
            &experiment_dir,
            created,
            updated,
        ),
    )?;
    for run in runs {
        write_run(&mut files, &experiment_id, &experiment_dir, run)?;
    }
    Ok(files.written)
}

fn write_run(
    files: &mut Files,
    experiment_id: &str,
    experiment_dir: &Path,
    run: &TrackedRun,
) -> Result<(), ReportError> {
    let dir = experiment_dir.join(&run.id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| ReportError::io(&dir, e))?;
    }
    files.write(&dir.join("meta.yaml"), &run_meta(experiment_id, &dir, run))?;
    // MLflow creates all four with the run and does not recognise a run folder lacking one.
    for folder in ["metrics", "params", "tags", "artifacts"] {
        files.dir(&dir.join(folder))?;
    }
    for (name, value) in &run.params {
        files.write(&dir.join("params").join(safe_name(name)), value)?;
    }
    for (name, value) in std::iter::once((RUN_NAME_TAG, run.name.as_str()))
        .chain(run.tags.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    {
        files.write(&dir.join("tags").join(safe_name(name)), value)?;
    }
    let timestamp = run.finished_at_ms;
    for (name, value) in &run.metrics {
        let line = metric_line(timestamp, *value, 0);
        files.write(&dir.join("metrics").join(safe_name(name)), &line)?;
    }
    for curve in &run.curves {
        let lines: String = curve
            .points
            .iter()
            .map(|&(step, value)| metric_line(timestamp, value, step))
            .collect();
        files.write(&dir.join("metrics").join(safe_name(&curve.name)), &lines)?;
    }
    let artifacts = dir.join("artifacts");
    for artifact in &run.artifacts {
        let relative = Path::new(&artifact.path);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(ReportError::ArtifactPath {
                run: run.name.clone(),
                path: artifact.path.clone(),
            });
        }
        files.copy(&artifact.source, &artifacts.join(relative))?;
    }
    Ok(())
}

/// `<ms timestamp> <value> <step>\n`; Python's `float()` reads Rust's shortest round-trip form
/// (and `NaN`, `inf`) back to the same number.
fn metric_line(timestamp_ms: u64, value: f64, step: i64) -> String {
    format!("{timestamp_ms} {value} {step}\n")
}

fn experiment_meta(id: &str, name: &str, dir: &Path, created: u64, updated: u64) -> String {
    format!(
        "artifact_location: {}\ncreation_time: {created}\nexperiment_id: {}\nlast_update_time: {updated}\nlifecycle_stage: active\nname: {}\n",
        yaml_string(&file_uri(dir)),
        yaml_string(id),
        yaml_string(name),
    )
}

fn run_meta(experiment_id: &str, dir: &Path, run: &TrackedRun) -> String {
    format!(
        "artifact_uri: {}\nend_time: {}\nentry_point_name: ''\nexperiment_id: {}\nlifecycle_stage: active\nrun_id: {}\nrun_name: {}\nrun_uuid: {}\nsource_name: ''\nsource_type: {SOURCE_LOCAL}\nsource_version: ''\nstart_time: {}\nstatus: {STATUS_FINISHED}\ntags: []\nuser_id: umdflow\n",
        yaml_string(&file_uri(&dir.join("artifacts"))),
        run.finished_at_ms,
        yaml_string(experiment_id),
        yaml_string(&run.id),
        yaml_string(&run.name),
        yaml_string(&run.id),
        run.started_at_ms,
    )
}

/// A YAML double-quoted scalar: JSON's string syntax is a subset of it, and quoting keeps ids
/// made of digits strings (MLflow compares experiment ids as strings).
fn yaml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// `file:///abs/path`, percent-encoded as Python's `pathlib.Path.as_uri()` does (MLflow decodes it
/// with `urllib.parse.unquote`).
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file://");
    for byte in path.to_string_lossy().bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

/// MLflow's experiment ids are decimal strings (it draws 18-digit random ones); this one comes
/// from the name (64-bit FNV-1a, reduced to 18 digits), so the same pipeline always lands in the
/// same experiment and never in the Default experiment `0`.
fn experiment_id(name: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const LOWEST: u64 = 100_000_000_000_000_000;
    (LOWEST + hash % (9 * LOWEST)).to_string()
}

/// A name MLflow accepts for a param, metric or tag (its rule on Windows and elsewhere: ASCII
/// letters, digits, `_ - . /` and space; no empty, `.` or `..` path segment, no leading `/`).
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let segments: Vec<&str> = cleaned
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(|s| if s == ".." { "__" } else { s })
        .collect();
    if segments.is_empty() {
        "_".to_string()
    } else {
        segments.join("/")
    }
}

/// Creates folders as needed and keeps the list of files written.
#[derive(Default)]
struct Files {
    written: Vec<PathBuf>,
}

impl Files {
    fn dir(&self, dir: &Path) -> Result<(), ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))
    }

    fn write(&mut self, path: &Path, text: &str) -> Result<(), ReportError> {
        if let Some(parent) = path.parent() {
            self.dir(parent)?;
        }
        std::fs::write(path, text).map_err(|e| ReportError::io(path, e))?;
        self.written.push(path.to_path_buf());
        Ok(())
    }

    /// Copies the bytes only: the source may be a read-only cache blob, and the copy must not be.
    fn copy(&mut self, source: &Path, target: &Path) -> Result<(), ReportError> {
        if let Some(parent) = target.parent() {
            self.dir(parent)?;
        }
        let mut from = std::fs::File::open(source).map_err(|e| ReportError::read(source, e))?;
        let mut to = std::fs::File::create(target).map_err(|e| ReportError::io(target, e))?;
        std::io::copy(&mut from, &mut to).map_err(|e| ReportError::io(target, e))?;
        self.written.push(target.to_path_buf());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracked::{Artifact, Curve};

    #[test]
    fn names_keep_what_mlflow_accepts_and_replace_the_rest() {
        assert_eq!(safe_name("loss_curve/total"), "loss_curve/total");
        assert_eq!(safe_name("optim.lr"), "optim.lr");
        assert_eq!(safe_name("rho (text/image)"), "rho _text/image_");
        assert_eq!(safe_name("/a//./../b"), "a/__/b");
        assert_eq!(safe_name("ρ"), "_");
        assert_eq!(safe_name(""), "_");
    }

    #[test]
    fn experiment_ids_are_stable_18_digit_strings() {
        let id = experiment_id("quickstart");
        assert_eq!(id, experiment_id("quickstart"));
        assert_ne!(id, experiment_id("ablation"));
        assert_eq!(id.len(), 18);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn uris_and_yaml_strings_are_escaped() {
        assert_eq!(
            file_uri(Path::new("/tmp/a b/ü")),
            "file:///tmp/a%20b/%C3%BC"
        );
        assert_eq!(yaml_string("123"), "\"123\"");
        assert_eq!(yaml_string("a\"b\nc"), "\"a\\\"b\\nc\"");
    }

    #[test]
    fn a_run_is_laid_out_as_mlflow_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("blob");
        std::fs::write(&source, "step,loss\n0,2\n").unwrap();
        let run = TrackedRun {
            name: "train[seed=0]".into(),
            dir_name: "train_seed_0_".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            tags: vec![("seed".into(), "0".into())],
            params: vec![("optim.lr".into(), "0.001".into())],
            metrics: vec![("acc".into(), 0.5)],
            curves: vec![Curve {
                name: "loss/total".into(),
                points: vec![(0, 2.0), (1, 1.5)],
            }],
            artifacts: vec![Artifact {
                path: "loss.csv".into(),
                source,
            }],
            started_at_ms: 1_000,
            finished_at_ms: 3_000,
        };
        let out = dir.path().join("export");
        write_mlflow("demo", std::slice::from_ref(&run), &out).unwrap();
        let run_dir = out.join("mlruns").join(experiment_id("demo")).join(&run.id);
        let read = |path: &str| std::fs::read_to_string(run_dir.join(path)).unwrap();
        assert_eq!(read("params/optim.lr"), "0.001");
        assert_eq!(read("tags/mlflow.runName"), "train[seed=0]");
        assert_eq!(read("tags/seed"), "0");
        assert_eq!(read("metrics/acc"), "3000 0.5 0\n");
        assert_eq!(read("metrics/loss/total"), "3000 2 0\n3000 1.5 1\n");
        assert_eq!(read("artifacts/loss.csv"), "step,loss\n0,2\n");
        let meta = read("meta.yaml");
        assert!(meta.contains("status: 3\n"), "{meta}");
        assert!(meta.contains("start_time: 1000\nstatus"), "{meta}");
        assert!(out.join("mlruns/0/meta.yaml").exists());

        // A second export of the same run replaces it: nothing of the first is left over.
        let mut again = run;
        again.params.clear();
        write_mlflow("demo", &[again], &out).unwrap();
        assert!(!run_dir.join("params/optim.lr").exists());
    }

    #[test]
    fn an_artifact_path_leaving_the_run_is_refused_and_an_empty_run_has_every_folder() {
        let dir = tempfile::tempdir().unwrap();
        let run = TrackedRun {
            name: "x".into(),
            dir_name: "x".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            tags: vec![],
            params: vec![],
            metrics: vec![],
            curves: vec![],
            artifacts: vec![Artifact {
                path: "../escape".into(),
                source: dir.path().join("none"),
            }],
            started_at_ms: 0,
            finished_at_ms: 0,
        };
        let error = write_mlflow("demo", std::slice::from_ref(&run), dir.path()).unwrap_err();
        assert!(error.to_string().contains("../escape"), "{error}");

        // A run with nothing logged still has every folder MLflow looks for.
        let empty = TrackedRun {
            artifacts: vec![],
            ..run
        };
        write_mlflow("demo", std::slice::from_ref(&empty), dir.path()).unwrap();
        let run_dir = dir
            .path()
            .join("mlruns")
            .join(experiment_id("demo"))
            .join(&empty.id);
        for folder in ["metrics", "params", "tags", "artifacts"] {
            assert!(run_dir.join(folder).is_dir(), "{folder}");
        }
    }
}
