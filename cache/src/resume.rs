//! Resume folders: `resume/<key>/`, where a stage keeps what lets a later attempt at the same key
//! continue instead of starting over (a training checkpoint). A folder is used only by the holder
//! of the key's lease, survives a failure, a crash, Ctrl-C and a time-limit kill (that is its
//! purpose), and is removed once the key commits. Never part of an output, never in a key.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::CacheError;
use crate::index::Index;
use crate::staging::dir_size;

pub(crate) const DIR: &str = "resume";

/// What `gc` did with the resume folders.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResumeGc {
    pub removed: usize,
    /// Folders of keys still to compute, kept so their next attempt resumes.
    pub kept: usize,
    pub kept_bytes: u64,
}

/// The resume folder of `key` under the cache `root` (created if missing). Call it only while
/// holding the key's lease: the folder is the lease holder's alone.
pub(crate) fn folder(root: &Path, key: &str) -> Result<PathBuf, CacheError> {
    let dir = root.join(DIR).join(key);
    fs::create_dir_all(&dir).map_err(CacheError::io(&dir))?;
    Ok(dir)
}

/// Removes the resume folder of `key` (after its commit); a missing one is fine.
pub(crate) fn remove(root: &Path, key: &str) -> Result<(), CacheError> {
    let dir = root.join(DIR).join(key);
    match fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(CacheError::io(&dir)(err)),
        _ => Ok(()),
    }
}

/// Removes the folders of committed keys (left by a crash between commit and removal) and, when
/// `pending` is given, those of keys not in it; keeps the rest. Returns the bytes freed too.
/// Only with the cache held exclusively: then no lease is held and no stage writes to them.
pub(crate) fn collect(
    root: &Path,
    index: &Index,
    pending: Option<&BTreeSet<String>>,
) -> Result<(ResumeGc, u64), CacheError> {
    let dir = root.join(DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok((ResumeGc::default(), 0));
    };
    let folders: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .collect();
    let keys: Vec<&str> = folders.iter().map(|(key, _)| key.as_str()).collect();
    let committed = index.lookup(&keys)?;
    let mut report = ResumeGc::default();
    let mut freed = 0;
    for (key, path) in &folders {
        let size = dir_size(path);
        let wanted = pending.is_none_or(|pending| pending.contains(key));
        if committed.contains_key(key) || !wanted {
            fs::remove_dir_all(path).map_err(CacheError::io(path))?;
            report.removed += 1;
            freed += size;
        } else {
            report.kept += 1;
            report.kept_bytes += size;
        }
    }
    Ok((report, freed))
}
