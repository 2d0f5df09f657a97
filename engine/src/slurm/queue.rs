//! Talking to Slurm: `sbatch`, one `squeue` for every job of a poll, `scancel`; and reading
//! `squeue`'s answer.

use std::collections::HashMap;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::array;

/// `squeue`'s output format: job id, state, reason, separated by `|` (never in any of them).
const FORMAT: &str = "%i|%T|%r";

/// One job as `squeue` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, ...
    pub state: String,
    /// Why it pends or how it ended: `Dependency`, `NonZeroExitCode`, `TimeLimit`, `None`, ...
    pub reason: String,
}

impl JobState {
    /// Still queued or running (or cleaning up): its result is not final yet.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
                | "RESV_DEL_HOLD"
        )
    }

    pub fn is_pending(&self) -> bool {
        self.state == "PENDING"
    }

    /// Pending on an input that failed: it can never start (clusters without
    /// `kill_invalid_depend` keep such jobs forever unless cancelled).
    pub fn never_starts(&self) -> bool {
        self.is_pending() && self.reason == "DependencyNeverSatisfied"
    }
}

/// Parses `squeue -h -o '%i|%T|%r'` output: job id -> state, with a pending array range
/// (`123_[5-499]`) as one entry per task. Lines of another shape are skipped.
pub fn parse_squeue(text: &str) -> HashMap<String, JobState> {
    let mut jobs = HashMap::new();
    for line in text.lines() {
        let mut fields = line.trim().splitn(3, '|');
        let (Some(id), Some(state)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (id, state) = (id.trim(), state.trim());
        if id.is_empty() || state.is_empty() {
            continue;
        }
        let state = JobState {
            state: state.to_string(),
            reason: fields.next().unwrap_or("").trim().to_string(),
        };
        for task in array::expand_id(id) {
            jobs.insert(task, state.clone());
        }
    }
    jobs
}

/// Runs a Slurm command; its stdout, or an error with its stderr.
fn slurm(program: &str, args: &[String]) -> Result<String> {
    let output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{program}` is not on PATH: `--executor slurm` runs on a machine that can submit \
             Slurm jobs (a login node with the Slurm client commands)"
        ),
        Err(err) => return Err(err).with_context(|| format!("running `{program}`")),
    };
    if !output.status.success() {
        bail!(
            "`{program}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Submits one job; its id.
pub fn submit(args: &[String]) -> Result<String> {
    let stdout = slurm("sbatch", args)?;
    super::sbatch::parse_job_id(&stdout).map_err(anyhow::Error::msg)
}

/// The state of every listed job that Slurm still knows, in one `squeue` (array tasks are asked
/// for through their array). A job missing from the answer has left the controller's memory (it
/// finished long enough ago, or it was an array task cancelled while pending).
pub fn query(ids: &[&str]) -> Result<HashMap<String, JobState>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut asked: Vec<&str> = ids.iter().map(|id| array::queried_id(id)).collect();
    asked.sort_unstable();
    asked.dedup();
    let args = [
        "--noheader".to_string(),
        "--states=all".to_string(),
        format!("--jobs={}", asked.join(",")),
        format!("--format={FORMAT}"),
    ];
    match slurm("squeue", &args) {
        Ok(stdout) => Ok(parse_squeue(&stdout)),
        // Every listed job is unknown (22.05 fails only when none is known; others are dropped).
        Err(err) if err.to_string().contains("Invalid job id specified") => Ok(HashMap::new()),
        Err(err) => Err(err),
    }
}

/// How many tasks one array may have on this cluster (`MaxArraySize`; 0: no arrays). When
/// `scontrol` cannot say, a size every cluster with the default accepts.
pub fn max_array_size() -> usize {
    let args = ["show".to_string(), "config".to_string()];
    match slurm("scontrol", &args) {
        Ok(config) => array::parse_max_array_size(&config).unwrap_or_else(|| {
            tracing::warn!("`scontrol show config` names no MaxArraySize; assuming the default");
            array::DEFAULT_MAX_ARRAY_SIZE
        }),
        Err(err) => {
            tracing::warn!("{err:#}; assuming the default MaxArraySize");
            array::DEFAULT_MAX_ARRAY_SIZE
        }
    }
}

/// Cancels jobs, in one `scancel`.
pub fn cancel(ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let args: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    slurm("scancel", &args).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `squeue --noheader --states=all --jobs=... --format='%i|%T|%r'` on Slurm 22.05.8 (the
    /// one-node cluster of scripts/slurm-ci.sh): a finished job, a running one, one pending on
    /// its input, one pending for priority, a failed job (exit 3), the job that was `afterok` on
    /// it (cancelled by `kill_invalid_depend`), one cancelled by scancel, and the error line of a
    /// list where no job is known (on stderr; stdout is empty then).
    #[test]
    fn squeue_output_captured_on_a_real_cluster_becomes_states() {
        let text = "1|COMPLETED|None\n44|RUNNING|None\n41|PENDING|Dependency\n42|PENDING|Priority\n\
                    40|FAILED|NonZeroExitCode\n43|CANCELLED|DependencyNeverSatisfied\n\
                    45|CANCELLED|None\n";
        let jobs = parse_squeue(text);
        assert_eq!(jobs.len(), 7);
        let active: Vec<&str> = ["1", "44", "41", "42", "40", "43", "45"]
            .into_iter()
            .filter(|id| jobs[*id].is_active())
            .collect();
        assert_eq!(active, ["44", "41", "42"]);
        assert!(jobs["41"].is_pending() && !jobs["41"].never_starts());
        assert_eq!(jobs["40"].state, "FAILED");
        assert_eq!(jobs["40"].reason, "NonZeroExitCode");
        assert_eq!(jobs["43"].state, "CANCELLED");
        assert!(
            !jobs["43"].never_starts(),
            "already cancelled, nothing to do"
        );
        assert!(parse_squeue("").is_empty());
        assert!(parse_squeue("slurm_load_jobs error: Invalid job id specified\n").is_empty());
    }

    #[test]
    fn a_job_pending_on_a_failed_input_never_starts() {
        // What clusters without `kill_invalid_depend` show instead of cancelling the job.
        let jobs = parse_squeue("46|PENDING|DependencyNeverSatisfied\n");
        assert!(jobs["46"].never_starts());
    }
}
