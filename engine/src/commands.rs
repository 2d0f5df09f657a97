//! The `umdflow` subcommands, as library functions the binary calls.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use umdflow_cache::{Cache, CacheError};

use crate::content::StatCache;
use crate::diagnostics::{Diagnostic, Invalid};
use crate::expand::{Expanded, expand};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::resolve::{DepDigests, Resolution, resolve_all};
use crate::scheduler::{self, Outcome, RunOptions, Status, cache_dir};
use crate::slurm::SlurmOptions;
use crate::spec::{Source, load};
use crate::summary::{self, StageLine, short_key, table};

/// What every pipeline command reads: the file, overrides, limits and the cache location.
pub struct PipelineArgs {
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub max_points: usize,
    pub cache: Option<PathBuf>,
}

/// A loaded, validated and expanded pipeline with its cache.
pub struct Loaded {
    pub source: Source,
    /// The `--set` overrides as given.
    pub sets: Vec<String>,
    pub expanded: Expanded,
    pub deps: DepDigests,
    pub cache_dir: PathBuf,
}

pub fn load_pipeline(args: &PipelineArgs, registry: &Registry) -> Result<Loaded, Invalid> {
    let source = load(&args.file, &args.sets)?;
    let expanded = expand(&source, registry, args.max_points)?;
    let cache_dir = cache_dir(args.cache.as_deref(), &source.dir);
    let deps = DepDigests::compute(&source, &expanded, &mut StatCache::open(&cache_dir))?;
    Ok(Loaded {
        source,
        sets: args.sets.clone(),
        expanded,
        deps,
        cache_dir,
    })
}

/// Opens the cache; a damaged index is an error that says how to repair it.
pub fn open_cache(dir: &Path) -> Result<Cache> {
    match Cache::open(dir) {
        Err(err @ CacheError::DamagedIndex { .. }) => anyhow::bail!(
            "{err}\n`umdflow verify --repair --cache {}` moves it aside and starts a fresh index \
             (the cached files are kept; the stages it recorded recompute on the next run)",
            dir.display()
        ),
        opened => opened.with_context(|| format!("opening the cache at {}", dir.display())),
    }
}

/// `--force` names a stage (every instance) or one instance id; a name that matches nothing is
/// an error (exit 2), so a typo cannot silently force nothing.
pub fn forced_matcher<'a>(
    expanded: &'a Expanded,
    force: &'a [String],
) -> Result<impl Fn(usize) -> bool + 'a, Invalid> {
    let unknown: Vec<Diagnostic> = force
        .iter()
        .filter(|f| {
            f.as_str() != "all"
                && !expanded.stages.iter().any(|stage| &stage.name == *f)
                && !expanded.instances.iter().any(|instance| &instance.id == *f)
        })
        .map(|f| {
            let stages: Vec<&str> = expanded.stages.iter().map(|s| s.name.as_str()).collect();
            Diagnostic {
                file: expanded.file.clone(),
                position: None,
                origin: Some(format!("--force {f}")),
                message: format!(
                    "no stage or instance is named `{f}`; stages: {} (or an instance id such as `{}`, or `all`)",
                    stages.join(", "),
                    expanded.instances.last().map(|i| i.id.as_str()).unwrap_or("all")
                ),
            }
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Invalid(unknown));
    }
    Ok(move |index: usize| {
        let instance = &expanded.instances[index];
        let stage = &expanded.stages[instance.stage].name;
        force
            .iter()
            .any(|f| f == stage || f == &instance.id || f == "all")
    })
}

pub struct RunResult {
    pub outcomes: Vec<Outcome>,
    pub interrupted: bool,
}

