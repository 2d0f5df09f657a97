//! The redb index: key -> record, plus per-stage history and blob stats.
//!
//! Each process keeps one handle open in redb's multi-writer mode: any number of `umdflow`
//! processes share the file, reads never block, and redb serialises write transactions across
//! processes (each commit is one short transaction).
//!
//! The file is created atomically (built under a temporary name, fsynced, then linked into place),
//! because redb writes a new file's header in several steps and a crash between them leaves a file
//! that no later open accepts.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, ReadableDatabase, ReadableTable,
    StorageError, TableDefinition,
};

use crate::Found;
use crate::blobs::BlobStat;
use crate::error::CacheError;
use crate::failpoint;
use crate::record::Record;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("history");
const BLOB_STATS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("blob_stats");

/// How many earlier keys per stage are remembered for explaining reruns.
const HISTORY_LEN: usize = 32;
/// How long to keep retrying an open that another process blocks (e.g. while it repairs the file).
const OPEN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub records_removed: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    /// Resume folders removed and kept.
    pub resume: crate::resume::ResumeGc,
}

#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    pub blobs_checked: usize,
    /// (hash, what was wrong)
    pub damaged: Vec<(String, String)>,
    /// Instances whose records used a damaged or missing blob, or were computed from such a
    /// record's output.
    pub records_forgotten: Vec<String>,
}

/// An open read transaction.
pub struct Reader<'a> {
    index: &'a Index,
    txn: redb::ReadTransaction,
}

impl Reader<'_> {
    pub fn lookup(&self, keys: &[&str]) -> Result<HashMap<String, Found>, CacheError> {
        self.index.lookup_in(&self.txn, keys)
    }
}

pub(crate) struct Index {
    path: PathBuf,
    db: OnceLock<Database>,
}

fn history_key(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}\u{1f}{stage}")
}

/// Temporary index files being created are named `index.redb.new-<pid>-<nanos>`.
pub(crate) const TMP_PREFIX: &str = "index.redb.new-";

fn open_file(path: &Path) -> Result<Database, DatabaseError> {
    // redb checks some invariants with debug assertions; a damaged file must be an error here, not
    // a panic, in debug builds too.
    std::panic::catch_unwind(|| {
        Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
    })
    .unwrap_or_else(|_| {
        Err(DatabaseError::Storage(StorageError::Corrupted(
            "the database failed an internal consistency check".into(),
        )))
    })
}

