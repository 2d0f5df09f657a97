//! One driver per pipeline and cache, and adopting the jobs of a driver that is gone.
//!
//! A driver holds the pipeline's driver lock (`<cache>/slurm-drivers/<pipeline>.lock`, an OS file
//! lock the kernel releases when its holder dies) from before it plans until it has watched its
//! last job. A second `umdflow run` of the pipeline waits for it, then plans against what the
//! first one committed: two live drivers never both submit nor both adopt.
//!
//! Holding the lock, a driver looks at the run folders of earlier runs (`runs.rs`). A folder
//! whose driver is gone (its pid no longer runs on this host, or its heartbeat is stale: it may
//! have run on another login node) and that ran the same pipeline file with the same `--set`
//! values has its jobs asked about in one `squeue`; every instance that is not cached and whose
//! job still waits or runs is watched instead of submitted again. Jobs that ended need nothing:
//! what they committed is cached, and what they did not is submitted anew.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use super::queue;
use super::runs::{self, DriverInfo, RecordedJob};
use crate::commands::Loaded;
use crate::expand::Expanded;
use crate::progress::Progress;
use crate::scheduler::file_safe;

/// How often a waiting driver looks again.
const WAIT_STEP: Duration = Duration::from_millis(200);

/// A held driver lock; dropping it lets the next driver of the pipeline plan.
pub struct DriverLock {
    _file: File,
}

impl DriverLock {
    /// Takes the lock of `pipeline` on the cache, waiting (and saying for whom) while another
    /// driver holds it. `Ok(None)`: Ctrl-C while waiting. The bool says whether it waited.
    pub fn take(
        cache_root: &Path,
        pipeline: &str,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<Option<(DriverLock, bool)>> {
        let dir = cache_root.join("slurm-drivers");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.lock", file_safe(pipeline)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the driver lock {}", path.display()))?;
        let mut waited = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if !waited {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        progress.note(&format!(
                            "waiting for the other Slurm driver of {pipeline} on this cache \
                             ({}) to finish; then only what is still missing is submitted",
                            if holder.is_empty() {
                                "starting"
                            } else {
                                &holder
                            }
                        ));
                        waited = true;
                    }
                    if cancel.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    std::thread::sleep(WAIT_STEP);
                }
                Err(TryLockError::Error(err)) => {
                    return Err(err)
                        .with_context(|| format!("locking the driver lock {}", path.display()));
                }
            }
        }
        // Who holds it, for the message of the next driver.
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "pid {} on {}", std::process::id(), host_name());
        Ok(Some((DriverLock { _file: file }, waited)))
    }
}

/// This driver, as its run folder records it.
pub fn this_driver(loaded: &Loaded, poll: Duration) -> Result<DriverInfo> {
    Ok(DriverInfo {
        host: host_name(),
        pid: std::process::id(),
        poll_seconds: poll.as_secs_f64(),
        signature: signature(loaded)?,
    })
}

