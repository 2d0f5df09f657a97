//! The driver of `umdflow run --executor slurm`: plan, submit what is missing as a graph of
//! `afterok` jobs, then watch the queue (one `squeue` per poll) until every job has ended, and
//! turn what the jobs left in the cache into the same outcomes a local run returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use umdflow_cache::Cache;

use super::SlurmOptions;
use super::queue::{self, JobState};
use super::resubmit::{Graph, Resubmits};
use super::runs::RunFolder;
use super::sbatch::{self, Submission};
use super::worker::{Done, Report};
use crate::commands::Loaded;
use crate::progress::Progress;
use crate::resolve::{Resolution, resolve_all, usable};
use crate::scheduler::{Outcome, RunOptions, Status, skip_descendants, tail};

/// A submitted instance.
#[derive(Clone)]
pub(super) struct Job {
    pub(super) id: String,
    /// Slurm's stdout and stderr of the job.
    pub(super) log: PathBuf,
    /// The worker's report.
    pub(super) report: PathBuf,
    /// What it was submitted with (`resubmit.rs` submits it again).
    pub(super) args: Vec<String>,
}

/// `squeue` failures in a row after which the driver gives up (the jobs keep running).
const MAX_QUERY_ERRORS: u32 = 10;

/// How long, after Ctrl-C, the driver waits for cancelled jobs to leave the queue.
const CANCEL_WAIT: Duration = Duration::from_secs(120);

