use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One file of a stage's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the output folder, with `/` separators.
    pub path: String,
    /// blake3 of the content, hex.
    pub hash: String,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
}

/// What the cache knows about one computed stage instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The stage key (blake3 hex of the key components).
    pub key: String,
    /// The pipeline's `name:`.
    pub pipeline: String,
    /// The stage's name in the pipeline.
    pub stage: String,
    /// Readable instance id, e.g. `train[ratio=0.5,seed=1]`.
    pub instance: String,
    /// The key components (kind, version, params, input digests, deps), kept so that `plan` can
    /// say which field changed. Opaque to the cache.
    pub components: Value,
    /// The output digests of the inputs this record was computed from. When an output turns out
    /// damaged, the cache follows these to forget everything computed from it. (Records written
    /// before this field existed have none.)
    #[serde(default)]
    pub input_digests: Vec<String>,
    /// How many threads the stage was given when it produced this record.
    #[serde(default)]
    pub threads: Option<usize>,
    /// The device the stage computed on, as the stage reported it (`device` in its
    /// `metrics.json`); None for stages that report none.
    #[serde(default)]
    pub device: Option<String>,
    /// The output manifest, sorted by path.
    pub files: Vec<FileEntry>,
    /// blake3 of the canonical manifest: what downstream keys depend on.
    pub output_digest: String,
    /// The stage's own log, stored as a blob.
    pub log: Option<FileEntry>,
    /// The stage's `metrics.json`, if it wrote one.
    pub metrics: Option<Value>,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub duration_s: f64,
    pub umdflow_version: String,
}

impl Record {
    /// The output files and the log.
    pub fn files_with_log(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.iter().chain(self.log.iter())
    }

    /// Total bytes of the output files.
    pub fn output_bytes(&self) -> u64 {
        self.files.iter().map(|entry| entry.size).sum()
    }
}

/// The digest of an output: blake3 over the sorted `(path, hash, executable)` lines. Two stage runs
/// that write the same files give the same digest, which is what makes early cutoff work.
pub fn output_digest(entries: &[FileEntry]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"umdflow-output-v1\n");
    for entry in entries {
        hasher.update(entry.path.as_bytes());
        hasher.update(b"\0");
        hasher.update(entry.hash.as_bytes());
        hasher.update(if entry.executable { b"\0x\n" } else { b"\0-\n" });
    }
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, hash: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            hash: hash.into(),
            size: 1,
            executable: false,
        }
    }

    #[test]
    fn output_digest_depends_on_names_and_content() {
        let a = output_digest(&[entry("a", "11"), entry("b", "22")]);
        assert_eq!(a, output_digest(&[entry("a", "11"), entry("b", "22")]));
        assert_ne!(a, output_digest(&[entry("a", "11"), entry("c", "22")]));
        assert_ne!(a, output_digest(&[entry("a", "11"), entry("b", "23")]));
        assert_ne!(output_digest(&[]), a);
    }
}
