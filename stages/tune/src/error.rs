//! The crate's error type.

use umdflow_stages::StageError;

/// Everything that can go wrong while calibrating, tuning or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] umdflow_model::ModelError),
    #[error(transparent)]
    Data(#[from] umdflow_data::DataError),
    /// Inputs that do not fit together (lengths, class counts, missing splits).
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("interrupted")]
    Cancelled,
}

pub type Result<T> = std::result::Result<T, TuneError>;

impl TuneError {
    pub fn invalid(message: impl Into<String>) -> Self {
        TuneError::Invalid(message.into())
    }
}

impl From<TuneError> for StageError {
    fn from(err: TuneError) -> Self {
        match err {
            TuneError::Cancelled => StageError::Cancelled,
            other => StageError::Failed(other.to_string()),
        }
    }
}
