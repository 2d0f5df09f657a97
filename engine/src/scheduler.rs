//! Runs the instances that are not cached, in parallel up to `--jobs`, in dependency order.
//!
//! The main thread owns all state; worker threads only execute jobs and send results back. A
//! failed stage skips its descendants; without `--keep-going` no new stage starts after a failure,
//! but running ones finish and are cached. Ctrl-C stops stages and keeps every completed one.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use umdflow_cache::{Cache, CacheError, LeaseAttempt, Record};
use umdflow_stages::{InputArtifact, StageContext, StageError};

use crate::expand::Expanded;
use crate::keys::KeyComponents;
use crate::progress::Progress;
use crate::resolve::{DepDigests, Explainer, Resolution, components, resolve_all, usable};
use crate::resources::{Allocation, Budget, Packer, Request, progress_label, record_device};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Executed,
    Cached,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Executed => "executed",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What happened to one instance.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub key: Option<String>,
    pub reason: String,
    pub seconds: f64,
    pub record: Option<Record>,
    /// The end of the stage's log, for failures.
    pub log_tail: Option<String>,
}

impl Outcome {
    /// An instance whose result is (or just became) a committed record: nothing to run.
    pub(crate) fn cached(record: Record, reason: impl Into<String>, seconds: f64) -> Outcome {
        Outcome {
            status: Status::Cached,
            key: Some(record.key.clone()),
            reason: reason.into(),
            seconds,
            record: Some(record),
            log_tail: None,
        }
    }
}

pub struct RunOptions {
    pub jobs: usize,
    pub keep_going: bool,
    /// Threads of a stage whose `resources:` give none.
    pub threads_per_stage: usize,
    /// What running instances may hold at once (`--threads`, `--gpus`).
    pub budget: Budget,
    pub umdflow_version: String,
}

struct Job {
    index: usize,
    key: String,
    components: KeyComponents,
    inputs: Vec<Record>,
    /// `--force`: compute even if the key is cached.
    forced: bool,
    /// The threads and GPUs it holds while it runs.
    allocation: Allocation,
}

enum JobResult {
    Executed(Record),
    /// Another process computed it after this one planned (found once the lease was ours).
    CachedElsewhere(Record),
    Failed {
        message: String,
        log_tail: Option<String>,
    },
}

