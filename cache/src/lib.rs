//! umdflow's artifact store.
//!
//! A cache folder holds:
//! - `blobs/ab/cdef…`: every output file once, named by the blake3 hash of its content;
//! - `index.redb`: one record per stage key (output manifest, metrics, timings, key components);
//! - `staging/`: private folders where running stages write, turned into blobs on commit;
//! - `leases/`: one lock file per key being computed, so concurrent runs never compute a key twice;
//! - `resume/<key>/`: what an interrupted stage left to resume from (a checkpoint), kept until the
//!   key commits (see [`Cache::resume_dir`]);
//! - `lock`: held shared by every process using the cache, exclusive by `gc` (see [`Exclusive`]).
//!
//! Commit order (see [`Cache::commit`]): hash, fsync and rename every file into `blobs/`, fsync the
//! blob folders, then write the record in one redb transaction. A crash at any instant leaves
//! either no record (and maybe orphan blobs that `gc` removes) or a complete one; the
//! failpoints in [`FAILPOINTS`] let tests stop the process at each step.

mod blobs;
mod error;
mod failpoint;
mod index;
mod lease;
mod lock;
mod record;
mod resume;
mod staging;

pub use blobs::{BlobStat, hash_file};
pub use error::CacheError;
pub use failpoint::FAILPOINTS;
pub use index::{GcReport, Reader, VerifyReport};
pub use lease::{Lease, LeaseAttempt};
pub use record::{FileEntry, Record, output_digest};
pub use resume::ResumeGc;
pub use staging::Staging;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use blobs::BlobStore;
use index::Index;
use lock::CacheLock;

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

/// An opened cache folder. It holds the cache-wide lock shared while it lives.
pub struct Cache {
    root: PathBuf,
    blobs: BlobStore,
    index: Index,
    lock: CacheLock,
}

/// The cache held exclusively (see [`Cache::exclusive`]); back to shared when dropped.
pub struct Exclusive<'a> {
    cache: &'a Cache,
}

impl std::ops::Deref for Exclusive<'_> {
    type Target = Cache;
    fn deref(&self) -> &Cache {
        self.cache
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        let _ = self.cache.lock.downgrade();
    }
}