/// What the jobs of a run compute besides the cache's content: the pipeline file's path and
/// bytes, its `--set` values, and the cache. Jobs of a run with another signature are never
/// adopted (their workers would run an older version of the file, or another cache).
fn signature(loaded: &Loaded) -> Result<String> {
    let file = &loaded.source.file;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut hasher = blake3::Hasher::new();
    for part in [
        std::fs::canonicalize(file)
            .unwrap_or_else(|_| file.clone())
            .to_string_lossy()
            .as_bytes(),
        &bytes,
        loaded.cache_dir.to_string_lossy().as_bytes(),
    ] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    for set in &loaded.sets {
        hasher.update(&(set.len() as u64).to_le_bytes());
        hasher.update(set.as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The jobs a run takes over from drivers that are gone.
#[derive(Default)]
pub struct Adoption {
    /// Instance index -> its job, still pending or running.
    pub jobs: BTreeMap<usize, RecordedJob>,
    /// The run folders whose job lists this run took over.
    pub folders: Vec<PathBuf>,
}

/// Finds the earlier runs of the pipeline whose driver is gone and adopts their jobs that still
/// wait or run for an instance `needed` (not cached) whose inputs are cached or adopted; cancels
/// the others that still wait or run for a needed instance (this run submits it again). Waits while an earlier driver seems alive
/// (another login node's driver whose heartbeat is fresh: one the lock does not see where the
/// cache's filesystem has no cross-node `flock`). `Ok(None)`: Ctrl-C while waiting.
pub fn adopt(
    cache_root: &Path,
    expanded: &Expanded,
    me: &DriverInfo,
    needed: &dyn Fn(usize) -> bool,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<Option<Adoption>> {
    let here = host_name();
    let mut said = false;
    let folders = loop {
        let mut adoptable = Vec::new();
        let mut live = None;
        for dir in runs::run_dirs(cache_root, &expanded.name)? {
            // Written before drivers recorded themselves: nothing to tell whether it lives.
            let Some((info, heartbeat)) = runs::driver(&dir) else {
                continue;
            };
            if runs::recorded(&dir).is_empty() {
                continue;
            }
            if driver_alive(&info, heartbeat, &here) {
                live = Some((dir, info, heartbeat));
            } else if info.signature == me.signature {
                adoptable.push(dir);
            } else {
                tracing::info!(
                    "not adopting the jobs of {}: its run had another pipeline file, --set values \
                     or cache",
                    dir.display()
                );
            }
        }
        let Some((dir, info, heartbeat)) = live else {
            break adoptable;
        };
        if !said {
            progress.note(&format!(
                "waiting for the driver of {} (pid {} on {}, heartbeat {:.0} s ago) to finish \
                 or go silent",
                dir.display(),
                info.pid,
                info.host,
                heartbeat.as_secs_f64()
            ));
            said = true;
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(WAIT_STEP.max(Duration::from_secs_f64(me.poll_seconds)));
    };
    if folders.is_empty() {
        return Ok(Some(Adoption::default()));
    }

    let index_of: HashMap<&str, usize> = expanded
        .instances
        .iter()
        .enumerate()
        .map(|(index, instance)| (instance.id.as_str(), index))
        .collect();
    let recorded: Vec<RecordedJob> = folders.iter().flat_map(|dir| runs::recorded(dir)).collect();
    let ids: Vec<&str> = recorded.iter().map(|job| job.job.as_str()).collect();
    let states = queue::query(&ids)?;
    let mut waiting_or_running = BTreeMap::new();
    let mut stale = Vec::new();
    for job in recorded {
        let active = states
            .get(&job.job)
            .is_some_and(|state| state.is_active() && !state.never_starts());
        match index_of.get(job.instance.as_str()) {
            Some(&index) if active && needed(index) => {
                if let Some(twin) = waiting_or_running.insert(index, job) {
                    stale.push(twin.job);
                }
            }
            // Its instance is cached: the job finds its key committed and exits at once.
            _ => {}
        }
    }
    // In instance order, inputs before their dependents: a job is adopted only if each of its
    // inputs is cached or adopted too. One waiting on an input's job that failed (Slurm may not
    // have cancelled it yet) is cancelled and its instance submitted again.
    let mut jobs: BTreeMap<usize, RecordedJob> = BTreeMap::new();
    for (index, job) in waiting_or_running {
        let inputs_ok = expanded.instances[index]
            .inputs
            .iter()
            .all(|input| !needed(*input) || jobs.contains_key(input));
        if inputs_ok {
            jobs.insert(index, job);
        } else {
            stale.push(job.job);
        }
    }
    if !stale.is_empty() {
        let ids: Vec<&str> = stale.iter().map(String::as_str).collect();
        if let Err(err) = queue::cancel(&ids) {
            tracing::warn!("cancelling jobs of a gone driver that are not adopted: {err:#}");
        }
    }
    Ok(Some(Adoption { jobs, folders }))
}

/// Whether the driver of a run may still live: its pid runs (when it ran on this host) and its
/// heartbeat is recent.
pub fn driver_alive(info: &DriverInfo, heartbeat: Duration, here: &str) -> bool {
    if info.host == here && pid_runs(info.pid) == Some(false) {
        return false;
    }
    heartbeat < stale_after(info.poll_seconds)
}

/// A driver touches its heartbeat every poll; one silent for this long is gone.
fn stale_after(poll_seconds: f64) -> Duration {
    let polls = Duration::try_from_secs_f64(5.0 * poll_seconds).unwrap_or(Duration::MAX);
    polls.max(Duration::from_secs(60))
}

/// Whether a process runs on this machine (a zombie does not); None where `/proc` cannot say.
fn pid_runs(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self/stat").exists() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    // `pid (name) S ...`: the state follows the last `)` (the name may hold one).
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    Some(!state.is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X')))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(host: &str, pid: u32) -> DriverInfo {
        DriverInfo {
            host: host.into(),
            pid,
            poll_seconds: 2.0,
            signature: "s".into(),
        }
    }

    #[test]
    fn a_driver_whose_pid_is_gone_here_is_gone_at_once() {
        let here = host_name();
        let me = driver(&here, std::process::id());
        assert!(driver_alive(&me, Duration::from_secs(1), &here));
        assert!(
            !driver_alive(&me, Duration::from_secs(61), &here),
            "pid reused by another process: the heartbeat says the driver is gone"
        );
        // A child that exited and was reaped: its pid runs no more.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!driver_alive(
            &driver(&here, pid),
            Duration::from_millis(10),
            &here
        ));
    }

    #[test]
    fn a_zombie_does_not_count_as_a_running_driver() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it exits.
        let clock = std::time::Instant::now();
        while pid_runs(pid) == Some(true) && clock.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pid_runs(pid), Some(false));
        child.wait().unwrap();
    }

    #[test]
    fn another_host_s_driver_is_judged_by_its_heartbeat() {
        let other = driver("another-login-node", std::process::id() + 1_000_000);
        assert!(driver_alive(&other, Duration::from_secs(30), "here"));
        assert!(!driver_alive(&other, Duration::from_secs(61), "here"));
        let slow = DriverInfo {
            poll_seconds: 60.0,
            ..other
        };
        assert!(
            driver_alive(&slow, Duration::from_secs(200), "here"),
            "five polls of a slow driver"
        );
        assert!(!driver_alive(&slow, Duration::from_secs(301), "here"));
    }

    #[test]
    fn a_second_driver_waits_for_the_lock_and_ctrl_c_ends_the_wait() {
        let cache = tempfile::tempdir().unwrap();
        let progress = Progress::new(1, false);
        let calm = AtomicBool::new(false);
        let (first, waited) = DriverLock::take(cache.path(), "p", &progress, &calm)
            .unwrap()
            .unwrap();
        assert!(!waited);
        let other_pipeline = DriverLock::take(cache.path(), "q", &progress, &calm).unwrap();
        assert!(other_pipeline.is_some_and(|(_, waited)| !waited));
        let interrupted = AtomicBool::new(true);
        assert!(
            DriverLock::take(cache.path(), "p", &progress, &interrupted)
                .unwrap()
                .is_none(),
            "held: the second driver waits, and Ctrl-C stops the wait"
        );
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let (_second, waited) = DriverLock::take(cache.path(), "p", &progress, &calm)
            .unwrap()
            .unwrap();
        assert!(waited);
        released.join().unwrap();
    }
}
