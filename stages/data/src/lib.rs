//! Data for umdflow: the dataset artifact, the SynthRad generator, dataset readers, the
//! tokenizer and the `ingest` stage kind.

pub mod artifact;
pub mod error;

pub use error::DataError;
