//! The driver of `umdflow run --executor slurm`: plan, submit what is missing as a graph of
//! `afterok` jobs, then watch the queue (one `squeue` per poll) until every job has ended, and
//! turn what the jobs left in the cache into the same outcomes a local run returns.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use umdflow_cache::Cache;

use super::SlurmOptions;
use super::adopt::{self, DriverLock};
use super::array;
use super::queue::{self, JobState};
use super::resubmit::{Graph, Resubmits};
use super::runs::{self, RecordedJob, RunFolder};
use super::submit::Submitter;
use super::worker::{Done, Report};
use crate::commands::Loaded;
use crate::progress::Progress;
use crate::resolve::{Resolution, resolve_all, usable};
use crate::scheduler::{Outcome, RunOptions, Status, skip_descendants, tail};

/// A submitted (or adopted) instance.
#[derive(Clone)]
pub(super) struct Job {
    pub(super) id: String,
    /// Slurm's stdout and stderr of the job.
    pub(super) log: PathBuf,
    /// The worker's report.
    pub(super) report: PathBuf,
}

impl From<RecordedJob> for Job {
    fn from(job: RecordedJob) -> Job {
        Job {
            id: job.job,
            log: job.log,
            report: job.report,
        }
    }
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
    let (mut outcomes, mut reasons) = plan(loaded, cache, forced)?;
    if outcomes.iter().all(Option::is_some) {
        advance(progress, count);
        return Ok(outcomes.into_iter().flatten().collect());
    }
    // One driver per pipeline and cache: a second one waits, then plans against what the first
    // committed.
    let waiting = "not started: interrupted (Ctrl-C) while waiting for another driver";
    let Some((_lock, waited)) = DriverLock::take(cache.root(), &expanded.name, progress, cancel)?
    else {
        return Ok(unfinished(outcomes, &vec![None; count], waiting));
    };
    if waited {
        (outcomes, reasons) = plan(loaded, cache, forced)?;
    }
    advance(progress, outcomes.iter().filter(|o| o.is_some()).count());
    if outcomes.iter().all(Option::is_some) {
        return Ok(outcomes.into_iter().flatten().collect());
    }
    let me = adopt::this_driver(loaded, slurm.poll)?;
    let needed = |index: usize| outcomes[index].is_none();
    let Some(adoption) = adopt::adopt(cache.root(), expanded, &me, &needed, progress, cancel)?
    else {
        return Ok(unfinished(outcomes, &vec![None; count], waiting));
    };

    let mut folder = RunFolder::create(cache.root(), &expanded.name, &me)?;
    let mut jobs: BTreeMap<usize, Job> = BTreeMap::new();
    if !adoption.jobs.is_empty() {
        let taken: Vec<RecordedJob> = adoption.jobs.values().cloned().collect();
        folder.record(&taken)?;
    }
    for dir in &adoption.folders {
        if let Err(err) = runs::hand_over(dir) {
            tracing::warn!("{err:#}: `umdflow status` may list its jobs twice");
        }
    }
    let adopted = adoption.jobs.len();
    for (index, job) in adoption.jobs {
        tracing::debug!(instance = %job.instance, job = %job.job, "adopted");
        jobs.insert(index, Job::from(job));
    }

    let mut submitter = Submitter::new(loaded, cache.root(), slurm, forced)?;
    let started = Instant::now();
    let mut not_submitted: Vec<Option<String>> = vec![None; count];
    let mut submitted: Vec<String> = Vec::new();
    let submission = submit(
        loaded,
        &mut submitter,
        &mut folder,
        &outcomes,
        &mut jobs,
        &mut submitted,
        &mut not_submitted,
        cancel,
    );
    if let Err(err) = submission {
        let ids: Vec<&str> = submitted.iter().map(String::as_str).collect();
        if let Err(cancel_err) = queue::cancel(&ids) {
            tracing::warn!("could not cancel the jobs submitted so far: {cancel_err:#}");
        }
        return Err(err.context(format!(
            "cancelled the {} jobs this run submitted before it",
            ids.len()
        )));
    }
    let adopted_note = if adopted > 0 {
        format!("; watching {adopted} jobs adopted from a driver that is gone")
    } else {
        String::new()
    };
    progress.note(&format!(
        "submitted {} Slurm jobs in {:.2} s{adopted_note} (job logs in {})",
        submitted.len(),
        started.elapsed().as_secs_f64(),
        folder.dir.display()
    ));

