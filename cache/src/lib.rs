//! umdflow's artifact store.
//!
//! A cache folder holds:
//! - `blobs/ab/cdef…`: every output file once, named by the blake3 hash of its content;
//! - `index.redb`: one record per stage key (output manifest, metrics, timings, key components);
//! - `staging/`: private folders where running stages write, turned into blobs on commit;
//! - `leases/`: one lock file per key being computed, so concurrent runs never compute a key twice.
//!
//! Commit order (see [`Cache::commit`]): hash, fsync and rename every file into `blobs/`, fsync the
//! blob folders, then write the record in one redb transaction. A crash at any instant leaves
//! either no record (and maybe orphan blobs that `gc` removes) or a complete one.

mod blobs;
mod error;
mod index;
mod lease;
mod record;
mod staging;

pub use blobs::{BlobStat, hash_file};
pub use error::CacheError;
pub use index::{GcReport, Reader, VerifyReport};
pub use lease::{Lease, LeaseAttempt};
pub use record::{FileEntry, Record, output_digest};
pub use staging::Staging;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use blobs::BlobStore;
use index::Index;

/// A cached record together with what its blobs looked like when it was written, so that a lookup
/// can tell cheaply whether a blob was modified since.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: Record,
    stats: HashMap<String, BlobStat>,
}

/// Why a cached record cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Output path inside the stage's output (or `<log>`).
    pub path: String,
    pub hash: String,
    pub problem: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (blob {}): {}",
            self.path,
            &self.hash[..12.min(self.hash.len())],
            self.problem
        )
    }
}