/// Runs the pipeline as Slurm jobs; one outcome per instance (in instance order).
#[allow(clippy::too_many_arguments)]
pub fn run(
    loaded: &Loaded,
    cache: &Cache,
    options: &RunOptions,
    slurm: &SlurmOptions,
    forced: &dyn Fn(usize) -> bool,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Vec<Outcome>> {
    let expanded = &loaded.expanded;
    let count = expanded.instances.len();
    let resolutions = resolve_all(expanded, cache, &loaded.deps, forced)?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
    let mut reasons: Vec<String> = vec![String::new(); count];
    for (index, resolution) in resolutions.into_iter().enumerate() {
        match resolution {
            Resolution::Cached(record) => {
                outcomes[index] = Some(Outcome::cached(*record, "cached", 0.0));
                progress.advance("");
            }
            Resolution::Run { reason, .. } => reasons[index] = reason,
        }
    }
    if outcomes.iter().all(Option::is_some) {
        return Ok(outcomes.into_iter().flatten().collect());
    }

    let mut folder = RunFolder::create(cache.root(), &expanded.name)?;
    let worker_base = worker_command(loaded, cache, slurm)?;
    let workdir = std::env::current_dir().context("reading the current folder")?;

    // Instances are created after their inputs: one pass in index order submits inputs first.
    let mut jobs: BTreeMap<usize, Job> = BTreeMap::new();
    let mut not_submitted: Vec<Option<String>> = vec![None; count];
    for index in 0..count {
        if outcomes[index].is_some() {
            continue;
        }
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let instance = &expanded.instances[index];
        if let Some(&input) = instance
            .inputs
            .iter()
            .find(|&&i| outcomes[i].is_none() && !jobs.contains_key(&i))
        {
            not_submitted[index] = Some(format!(
                "not submitted: input {} was not submitted",
                expanded.instances[input].id
            ));
            continue;
        }
        let after: Vec<String> = instance
            .inputs
            .iter()
            .filter_map(|i| jobs.get(i).map(|job| job.id.clone()))
            .collect();
        let log = folder.log(&instance.id);
        let report = folder.report(&instance.id);
        let mut command = worker_base.clone();
        command.extend(["--instance".into(), instance.id.clone()]);
        command.extend(["--report".into(), utf8(&report)?]);
        if forced(index) {
            command.push("--force".into());
        }
        let resources = &slurm.resources[instance.stage];
        // As locally: the stage's `resources.threads`, else `--threads-per-stage`; without
        // either, the worker takes Slurm's $SLURM_CPUS_PER_TASK, else 1.
        if let Some(threads) = resources.threads.map(|t| t as usize).or(slurm.threads) {
            command.extend(["--threads".into(), threads.to_string()]);
        }
        let name = format!("{}/{}", expanded.name, instance.id);
        let args = sbatch::arguments(
            &slurm.executor,
            &Submission {
                name: &name,
                log: &log,
                workdir: &workdir,
                after: &after,
                command: &command,
                resources,
            },
        );
        match queue::submit(&args) {
            Ok(id) => {
                tracing::debug!(instance = %instance.id, job = %id, "submitted");
                if let Err(err) = folder.record(&id, &instance.id) {
                    tracing::warn!("{err:#}: `umdflow status` and `cancel` will not see job {id}");
                }
                jobs.insert(
                    index,
                    Job {
                        id,
                        log,
                        report,
                        args,
                    },
                );
            }
            // An input's job ended badly before this one was submitted.
            Err(err) if err.to_string().contains("Job dependency problem") => {
                not_submitted[index] = Some(format!("not submitted: {err:#}"));
            }
            Err(err) => {
                let ids: Vec<&str> = jobs.values().map(|job| job.id.as_str()).collect();
                if let Err(cancel_err) = queue::cancel(&ids) {
                    tracing::warn!("could not cancel the jobs submitted so far: {cancel_err:#}");
                }
                return Err(err.context(format!(
                    "submitting the job of {} (cancelled the {} jobs submitted before it)",
                    instance.id,
                    ids.len()
                )));
            }
        }
    }
    progress.note(&format!(
        "submitted {} Slurm jobs (job logs in {})",
        jobs.len(),
        folder.dir.display()
    ));

    let mut resubmits = Resubmits::new(slurm.max_resubmits, Some(&mut folder));
    let stop_reason = watch(
        loaded,
        cache,
        options,
        slurm,
        progress,
        cancel,
        &mut jobs,
        &mut outcomes,
        &mut reasons,
        &mut resubmits,
    )?;
    if resubmits.total > 0 {
        progress.note(&format!(
            "resubmitted {} Slurm jobs cut short by the cluster (time limit, preemption, node failure)",
            resubmits.total
        ));
    }
    drop(resubmits);
    let all_succeeded = outcomes.iter().all(|o| {
        o.as_ref()
            .is_some_and(|o| matches!(o.status, Status::Executed | Status::Cached))
    });
    if all_succeeded {
        // Nothing to look at: the outputs are in the cache, the logs in the records.
        let _ = std::fs::remove_dir_all(&folder.dir);
    }
    let stop_reason = stop_reason.unwrap_or_else(|| "not started".into());
    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            outcome.unwrap_or_else(|| Outcome {
                status: Status::Skipped,
                key: None,
                reason: not_submitted[index]
                    .clone()
                    .unwrap_or_else(|| stop_reason.clone()),
                seconds: 0.0,
                record: None,
                log_tail: None,
            })
        })
        .collect())
}

