//! The run folder, `<cache>/slurm/<run>/`: where a Slurm run keeps its job list (`jobs.tsv`, one
//! `job id<TAB>instance id<TAB>log<TAB>worker report` line per submitted or adopted job, appended
//! as they are submitted; older runs wrote the first two columns only), the pipeline it belongs to
//! (`pipeline.txt`), who drives it (`driver.json`, whose modification time is the driver's
//! heartbeat), and each job's Slurm log and worker report. `umdflow status` and `umdflow cancel`
//! find a pipeline's jobs through these folders; a new run adopts the jobs of one whose driver is
//! gone (`adopt.rs`) and renames its list to `jobs.adopted.tsv`, so that each job is listed once.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::queue::{self, JobState};
use super::worker::Report;
use crate::scheduler::file_safe;

const JOBS: &str = "jobs.tsv";
const HANDED_OVER: &str = "jobs.adopted.tsv";
const DRIVER: &str = "driver.json";

pub struct RunFolder {
    pub dir: PathBuf,
    jobs: File,
}

/// Who drives a run: what a later run needs to tell whether that driver is gone, and whether the
/// jobs it submitted compute what the later run would submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverInfo {
    pub host: String,
    pub pid: u32,
    /// Its poll interval: its heartbeat is at most this old while it lives.
    pub poll_seconds: f64,
    /// The pipeline file's content, its `--set` values and the cache (`adopt::signature`).
    pub signature: String,
}

/// A job as `jobs.tsv` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedJob {
    pub job: String,
    pub instance: String,
    pub log: PathBuf,
    pub report: PathBuf,
}

impl RunFolder {
    /// A fresh folder for a run of `pipeline` in the cache at `cache_root`, driven by `driver`.
    pub fn create(cache_root: &Path, pipeline: &str, driver: &DriverInfo) -> Result<RunFolder> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dir = cache_root
            .join("slurm")
            .join(format!("{millis}-{}", std::process::id()));
        if dir.to_string_lossy().contains(['\t', '\n']) {
            bail!(
                "the cache folder {} has a tab or a line break in its path; a Slurm run records \
                 its jobs' paths one per line",
                cache_root.display()
            );
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the run folder {}", dir.display()))?;
        std::fs::write(dir.join("pipeline.txt"), pipeline)
            .with_context(|| format!("writing {}", dir.join("pipeline.txt").display()))?;
        std::fs::write(dir.join(DRIVER), serde_json::to_vec(driver)?)
            .with_context(|| format!("writing {}", dir.join(DRIVER).display()))?;
        let jobs = File::create(dir.join(JOBS))
            .with_context(|| format!("creating {}", dir.join(JOBS).display()))?;
        Ok(RunFolder { dir, jobs })
    }

    /// Slurm's log of the job of an instance.
    pub fn log(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("{}.out", file_safe(instance)))
    }

    /// Slurm's log of a later attempt at an instance (a resubmission, `resubmit.rs`): each
    /// attempt keeps its own.
    pub fn attempt_log(&self, instance: &str, attempt: u32) -> PathBuf {
        self.dir
            .join(format!("{}.attempt{attempt}.out", file_safe(instance)))
    }

    /// The worker's report of an instance.
    pub fn report(&self, instance: &str) -> PathBuf {
        report_path(&self.dir, instance)
    }

    /// Records submitted (or adopted) jobs at once, in one write, so that `status`, `cancel` and a
    /// later run see them even if the driver dies a moment later.
    pub fn record(&mut self, jobs: &[RecordedJob]) -> Result<()> {
        let mut text = String::new();
        for job in jobs {
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                job.job,
                job.instance,
                job.log.display(),
                job.report.display()
            ));
        }
        self.jobs
            .write_all(text.as_bytes())
            .with_context(|| format!("writing {}", self.dir.join(JOBS).display()))
    }

    /// Tells later runs that this driver still lives (its `driver.json` is touched).
    pub fn heartbeat(&self) {
        let path = self.dir.join(DRIVER);
        let touched = File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(SystemTime::now()));
        if let Err(err) = touched {
            tracing::warn!("touching {}: {err}", path.display());
        }
    }
}

/// Where the worker of `instance` writes its report in the run folder `dir`.
pub fn report_path(dir: &Path, instance: &str) -> PathBuf {
    dir.join(format!("{}.report.json", file_safe(instance)))
}

/// The run folders of `pipeline` in the cache, oldest first.
pub fn run_dirs(cache_root: &Path, pipeline: &str) -> Result<Vec<PathBuf>> {
    let runs = cache_root.join("slurm");
    let entries = match std::fs::read_dir(&runs) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", runs.display())),
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("pipeline.txt")).is_ok_and(|name| name == pipeline)
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The jobs a run folder lists (none once a later run adopted them).
pub fn recorded(dir: &Path) -> Vec<RecordedJob> {
    let text = std::fs::read_to_string(dir.join(JOBS)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (job, instance) = (fields.next()?, fields.next()?);
            let log = fields
                .next()
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join(format!("{}.out", file_safe(instance))));
            let report = fields
                .next()
                .map(PathBuf::from)
                .unwrap_or_else(|| report_path(dir, instance));
            Some(RecordedJob {
                job: job.to_string(),
                instance: instance.to_string(),
                log,
                report,
            })
        })
        .collect()
}

/// Who drove the run of `dir`, and how long ago it last said it lives; None for a run folder
/// written before drivers recorded themselves, or one being created.
pub fn driver(dir: &Path) -> Option<(DriverInfo, Duration)> {
    let path = dir.join(DRIVER);
    let info = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let touched = std::fs::metadata(&path).ok()?.modified().ok()?;
    // A clock a little behind another login node's reads as "just now".
    let age = SystemTime::now()
        .duration_since(touched)
        .unwrap_or(Duration::ZERO);
    Some((info, age))
}

/// Marks the jobs of `dir` as adopted by another run: they are no longer listed from here.
pub fn hand_over(dir: &Path) -> Result<()> {
    std::fs::rename(dir.join(JOBS), dir.join(HANDED_OVER))
        .with_context(|| format!("handing over {}", dir.join(JOBS).display()))
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
    let recorded: Vec<RecordedJob> = run_dirs(cache_root, pipeline)?
        .iter()
        .flat_map(|dir| recorded(dir))
        .collect();
    let ids: Vec<&str> = recorded.iter().map(|job| job.job.as_str()).collect();
    let states = queue::query(&ids)?;
    Ok(recorded
        .into_iter()
        .map(|job| {
            let report = Report::read(&job.report);
            let (state, detail, active) = describe(states.get(&job.job), report);
            JobLine {
                job: job.job,
                instance: job.instance,
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