/// An opened cache folder.
pub struct Cache {
    root: PathBuf,
    blobs: BlobStore,
    index: Index,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`, and removes staging folders left behind by
    /// processes that died.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for sub in ["blobs", "staging", "leases"] {
            std::fs::create_dir_all(root.join(sub)).map_err(CacheError::io(root.join(sub)))?;
        }
        // Absolute, because stages run in the pipeline's folder and get paths into the cache.
        let root = std::fs::canonicalize(root).map_err(CacheError::io(root))?;
        let root = root.as_path();
        let cache = Cache {
            root: root.to_path_buf(),
            blobs: BlobStore::new(root.join("blobs")),
            index: Index::new(root.join("index.redb")),
        };
        staging::remove_abandoned(&root.join("staging"));
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Looks up many keys in one read transaction. Missing keys are absent from the map.
    pub fn lookup(&self, keys: &[&str]) -> Result<HashMap<String, Found>, CacheError> {
        self.index.lookup(keys)
    }

    /// Runs `f` with one index read transaction open: many lookups for the price of one open.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        self.index.read(f)
    }

    /// Checks that every blob of a record is present and unmodified. A blob whose size or
    /// modification time differs from when it was written is re-hashed; one whose content no
    /// longer matches its name is deleted so that the stage recomputes it.
    pub fn check(&self, found: &Found) -> Vec<Damage> {
        let mut damage = Vec::new();
        for entry in found.record.files_with_log() {
            let expected = found.stats.get(&entry.hash);
            if let Err(problem) = self.blobs.check(&entry.hash, entry.size, expected) {
                tracing::warn!(
                    "cached blob {} ({}) of {} is damaged: {problem}",
                    entry.hash,
                    entry.path,
                    found.record.instance
                );
                damage.push(Damage {
                    path: entry.path.clone(),
                    hash: entry.hash.clone(),
                    problem,
                });
            }
        }
        damage
    }

    /// Forgets a record (used when its blobs turned out damaged).
    pub fn forget(&self, key: &str) -> Result<(), CacheError> {
        self.index.remove(key)
    }

    /// Takes the lease of `key`, or says who holds it.
    pub fn try_lease(&self, key: &str) -> Result<LeaseAttempt, CacheError> {
        Lease::try_take(&self.root.join("leases"), key)
    }

    /// A fresh private folder for a stage to write into.
    pub fn staging(&self) -> Result<Staging, CacheError> {
        Staging::create(&self.root.join("staging"))
    }

    /// Turns a finished staging folder into blobs and a record, in crash-safe order.
    /// `record` carries everything except the manifest, which is filled in here.
    pub fn commit(&self, staging: Staging, mut record: Record) -> Result<Record, CacheError> {
        let (files, log) = staging.collect_files()?;
        let stored: Vec<Result<(FileEntry, blobs::Stored), CacheError>> = {
            use rayon::prelude::*;
            files
                .par_iter()
                .map(|(relative, path, executable)| {
                    let stored = self.blobs.store(path)?;
                    let entry = FileEntry {
                        path: relative.clone(),
                        hash: stored.hash.clone(),
                        size: stored.size,
                        executable: *executable,
                    };
                    Ok((entry, stored))
                })
                .collect()
        };
        let mut stats = Vec::new();
        let mut changed_dirs = BTreeSet::new();
        let mut entries = Vec::with_capacity(files.len());
        for item in stored {
            let (entry, stored) = item?;
            stats.push((stored.hash, stored.stat));
            changed_dirs.extend(stored.changed_dirs);
            entries.push(entry);
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        record.log = match log {
            Some(path) => {
                let stored = self.blobs.store(&path)?;
                let entry = FileEntry {
                    path: "<log>".into(),
                    hash: stored.hash.clone(),
                    size: stored.size,
                    executable: false,
                };
                stats.push((stored.hash, stored.stat));
                changed_dirs.extend(stored.changed_dirs);
                Some(entry)
            }
            None => None,
        };
        record.output_digest = output_digest(&entries);
        record.files = entries;
        self.blobs.sync_dirs(&changed_dirs)?;
        self.index.insert(&record, &stats)?;
        staging.remove();
        Ok(record)
    }

    /// Builds a read-only view of a record's output under `dest` (hard links into the blob store,
    /// copies where links are impossible).
    pub fn materialize(&self, record: &Record, dest: &Path) -> Result<(), CacheError> {
        std::fs::create_dir_all(dest).map_err(CacheError::io(dest))?;
        for entry in &record.files {
            let target = dest.join(&entry.path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(CacheError::io(parent))?;
            }
            self.blobs.link_or_copy(&entry.hash, &target)?;
        }
        Ok(())
    }

    /// Path of a blob, e.g. to print a stage's log.
    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.blobs.path(hash)
    }

    /// The most recent records of a stage of a pipeline (newest last), for explaining reruns.
    pub fn history(&self, pipeline: &str, stage: &str) -> Result<Vec<Record>, CacheError> {
        self.index.history(pipeline, stage)
    }

    /// Every record in the cache.
    pub fn all_records(&self) -> Result<Vec<Record>, CacheError> {
        self.index.all_records()
    }

    /// Removes every record whose key is not in `keep` (when given), then every blob no remaining
    /// record references, abandoned staging folders and free leases.
    pub fn gc(&self, keep: Option<&BTreeSet<String>>) -> Result<GcReport, CacheError> {
        let mut report = match keep {
            Some(keep) => self.index.retain(keep)?,
            None => GcReport::default(),
        };
        let referenced = self.index.referenced_blobs()?;
        let (count, bytes) = self.blobs.remove_unreferenced(&referenced)?;
        report.blobs_removed = count;
        report.bytes_freed += bytes;
        report.bytes_freed += staging::remove_abandoned(&self.root.join("staging"));
        lease::remove_free(&self.root.join("leases"));
        Ok(report)
    }

    /// Re-hashes every blob. Damaged blobs are deleted and the records that use them forgotten,
    /// so their stages recompute on the next run.
    pub fn verify(&self) -> Result<VerifyReport, CacheError> {
        let damaged = self.blobs.verify_all()?;
        let mut report = VerifyReport {
            blobs_checked: self.blobs.count()?,
            ..VerifyReport::default()
        };
        if !damaged.is_empty() {
            let damaged_set: BTreeSet<String> =
                damaged.iter().map(|(hash, _)| hash.clone()).collect();
            for record in self.index.all_records()? {
                if record
                    .files_with_log()
                    .any(|entry| damaged_set.contains(&entry.hash))
                {
                    self.index.remove(&record.key)?;
                    report.records_forgotten.push(record.instance.clone());
                }
            }
        }
        report.damaged = damaged;
        Ok(report)
    }
}
