//! Private folders where a running stage writes its output and log before the commit.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::CacheError;

static COUNTER: AtomicU64 = AtomicU64::new(0);
const LOCK: &str = ".owner.lock";
/// Name prefix of a staging folder being set up (see [`Staging::create`]).
const SETUP_PREFIX: &str = ".setup-";

/// A staging folder: `out/` for the stage's output, `log.txt` for its log, and `inputs/` for the
/// views of its inputs. It is deleted when dropped unless committed (the commit moves its files).
pub struct Staging {
    dir: PathBuf,
    _owner: File,
}

/// (path relative to `out/` with `/` separators, absolute path, executable bit)
pub type OutputFile = (String, PathBuf, bool);

impl Staging {
    pub(crate) fn create(root: &Path) -> Result<Staging, CacheError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = root.join(&name);
        // Set up under a name `remove_abandoned` leaves alone while young, then renamed: between
        // creating the lock file and locking it, another process opening the cache would take
        // the folder for a dead process's and delete it under the running stage.
        let setup = root.join(format!("{SETUP_PREFIX}{name}"));
        fs::create_dir_all(setup.join("out")).map_err(CacheError::io(&setup))?;
        // Held while this process lives; a folder whose lock is free belongs to a dead process.
        let owner = File::create(setup.join(LOCK)).map_err(CacheError::io(&setup))?;
        owner.lock().map_err(CacheError::io(&setup))?;
        fs::rename(&setup, &dir).map_err(CacheError::io(&dir))?;
        Ok(Staging { dir, _owner: owner })
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.txt")
    }

    /// Where views of the inputs go (outside `out/`, so they are not part of the output).
    pub fn inputs_dir(&self) -> PathBuf {
        self.dir.join("inputs")
    }

    /// The output files, sorted, and the log if the stage wrote one.
    pub(crate) fn collect_files(&self) -> Result<(Vec<OutputFile>, Option<PathBuf>), CacheError> {
        let mut files = Vec::new();
        collect(&self.out_dir(), "", &mut files)?;
        files.sort_by(|a, b| a.0.cmp(&b.0));
        // An empty log is not worth a blob (and an fsync).
        let log = self.log_path();
        let has_log = fs::metadata(&log).is_ok_and(|m| m.len() > 0);
        Ok((files, has_log.then_some(log)))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = make_writable(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn collect(dir: &Path, prefix: &str, files: &mut Vec<OutputFile>) -> Result<(), CacheError> {
    for entry in fs::read_dir(dir).map_err(CacheError::io(dir))? {
        let entry = entry.map_err(CacheError::io(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| CacheError::Output {
                path: path.clone(),
                message: "file name is not valid UTF-8".into(),
            })?;
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type().map_err(CacheError::io(&path))?;
        if kind.is_symlink() {
            return Err(CacheError::Output {
                path,
                message: "stage outputs may not contain symbolic links; write a copy instead"
                    .into(),
            });
        } else if kind.is_dir() {
            collect(&path, &relative, files)?;
        } else {
            let mode = entry
                .metadata()
                .map_err(CacheError::io(&path))?
                .permissions();
            files.push((relative, path, is_executable(&mode)));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(permissions: &fs::Permissions) -> bool {
    use std::os::unix::fs::PermissionsExt;
    permissions.mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_permissions: &fs::Permissions) -> bool {
    false
}

/// Input views are hard links to read-only blobs; removing them needs no write bit on the file,
/// but a stage may have made folders read-only.
fn make_writable(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let path = entry.path();
            let mut permissions = fs::metadata(&path)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            permissions.set_readonly(false);
            let _ = fs::set_permissions(&path, permissions);
            let _ = make_writable(&path);
        }
    }
    Ok(())
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            _ => entry.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Removes staging folders whose owner process is gone; returns the bytes freed.
pub(crate) fn remove_abandoned(root: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        // A folder a live process is still setting up may not be locked yet: leave young ones.
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 10);
        let setting_up = entry
            .file_name()
            .to_string_lossy()
            .starts_with(SETUP_PREFIX);
        let abandoned = match File::open(dir.join(LOCK)) {
            // A folder being set up may hold its lock file before the lock.
            Ok(lock) => lock.try_lock().is_ok() && !(setting_up && young),
            Err(_) => !young,
        };
        if abandoned {
            freed += dir_size(&dir);
            let _ = make_writable(&dir);
            let _ = fs::remove_dir_all(&dir);
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_being_set_up_is_not_abandoned_but_a_dead_owner_s_is() {
        let root = tempfile::tempdir().unwrap();
        // Mid-setup: the lock file exists but is not locked yet.
        let setting_up = root.path().join(format!("{SETUP_PREFIX}1-2-3"));
        fs::create_dir_all(setting_up.join("out")).unwrap();
        File::create(setting_up.join(LOCK)).unwrap();
        // A finished folder whose owner is gone: its lock is free.
        let dead = root.path().join("4-5-6");
        fs::create_dir_all(dead.join("out")).unwrap();
        File::create(dead.join(LOCK)).unwrap();
        // A live one.
        let live = Staging::create(root.path()).unwrap();
        remove_abandoned(root.path());
        assert!(
            setting_up.exists(),
            "a young folder being set up is left alone"
        );
        assert!(!dead.exists(), "a dead owner's folder is removed");
        assert!(live.out_dir().exists(), "a live folder is kept");
    }
}