fn create_folders(root: &Path) -> Result<PathBuf, CacheError> {
    for sub in ["blobs", "staging", "leases"] {
        std::fs::create_dir_all(root.join(sub)).map_err(CacheError::io(root.join(sub)))?;
    }
    // Absolute, because stages run in the pipeline's folder and get paths into the cache.
    std::fs::canonicalize(root).map_err(CacheError::io(root))
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`, and removes staging folders left behind by
    /// processes that died. A damaged index is [`CacheError::DamagedIndex`]; see
    /// [`Cache::repair_index`].
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        let root = create_folders(root)?;
        let lock = CacheLock::shared(&root)?;
        let cache = Cache {
            blobs: BlobStore::new(root.join("blobs")),
            index: Index::new(root.join("index.redb")),
            root,
            lock,
        };
        cache.index.open_now()?;
        staging::remove_abandoned(&cache.root.join("staging"));
        Ok(cache)
    }

    /// If the index at `root` is damaged, moves it aside and starts a fresh, empty one (the blobs
    /// stay; the stages whose records were in it recompute, reusing identical blobs). Returns the
    /// damaged file's new path, or None when the index was fine. Waits for exclusive use of the
    /// cache, calling `on_wait` first if it has to.
    pub fn repair_index(
        root: &Path,
        on_wait: impl FnOnce(),
    ) -> Result<Option<PathBuf>, CacheError> {
        let root = create_folders(root)?;
        let _lock = CacheLock::exclusive(&root, on_wait)?;
        Index::new(root.join("index.redb")).repair()
    }

    /// Waits until no other process uses the cache (calling `on_wait` first if it has to), then
    /// holds it exclusively: what `gc` needs so that it never deletes what a live run holds.
    /// Another handle on the same cache in this process would wait forever: use one.
    pub fn exclusive(&self, on_wait: impl FnOnce()) -> Result<Exclusive<'_>, CacheError> {
        self.lock.upgrade(on_wait)?;
        Ok(Exclusive { cache: self })
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
    /// modification time differs from when it was written is re-hashed. A damaged blob is
    /// deleted, and every record that uses it or was computed from it is forgotten, so those
    /// stages recompute.
    pub fn check(&self, found: &Found) -> Vec<Damage> {
        self.check_blobs(&found.record, Some(&found.stats))
    }

    /// Like [`Cache::check`], but re-hashes every blob whatever its stat says: for the inputs of
    /// a stage after it ran, which must not have changed them (a stage running as root can
    /// write into its read-only input views, which share the blobs' files).
    pub fn rehash(&self, record: &Record) -> Vec<Damage> {
        self.check_blobs(record, None)
    }

    /// With `known` stats, a blob whose stat matches is trusted; without, every blob is hashed.
    fn check_blobs(
        &self,
        record: &Record,
        known: Option<&HashMap<String, BlobStat>>,
    ) -> Vec<Damage> {
        let mut damage = Vec::new();
        for entry in record.files_with_log() {
            let expected = known.and_then(|stats| stats.get(&entry.hash));
            if let Err(problem) = self.blobs.check(&entry.hash, entry.size, expected) {
                tracing::warn!(
                    "cached blob {} ({}) of {} is damaged: {problem}",
                    entry.hash,
                    entry.path,
                    record.instance
                );
                damage.push(Damage {
                    path: entry.path.clone(),
                    hash: entry.hash.clone(),
                    problem,
                });
            }
        }
        if !damage.is_empty() {
            let hashes = damage.iter().map(|d| d.hash.clone()).collect();
            let keys = [record.key.clone()].into();
            if let Err(err) = self.index.forget_damaged(&hashes, &keys) {
                tracing::warn!("could not forget the records that use a damaged blob: {err}");
            }
        }
        damage
    }

    /// Takes the lease of `key`, or says who holds it.
    pub fn try_lease(&self, key: &str) -> Result<LeaseAttempt, CacheError> {
        Lease::try_take(&self.root.join("leases"), key)
    }

    /// The resume folder of `key`: kept across failed attempts at the key, so a stage can
    /// checkpoint there and continue on its next attempt; removed by [`Cache::remove_resume`]
    /// once the key commits. Call it only while holding the key's lease.
    pub fn resume_dir(&self, key: &str) -> Result<PathBuf, CacheError> {
        resume::folder(&self.root, key)
    }

    /// Removes the resume folder of a committed key.
    pub fn remove_resume(&self, key: &str) -> Result<(), CacheError> {
        resume::remove(&self.root, key)
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
        failpoint::hit("commit:dirs-synced");
        self.index.insert(&record, &stats)?;
        drop(staging); // removes the folder
        failpoint::hit("commit:staging-removed");
        Ok(record)
    }

    /// Builds a view of a record's output under `dest`: hard links into the blob store (copies
    /// where links are impossible). The files are read-only, but root can write them anyway, so
    /// the engine re-hashes a stage's inputs after it ran ([`Cache::rehash`]).
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

    /// Re-hashes every blob. Damaged blobs are deleted; the records that use a damaged or missing
    /// blob, and every record computed from their outputs, are forgotten, so those stages
    /// recompute on the next run.
    pub fn verify(&self) -> Result<VerifyReport, CacheError> {
        let damaged = self.blobs.verify_all()?;
        let present = self.blobs.hashes()?;
        let mut bad: BTreeSet<String> = damaged.iter().map(|(hash, _)| hash.clone()).collect();
        let mut missing = Vec::new();
        for record in self.index.all_records()? {
            for entry in record.files_with_log() {
                if !present.contains(&entry.hash) && bad.insert(entry.hash.clone()) {
                    missing.push((
                        entry.hash.clone(),
                        "missing from the blob store".to_string(),
                    ));
                }
            }
        }
        let forgotten = self.index.forget_damaged(&bad, &BTreeSet::new())?;
        let mut report = VerifyReport {
            blobs_checked: present.len() + damaged.len(),
            damaged,
            records_forgotten: forgotten.into_iter().map(|r| r.instance).collect(),
        };
        report.damaged.extend(missing);
        Ok(report)
    }
}

impl Exclusive<'_> {
    /// Removes every record whose key is not in `keep` (when given), then every blob no remaining
    /// record references, abandoned staging folders, free leases, index files left by a crash
    /// while the index was being created, and the resume folders of committed keys and (when
    /// `pending` is given) of keys not in it. Exclusive, so no run holds anything.
    pub fn gc(
        &self,
        keep: Option<&BTreeSet<String>>,
        pending: Option<&BTreeSet<String>>,
    ) -> Result<GcReport, CacheError> {
        let cache = self.cache;
        let mut report = match keep {
            Some(keep) => cache.index.retain(keep)?,
            None => GcReport::default(),
        };
        let referenced = cache.index.referenced_blobs()?;
        let (count, bytes) = cache.blobs.remove_unreferenced(&referenced)?;
        report.blobs_removed = count;
        report.bytes_freed += bytes;
        report.bytes_freed += staging::remove_abandoned(&cache.root.join("staging"));
        lease::remove_free(&cache.root.join("leases"));
        report.bytes_freed += remove_unfinished_indexes(&cache.root);
        let (resume, freed) = resume::collect(&cache.root, &cache.index, pending)?;
        report.resume = resume;
        report.bytes_freed += freed;
        Ok(report)
    }
}

/// Deletes `index.redb.new-*` files: with the cache held exclusively, nobody is creating one.
fn remove_unfinished_indexes(root: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(index::TMP_PREFIX)
        {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(entry.path()).is_ok() {
                freed += size;
            }
        }
    }
    freed
}