/// Where `run` writes its lock file, if anywhere.
pub enum LockFile {
    BesidePipeline,
    At(PathBuf),
    Off,
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    loaded: &Loaded,
    options: &RunOptions,
    force: &[String],
    json: bool,
    quiet: bool,
    lock: &LockFile,
    slurm: Option<&SlurmOptions>,
    cancel: &AtomicBool,
) -> Result<RunResult> {
    let expanded = &loaded.expanded;
    // Checked before anything runs: a stage that can never fit the budget is an error, not a hang.
    let requests = match slurm {
        None => crate::resources::requests(
            &loaded.source,
            expanded,
            &options.budget,
            options.threads_per_stage,
        )?,
        // Each Slurm job runs in its own allocation, not in this machine's budget.
        Some(_) => Vec::new(),
    };
    let cache = open_cache(&loaded.cache_dir)?;
    let progress = Progress::new(expanded.instances.len() as u64, !json && !quiet);
    let forced = forced_matcher(expanded, force)?;
    let outcomes = match slurm {
        None => scheduler::run(
            expanded,
            &cache,
            &loaded.deps,
            options,
            &requests,
            &forced,
            &progress,
            cancel,
        )?,
        Some(slurm) => {
            crate::slurm::run(loaded, &cache, options, slurm, &forced, &progress, cancel)?
        }
    };
    progress.finish();
    let interrupted = cancel.load(std::sync::atomic::Ordering::Relaxed);
    let lock_path = match lock {
        LockFile::BesidePipeline => Some(crate::lockfile::lock_path(&loaded.source.file)),
        LockFile::At(path) => Some(path.clone()),
        LockFile::Off => None,
    };
    if let Some(path) = lock_path {
        let text = crate::lockfile::render(expanded, &outcomes, &loaded.sets);
        crate::lockfile::write(&path, &text)
            .with_context(|| format!("writing the lock file {}", path.display()))?;
    }
    for (instance, outcome) in expanded.instances.iter().zip(&outcomes) {
        if let (Status::Failed, Some(tail)) = (outcome.status, &outcome.log_tail) {
            eprintln!(
                "--- last lines of the log of {} ---\n{tail}\n---",
                instance.id
            );
        }
    }
    if json {
        let document = summary::run_document(expanded, &outcomes, interrupted);
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else if !quiet {
        print!("{}", summary::run_table(expanded, &outcomes));
    }
    Ok(RunResult {
        outcomes,
        interrupted,
    })
}

/// `plan`: what `run` would do and why; runs nothing. Returns how many instances would run.
pub fn plan(loaded: &Loaded, force: &[String], json: bool) -> Result<usize> {
    let cache = open_cache(&loaded.cache_dir)?;
    let expanded = &loaded.expanded;
    let forced = forced_matcher(expanded, force)?;
    let resolutions = resolve_all(expanded, &cache, &loaded.deps, &forced)?;
    let to_run = resolutions
        .iter()
        .filter(|r| matches!(r, Resolution::Run { .. }))
        .count();
    if json {
        #[derive(serde::Serialize)]
        struct PlanDocument<'a> {
            pipeline: &'a str,
            stages: Vec<StageLine<'a>>,
            run: usize,
            cached: usize,
        }
        let stages = expanded
            .instances
            .iter()
            .zip(&resolutions)
            .map(|(instance, resolution)| {
                let stage = expanded.stage_of(instance);
                let (status, key, reason) = match resolution {
                    Resolution::Cached(record) => ("cached", Some(record.key.as_str()), "cached"),
                    Resolution::Run { key, reason } => ("run", key.as_deref(), reason.as_str()),
                };
                StageLine {
                    id: &instance.id,
                    name: &stage.name,
                    kind: stage.kind.name(),
                    key,
                    status,
                    reason,
                    seconds: 0.0,
                }
            })
            .collect();
        let document = PlanDocument {
            pipeline: &expanded.name,
            stages,
            run: to_run,
            cached: resolutions.len() - to_run,
        };
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        let mut rows = vec![vec![
            "plan".to_string(),
            "stage".into(),
            "key".into(),
            "why".into(),
        ]];
        for (instance, resolution) in expanded.instances.iter().zip(&resolutions) {
            rows.push(match resolution {
                Resolution::Cached(record) => {
                    vec![
                        "cached".into(),
                        instance.id.clone(),
                        short_key(Some(&record.key)).into(),
                        String::new(),
                    ]
                }
                Resolution::Run { key, reason } => {
                    vec![
                        "run".into(),
                        instance.id.clone(),
                        short_key(key.as_deref()).into(),
                        reason.clone(),
                    ]
                }
            });
        }
        print!("{}", table(&rows));
        println!(
            "{} to run, {} cached ({} points, {} instances)",
            to_run,
            resolutions.len() - to_run,
            expanded.points.len(),
            expanded.instances.len()
        );
    }
    Ok(to_run)
}

