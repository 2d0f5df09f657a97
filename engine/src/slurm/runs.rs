//! The run folder, `<cache>/slurm/<run>/`: where a Slurm run keeps its job list (`jobs.tsv`, one
//! `job id<TAB>instance id` line per submitted job, appended as they are submitted), the pipeline
//! it belongs to (`pipeline.txt`), and each job's Slurm log and worker report. `umdflow status` and
//! `umdflow cancel` find a pipeline's jobs through these folders.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::queue::{self, JobState};
use super::worker::Report;
use crate::scheduler::file_safe;

pub struct RunFolder {
    pub dir: PathBuf,
    jobs: File,
}

impl RunFolder {
    /// A fresh folder for a run of `pipeline` in the cache at `cache_root`.
    pub fn create(cache_root: &Path, pipeline: &str) -> Result<RunFolder> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dir = cache_root
            .join("slurm")
            .join(format!("{millis}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the run folder {}", dir.display()))?;
        std::fs::write(dir.join("pipeline.txt"), pipeline)
            .with_context(|| format!("writing {}", dir.join("pipeline.txt").display()))?;
        let jobs = File::create(dir.join("jobs.tsv"))
            .with_context(|| format!("creating {}", dir.join("jobs.tsv").display()))?;
        Ok(RunFolder { dir, jobs })
    }

    /// Slurm's log of the job of an instance.
    pub fn log(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("{}.out", file_safe(instance)))
    }

    /// The worker's report of an instance.
    pub fn report(&self, instance: &str) -> PathBuf {
        self.dir
            .join(format!("{}.report.json", file_safe(instance)))
    }

    /// Records a submitted job at once, so that `status` and `cancel` see it even if the driver
    /// dies a moment later.
    pub fn record(&mut self, job: &str, instance: &str) -> Result<()> {
        writeln!(self.jobs, "{job}\t{instance}")
            .with_context(|| format!("writing {}", self.dir.join("jobs.tsv").display()))
    }
}

/// One job of a pipeline, as `status` shows it.
pub struct JobLine {
    pub job: String,
    pub instance: String,
    /// Slurm's state while queued or running, else what the worker reported.
    pub state: String,
    pub detail: String,
    pub active: bool,
}

/// Every job of `pipeline` recorded in the cache's run folders, with one `squeue` for all.
pub fn jobs(cache_root: &Path, pipeline: &str) -> Result<Vec<JobLine>> {
    let mut recorded: Vec<(PathBuf, String, String)> = Vec::new();
    let runs = cache_root.join("slurm");
    let entries = match std::fs::read_dir(&runs) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", runs.display())),
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs {
        let name = std::fs::read_to_string(dir.join("pipeline.txt")).unwrap_or_default();
        if name != pipeline {
            continue;
        }
        let text = std::fs::read_to_string(dir.join("jobs.tsv")).unwrap_or_default();
        for line in text.lines() {
            if let Some((job, instance)) = line.split_once('\t') {
                recorded.push((dir.clone(), job.to_string(), instance.to_string()));
            }
        }
    }
    let ids: Vec<&str> = recorded.iter().map(|(_, job, _)| job.as_str()).collect();
    let states = queue::query(&ids)?;
    Ok(recorded
        .into_iter()
        .map(|(dir, job, instance)| {
            let report = Report::read(&dir.join(format!("{}.report.json", file_safe(&instance))));
            let (state, detail, active) = describe(states.get(&job), report);
            JobLine {
                job,
                instance,
                state,
                detail,
                active,
            }
        })
        .collect())
}

fn describe(state: Option<&JobState>, report: Option<Report>) -> (String, String, bool) {
    match (state, report) {
        (Some(state), _) if state.is_active() => (state.state.clone(), state.reason.clone(), true),
        (_, Some(report)) => (
            format!("{:?}", report.status).to_lowercase(),
            report.reason,
            false,
        ),
        (Some(state), None) => (state.state.clone(), state.reason.clone(), false),
        (None, None) => ("gone".into(), "no longer listed by Slurm".into(), false),
    }
}

/// Cancels every queued or running job of `pipeline` (one `scancel`); how many.
pub fn cancel(cache_root: &Path, pipeline: &str) -> Result<usize> {
    let active: Vec<String> = jobs(cache_root, pipeline)?
        .into_iter()
        .filter(|line| line.active)
        .map(|line| line.job)
        .collect();
    let ids: Vec<&str> = active.iter().map(String::as_str).collect();
    queue::cancel(&ids)?;
    Ok(ids.len())
}
