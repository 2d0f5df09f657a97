//! Per-key leases: an OS file lock on `leases/<key>.lock`. The OS releases it when the holder
//! exits or dies, so a crashed run never leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::CacheError;

/// A held lease; dropping it releases the key.
pub struct Lease {
    _file: File,
}

/// The result of trying to take a lease.
pub enum LeaseAttempt {
    Taken(Lease),
    /// Another process holds it; `holder` says who (pid and host), `wait` blocks until it is free.
    Busy {
        holder: String,
        waiter: LeaseWaiter,
    },
}

pub struct LeaseWaiter {
    file: File,
    path: PathBuf,
}

impl LeaseWaiter {
    /// Blocks until the holder releases the key.
    pub fn wait(self) -> Result<Lease, CacheError> {
        self.file.lock().map_err(CacheError::io(&self.path))?;
        Ok(Lease { _file: self.file })
    }
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

impl Lease {
    pub(crate) fn try_take(dir: &Path, key: &str) -> Result<LeaseAttempt, CacheError> {
        let path = dir.join(format!("{key}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(CacheError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the wait message of other processes.
                let _ = file.set_len(0);
                let _ = file.seek(SeekFrom::Start(0));
                let _ = write!(file, "pid {} on {}", std::process::id(), host_name());
                Ok(LeaseAttempt::Taken(Lease { _file: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                if holder.is_empty() {
                    holder = "another process".into();
                }
                Ok(LeaseAttempt::Busy {
                    holder,
                    waiter: LeaseWaiter { file, path },
                })
            }
            Err(std::fs::TryLockError::Error(err)) => Err(CacheError::io(&path)(err)),
        }
    }
}

/// Deletes lease files nobody holds (gc).
pub(crate) fn remove_free(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Ok(file) = OpenOptions::new().write(true).open(&path)
            && file.try_lock().is_ok()
        {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lease_is_busy_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let LeaseAttempt::Taken(lease) = Lease::try_take(dir.path(), "k").unwrap() else {
            panic!("first lease must be free");
        };
        let LeaseAttempt::Busy { holder, .. } = Lease::try_take(dir.path(), "k").unwrap() else {
            panic!("second lease must be busy");
        };
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(lease);
        assert!(matches!(
            Lease::try_take(dir.path(), "k").unwrap(),
            LeaseAttempt::Taken(_)
        ));
    }
}
