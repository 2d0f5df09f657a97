//! The redb index: key -> record, plus per-stage history and blob stats.
//!
//! Each process keeps one handle open in redb's multi-writer mode: any number of `umdflow`
//! processes share the file, reads never block, and redb serialises write transactions across
//! processes (each commit is one short transaction).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, ReadableDatabase, ReadableTable,
    TableDefinition,
};

use crate::Found;
use crate::blobs::BlobStat;
use crate::error::CacheError;
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
}

#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    pub blobs_checked: usize,
    /// (hash, what was wrong)
    pub damaged: Vec<(String, String)>,
    /// Instances whose records used a damaged blob.
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

    fn open(&self) -> Result<Database, CacheError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let opened = Builder::new()
                .set_concurrency_mode(ConcurrencyMode::MultiWriter)
                .create(&self.path);
            match opened {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < OPEN_TIMEOUT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(err) => return Err(CacheError::index(&self.path, err)),
            }
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
                let mut blob_stats = txn
                    .open_table(BLOB_STATS)
                    .map_err(|e| self.err()(e.into()))?;
                for (hash, stat) in stats {
                    blob_stats
                        .insert(hash.as_str(), (stat.size, stat.mtime_ns))
                        .map_err(|e| self.err()(e.into()))?;
                }
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
            }
            txn.commit().map_err(|e| self.err()(e.into()))
        })
    }

    pub fn remove(&self, key: &str) -> Result<(), CacheError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err()(e.into()))?;
            {
                let mut records = txn.open_table(RECORDS).map_err(|e| self.err()(e.into()))?;
                records.remove(key).map_err(|e| self.err()(e.into()))?;
            }
            txn.commit().map_err(|e| self.err()(e.into()))
        })
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