    let mut resubmits = Resubmits::new(slurm.max_resubmits, &submitter);
    let stop_reason = watch(
        loaded,
        cache,
        options,
        slurm,
        &mut folder,
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
    let all_succeeded = outcomes.iter().all(|o| {
        o.as_ref()
            .is_some_and(|o| matches!(o.status, Status::Executed | Status::Cached))
    });
    if all_succeeded {
        // Nothing to look at: the outputs are in the cache, the logs in the records.
        for dir in std::iter::once(&folder.dir).chain(&adoption.folders) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let stop_reason = stop_reason.unwrap_or_else(|| "not started".into());
    Ok(unfinished(outcomes, &not_submitted, &stop_reason))
}

fn advance(progress: &Progress, cached: usize) {
    for _ in 0..cached {
        progress.advance("");
    }
}

/// What is cached (`Some`), and why each other instance must run.
fn plan(
    loaded: &Loaded,
    cache: &Cache,
    forced: &dyn Fn(usize) -> bool,
) -> Result<(Vec<Option<Outcome>>, Vec<String>)> {
    let resolutions = resolve_all(&loaded.expanded, cache, &loaded.deps, forced)?;
    let mut outcomes = Vec::with_capacity(resolutions.len());
    let mut reasons = Vec::with_capacity(resolutions.len());
    for resolution in resolutions {
        match resolution {
            Resolution::Cached(record) => {
                outcomes.push(Some(Outcome::cached(*record, "cached", 0.0)));
                reasons.push(String::new());
            }
            Resolution::Run { reason, .. } => {
                outcomes.push(None);
                reasons.push(reason);
            }
        }
    }
    Ok((outcomes, reasons))
}

/// Submits every instance that is neither cached nor adopted: the ready ones (all inputs cached)
/// first, many of one stage in one array, then the others in instance order (inputs before their
/// dependents), each `afterok` on its inputs' jobs.
#[allow(clippy::too_many_arguments)]
fn submit(
    loaded: &Loaded,
    submitter: &mut Submitter,
    folder: &mut RunFolder,
    outcomes: &[Option<Outcome>],
    jobs: &mut BTreeMap<usize, Job>,
    submitted: &mut Vec<String>,
    not_submitted: &mut [Option<String>],
    cancel: &AtomicBool,
) -> Result<()> {
    let expanded = &loaded.expanded;
    let ready: Vec<usize> = (0..expanded.instances.len())
        .filter(|&index| outcomes[index].is_none() && !jobs.contains_key(&index))
        .filter(|&index| {
            expanded.instances[index]
                .inputs
                .iter()
                .all(|&input| outcomes[input].is_some())
        })
        .collect();
    let groups: Vec<(usize, (usize, bool))> = ready
        .iter()
        .map(|&index| (index, submitter.group_of(index)))
        .collect();
    let shared = groups.len() > 1 && {
        let mut keys: Vec<_> = groups.iter().map(|(_, key)| *key).collect();
        keys.sort_unstable();
        keys.windows(2).any(|pair| pair[0] == pair[1])
    };
    // Only worth a question to the controller when two instances could share an array.
    let max = if shared { queue::max_array_size() } else { 1 };
    for batch in array::batches(groups, max) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let [index] = batch[..] {
            let job = submitter.single(folder, index, &[])?;
            submitted.push(job.job.clone());
            jobs.insert(index, Job::from(job));
        } else {
            for (&index, job) in batch.iter().zip(submitter.array(folder, &batch)?) {
                submitted.push(job.job.clone());
                jobs.insert(index, Job::from(job));
            }
        }
    }
    for index in 0..expanded.instances.len() {
        if outcomes[index].is_some() || jobs.contains_key(&index) {
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
        match submitter.single(folder, index, &after) {
            Ok(job) => {
                submitted.push(job.job.clone());
                jobs.insert(index, Job::from(job));
            }
            // An input's job ended badly before this one was submitted.
            Err(err) if err.to_string().contains("Job dependency problem") => {
                not_submitted[index] = Some(format!("not submitted: {err:#}"));
            }
            Err(err) => return Err(err.context(format!("submitting the job of {}", instance.id))),
        }
    }
    Ok(())
}

/// The outcomes, with every instance that has none skipped for its reason.
fn unfinished(
    outcomes: Vec<Option<Outcome>>,
    not_submitted: &[Option<String>],
    stop_reason: &str,
) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            outcome.unwrap_or_else(|| Outcome {
                status: Status::Skipped,
                key: None,
                reason: not_submitted[index]
                    .clone()
                    .unwrap_or_else(|| stop_reason.to_string()),
                seconds: 0.0,
                record: None,
                log_tail: None,
            })
        })
        .collect()
}

/// Polls the queue until every job has ended; returns why the run stopped early, if it did.
#[allow(clippy::too_many_arguments)]
fn watch(
    loaded: &Loaded,
    cache: &Cache,
    options: &RunOptions,
    slurm: &SlurmOptions,
    folder: &mut RunFolder,
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
    // Jobs this run cancelled: an array task cancelled while pending leaves no trace in squeue.
    let mut cancelled: HashSet<String> = HashSet::new();
    while !jobs.is_empty() {
        folder.heartbeat();
        if cancel.load(Ordering::Relaxed) && cancelled_at.is_none() {
            stopping = Some("not started: interrupted (Ctrl-C); its job was cancelled".into());
            let ids: Vec<&str> = jobs.values().map(|job| job.id.as_str()).collect();
            progress.note(&format!("cancelling {} Slurm jobs", ids.len()));
            queue::cancel(&ids)?;
            cancelled.extend(ids.iter().map(|id| id.to_string()));
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
                Some(state) => finished.push((index, job.id.clone(), Some(state.clone()))),
                None => finished.push((index, job.id.clone(), vanished(&cancelled, &job.id))),
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
                folder,
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
            cancelled.extend(to_cancel);
        }
        if !jobs.is_empty() {
            sleep_unless_cancelled(slurm.poll, cancel, cancelled_at.is_some());
        }
    }
    Ok(stopping)
}

/// The state of a job squeue no longer lists. Other jobs stay listed for `MinJobAge` after they
/// end, but Slurm forgets an array task cancelled while pending at once (22.05.8), whether this
/// run, `umdflow cancel` or `scancel` cancelled it.
fn vanished(cancelled: &HashSet<String>, id: &str) -> Option<JobState> {
    let reason = if cancelled.contains(id) {
        "cancelled by this run"
    } else if id.contains('_') {
        "an array task no longer listed: cancelled while it was pending"
    } else {
        return None;
    };
    Some(JobState {
        state: "CANCELLED".into(),
        reason: reason.into(),
    })
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
