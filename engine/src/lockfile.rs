//! The lock file `umdflow run` writes beside the pipeline (`<name>.lock.json`): for every instance
//! its resolved params, key, output and metric digests, and the thread count and device that
//! produced its cached result, plus the umdflow, compiler and dependency versions. It holds no
//! times or paths, so two runs that computed the same results write identical files and a
//! reviewer can diff them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::expand::Expanded;
use crate::keys::canonical_json;
use crate::scheduler::Outcome;

#[derive(Serialize)]
struct LockInstance<'a> {
    id: &'a str,
    kind: &'a str,
    kind_version: u32,
    status: &'a str,
    params: &'a serde_json::Map<String, Value>,
    key: Option<&'a str>,
    output_digest: Option<&'a str>,
    metrics_digest: Option<String>,
    metrics: Option<&'a Value>,
    /// Threads the stage was given when it computed the cached result (not this invocation's).
    threads: Option<usize>,
    /// The device it computed on: the GPU(s) the run gave it (`cuda:1`) or what the stage
    /// reported (`cpu`); none for a stage given no GPU that reports nothing.
    device: Option<&'a str>,
}

#[derive(Serialize)]
struct Lock<'a> {
    pipeline: &'a str,
    file: String,
    overrides: &'a [String],
    umdflow_version: &'static str,
    rustc: &'static str,
    dependencies: BTreeMap<&'static str, &'static str>,
    instances: Vec<LockInstance<'a>>,
}

/// Versions of the dependencies that decide results, as built.
pub fn dependency_versions() -> BTreeMap<&'static str, &'static str> {
    env!("UMDFLOW_DEP_VERSIONS")
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

/// `pipelines/ablation.yaml` -> `pipelines/ablation.lock.json`
pub fn lock_path(pipeline: &Path) -> PathBuf {
    let stem = pipeline
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "pipeline".into());
    pipeline.with_file_name(format!("{stem}.lock.json"))
}

/// blake3 of the canonical JSON of a metrics document.
pub fn metrics_digest(metrics: &Value) -> String {
    blake3::hash(canonical_json(metrics).as_bytes())
        .to_hex()
        .to_string()
}

pub fn render(expanded: &Expanded, outcomes: &[Outcome], overrides: &[String]) -> String {
    let instances = expanded
        .instances
        .iter()
        .zip(outcomes)
        .map(|(instance, outcome)| {
            let stage = expanded.stage_of(instance);
            let record = outcome.record.as_ref();
            let metrics = record.and_then(|r| r.metrics.as_ref());
            LockInstance {
                id: &instance.id,
                kind: stage.kind.name(),
                kind_version: stage.kind.version(),
                // Executed and cached both mean "this result is in the cache": the lock file must
                // not differ between a fresh run and a rerun.
                status: if record.is_some() {
                    "done"
                } else {
                    outcome.status.as_str()
                },
                params: &instance.params,
                key: outcome.key.as_deref(),
                output_digest: record.map(|r| r.output_digest.as_str()),
                metrics_digest: metrics.map(metrics_digest),
                metrics,
                threads: record.and_then(|r| r.threads),
                device: record.and_then(|r| r.device.as_deref()),
            }
        })
        .collect();
    let lock = Lock {
        pipeline: &expanded.name,
        file: expanded
            .file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        overrides,
        umdflow_version: env!("CARGO_PKG_VERSION"),
        rustc: env!("UMDFLOW_RUSTC_VERSION"),
        dependencies: dependency_versions(),
        instances,
    };
    let mut text = serde_json::to_string_pretty(&lock).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes the lock file atomically and durably (temporary file, fsync, rename, fsync of the
/// folder). The temporary name is per process, so concurrent runs of one pipeline never trip over
/// each other (the last one wins).
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}