impl JobResult {
    /// `reason` says why the instance ran (kept for an executed one).
    fn into_outcome(self, reason: String, seconds: f64) -> Outcome {
        match self {
            JobResult::Executed(record) => Outcome {
                status: Status::Executed,
                key: Some(record.key.clone()),
                reason,
                seconds,
                record: Some(record),
                log_tail: None,
            },
            JobResult::CachedElsewhere(record) => Outcome::cached(
                record,
                "computed by another umdflow process meanwhile",
                seconds,
            ),
            JobResult::Failed { message, log_tail } => Outcome {
                status: Status::Failed,
                key: None,
                reason: message,
                seconds,
                record: None,
                log_tail,
            },
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The last lines of a log, to show with a failure.
pub(crate) fn tail(path: &Path, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let tail = all[start..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

/// `train[ratio=0.5]` -> `train_ratio_0.5_` : safe as a file name.
pub fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

struct Executor<'a> {
    expanded: &'a Expanded,
    cache: &'a Cache,
    options: &'a RunOptions,
    progress: &'a Progress,
    cancel: &'a AtomicBool,
    /// Whether the run hands out GPUs (`--gpus`); then a stage uses only those it was given.
    manages_gpus: bool,
}

impl Executor<'_> {
    /// Never panics: a panic outside the stage kind (say, while building input views) would
    /// otherwise leave the main loop waiting for this job forever.
    fn execute(&self, job: &Job) -> JobResult {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.execute_inner(job)));
        match result {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => JobResult::Failed {
                message: err.to_string(),
                log_tail: None,
            },
            Err(panic) => JobResult::Failed {
                message: format!("internal error: {}", panic_message(&*panic)),
                log_tail: None,
            },
        }
    }

    fn execute_inner(&self, job: &Job) -> Result<JobResult, CacheError> {
        let instance = &self.expanded.instances[job.index];
        let stage = &self.expanded.stages[instance.stage];
        let (_lease, waited) = match self.cache.try_lease(&job.key)? {
            LeaseAttempt::Taken(lease) => (lease, false),
            LeaseAttempt::Busy { holder, waiter } => {
                self.progress.note(&format!(
                    "{}: waiting for {holder}, which is computing the same stage in this cache",
                    instance.id
                ));
                (waiter.wait()?, true)
            }
        };
        // Another process may have finished this key since this one planned, whether or not we
        // had to wait for it: look again now that no one else can be computing it.
        if (waited || !job.forced)
            && let Some(found) = self.cache.lookup(&[&job.key])?.remove(&job.key)
            && let Ok(record) = usable(self.cache, found)
        {
            return Ok(JobResult::CachedElsewhere(record));
        }

        // Kept across failed attempts at this key (the lease makes it ours alone): a stage that
        // checkpoints there resumes on the next attempt. Removed once the key commits.
        let resume_dir = self.cache.resume_dir(&job.key)?;
        let staging = self.cache.staging()?;
        let mut artifacts = Vec::with_capacity(job.inputs.len());
        for (record, &input) in job.inputs.iter().zip(&instance.inputs) {
            let input_stage = &self.expanded.stages[self.expanded.instances[input].stage];
            let dir = staging.inputs_dir().join(&input_stage.name);
            self.cache.materialize(record, &dir)?;
            artifacts.push(InputArtifact {
                stage: input_stage.name.clone(),
                kind: input_stage.kind.name().to_string(),
                dir,
            });
        }
        let out_dir = staging.out_dir();
        let log_path = staging.log_path();
        let work_dir =
            std::fs::canonicalize(&self.expanded.dir).unwrap_or_else(|_| self.expanded.dir.clone());
        let gpus = &job.allocation.gpus;
        let bar = self.progress.stage(&progress_label(&instance.id, gpus));
        let started_at_ms = now_ms();
        let clock = Instant::now();
        let ctx = StageContext {
            id: &instance.id,
            name: &stage.name,
            params: &instance.params,
            run: instance.run.as_ref(),
            inputs: &artifacts,
            out_dir: &out_dir,
            work_dir: &work_dir,
            log_path: &log_path,
            threads: job.allocation.threads,
            gpus: self.manages_gpus.then_some(gpus.as_slice()),
            progress: &bar,
            cancel: self.cancel,
            resume: Some(umdflow_stages::Resume {
                dir: &resume_dir,
                key: &job.key,
            }),
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.kind.run(&ctx)))
                .unwrap_or_else(|panic| {
                    Err(StageError::failed(format!(
                        "internal error in stage kind `{}`: {}",
                        stage.kind.name(),
                        panic_message(&*panic)
                    )))
                });
        bar.done();
        let duration_s = clock.elapsed().as_secs_f64();
        let outcome = match (outcome, self.inputs_changed(job)) {
            (outcome, None) => outcome,
            (Ok(()), Some(changed)) => Err(StageError::failed(changed)),
            (Err(err), Some(changed)) => Err(StageError::failed(format!("{err}; also, {changed}"))),
        };
        let failure = match outcome {
            Ok(()) => match read_metrics(&out_dir) {
                Ok(metrics) => {
                    let reported = metrics
                        .as_ref()
                        .and_then(|m| m.get("device"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let device = record_device(reported, gpus);
                    let record = Record {
                        key: job.key.clone(),
                        pipeline: self.expanded.name.clone(),
                        stage: stage.name.clone(),
                        instance: instance.id.clone(),
                        components: job.components.to_value(),
                        input_digests: job.inputs.iter().map(|r| r.output_digest.clone()).collect(),
                        threads: Some(job.allocation.threads),
                        device,
                        files: Vec::new(),
                        output_digest: String::new(),
                        log: None,
                        metrics,
                        started_at_ms,
                        finished_at_ms: now_ms(),
                        duration_s,
                        umdflow_version: self.options.umdflow_version.clone(),
                    };
                    let record = self.cache.commit(staging, record)?;
                    if let Err(err) = self.cache.remove_resume(&job.key) {
                        // Harmless: `gc` removes the folders of committed keys.
                        tracing::warn!(
                            "could not remove the resume folder of {}: {err}",
                            instance.id
                        );
                    }
                    return Ok(JobResult::Executed(record));
                }
                Err(message) => message,
            },
            Err(err) => err.to_string(),
        };
        // Checked while the failed output still takes its space.
        let failure = match crate::disk::full_note(self.cache.root()) {
            Some(note) => format!("{failure}; {note}"),
            None => failure,
        };
        // Keep the failed stage's log where the user can read it; the output is discarded.
        let kept = self
            .cache
            .root()
            .join("logs")
            .join(format!("{}.failed.log", file_safe(&instance.id)));
        let log_note = std::fs::create_dir_all(kept.parent().unwrap_or(Path::new(".")))
            .and_then(|_| std::fs::copy(&log_path, &kept))
            .map(|_| format!(" (log: {})", kept.display()))
            .unwrap_or_default();
        Ok(JobResult::Failed {
            message: format!("{failure}{log_note}"),
            log_tail: tail(&log_path, 15),
        })
    }
}

impl Executor<'_> {
    /// Re-hashes the inputs' blobs after a stage ran. Input views share the blobs' files, and a
    /// stage running as root can write into them despite their read-only mode; such a write
    /// fails the stage (its result may rest on the changed bytes), and the cache forgets the
    /// damaged input and everything computed from it. A full re-hash rather than a stat check,
    /// because a file's times are coarse and a stage may restore them.
    fn inputs_changed(&self, job: &Job) -> Option<String> {
        let mut changed = Vec::new();
        for (record, &input) in job
            .inputs
            .iter()
            .zip(&self.expanded.instances[job.index].inputs)
        {
            for damage in self.cache.rehash(record) {
                changed.push(format!(
                    "{}/{damage}",
                    self.expanded.stages[self.expanded.instances[input].stage].name
                ));
            }
        }
        (!changed.is_empty()).then(|| {
            format!(
                "an input changed while the stage ran ({}): inputs are read-only, write only to \
                 $UMDFLOW_OUT. The result is discarded, and the changed input is forgotten with \
                 everything computed from it, so the next run recomputes them",
                changed.join("; ")
            )
        })
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// A `metrics.json` at the top of the output becomes the record's metrics.
fn read_metrics(out_dir: &Path) -> Result<Option<Value>, String> {
    let path = out_dir.join("metrics.json");
    match std::fs::read_to_string(&path) {
        Err(_) => Ok(None),
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| format!("the stage wrote a metrics.json that is not valid JSON: {err}")),
    }
}

/// Runs the pipeline; returns one outcome per instance (in instance order). `requests` holds
/// each instance's resources (`resources::requests`), already checked against the budget.
#[allow(clippy::too_many_arguments)]
pub fn run(
    expanded: &Expanded,
    cache: &Cache,
    deps: &DepDigests,
    options: &RunOptions,
    requests: &[Request],
    forced: &dyn Fn(usize) -> bool,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Vec<Outcome>, CacheError> {
    let count = expanded.instances.len();
    let resolutions = resolve_all(expanded, cache, deps, forced)?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
    let mut reasons: Vec<String> = vec![String::new(); count];
    let mut prechecked: Vec<Option<String>> = vec![None; count];
    for (index, resolution) in resolutions.into_iter().enumerate() {
        match resolution {
            Resolution::Cached(record) => {
                outcomes[index] = Some(Outcome::cached(*record, "cached", 0.0));
                progress.advance("");
            }
            Resolution::Run { key, reason } => {
                prechecked[index] = key;
                reasons[index] = reason;
            }
        }
    }

    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (index, instance) in expanded.instances.iter().enumerate() {
        for &input in &instance.inputs {
            dependents[input].push(index);
        }
    }
    let mut waiting_on: Vec<usize> = expanded
        .instances
        .iter()
        .map(|instance| {
            instance
                .inputs
                .iter()
                .filter(|&&i| outcomes[i].is_none())
                .count()
        })
        .collect();
    let mut ready: VecDeque<usize> = (0..count)
        .filter(|&i| outcomes[i].is_none() && waiting_on[i] == 0)
        .collect();

    // A big instance may be overtaken by as many small ones as can run at once, then it waits
    // for room (docs/decisions.md).
    let mut packer = Packer::new(&options.budget, options.jobs.max(1));
    let mut held: Vec<Option<Allocation>> = vec![None; count];
    let executor = Executor {
        expanded,
        cache,
        options,
        progress,
        cancel,
        manages_gpus: packer.manages_gpus(),
    };
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(usize, JobResult, f64)>();
    let mut explainer = Explainer::new(cache, &expanded.name);
    let mut stopping: Option<String> = None;
    let mut running = 0usize;
    // For the overall progress bar's message.
    let (mut ran, mut failed_count) = (0usize, 0usize);

    std::thread::scope(|scope| -> Result<(), CacheError> {
        for _ in 0..options.jobs.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let executor = &executor;
            scope.spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let clock = Instant::now();
                    let result = executor.execute(&job);
                    if done_tx
                        .send((job.index, result, clock.elapsed().as_secs_f64()))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(done_tx);

        loop {
            if cancel.load(Ordering::Relaxed) && stopping.is_none() {
                stopping = Some("not started: interrupted (Ctrl-C)".into());
            }
            // Start what is ready.
            while stopping.is_none() && running < options.jobs.max(1) {
                let Some((index, allocation)) = packer.next(&mut ready, requests) else {
                    break;
                };
                let instance = &expanded.instances[index];
                let inputs: Vec<Record> = instance
                    .inputs
                    .iter()
                    .filter_map(|&i| outcomes[i].as_ref().and_then(|o| o.record.clone()))
                    .collect();
                let digests: Vec<&str> = inputs.iter().map(|r| r.output_digest.as_str()).collect();
                let components = components(expanded, index, deps, &digests);
                let key = components.key();
                // A key first known now (an input reran): its output may be cached already.
                if prechecked[index].as_deref() != Some(key.as_str()) && !forced(index) {
                    if let Some(found) = cache.lookup(&[&key])?.remove(&key) {
                        match usable(cache, found) {
                            Ok(record) => {
                                outcomes[index] = Some(Outcome::cached(
                                    record,
                                    "cached (its inputs reran and produced identical outputs)",
                                    0.0,
                                ));
                                packer.release(allocation);
                                progress.advance("");
                                release_dependents(
                                    index,
                                    &dependents,
                                    &mut waiting_on,
                                    &outcomes,
                                    &mut ready,
                                );
                                continue;
                            }
                            Err(reason) => reasons[index] = reason,
                        }
                    } else if reasons[index].starts_with("input ") {
                        let stage = &expanded.stages[instance.stage];
                        let explained = explainer.explain(&stage.name, &instance.id, &components);
                        reasons[index] = format!("{} ({explained})", reasons[index]);
                    }
                }
                tracing::debug!(instance = %instance.id, key = %key, reason = %reasons[index], threads = allocation.threads, gpus = ?allocation.gpus, "starting");
                running += 1;
                held[index] = Some(allocation.clone());
                if job_tx
                    .send(Job {
                        index,
                        key,
                        components,
                        inputs,
                        forced: forced(index),
                        allocation,
                    })
                    .is_err()
                {
                    running -= 1;
                    if let Some(allocation) = held[index].take() {
                        packer.release(allocation);
                    }
                    break;
                }
            }
            if running == 0 && !ready.is_empty() && stopping.is_none() {
                // Unreachable once `resources::requests` checked every request against the
                // budget; without it an instance that never fits would hang the run.
                stopping = Some("not started: needs more threads or GPUs than the run has".into());
            }
            if running == 0 && (ready.is_empty() || stopping.is_some()) {
                break;
            }
            let (index, result, seconds) = match done_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(done) => done,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            running -= 1;
            if let Some(allocation) = held[index].take() {
                packer.release(allocation);
            }
            let id = &expanded.instances[index].id;
            tracing::debug!(instance = %id, seconds, "finished");
            if let JobResult::Failed { message, .. } = &result {
                if cancel.load(Ordering::Relaxed) {
                    stopping.get_or_insert_with(|| "not started: interrupted (Ctrl-C)".into());
                } else if !options.keep_going {
                    stopping.get_or_insert_with(|| {
                        format!(
                            "not started: {id} failed (use --keep-going to run independent stages)"
                        )
                    });
                }
                progress.note(&format!("stage {id} failed: {message}"));
            }
            let outcome = result.into_outcome(std::mem::take(&mut reasons[index]), seconds);
            match outcome.status {
                Status::Executed => ran += 1,
                Status::Failed => failed_count += 1,
                Status::Cached | Status::Skipped => {}
            }
            progress.advance(&format!("ran {ran} failed {failed_count}"));
            let failed = outcome.status == Status::Failed;
            outcomes[index] = Some(outcome);
            if failed {
                skip_descendants(index, &dependents, &mut outcomes, expanded, progress);
            } else {
                release_dependents(index, &dependents, &mut waiting_on, &outcomes, &mut ready);
            }
        }
        drop(job_tx);
        Ok(())
    })?;

    let stop_reason = stopping.unwrap_or_else(|| "not started".into());
    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            outcome.unwrap_or_else(|| Outcome {
                status: Status::Skipped,
                key: prechecked[index].clone(),
                reason: stop_reason.clone(),
                seconds: 0.0,
                record: None,
                log_tail: None,
            })
        })
        .collect())
}

