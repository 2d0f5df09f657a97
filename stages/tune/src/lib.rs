//! TD-Calib, GM-Coord and evaluation for umdflow: the `calibrate`, `coordinate-tune`,
//! `evaluate` and `probe` stage kinds, the evaluation metrics and the image-only linear probe.
//!
//! Data enters only through [`views`]: training stages get a training-split view, evaluation a
//! test-split view (plus the training images for the linear probe).

pub mod calibrate;
pub mod coord;
pub mod error;
pub mod evaluate;
pub mod finetune;
pub mod finetune_state;
pub mod kinds;
pub mod metrics;
pub mod plots;
pub mod probe;
pub mod probe_features;
pub mod probe_heads;
pub mod probe_itm;
pub mod probe_mlm;
pub mod probe_words;
pub mod task;
pub mod views;

pub use error::{Result, TuneError};
pub use kinds::{CalibrateKind, CoordinateTuneKind, EvaluateKind, ProbeKind};
