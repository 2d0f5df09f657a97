//! Evaluation metrics as plain functions of predictions and labels (no tensors), each checked
//! against hand-computed values.

pub mod calibration;
pub mod classification;
pub mod retrieval;
pub mod vqa;

use crate::error::{Result, TuneError};

/// Fails unless every slice has the same length as the first.
pub(crate) fn same_lengths(what: &str, lengths: &[usize]) -> Result<()> {
    match lengths.split_first() {
        Some((first, rest)) if rest.iter().any(|l| l != first) => Err(TuneError::invalid(format!(
            "{what}: inputs of different lengths {lengths:?}"
        ))),
        _ => Ok(()),
    }
}
