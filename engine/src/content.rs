//! Content digests of the files a pipeline reads from outside the cache (`deps:` and the paths a
//! kind declares with `StageKind::reads`), with a stat cache: a file whose size, modification
//! time and inode match the remembered ones is not hashed again, so a no-op rerun stays fast.
//!
//! The stat cache lives in `<cache>/dep-stats.json`. It only saves time: a missing, damaged or
//! stale file makes umdflow hash again, never use a wrong digest for a changed file.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

const STAT_FILE: &str = "dep-stats.json";

/// A file changed again within this long after it was hashed could keep its modification time
/// (coarse timestamps), so such a file's hash is not remembered.
const RACY_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    device: u64,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stat: Stat,
    hash: String,
}

/// Remembered file hashes by absolute path.
#[derive(Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    entries: HashMap<PathBuf, Entry>,
    changed: bool,
    /// How many files were hashed (not answered from the stat cache); for tests.
    pub hashed: usize,
}

impl StatCache {
    /// The stat cache of a cache folder (empty if it has none yet or it cannot be read).
    pub fn open(cache_dir: &Path) -> StatCache {
        let file = cache_dir.join(STAT_FILE);
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        StatCache {
            file: Some(file),
            entries,
            ..StatCache::default()
        }
    }

    /// The blake3 hash of a file's content.
    pub fn file_hash(&mut self, path: &Path) -> std::io::Result<String> {
        let absolute = std::path::absolute(path)?;
        let meta = std::fs::metadata(&absolute)?;
        let stat = Stat::of(&meta);
        if let Some(entry) = self.entries.get(&absolute)
            && entry.stat == stat
        {
            return Ok(entry.hash.clone());
        }
        let (hash, _) = umdflow_cache::hash_file(&absolute).map_err(std::io::Error::other)?;
        self.hashed += 1;
        let settled = meta
            .modified()
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age > RACY_WINDOW);
        if settled {
            self.entries.insert(
                absolute,
                Entry {
                    stat,
                    hash: hash.clone(),
                },
            );
            self.changed = true;
        } else if self.entries.remove(&absolute).is_some() {
            self.changed = true;
        }
        Ok(hash)
    }

    /// Writes the stat cache back (atomically) if it learned something and its cache folder
    /// exists; a failure only costs hashing time later, so it is logged, not returned.
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        if !self.changed || !file.parent().is_some_and(Path::is_dir) {
            return;
        }
        let temporary = file.with_extension(format!("tmp.{}", std::process::id()));
        let written = serde_json::to_vec(&self.entries)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, file));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!("could not save {}: {err}", file.display());
        }
    }
}

/// Content digest of a path: a file's blake3, or for a folder the blake3 of its sorted
/// `(relative path, file digest)` list.
pub fn digest(path: &Path, stats: &mut StatCache) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return stats.file_hash(path);
    }
    let mut files = Vec::new();
    collect_files(path, "", &mut files)?;
    files.sort();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"umdflow-dir-v1\n");
    for relative in files {
        let hash = stats.file_hash(&path.join(&relative))?;
        hasher.update(relative.as_bytes());
        hasher.update(b"\0");
        hasher.update(hash.as_bytes());
        hasher.update(b"\n");
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), &relative, out)?;
        } else {
            out.push(relative);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path) {
        let past = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    #[test]
    fn a_rerun_hashes_only_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        for name in ["a.txt", "b.txt", "sub/c.txt"] {
            std::fs::write(data.join(name), name).unwrap();
            age(&data.join(name));
        }
        let mut first = StatCache::open(&cache);
        let before = digest(&data, &mut first).unwrap();
        assert_eq!(first.hashed, 3);
        first.save();

        let mut second = StatCache::open(&cache);
        assert_eq!(digest(&data, &mut second).unwrap(), before);
        assert_eq!(second.hashed, 0, "an unchanged folder is not hashed again");

        // Same size, other content, older timestamp: the stat differs, so it is hashed.
        std::fs::write(data.join("b.txt"), "B.txt").unwrap();
        age(&data.join("b.txt"));
        let mut third = StatCache::open(&cache);
        let after = digest(&data, &mut third).unwrap();
        assert_eq!(third.hashed, 1);
        assert_ne!(after, before);
    }

    #[test]
    fn a_file_written_just_now_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fresh.txt");
        std::fs::write(&file, "x").unwrap();
        let mut stats = StatCache::open(dir.path());
        stats.file_hash(&file).unwrap();
        stats.file_hash(&file).unwrap();
        assert_eq!(stats.hashed, 2);
    }

    #[test]
    fn a_folder_digest_depends_on_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let mut stats = StatCache::default();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        let one = digest(dir.path(), &mut stats).unwrap();
        std::fs::rename(dir.path().join("a"), dir.path().join("b")).unwrap();
        let renamed = digest(dir.path(), &mut stats).unwrap();
        assert_ne!(one, renamed);
    }
}
