//! The one error type of the data crate: every variant names the file it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what was expected.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// One record inside a file (a JSON entry, a csv row, a line) is malformed.
    #[error("{}: record {record}: {message}", path.display())]
    Record {
        path: PathBuf,
        record: String,
        message: String,
    },
    /// The run was interrupted (Ctrl-C) before it finished.
    #[error("interrupted")]
    Cancelled,
    /// Something a caller asked for cannot be done (bad parameter combination, unsupported case).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// Wraps an I/O error with the path being read or written.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }

    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> DataError {
        DataError::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn record(
        path: impl Into<PathBuf>,
        record: impl Into<String>,
        message: impl Into<String>,
    ) -> DataError {
        DataError::Record {
            path: path.into(),
            record: record.into(),
            message: message.into(),
        }
    }
}
