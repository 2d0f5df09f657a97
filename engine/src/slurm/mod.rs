//! The Slurm executor: `umdflow run FILE --executor slurm`.
//!
//! The driver (`driver.rs`) plans like a local run, takes the pipeline's driver lock and adopts
//! the jobs of an earlier driver that is gone (`adopt.rs`), then submits the instances that are
//! not cached (`submit.rs`): the ready ones of one stage as one job array (`array.rs`), the others
//! one job each, `afterok` on the jobs of their inputs, so that Slurm schedules the whole graph.
//! Each job runs `umdflow worker` (`worker.rs`), which resolves its one instance exactly as a local
//! run would and executes it through the scheduler's own path (lease, staging, commit). The driver
//! then looks at the queue with one `squeue` per poll (`queue.rs`) and reads each finished job's
//! result from the cache. `sbatch.rs` builds the submission's arguments; `runs.rs` keeps each
//! run's job list, which `umdflow status` and `umdflow cancel` read.

mod adopt;
mod array;
mod driver;
mod queue;
mod resubmit;
pub mod runs;
mod sbatch;
mod submit;
pub mod worker;

use std::path::PathBuf;
use std::time::Duration;

pub use driver::run;

pub use sbatch::JobResources;

use crate::diagnostics::Invalid;
use crate::resources::memory_and_time;
use crate::spec::{RawExecutor, Source};

/// How often the driver looks at the queue unless `executor.poll_seconds` says otherwise.
const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// `sbatch` arguments the driver sets itself: given in `sbatch_args` they would break it.
const RESERVED: [&str; 10] = [
    "--dependency",
    "-d",
    "--output",
    "-o",
    "--error",
    "-e",
    "--wrap",
    "--parsable",
    "--array",
    "-a",
];

/// Everything the driver needs besides the pipeline.
pub struct SlurmOptions {
    /// Per stage (in the file's order): what its jobs ask for, from `resources:`.
    pub resources: Vec<JobResources>,
    /// The `umdflow` binary the jobs run (this one: the compute nodes must see the same path).
    pub program: PathBuf,
    /// `--threads-per-stage`, if given: passed to every worker.
    pub threads: Option<usize>,
    pub executor: RawExecutor,
    pub poll: Duration,
    /// How often a job the cluster cut short (time limit, preemption) is submitted again.
    pub max_resubmits: u32,
}

impl SlurmOptions {
    /// Reads and checks the pipeline's `executor:` block (absent: the cluster's defaults).
    pub fn from_source(
        source: &Source,
        program: PathBuf,
        threads: Option<usize>,
    ) -> Result<SlurmOptions, Invalid> {
        let executor = source.raw.executor.clone().unwrap_or_default();
        let mut reporter = source.reporter();
        let poll = match executor.poll_seconds {
            None => DEFAULT_POLL,
            Some(seconds) if seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0 => {
                Duration::from_secs_f64(seconds)
            }
            Some(seconds) => {
                reporter.at_value(
                    "executor.poll_seconds",
                    format!(
                        "`executor.poll_seconds` is {seconds}; expected seconds between 0 and 3600, such as 5"
                    ),
                );
                DEFAULT_POLL
            }
        };
        for (i, arg) in executor.sbatch_args.iter().enumerate() {
            let name = arg.split('=').next().unwrap_or(arg);
            if RESERVED.contains(&name) {
                reporter.at_value(
                    &format!("executor.sbatch_args[{i}]"),
                    format!(
                        "`{arg}`: umdflow sets {name} itself for every job (dependencies, log and \
                         command); remove it from `executor.sbatch_args`"
                    ),
                );
            }
        }
        let mut resources = Vec::with_capacity(source.raw.stages.0.len());
        for (name, stage) in &source.raw.stages.0 {
            let raw = stage.resources.clone().unwrap_or_default();
            let (memory_mib, time_s) = memory_and_time(&mut reporter, name, &raw);
            resources.push(JobResources {
                threads: raw.threads,
                memory_mib,
                time_s,
                gpus: raw.gpus,
            });
        }
        reporter.finish()?;
        Ok(SlurmOptions {
            resources,
            program,
            threads,
            max_resubmits: executor
                .max_resubmits
                .unwrap_or(resubmit::DEFAULT_MAX_RESUBMITS),
            executor,
            poll,
        })
    }
}
