//! The crate's error type.

/// Everything that can go wrong while building, running or saving the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("device `{spec}`: {message}")]
    Device { spec: String, message: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("loss became {value} at step {step} (term `{term}`); training stopped")]
    NonFinite { step: u64, term: String, value: f32 },
    #[error("{0}")]
    Data(String),
    #[error("interrupted")]
    Cancelled,
}

pub type Result<T> = std::result::Result<T, ModelError>;