/// Polls the queue until every job has ended; returns why the run stopped early, if it did.
#[allow(clippy::too_many_arguments)]
fn watch(
    loaded: &Loaded,
    cache: &Cache,
    options: &RunOptions,
    slurm: &SlurmOptions,
    progress: &Progress,
    cancel: &AtomicBool,
    jobs: &mut BTreeMap<usize, Job>,
    outcomes: &mut [Option<Outcome>],
    reasons: &mut [String],
    resubmits: &mut Resubmits<'_>,
) -> Result<Option<String>> {
    let expanded = &loaded.expanded;
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); expanded.instances.len()];
    for (index, instance) in expanded.instances.iter().enumerate() {
        for &input in &instance.inputs {
            dependents[input].push(index);
        }
    }
    let mut stopping: Option<String> = None;
    let mut cancelled_at: Option<Instant> = None;
    let (mut ran, mut failed_count) = (0usize, 0usize);
    let mut query_errors = 0;
    while !jobs.is_empty() {
        if cancel.load(Ordering::Relaxed) && cancelled_at.is_none() {
            stopping = Some("not started: interrupted (Ctrl-C); its job was cancelled".into());
            let ids: Vec<&str> = jobs.values().map(|job| job.id.as_str()).collect();
            progress.note(&format!("cancelling {} Slurm jobs", ids.len()));
            queue::cancel(&ids)?;
            cancelled_at = Some(Instant::now());
        }
        if cancelled_at.is_some_and(|at| at.elapsed() > CANCEL_WAIT) {
            tracing::warn!("cancelled jobs are still listed by squeue; not waiting longer");
            break;
        }
        let ids: Vec<&str> = jobs.values().map(|job| job.id.as_str()).collect();
        let states = match queue::query(&ids) {
            Ok(states) => {
                query_errors = 0;
                states
            }
            // A busy controller times out now and then: look again at the next poll.
            Err(err) if query_errors < MAX_QUERY_ERRORS => {
                query_errors += 1;
                tracing::warn!("looking at the queue failed ({query_errors} in a row): {err:#}");
                sleep_unless_cancelled(slurm.poll, cancel, cancelled_at.is_some());
                continue;
            }
            Err(err) => {
                return Err(err.context(format!(
                    "the queue could not be read {MAX_QUERY_ERRORS} times in a row; the jobs keep \
                     running (`umdflow status` shows them, `umdflow cancel` cancels them)"
                )));
            }
        };
        let mut to_cancel = Vec::new();
        let mut finished = Vec::new();
        for (&index, job) in jobs.iter() {
            match states.get(&job.id) {
                Some(state) if state.never_starts() => to_cancel.push(job.id.clone()),
                Some(state) if state.is_active() => {}
                state => finished.push((index, job.id.clone(), state.cloned())),
            }
        }
        // In index order: an input's failure is seen before its dependents' cancellation.
        for (index, job_id, state) in finished {
            // Resubmitted meanwhile with an input (`resubmit.rs`): the new job is not done.
            if jobs.get(&index).is_none_or(|job| job.id != job_id) {
                continue;
            }
            let Some(job) = jobs.remove(&index) else {
                continue;
            };
            if outcomes[index].is_some() {
                continue; // skipped already because an input failed
            }
            let mut graph = Graph {
                jobs,
                outcomes,
                dependents: &dependents,
                expanded,
                reasons,
            };
            if stopping.is_none()
                && resubmits.handle(index, &job, state.as_ref(), &mut graph, progress)
            {
                continue;
            }
            let outcome = finish(
                loaded,
                cache,
                index,
                &job,
                state.as_ref(),
                std::mem::take(&mut reasons[index]),
                stopping.as_deref(),
            );
            let id = &expanded.instances[index].id;
            match outcome.status {
                Status::Executed => ran += 1,
                Status::Failed => {
                    failed_count += 1;
                    progress.note(&format!("stage {id} failed: {}", outcome.reason));
                    if !options.keep_going && stopping.is_none() {
                        stopping = Some(format!(
                            "not started: {id} failed (use --keep-going to run independent stages)"
                        ));
                        // Running jobs finish and are cached; pending ones never start.
                        to_cancel.extend(
                            jobs.values()
                                .filter(|j| states.get(&j.id).is_some_and(JobState::is_pending))
                                .map(|j| j.id.clone()),
                        );
                    }
                }
                Status::Cached | Status::Skipped => {}
            }
            let failed = outcome.status == Status::Failed;
            outcomes[index] = Some(outcome);
            progress.advance(&format!("ran {ran} failed {failed_count}"));
            if failed {
                skip_descendants(index, &dependents, outcomes, expanded, progress);
            }
        }
        // Not the old jobs of what was resubmitted meanwhile: they are gone already.
        to_cancel.retain(|id| jobs.values().any(|job| &job.id == id));
        if !to_cancel.is_empty() {
            let ids: Vec<&str> = to_cancel.iter().map(String::as_str).collect();
            queue::cancel(&ids)?;
        }
        if !jobs.is_empty() {
            sleep_unless_cancelled(slurm.poll, cancel, cancelled_at.is_some());
        }
    }
    Ok(stopping)
}

