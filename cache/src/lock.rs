//! The cache-wide lock, `lock` in the cache folder: every process that opens the cache holds it
//! shared for as long as it has the cache open; `gc` and index repair hold it exclusive. So `gc`
//! never deletes a blob or record that a live run has stored, is about to record, or reads as an
//! input. An OS file lock: the kernel releases it when its holder dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::CacheError;

pub(crate) struct CacheLock {
    file: File,
    path: PathBuf,
}

impl CacheLock {
    fn open_file(root: &Path) -> Result<CacheLock, CacheError> {
        let path = root.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(CacheError::io(&path))?;
        Ok(CacheLock { file, path })
    }

    /// Takes the lock shared; waits (saying so in the log) while a `gc` holds it.
    pub fn shared(root: &Path) -> Result<CacheLock, CacheError> {
        let lock = CacheLock::open_file(root)?;
        match lock.file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::warn!(
                    "waiting for the `umdflow gc` (or index repair) that holds {}",
                    root.display()
                );
                lock.file
                    .lock_shared()
                    .map_err(CacheError::io(&lock.path))?;
            }
            Err(TryLockError::Error(err)) => return Err(CacheError::io(&lock.path)(err)),
        }
        Ok(lock)
    }

    /// Takes the lock exclusive, calling `on_wait` first if other processes hold it.
    pub fn exclusive(root: &Path, on_wait: impl FnOnce()) -> Result<CacheLock, CacheError> {
        let lock = CacheLock::open_file(root)?;
        lock.upgrade(on_wait)?;
        Ok(lock)
    }

    /// Shared -> exclusive (or takes it exclusive). Linux drops the shared lock first, so two
    /// processes upgrading at once do not deadlock.
    pub fn upgrade(&self, on_wait: impl FnOnce()) -> Result<(), CacheError> {
        match self.file.try_lock() {
            Ok(()) => Ok(()),
            Err(TryLockError::WouldBlock) => {
                on_wait();
                self.file.lock().map_err(CacheError::io(&self.path))
            }
            Err(TryLockError::Error(err)) => Err(CacheError::io(&self.path)(err)),
        }
    }

    /// Exclusive -> shared.
    pub fn downgrade(&self) -> Result<(), CacheError> {
        self.file.lock_shared().map_err(CacheError::io(&self.path))
    }
}
