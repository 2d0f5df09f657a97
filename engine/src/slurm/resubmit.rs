//! Resubmitting jobs the cluster cut short: one that ended `TIMEOUT`, `PREEMPTED` or `NODE_FAIL`
//! did nothing wrong, so the driver submits it again (at most `executor.max_resubmits` times) and
//! its new worker resumes from the checkpoint the first one left in the key's resume folder.
//!
//! Slurm has meanwhile cancelled the jobs waiting on it (`afterok` can no longer be satisfied and
//! every job is submitted with `--kill-on-invalid-dep=yes`), so they are submitted again too, each
//! `afterok` on the new jobs of its inputs. A dependent whose cancellation is seen before its
//! input's end is known is parked until it is: resubmitted with its input, or skipped with it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::driver::Job;
use super::queue::{self, JobState};
use super::runs::RunFolder;
use super::submit::Submitter;
use super::worker::{Done, Report};
use crate::expand::Expanded;
use crate::progress::Progress;
use crate::scheduler::Outcome;

/// Slurm's states of a job stopped by the cluster rather than by its own failure.
const CUT_SHORT: [&str; 3] = ["TIMEOUT", "PREEMPTED", "NODE_FAIL"];

/// The default of `executor.max_resubmits`.
pub const DEFAULT_MAX_RESUBMITS: u32 = 2;

/// The run's jobs and what is known of them, as the driver keeps them.
pub(super) struct Graph<'a> {
    pub jobs: &'a mut BTreeMap<usize, Job>,
    pub outcomes: &'a [Option<Outcome>],
    pub dependents: &'a [Vec<usize>],
    pub expanded: &'a Expanded,
    /// Why each instance runs; a resubmission is added, so the summary says so.
    pub reasons: &'a mut [String],
    /// Where the run's jobs are recorded (`umdflow status`, `cancel`, a later run's adoption).
    pub folder: &'a mut RunFolder,
}

pub(super) struct Resubmits<'a> {
    max: u32,
    /// Resubmissions so far, per instance.
    counts: BTreeMap<usize, u32>,
    /// Jobs Slurm cancelled because an input's job ended badly, while that input's outcome is not
    /// decided yet (the driver no longer holds them).
    parked: BTreeMap<usize, Job>,
    /// Submits a job again as the run submitted it first, less its dependencies.
    submitter: &'a Submitter<'a>,
    pub total: u32,
}

impl<'a> Resubmits<'a> {
    pub fn new(max: u32, submitter: &'a Submitter<'a>) -> Resubmits<'a> {
        Resubmits {
            max,
            counts: BTreeMap::new(),
            parked: BTreeMap::new(),
            submitter,
            total: 0,
        }
    }

    /// Called for a job that left the queue or ended, before its outcome is decided (it is no
    /// longer in `graph.jobs`). True when it is taken care of here: resubmitted, or parked; then
    /// the driver decides nothing for it now.
    pub fn handle(
        &mut self,
        index: usize,
        job: &Job,
        state: Option<&JobState>,
        graph: &mut Graph<'_>,
        progress: &Progress,
    ) -> bool {
        // `max_resubmits: 0`: every end is final.
        if self.max == 0 {
            return false;
        }
        let Some(state) = state else {
            return false;
        };
        let inputs = &graph.expanded.instances[index].inputs;
        if state.state == "CANCELLED"
            && state.reason == "DependencyNeverSatisfied"
            && inputs.iter().any(|&input| graph.outcomes[input].is_none())
        {
            self.parked.insert(index, job.clone());
            return true;
        }
        let reported_success = Report::read(&job.report).is_some_and(|r| r.status != Done::Failed);
        let count = self.counts.get(&index).copied().unwrap_or(0);
        if !CUT_SHORT.contains(&state.state.as_str()) || reported_success || count >= self.max {
            return false;
        }
        let id = &graph.expanded.instances[index].id;
        let again = match self.resubmit(index, job, count + 1, graph) {
            Ok(again) => again,
            Err(err) => {
                // Reported as the failure it is; a rerun submits it again and it still resumes.
                progress.note(&format!("{id}: could not resubmit job {}: {err:#}", job.id));
                return false;
            }
        };
        self.counts.insert(index, count + 1);
        self.total += 1;
        progress.note(&format!(
            "{id}: Slurm job {} ended {}; resubmitted as job {again} ({} of at most {}), resuming \
             from its checkpoint if it left one",
            job.id,
            state.state,
            count + 1,
            self.max
        ));
        let note = format!("resubmitted {}× after {}", count + 1, state.state);
        let reason = &mut graph.reasons[index];
        *reason = match reason.split_once("; resubmitted ") {
            Some((planned, _)) => format!("{planned}; {note}"),
            None if reason.is_empty() => note,
            None => format!("{reason}; {note}"),
        };
        true
    }

    /// Submits `index` again, then every undecided descendant whose job Slurm cancelled or will
    /// (they were `afterok` on the old job), each after the current jobs of its inputs.
    fn resubmit(
        &mut self,
        index: usize,
        job: &Job,
        attempt: u32,
        graph: &mut Graph<'_>,
    ) -> Result<String> {
        let mut again = BTreeSet::from([index]);
        let mut stack = vec![index];
        while let Some(next) = stack.pop() {
            for &dependent in &graph.dependents[next] {
                let waiting =
                    graph.jobs.contains_key(&dependent) || self.parked.contains_key(&dependent);
                if graph.outcomes[dependent].is_none() && waiting && again.insert(dependent) {
                    stack.push(dependent);
                }
            }
        }
        let old: Vec<String> = again
            .iter()
            .filter_map(|i| graph.jobs.get(i).map(|j| j.id.clone()))
            .collect();
        if !old.is_empty() {
            // Pending on the old job: never starting, or cancelled already (then this fails).
            let ids: Vec<&str> = old.iter().map(String::as_str).collect();
            if let Err(err) = queue::cancel(&ids) {
                tracing::debug!("cancelling the dependents of a resubmitted job: {err:#}");
            }
        }
        let mut first = None;
        // Instances come after their inputs, so index order submits inputs first.
        for &i in &again {
            let previous = if i == index {
                job.clone()
            } else {
                match graph.jobs.remove(&i).or_else(|| self.parked.remove(&i)) {
                    Some(previous) => previous,
                    None => continue,
                }
            };
            let after: Vec<String> = graph.expanded.instances[i]
                .inputs
                .iter()
                .filter_map(|input| graph.jobs.get(input).map(|j| j.id.clone()))
                .collect();
            // The old attempt's report must not stand for the new one.
            let _ = std::fs::remove_file(&previous.report);
            // A plain job with its own log, also when the first attempt was an array's task.
            let new_job = self.submitter.again(graph.folder, i, &after, attempt)?;
            tracing::debug!(instance = %new_job.instance, job = %new_job.job, "resubmitted");
            first.get_or_insert_with(|| new_job.job.clone());
            graph.jobs.insert(i, Job::from(new_job));
        }
        Ok(first.unwrap_or_default())
    }
}
