//! Data for umdflow: the dataset artifact, the SynthRad generator, readers for the real
//! medical dataset formats, the WordPiece tokenizer and the `ingest` stage kind.

pub mod artifact;
pub mod error;
pub mod imaging;
pub mod ingest;
pub mod preview;
pub mod readers;
pub mod synthrad;
pub mod tokenizer;

pub use error::DataError;
pub use ingest::IngestKind;
