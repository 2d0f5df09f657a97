use std::path::{Path, PathBuf};

/// Everything that can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache index {path}: {message}")]
    Index { path: PathBuf, message: String },
    /// The index file is not a readable redb database (e.g. written by a crash before index
    /// creation was atomic, or damaged on disk). The blobs are unaffected.
    #[error("cache index {path} is damaged: {message}")]
    DamagedIndex { path: PathBuf, message: String },
    #[error("stage output {path}: {message}")]
    Output { path: PathBuf, message: String },
}

impl CacheError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> CacheError {
        let path = path.as_ref().to_path_buf();
        move |source| CacheError::Io { path, source }
    }

    pub(crate) fn index(path: &Path, err: impl std::fmt::Display) -> CacheError {
        CacheError::Index {
            path: path.to_path_buf(),
            message: err.to_string(),
        }
    }
}