/// `show`: each instance with its status, key prefix and metrics.
pub fn show(loaded: &Loaded, json: bool) -> Result<()> {
    let cache = open_cache(&loaded.cache_dir)?;
    let expanded = &loaded.expanded;
    let resolutions = resolve_all(expanded, &cache, &loaded.deps, &|_| false)?;
    if json {
        let items: Vec<serde_json::Value> = expanded
            .instances
            .iter()
            .zip(&resolutions)
            .map(|(instance, resolution)| match resolution {
                Resolution::Cached(record) => serde_json::json!({
                    "id": instance.id, "status": "cached", "key": record.key,
                    "metrics": record.metrics, "seconds": record.duration_s,
                    "finished_at_ms": record.finished_at_ms,
                }),
                Resolution::Run { key, reason } => serde_json::json!({
                    "id": instance.id, "status": "missing", "key": key, "reason": reason,
                }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"pipeline": expanded.name, "stages": items})
            )?
        );
        return Ok(());
    }
    let mut rows = vec![vec![
        "status".to_string(),
        "stage".into(),
        "key".into(),
        "seconds".into(),
        "metrics".into(),
    ]];
    for (instance, resolution) in expanded.instances.iter().zip(&resolutions) {
        rows.push(match resolution {
            Resolution::Cached(record) => vec![
                "cached".into(),
                instance.id.clone(),
                short_key(Some(&record.key)).into(),
                format!("{:.2}", record.duration_s),
                record
                    .metrics
                    .as_ref()
                    .map(compact_metrics)
                    .unwrap_or_default(),
            ],
            Resolution::Run { key, reason } => vec![
                "missing".into(),
                instance.id.clone(),
                short_key(key.as_deref()).into(),
                "-".into(),
                format!("({reason})"),
            ],
        });
    }
    print!("{}", table(&rows));
    Ok(())
}

/// `{"acc": 0.91234, "loss": 1.2}` -> `acc=0.9123 loss=1.2`
fn compact_metrics(metrics: &serde_json::Value) -> String {
    match metrics {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v.as_f64() {
                Some(x) if v.is_f64() => format!("{k}={x:.4}"),
                _ => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DagFormat {
    Dot,
    Mermaid,
}

/// `dag`: the instance graph as Graphviz dot or Mermaid.
pub fn dag(expanded: &Expanded, format: DagFormat) -> String {
    let mut out = String::new();
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    match format {
        DagFormat::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];\n",
                quote(&expanded.name)
            ));
            for (i, instance) in expanded.instances.iter().enumerate() {
                let kind = expanded.stage_of(instance).kind.name();
                out.push_str(&format!(
                    "  n{i} [label=\"{}\\n({kind})\"];\n",
                    quote(&instance.id)
                ));
            }
            for (i, instance) in expanded.instances.iter().enumerate() {
                for input in &instance.inputs {
                    out.push_str(&format!("  n{input} -> n{i};\n"));
                }
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for (i, instance) in expanded.instances.iter().enumerate() {
                let kind = expanded.stage_of(instance).kind.name();
                out.push_str(&format!(
                    "  n{i}[\"{} ({kind})\"]\n",
                    instance.id.replace('"', "#quot;")
                ));
            }
            for (i, instance) in expanded.instances.iter().enumerate() {
                for input in &instance.inputs {
                    out.push_str(&format!("  n{input} --> n{i}\n"));
                }
            }
        }
    }
    out
}

/// `gc`: with pipeline files, keep only what they reach; without, drop only unreferenced files.
/// It waits until no other process uses the cache, so it never deletes what a live run holds.
pub fn gc(cache_dir: &Path, pipelines: &[Loaded]) -> Result<umdflow_cache::GcReport> {
    let cache = open_cache(cache_dir)?;
    let cache = cache.exclusive(|| {
        eprintln!(
            "umdflow gc: waiting for the other umdflow processes using {} to finish",
            cache_dir.display()
        )
    })?;
    // With pipeline files: their cached records, and the resume folders of what they still have
    // to compute (an interrupted training continues from its checkpoint on the next run).
    let (keep, pending) = if pipelines.is_empty() {
        (None, None)
    } else {
        let (mut keep, mut pending) = (BTreeSet::new(), BTreeSet::new());
        for loaded in pipelines {
            for resolution in resolve_all(&loaded.expanded, &cache, &loaded.deps, &|_| false)? {
                match resolution {
                    Resolution::Cached(record) => {
                        keep.insert(record.key.clone());
                    }
                    Resolution::Run { key: Some(key), .. } => {
                        pending.insert(key);
                    }
                    Resolution::Run { key: None, .. } => {}
                }
            }
        }
        (Some(keep), Some(pending))
    };
    Ok(cache.gc(keep.as_ref(), pending.as_ref())?)
}

