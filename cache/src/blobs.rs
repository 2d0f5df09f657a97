//! Content-addressed files: `blobs/ab/cdef…` named by the blake3 hash of their content.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::CacheError;
use crate::failpoint;

/// Size and modification time of a blob when it was written or last verified. A blob whose stat
/// still matches is trusted without re-hashing; any write to it changes the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobStat {
    pub size: u64,
    pub mtime_ns: u64,
}

impl BlobStat {
    fn of(path: &Path) -> std::io::Result<BlobStat> {
        let meta = fs::metadata(path)?;
        let mtime_ns = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(BlobStat {
            size: meta.len(),
            mtime_ns,
        })
    }
}

/// blake3 of a file's content, hex, and its size.
pub fn hash_file(path: &Path) -> Result<(String, u64), CacheError> {
    let mut file = File::open(path).map_err(CacheError::io(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(CacheError::io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

/// What [`BlobStore::store`] did.
pub(crate) struct Stored {
    pub hash: String,
    pub size: u64,
    pub stat: BlobStat,
    /// Folders that gained an entry (empty when the blob already existed).
    pub changed_dirs: Vec<PathBuf>,
}

pub(crate) struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: PathBuf) -> Self {
        BlobStore { dir }
    }

    pub fn path(&self, hash: &str) -> PathBuf {
        let split = 2.min(hash.len());
        self.dir.join(&hash[..split]).join(&hash[split..])
    }

    /// Moves a finished file into the store: hash, fsync, make read-only, rename. If a blob of the
    /// same name exists and its content still hashes to its name, the file is dropped; a blob
    /// that no longer matches (damaged in place, perhaps with its time restored) is replaced. A
    /// blob is never trusted by its name or size alone. Returns hash, size, stat and the folders
    /// to fsync before the index names the blob.
    pub fn store(&self, file: &Path) -> Result<Stored, CacheError> {
        let (hash, size) = hash_file(file)?;
        failpoint::hit("blob:hashed");
        let target = self.path(&hash);
        let parent = target.parent().unwrap_or(&self.dir).to_path_buf();
        // The stat is taken before hashing: a write during the hash changes it, so the next
        // lookup re-hashes.
        if let Ok(existing) = BlobStat::of(&target) {
            match hash_file(&target) {
                Ok((actual, _)) if actual == hash => {
                    let _ = fs::remove_file(file);
                    // Another process may have renamed it in without having synced the folder yet.
                    return Ok(Stored {
                        hash,
                        size,
                        stat: existing,
                        changed_dirs: vec![parent],
                    });
                }
                _ => tracing::warn!(
                    "blob {hash} in the cache no longer matches its hash; replacing it with the \
                     fresh copy"
                ),
            }
        }
        File::open(file)
            .and_then(|f| f.sync_data())
            .map_err(CacheError::io(file))?;
        failpoint::hit("blob:synced");
        let mut permissions = fs::metadata(file)
            .map_err(CacheError::io(file))?
            .permissions();
        permissions.set_readonly(true);
        fs::set_permissions(file, permissions).map_err(CacheError::io(file))?;
        failpoint::hit("blob:read-only");
        let mut changed_dirs = vec![parent.clone()];
        if !parent.exists() {
            fs::create_dir_all(&parent).map_err(CacheError::io(&parent))?;
            changed_dirs.push(self.dir.clone());
        }
        fs::rename(file, &target).map_err(CacheError::io(&target))?;
        failpoint::hit("blob:renamed");
        let stat = BlobStat::of(&target).map_err(CacheError::io(&target))?;
        Ok(Stored {
            hash,
            size,
            stat,
            changed_dirs,
        })
    }

    /// fsyncs the given blob folders so that renames into them are durable before the index
    /// names the blobs.
    pub fn sync_dirs(&self, dirs: &BTreeSet<PathBuf>) -> Result<(), CacheError> {
        for dir in dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(CacheError::io(dir))?;
        }
        Ok(())
    }

    /// Ok when the blob is present and its content matches its name; with `known`, a blob whose
    /// stat still matches is trusted without re-hashing. A damaged blob is deleted.
    pub fn check(&self, hash: &str, size: u64, known: Option<&BlobStat>) -> Result<(), String> {
        let path = self.path(hash);
        let stat = BlobStat::of(&path).map_err(|_| "missing from the blob store".to_string())?;
        if stat.size != size {
            let _ = fs::remove_file(&path);
            return Err(format!("size is {} bytes, expected {size}", stat.size));
        }
        if known == Some(&stat) {
            return Ok(());
        }
        match hash_file(&path) {
            Ok((actual, _)) if actual == hash => Ok(()),
            Ok(_) => {
                let _ = fs::remove_file(&path);
                Err("content no longer matches its hash".into())
            }
            Err(err) => Err(err.to_string()),
        }
    }

    pub fn link_or_copy(&self, hash: &str, target: &Path) -> Result<(), CacheError> {
        let source = self.path(hash);
        if fs::hard_link(&source, target).is_ok() {
            return Ok(());
        }
        fs::copy(&source, target).map_err(CacheError::io(target))?;
        Ok(())
    }

    fn subdirs(&self) -> Result<Vec<PathBuf>, CacheError> {
        let mut dirs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(CacheError::io(&self.dir))? {
            let entry = entry.map_err(CacheError::io(&self.dir))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    }

    /// Every blob as (hash, path).
    fn all(&self) -> Result<Vec<(String, PathBuf)>, CacheError> {
        let mut blobs = Vec::new();
        for dir in self.subdirs()? {
            let prefix = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            for entry in fs::read_dir(&dir).map_err(CacheError::io(&dir))? {
                let entry = entry.map_err(CacheError::io(&dir))?;
                let name = entry.file_name().to_string_lossy().to_string();
                blobs.push((format!("{prefix}{name}"), entry.path()));
            }
        }
        Ok(blobs)
    }

    /// The hash of every blob present.
    pub fn hashes(&self) -> Result<BTreeSet<String>, CacheError> {
        Ok(self.all()?.into_iter().map(|(hash, _)| hash).collect())
    }

    /// Deletes blobs that no record references; returns how many and their bytes.
    pub fn remove_unreferenced(
        &self,
        referenced: &BTreeSet<String>,
    ) -> Result<(usize, u64), CacheError> {
        let mut count = 0;
        let mut bytes = 0;
        for (hash, path) in self.all()? {
            if !referenced.contains(&hash) {
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if fs::remove_file(&path).is_ok() {
                    count += 1;
                    bytes += size;
                }
            }
        }
        Ok((count, bytes))
    }

    /// Re-hashes every blob; deletes and returns those whose content does not match their name.
    pub fn verify_all(&self) -> Result<Vec<(String, String)>, CacheError> {
        use rayon::prelude::*;
        let damaged: Vec<(String, String)> = self
            .all()?
            .par_iter()
            .filter_map(|(hash, path)| match hash_file(path) {
                Ok((actual, _)) if &actual == hash => None,
                Ok((actual, _)) => Some((hash.clone(), format!("content hashes to {actual}"))),
                Err(err) => Some((hash.clone(), err.to_string())),
            })
            .collect();
        for (hash, _) in &damaged {
            let _ = fs::remove_file(self.path(hash));
        }
        Ok(damaged)
    }
}
