//! Saving and loading a pre-trained model.
//!
//! A checkpoint folder holds `checkpoint.safetensors` (every parameter under its M3AE-style
//! name, F32, loadable with Python's `safetensors.torch.load_file`) and `model_config.json`
//! ([`CheckpointInfo`]: the sizes needed to rebuild the network).

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::{FeatureDims, UmdModel};
use crate::store::ParamStore;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const MODEL_CONFIG_FILE: &str = "model_config.json";

/// `model_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The preset the sizes came from (`tiny`, `small`, `base`).
    pub preset: String,
    pub model: ModelConfig,
    pub feature_dims: FeatureDims,
}

/// Writes the checkpoint of `store` (built for `info`) into `dir`.
pub fn save_checkpoint(dir: &Path, store: &ParamStore, info: &CheckpointInfo) -> Result<()> {
    store.save(&dir.join(CHECKPOINT_FILE))?;
    let path = dir.join(MODEL_CONFIG_FILE);
    let text = serde_json::to_string_pretty(info).map_err(|e| ModelError::Data(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| ModelError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Rebuilds the model of a checkpoint folder on `device`, with the saved weights.
pub fn load_checkpoint(
    dir: &Path,
    device: &Device,
) -> Result<(ParamStore, UmdModel, CheckpointInfo)> {
    let path = dir.join(MODEL_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let info: CheckpointInfo = serde_json::from_str(&text).map_err(|e| ModelError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    // Heads added on top of a loaded checkpoint (fine-tuning) are drawn like its own weights.
    let mut store = ParamStore::new(device, 0).with_weight_init(info.model.weight_init);
    let model = UmdModel::new(&mut store, &info.model, info.feature_dims)?;
    store.load_into(&dir.join(CHECKPOINT_FILE))?;
    Ok((store, model, info))
}
