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
}

pub(super) struct Resubmits<'a> {
    max: u32,
    /// Resubmissions so far, per instance.
    counts: BTreeMap<usize, u32>,
    /// Jobs Slurm cancelled because an input's job ended badly, while that input's outcome is not
    /// decided yet (the driver no longer holds them).
    parked: BTreeMap<usize, Job>,
    /// Where `umdflow status` and `cancel` look for the run's jobs.
    folder: Option<&'a mut RunFolder>,
    pub total: u32,
}

impl<'a> Resubmits<'a> {
    pub fn new(max: u32, folder: Option<&'a mut RunFolder>) -> Resubmits<'a> {
        Resubmits {
            max,
            counts: BTreeMap::new(),
            parked: BTreeMap::new(),
            folder,
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
        // `max_resubmits: 0` is today's behaviour: every end is final. A job submitted by another
        // driver (adopted) has no recorded arguments to submit again.
        if self.max == 0 || job.args.is_empty() {
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
        let again = match self.resubmit(index, job, graph) {
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
    fn resubmit(&mut self, index: usize, job: &Job, graph: &mut Graph<'_>) -> Result<String> {
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
            let args = with_dependency(&previous.args, &after);
            // The old attempt's report must not stand for the new one.
            let _ = std::fs::remove_file(&previous.report);
            let new_id = queue::submit(&args)?;
            let instance = &graph.expanded.instances[i].id;
            if let Some(folder) = &mut self.folder
                && let Err(err) = folder.record(&new_id, instance)
            {
                tracing::warn!("{err:#}: `umdflow status` and `cancel` will not see job {new_id}");
            }
            tracing::debug!(instance = %instance, job = %new_id, "resubmitted");
            first.get_or_insert_with(|| new_id.clone());
            graph.jobs.insert(
                i,
                Job {
                    id: new_id,
                    args,
                    ..previous
                },
            );
        }
        Ok(first.unwrap_or_default())
    }
}

/// `args` with its dependency replaced: `afterok` on `after` (with `--kill-on-invalid-dep=yes`),
/// or none when every input is already done; and the job log appended to, so that it keeps the
/// attempts before.
fn with_dependency(args: &[String], after: &[String]) -> Vec<String> {
    let replaced = ["--dependency=", "--kill-on-invalid-dep", "--open-mode"];
    let mut out: Vec<String> = args
        .iter()
        .filter(|a| !replaced.iter().any(|r| a.starts_with(r)))
        .cloned()
        .collect();
    // Where `sbatch::arguments` puts them: before the settings, the command last.
    let mut at = out.len().saturating_sub(1).min(4);
    if !after.is_empty() {
        out.insert(at, format!("--dependency=afterok:{}", after.join(":")));
        out.insert(at + 1, "--kill-on-invalid-dep=yes".into());
        at += 2;
    }
    out.insert(at, "--open-mode=append".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_resubmission_waits_on_the_new_jobs_of_its_inputs_only() {
        let first = args(&[
            "--parsable",
            "--job-name=p/b",
            "--output=/c/b.out",
            "--chdir=/w",
            "--dependency=afterok:11:12",
            "--kill-on-invalid-dep=yes",
            "--time=1",
            "--wrap=exec umdflow worker",
        ]);
        assert_eq!(
            with_dependency(&first, &["21".to_string()]),
            args(&[
                "--parsable",
                "--job-name=p/b",
                "--output=/c/b.out",
                "--chdir=/w",
                "--dependency=afterok:21",
                "--kill-on-invalid-dep=yes",
                "--open-mode=append",
                "--time=1",
                "--wrap=exec umdflow worker",
            ])
        );
        let again = with_dependency(&with_dependency(&first, &[]), &[]);
        assert_eq!(
            again,
            args(&[
                "--parsable",
                "--job-name=p/b",
                "--output=/c/b.out",
                "--chdir=/w",
                "--open-mode=append",
                "--time=1",
                "--wrap=exec umdflow worker",
            ])
        );
    }
}
