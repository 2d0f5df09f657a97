//! Submitting instances: one plain `sbatch` for an instance (with `afterok` on its inputs' jobs),
//! one `sbatch --array` for many ready instances of one stage (`array.rs`). Every job is recorded
//! in the run folder as soon as Slurm accepted it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::SlurmOptions;
use super::array;
use super::queue;
use super::runs::{RecordedJob, RunFolder};
use super::sbatch::{self, Submission};
use crate::commands::Loaded;

pub struct Submitter<'a> {
    loaded: &'a Loaded,
    slurm: &'a SlurmOptions,
    forced: &'a dyn Fn(usize) -> bool,
    /// `umdflow worker FILE --cache DIR [--set ...]`: what every job runs, less the instance.
    worker_base: Vec<String>,
    workdir: PathBuf,
    /// Arrays submitted so far: names each array's list and logs.
    arrays: usize,
}

impl<'a> Submitter<'a> {
    pub fn new(
        loaded: &'a Loaded,
        cache_root: &Path,
        slurm: &'a SlurmOptions,
        forced: &'a dyn Fn(usize) -> bool,
    ) -> Result<Submitter<'a>> {
        Ok(Submitter {
            loaded,
            slurm,
            forced,
            worker_base: worker_command(loaded, cache_root, slurm)?,
            workdir: std::env::current_dir().context("reading the current folder")?,
            arrays: 0,
        })
    }

    /// What decides an instance's job besides the instance itself: instances with the same
    /// group ask for the same job and can share an array.
    pub fn group_of(&self, index: usize) -> (usize, bool) {
        (
            self.loaded.expanded.instances[index].stage,
            (self.forced)(index),
        )
    }

    /// The worker command of instance `index` (whose own arguments are `which`).
    fn command(&self, index: usize, which: [String; 4]) -> Vec<String> {
        let instance = &self.loaded.expanded.instances[index];
        let mut command = self.worker_base.clone();
        command.extend(which);
        if (self.forced)(index) {
            command.push("--force".into());
        }
        // As locally: the stage's `resources.threads`, else `--threads-per-stage`; without
        // either, the worker takes Slurm's $SLURM_CPUS_PER_TASK, else 1.
        let resources = &self.slurm.resources[instance.stage];
        if let Some(threads) = resources.threads.map(|t| t as usize).or(self.slurm.threads) {
            command.extend(["--threads".into(), threads.to_string()]);
        }
        command
    }

    /// Submits one plain job for instance `index`, starting after the jobs `after`.
    pub fn single(
        &self,
        folder: &mut RunFolder,
        index: usize,
        after: &[String],
    ) -> Result<RecordedJob> {
        let log = folder.log(&self.loaded.expanded.instances[index].id);
        self.single_logging_to(folder, index, after, log)
    }

    /// [`Self::single`] for the `attempt`-th try at instance `index` (a resubmission): its own
    /// Slurm log, so the logs of the attempts before stay.
    pub fn again(
        &self,
        folder: &mut RunFolder,
        index: usize,
        after: &[String],
        attempt: u32,
    ) -> Result<RecordedJob> {
        let log = folder.attempt_log(&self.loaded.expanded.instances[index].id, attempt);
        self.single_logging_to(folder, index, after, log)
    }

    fn single_logging_to(
        &self,
        folder: &mut RunFolder,
        index: usize,
        after: &[String],
        log: PathBuf,
    ) -> Result<RecordedJob> {
        let expanded = &self.loaded.expanded;
        let instance = &expanded.instances[index];
        let report = folder.report(&instance.id);
        let command = self.command(
            index,
            [
                "--instance".into(),
                instance.id.clone(),
                "--report".into(),
                utf8(&report)?,
            ],
        );
        let name = format!("{}/{}", expanded.name, instance.id);
        let args = sbatch::arguments(
            &self.slurm.executor,
            &Submission {
                name: &name,
                log: &log,
                array: None,
                workdir: &self.workdir,
                after,
                command: &command,
                resources: &self.slurm.resources[instance.stage],
            },
        );
        let id = queue::submit(&args)?;
        tracing::debug!(instance = %instance.id, job = %id, "submitted");
        let job = RecordedJob {
            job: id,
            instance: instance.id.clone(),
            log,
            report,
        };
        record(folder, std::slice::from_ref(&job));
        Ok(job)
    }

    /// Submits instances `members` (ready, of one group) as one array; their jobs, in order.
    pub fn array(&mut self, folder: &mut RunFolder, members: &[usize]) -> Result<Vec<RecordedJob>> {
        let expanded = &self.loaded.expanded;
        let first = members
            .first()
            .copied()
            .context("an array of no instances")?;
        let tag = format!("array{}", self.arrays);
        self.arrays += 1;
        let list = folder.dir.join(format!("{tag}.instances"));
        let ids: Vec<&str> = members
            .iter()
            .map(|&i| expanded.instances[i].id.as_str())
            .collect();
        array::write_list(&list, &ids)?;
        let command = self.command(
            first,
            [
                "--instance-list".into(),
                utf8(&list)?,
                "--report-dir".into(),
                utf8(&folder.dir)?,
            ],
        );
        let stage = expanded.instances[first].stage;
        let name = format!("{}/{}", expanded.name, expanded.stages[stage].name);
        let args = sbatch::arguments(
            &self.slurm.executor,
            &Submission {
                name: &name,
                log: &folder.dir.join(format!("{tag}_%a.out")),
                array: Some(members.len()),
                workdir: &self.workdir,
                after: &[],
                command: &command,
                resources: &self.slurm.resources[stage],
            },
        );
        let id = queue::submit(&args)?;
        tracing::debug!(array = %id, tasks = members.len(), "submitted an array");
        let jobs: Vec<RecordedJob> = ids
            .iter()
            .enumerate()
            .map(|(task, instance)| RecordedJob {
                job: format!("{id}_{task}"),
                instance: instance.to_string(),
                log: folder.dir.join(format!("{tag}_{task}.out")),
                report: folder.report(instance),
            })
            .collect();
        record(folder, &jobs);
        Ok(jobs)
    }
}

fn record(folder: &mut RunFolder, jobs: &[RecordedJob]) {
    if let Err(err) = folder.record(jobs) {
        let ids: Vec<&str> = jobs.iter().map(|job| job.job.as_str()).collect();
        tracing::warn!(
            "{err:#}: `umdflow status`, `cancel` and a later run will not see jobs {}",
            ids.join(" ")
        );
    }
}

/// `umdflow worker FILE --cache DIR [--set ...]`: what every job runs, less the instance.
fn worker_command(loaded: &Loaded, cache_root: &Path, slurm: &SlurmOptions) -> Result<Vec<String>> {
    let file = std::fs::canonicalize(&loaded.source.file)
        .with_context(|| format!("locating {}", loaded.source.file.display()))?;
    let mut command = vec![
        utf8(&slurm.program)?,
        "worker".into(),
        utf8(&file)?,
        "--cache".into(),
        utf8(cache_root)?,
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
