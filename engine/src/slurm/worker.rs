//! `umdflow worker`: one instance, resolved exactly as a local run resolves it, executed through
//! the scheduler's own path (lease, staging, commit), then exit. What each Slurm job runs. Its
//! result goes to a small JSON report the driver reads; the stage's outputs go to the cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::commands::{Loaded, open_cache};
use crate::progress::Progress;
use crate::resolve::{Resolution, resolve_all};
use crate::scheduler::{self, Outcome, RunOptions, Status};

/// What a worker did, as it tells the driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub status: Done,
    /// The key it committed (or found committed).
    pub key: Option<String>,
    /// Why it failed, or where the result came from.
    pub reason: String,
    pub seconds: f64,
    /// The end of the stage's log, for a failure.
    pub log_tail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Done {
    Executed,
    Cached,
    Failed,
}

impl Report {
    pub fn of(outcome: &Outcome) -> Report {
        Report {
            status: match outcome.status {
                Status::Executed => Done::Executed,
                Status::Cached => Done::Cached,
                Status::Failed | Status::Skipped => Done::Failed,
            },
            key: outcome.key.clone(),
            reason: outcome.reason.clone(),
            seconds: outcome.seconds,
            log_tail: outcome.log_tail.clone(),
        }
    }

    /// Written whole or not at all (temporary file, then rename): the driver may read it any time.
    pub fn write(&self, path: &Path) -> Result<()> {
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&temporary, serde_json::to_vec(self)?)
            .and_then(|()| std::fs::rename(&temporary, path))
            .with_context(|| format!("writing the worker report {}", path.display()))
    }

    /// None when the worker wrote none (it never ran, was killed, or could not open the cache).
    pub fn read(path: &Path) -> Option<Report> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The instance a worker runs: `--instance`, or for an array task its line of `--instance-list`
/// (`task` is `$SLURM_ARRAY_TASK_ID`).
pub fn which_instance(
    instance: Option<String>,
    list: Option<&Path>,
    task: Option<&str>,
) -> Result<String> {
    match (instance, list) {
        (Some(id), _) => Ok(id),
        (None, Some(list)) => super::array::instance_from_list(list, task),
        (None, None) => bail!("`umdflow worker` needs --instance ID or --instance-list FILE"),
    }
}

/// Where the worker's report goes: `--report`, or its instance's file in `--report-dir`.
pub fn report_path(report: Option<PathBuf>, dir: Option<&Path>, instance: &str) -> Option<PathBuf> {
    report.or_else(|| dir.map(|dir| super::runs::report_path(dir, instance)))
}

/// Runs the instance `id` of a loaded pipeline unless its key is already in the cache. Its inputs
/// must be cached (the driver submits it after their jobs succeeded); `force` recomputes it.
pub fn run_instance(
    loaded: &Loaded,
    id: &str,
    options: &RunOptions,
    force: bool,
    cancel: &AtomicBool,
) -> Result<Outcome> {
    let expanded = &loaded.expanded;
    let Some(index) = expanded.instances.iter().position(|i| i.id == id) else {
        bail!(
            "no instance `{id}` in {} (is the pipeline file the one the run was started with?)",
            expanded.file.display()
        );
    };
    let cache = open_cache(&loaded.cache_dir)?;
    let resolutions = resolve_all(expanded, &cache, &loaded.deps, &|i| force && i == index)?;
    let reason = match &resolutions[index] {
        Resolution::Cached(record) => {
            return Ok(Outcome::cached(
                (**record).clone(),
                "already in the cache when its job started",
                0.0,
            ));
        }
        Resolution::Run { key: None, .. } => {
            let missing: Vec<&str> = expanded.instances[index]
                .inputs
                .iter()
                .filter(|&&input| matches!(resolutions[input], Resolution::Run { .. }))
                .map(|&input| expanded.instances[input].id.as_str())
                .collect();
            bail!(
                "{id} cannot run yet: its input {} is not in the cache (a worker runs after the \
                 jobs of its inputs succeeded)",
                missing.join(", ")
            )
        }
        Resolution::Run { reason, .. } => reason.clone(),
    };
    let inputs = expanded.instances[index]
        .inputs
        .iter()
        .filter_map(|&input| match &resolutions[input] {
            Resolution::Cached(record) => Some((**record).clone()),
            Resolution::Run { .. } => None,
        })
        .collect();
    let progress = Progress::new(1, false);
    Ok(scheduler::execute_one(
        expanded,
        &cache,
        &loaded.deps,
        options,
        &progress,
        cancel,
        index,
        inputs,
        force,
        reason,
    ))
}