/// One instance whose inputs are all cached, through the same path as every job of [`run`]:
/// take the key's lease, look the key up again (another process may have committed it), build
/// the input views, run the kind, commit. What the Slurm worker runs on a compute node.
/// `inputs` are the records of the instance's inputs, in input order.
#[allow(clippy::too_many_arguments)]
pub fn execute_one(
    expanded: &Expanded,
    cache: &Cache,
    deps: &DepDigests,
    options: &RunOptions,
    progress: &Progress,
    cancel: &AtomicBool,
    index: usize,
    inputs: Vec<Record>,
    forced: bool,
    reason: String,
) -> Outcome {
    let digests: Vec<&str> = inputs.iter().map(|r| r.output_digest.as_str()).collect();
    let components = components(expanded, index, deps, &digests);
    let job = Job {
        index,
        key: components.key(),
        components,
        inputs,
        forced,
        // The job's own allocation (Slurm's) bounds it; GPUs, if any, come from the cluster.
        allocation: Allocation {
            threads: options.threads_per_stage,
            gpus: Vec::new(),
        },
    };
    let executor = Executor {
        expanded,
        cache,
        options,
        progress,
        cancel,
        manages_gpus: false,
    };
    let clock = Instant::now();
    let result = executor.execute(&job);
    result.into_outcome(reason, clock.elapsed().as_secs_f64())
}