/// Errors that mean the file is not a usable redb database (as opposed to, say, no permission).
fn is_damage(err: &DatabaseError) -> bool {
    match err {
        DatabaseError::Storage(StorageError::Corrupted(_)) => true,
        DatabaseError::Storage(StorageError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        DatabaseError::RepairAborted | DatabaseError::UpgradeRequired(_) => true,
        _ => false,
    }
}

impl Index {
    pub fn new(path: PathBuf) -> Self {
        Index {
            path,
            db: OnceLock::new(),
        }
    }

    /// The process's handle, opened on first use.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        if let Some(db) = self.db.get() {
            return f(db);
        }
        let db = self.open()?;
        f(self.db.get_or_init(|| db))
    }

    /// Opens the handle now, so that a damaged file is reported when the cache is opened.
    pub fn open_now(&self) -> Result<(), CacheError> {
        self.with_db(|_| Ok(()))
    }

    fn open(&self) -> Result<Database, CacheError> {
        if !self.path.exists() {
            self.create_atomically()?;
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match open_file(&self.path) {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < OPEN_TIMEOUT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(err) if is_damage(&err) => {
                    return Err(CacheError::DamagedIndex {
                        path: self.path.clone(),
                        message: err.to_string(),
                    });
                }
                Err(err) => return Err(CacheError::index(&self.path, err)),
            }
        }
    }

    /// Builds an empty index under a temporary name, fsyncs it and links it into place (a link
    /// never replaces a file another process created meanwhile), then fsyncs the folder.
    fn create_atomically(&self) -> Result<(), CacheError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let built = open_file(&tmp).map_err(|err| CacheError::index(&tmp, err));
        drop(built?);
        failpoint::hit("index-create:built");
        std::fs::File::open(&tmp)
            .and_then(|file| file.sync_all())
            .map_err(CacheError::io(&tmp))?;
        failpoint::hit("index-create:synced");
        let linked = std::fs::hard_link(&tmp, &self.path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(CacheError::io(&self.path)(err)),
        }
        failpoint::hit("index-create:linked");
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(CacheError::io(dir))
    }

    /// Moves a damaged index aside (`index.redb.damaged-<unix seconds>`) and creates a fresh one.
    /// Returns where the damaged file went, or None when the index opens fine. The caller holds
    /// the cache exclusively.
    pub fn repair(&self) -> Result<Option<PathBuf>, CacheError> {
        match self.open() {
            Ok(db) => {
                drop(db);
                Ok(None)
            }
            Err(CacheError::DamagedIndex { .. }) => {
                let seconds = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = self
                    .path
                    .with_file_name(format!("index.redb.damaged-{seconds}"));
                std::fs::rename(&self.path, &aside).map_err(CacheError::io(&aside))?;
                self.create_atomically()?;
                Ok(Some(aside))
            }
            Err(err) => Err(err),
        }
    }

    fn err(&self) -> impl Fn(redb::Error) -> CacheError + '_ {
        move |err| CacheError::index(&self.path, err)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Record, CacheError> {
        serde_json::from_slice(bytes)
            .map_err(|err| CacheError::index(&self.path, format!("unreadable record: {err}")))
    }

    pub fn lookup(&self, keys: &[&str]) -> Result<HashMap<String, Found>, CacheError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err()(e.into()))?;
            self.lookup_in(&txn, keys)
        })
    }

    /// Runs `f` with one read transaction open, for many lookups in a row (the planning pass).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err()(e.into()))?;
            f(&Reader { index: self, txn })
        })
    }

    fn lookup_in(
        &self,
        txn: &redb::ReadTransaction,
        keys: &[&str],
    ) -> Result<HashMap<String, Found>, CacheError> {
        let records = match txn.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
            Err(err) => return Err(self.err()(err.into())),
        };
        let stats_table = txn.open_table(BLOB_STATS).ok();
        let mut found = HashMap::new();
        for key in keys {
            let Some(bytes) = records.get(*key).map_err(|e| self.err()(e.into()))? else {
                continue;
            };
            let record = self.decode(bytes.value())?;
            let mut stats = HashMap::new();
            if let Some(table) = &stats_table {
                for entry in record.files_with_log() {
                    if let Some(stat) = table
                        .get(entry.hash.as_str())
                        .map_err(|e| self.err()(e.into()))?
                    {
                        let (size, mtime_ns) = stat.value();
                        stats.insert(entry.hash.clone(), BlobStat { size, mtime_ns });
                    }
                }
            }
            found.insert(key.to_string(), Found { record, stats });
        }
        Ok(found)
    }

    pub fn insert(&self, record: &Record, stats: &[(String, BlobStat)]) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(record).map_err(|err| CacheError::index(&self.path, err))?;
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err()(e.into()))?;
            {
                let mut records = txn.open_table(RECORDS).map_err(|e| self.err()(e.into()))?;
                records
                    .insert(record.key.as_str(), bytes.as_slice())
                    .map_err(|e| self.err()(e.into()))?;
                failpoint::hit("index:record-written");
                let mut blob_stats = txn
                    .open_table(BLOB_STATS)
                    .map_err(|e| self.err()(e.into()))?;
                for (hash, stat) in stats {
                    blob_stats
                        .insert(hash.as_str(), (stat.size, stat.mtime_ns))
                        .map_err(|e| self.err()(e.into()))?;
                }
                failpoint::hit("index:stats-written");
                let mut history = txn.open_table(HISTORY).map_err(|e| self.err()(e.into()))?;
                let name = history_key(&record.pipeline, &record.stage);
                let mut keys: Vec<String> = match history
                    .get(name.as_str())
                    .map_err(|e| self.err()(e.into()))?
                {
                    Some(bytes) => serde_json::from_slice(bytes.value()).unwrap_or_default(),
                    None => Vec::new(),
                };
                keys.retain(|key| key != &record.key);
                keys.push(record.key.clone());
                if keys.len() > HISTORY_LEN {
                    keys.drain(..keys.len() - HISTORY_LEN);
                }
                let encoded =
                    serde_json::to_vec(&keys).map_err(|err| CacheError::index(&self.path, err))?;
                history
                    .insert(name.as_str(), encoded.as_slice())
                    .map_err(|e| self.err()(e.into()))?;
                failpoint::hit("index:history-written");
            }
            txn.commit().map_err(|e| self.err()(e.into()))?;
            failpoint::hit("index:committed");
            Ok(())
        })
    }

    /// Forgets, in one transaction, every record that uses a blob in `damaged` (or is named in
    /// `keys`), and every record computed from one of those records' outputs, transitively
    /// through [`Record::input_digests`]. A record whose only damaged blob is its log taints
    /// nothing downstream. Returns the forgotten records.
    pub fn forget_damaged(
        &self,
        damaged: &BTreeSet<String>,
        keys: &BTreeSet<String>,
    ) -> Result<Vec<Record>, CacheError> {
        let all = self.all_records()?;
        let mut doomed: BTreeSet<usize> = BTreeSet::new();
        let mut tainted: BTreeSet<String> = BTreeSet::new();
        for (i, record) in all.iter().enumerate() {
            let bad_output = record.files.iter().any(|f| damaged.contains(&f.hash));
            let bad_log = record.log.iter().any(|f| damaged.contains(&f.hash));
            if bad_output || keys.contains(&record.key) {
                tainted.insert(record.output_digest.clone());
            }
            if bad_output || bad_log || keys.contains(&record.key) {
                doomed.insert(i);
            }
        }
        // Follow outputs downstream until nothing new is tainted.
        loop {
            let mut grew = false;
            for (i, record) in all.iter().enumerate() {
                if !doomed.contains(&i) && record.input_digests.iter().any(|d| tainted.contains(d))
                {
                    doomed.insert(i);
                    tainted.insert(record.output_digest.clone());
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err()(e.into()))?;
            {
                let mut records = txn.open_table(RECORDS).map_err(|e| self.err()(e.into()))?;
                for &i in &doomed {
                    records
                        .remove(all[i].key.as_str())
                        .map_err(|e| self.err()(e.into()))?;
                }
                let mut stats = txn
                    .open_table(BLOB_STATS)
                    .map_err(|e| self.err()(e.into()))?;
                for hash in damaged {
                    stats
                        .remove(hash.as_str())
                        .map_err(|e| self.err()(e.into()))?;
                }
                failpoint::hit("index:forget-written");
            }
            txn.commit().map_err(|e| self.err()(e.into()))
        })?;
        Ok(doomed.into_iter().map(|i| all[i].clone()).collect())
    }

    pub fn history(&self, pipeline: &str, stage: &str) -> Result<Vec<Record>, CacheError> {
        let keys: Vec<String> = self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err()(e.into()))?;
            let history = match txn.open_table(HISTORY) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(err) => return Err(self.err()(err.into())),
            };
            let name = history_key(pipeline, stage);
            Ok(
                match history
                    .get(name.as_str())
                    .map_err(|e| self.err()(e.into()))?
                {
                    Some(bytes) => serde_json::from_slice(bytes.value()).unwrap_or_default(),
                    None => Vec::new(),
                },
            )
        })?;
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let found = self.lookup(&refs)?;
        Ok(keys
            .iter()
            .filter_map(|key| found.get(key).map(|f| f.record.clone()))
            .collect())
    }

    pub fn all_records(&self) -> Result<Vec<Record>, CacheError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err()(e.into()))?;
            let records = match txn.open_table(RECORDS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(err) => return Err(self.err()(err.into())),
            };
            let mut all = Vec::new();
            for item in records.iter().map_err(|e| self.err()(e.into()))? {
                let (_, bytes) = item.map_err(|e| self.err()(e.into()))?;
                all.push(self.decode(bytes.value())?);
            }
            Ok(all)
        })
    }

    /// Removes records whose key is not in `keep`.
    pub fn retain(&self, keep: &BTreeSet<String>) -> Result<GcReport, CacheError> {
        let doomed: Vec<Record> = self
            .all_records()?
            .into_iter()
            .filter(|record| !keep.contains(&record.key))
            .collect();
        if doomed.is_empty() {
            return Ok(GcReport::default());
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err()(e.into()))?;
            {
                let mut records = txn.open_table(RECORDS).map_err(|e| self.err()(e.into()))?;
                for record in &doomed {
                    records
                        .remove(record.key.as_str())
                        .map_err(|e| self.err()(e.into()))?;
                }
            }
            txn.commit().map_err(|e| self.err()(e.into()))
        })?;
        Ok(GcReport {
            records_removed: doomed.len(),
            ..GcReport::default()
        })
    }

    /// Every blob hash some record uses; blob stats of the others are dropped.
    pub fn referenced_blobs(&self) -> Result<BTreeSet<String>, CacheError> {
        let referenced: BTreeSet<String> = self
            .all_records()?
            .iter()
            .flat_map(|record| record.files_with_log().map(|entry| entry.hash.clone()))
            .collect();
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err()(e.into()))?;
            {
                let mut stats = txn
                    .open_table(BLOB_STATS)
                    .map_err(|e| self.err()(e.into()))?;
                stats
                    .retain(|hash, _| referenced.contains(hash))
                    .map_err(|e| self.err()(e.into()))?;
            }
            txn.commit().map_err(|e| self.err()(e.into()))
        })?;
        Ok(referenced)
    }
}