/// What `verify` found.
pub struct Verified {
    /// With `--repair`, where a damaged index was moved.
    pub index_moved_to: Option<PathBuf>,
    pub report: umdflow_cache::VerifyReport,
}

/// `verify`: re-hash every blob; with `repair`, first move a damaged index aside.
pub fn verify(cache_dir: &Path, repair: bool) -> Result<Verified> {
    let index_moved_to = if repair {
        Cache::repair_index(cache_dir, || {
            eprintln!(
                "umdflow verify: waiting for the other umdflow processes using {} to finish",
                cache_dir.display()
            )
        })
        .with_context(|| format!("repairing the cache index in {}", cache_dir.display()))?
    } else {
        None
    };
    let report = open_cache(cache_dir)?.verify()?;
    Ok(Verified {
        index_moved_to,
        report,
    })
}

/// `log`: the kept log of a cached instance.
pub fn log(loaded: &Loaded, id: &str) -> Result<String> {
    let cache = open_cache(&loaded.cache_dir)?;
    let expanded = &loaded.expanded;
    let Some(index) = expanded.instances.iter().position(|i| i.id == id) else {
        let ids: Vec<&str> = expanded
            .instances
            .iter()
            .take(20)
            .map(|i| i.id.as_str())
            .collect();
        anyhow::bail!(
            "no instance `{id}` in {}; instances include: {}",
            expanded.file.display(),
            ids.join(", ")
        );
    };
    let resolutions = resolve_all(expanded, &cache, &loaded.deps, &|_| false)?;
    match &resolutions[index] {
        Resolution::Cached(record) => match &record.log {
            Some(entry) => std::fs::read_to_string(cache.blob_path(&entry.hash))
                .with_context(|| format!("reading the log blob of {id}")),
            None => Ok(String::new()),
        },
        Resolution::Run { reason, .. } => {
            let failed = loaded
                .cache_dir
                .join("logs")
                .join(format!("{}.failed.log", crate::scheduler::file_safe(id)));
            match std::fs::read_to_string(&failed) {
                Ok(text) => Ok(format!(
                    "(not cached: {reason}; this is the log of its last failed run)\n{text}"
                )),
                Err(_) => anyhow::bail!("{id} is not in the cache ({reason})"),
            }
        }
    }
}

/// A kind's parameters with their defaults, as YAML (`umdflow kinds --defaults`).
pub fn kind_defaults(kind: &dyn umdflow_stages::StageKind) -> String {
    let text = match kind.default_params() {
        Ok(params) if params.is_empty() => {
            "(free-form: every param is passed to the command)".to_string()
        }
        Ok(params) => serde_yaml::to_string(&serde_json::Value::Object(params)).unwrap_or_default(),
        Err(problems) => {
            let described: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect();
            format!("(no defaults: {})", described.join("; "))
        }
    };
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `status`: the Slurm jobs of the pipeline's runs on its cache (`all`: finished ones too); returns
/// how many are queued or running.
pub fn slurm_status(loaded: &Loaded, all: bool) -> Result<usize> {
    let jobs = crate::slurm::runs::jobs(&loaded.cache_dir, &loaded.expanded.name)?;
    let active = jobs.iter().filter(|line| line.active).count();
    let mut rows = vec![vec![
        "job".to_string(),
        "stage".into(),
        "state".into(),
        "detail".into(),
    ]];
    for line in jobs.iter().filter(|line| all || line.active) {
        rows.push(vec![
            line.job.clone(),
            line.instance.clone(),
            line.state.clone(),
            line.detail.clone(),
        ]);
    }
    if rows.len() > 1 {
        print!("{}", table(&rows));
    }
    println!(
        "{active} Slurm jobs of {} queued or running ({} recorded in {})",
        loaded.expanded.name,
        jobs.len(),
        loaded.cache_dir.display()
    );
    Ok(active)
}

/// `cancel`: cancels the queued and running Slurm jobs of the pipeline; how many.
pub fn slurm_cancel(loaded: &Loaded) -> Result<usize> {
    crate::slurm::runs::cancel(&loaded.cache_dir, &loaded.expanded.name)
}