/// An instance is done: dependents whose inputs are now all done become ready.
fn release_dependents(
    done: usize,
    dependents: &[Vec<usize>],
    waiting_on: &mut [usize],
    outcomes: &[Option<Outcome>],
    ready: &mut VecDeque<usize>,
) {
    for &next in &dependents[done] {
        waiting_on[next] -= 1;
        if waiting_on[next] == 0 && outcomes[next].is_none() {
            ready.push_back(next);
        }
    }
}

/// A failed instance: every descendant not yet decided is skipped, saying why.
pub(crate) fn skip_descendants(
    failed: usize,
    dependents: &[Vec<usize>],
    outcomes: &mut [Option<Outcome>],
    expanded: &Expanded,
    progress: &Progress,
) {
    let mut stack = vec![failed];
    while let Some(index) = stack.pop() {
        for &next in &dependents[index] {
            if outcomes[next].is_none() {
                let reason = if index == failed {
                    format!("input {} failed", expanded.instances[failed].id)
                } else {
                    format!(
                        "input {} skipped ({} failed)",
                        expanded.instances[index].id, expanded.instances[failed].id
                    )
                };
                outcomes[next] = Some(Outcome {
                    status: Status::Skipped,
                    key: None,
                    reason,
                    seconds: 0.0,
                    record: None,
                    log_tail: None,
                });
                progress.advance("");
                stack.push(next);
            }
        }
    }
}

/// Where the cache of a pipeline lives: `--cache`, else `UMDFLOW_CACHE`, else `.umdflow/` beside
/// the pipeline file.
pub fn cache_dir(explicit: Option<&Path>, pipeline_dir: &Path) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("UMDFLOW_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    pipeline_dir.join(".umdflow")
}
