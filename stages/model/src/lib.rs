//! The UMD model (an M3AE-style image-text transformer) and MR-Pretrain on candle, with the
//! `mask` and `pretrain` stage kinds.
//!
//! Later stages reuse: [`model::UmdModel`] and [`config::ModelConfig`] (the network),
//! [`checkpoint`] (loading a pretrain output), [`losses`] (the MR losses), [`device`] (device
//! selection) and [`batch`] (tensors from the dataset artifact).

pub mod allocator;
pub mod config;
pub mod device;
pub mod error;
pub mod gradients;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod rng;
pub mod store;

pub use config::ModelConfig;
pub use error::ModelError;
pub mod batch;
pub mod checkpoint;
pub mod losses;
pub mod mask_stage;
pub mod masking;
pub mod negatives;
pub mod objective;
pub mod optim;
pub mod plot;
pub mod pretrain_stage;
pub mod pretrained;
pub mod resume;
pub mod train;
pub mod train_state;
pub mod worker_pool;

pub use mask_stage::MaskKind;
pub use pretrain_stage::PretrainKind;