/// What a job that left the queue (or ended) did, from its worker's report and the cache.
fn finish(
    loaded: &Loaded,
    cache: &Cache,
    index: usize,
    job: &Job,
    state: Option<&JobState>,
    planned_reason: String,
    stopping: Option<&str>,
) -> Outcome {
    let id = &loaded.expanded.instances[index].id;
    let ended = match state {
        Some(state) => format!(
            "Slurm job {} ended {} ({})",
            job.id, state.state, state.reason
        ),
        None => format!("Slurm job {} left the queue", job.id),
    };
    // The stage's own log tail when the worker got that far, else the end of Slurm's job log.
    let failed_with = |reason: String, stage_tail: Option<String>| Outcome {
        status: Status::Failed,
        key: None,
        reason: format!("{reason} (job log: {})", job.log.display()),
        seconds: 0.0,
        record: None,
        log_tail: stage_tail.or_else(|| tail(&job.log, 15)),
    };
    let failed = |reason: String| failed_with(reason, None);
    let Some(report) = Report::read(&job.report) else {
        // Cancelled before its worker could say anything: by this run (Ctrl-C, a failure without
        // --keep-going), by `umdflow cancel` or scancel, or by the cluster.
        if state.is_some_and(|state| state.state == "CANCELLED") {
            return Outcome {
                status: Status::Skipped,
                key: None,
                reason: stopping
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("not run: Slurm job {} was cancelled", job.id)),
                seconds: 0.0,
                record: None,
                log_tail: None,
            };
        }
        return failed(format!("{ended} without a result from its worker"));
    };
    let status = match report.status {
        // Slurm's state says why a stage was stopped (TIMEOUT, CANCELLED) where the worker only
        // saw a SIGTERM.
        Done::Failed => return failed_with(format!("{}; {ended}", report.reason), report.log_tail),
        Done::Executed => Status::Executed,
        Done::Cached => Status::Cached,
    };
    let Some(key) = report.key else {
        return failed(format!("{ended}, but its worker reported no key"));
    };
    let found = match cache.lookup(&[&key]) {
        Ok(mut found) => found.remove(&key),
        Err(err) => return failed(format!("{ended}; reading its record: {err}")),
    };
    match found.map(|found| usable(cache, found)) {
        Some(Ok(record)) => Outcome {
            status,
            key: Some(key),
            reason: if status == Status::Executed {
                planned_reason
            } else {
                report.reason
            },
            seconds: report.seconds,
            record: Some(record),
            log_tail: None,
        },
        Some(Err(damage)) => failed(format!("{ended}; its cached result of {id}: {damage}")),
        None => failed(format!(
            "{ended}; its worker reported committing {id}, but the cache has no record of it \
             (do the compute nodes see the same cache folder?)"
        )),
    }
}

/// `umdflow worker FILE --cache DIR [--set ...] ...`: what every job runs, less the instance.
fn worker_command(loaded: &Loaded, cache: &Cache, slurm: &SlurmOptions) -> Result<Vec<String>> {
    let file = std::fs::canonicalize(&loaded.source.file)
        .with_context(|| format!("locating {}", loaded.source.file.display()))?;
    let mut command = vec![
        utf8(&slurm.program)?,
        "worker".into(),
        utf8(&file)?,
        "--cache".into(),
        utf8(cache.root())?,
        "--max-points".into(),
        usize::MAX.to_string(),
    ];
    for set in &loaded.sets {
        command.extend(["--set".into(), set.clone()]);
    }
    Ok(command)
}

fn utf8(path: &Path) -> Result<String> {
    match path.to_str() {
        Some(text) => Ok(text.to_string()),
        None => bail!(
            "{} is not UTF-8; Slurm job scripts need UTF-8 paths",
            path.display()
        ),
    }
}

/// Sleeps one poll interval, waking early on Ctrl-C (unless the jobs are being cancelled already).
fn sleep_unless_cancelled(poll: Duration, cancel: &AtomicBool, cancelling: bool) {
    let start = Instant::now();
    while start.elapsed() < poll {
        if !cancelling && cancel.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50).min(poll));
    }
}
