//! Pretrained encoders from local Hugging Face folders (`config.json` + `model.safetensors`), the
//! way M3AE starts: the image encoder from CLIP's ViT (or a plain ViT), the text encoder from
//! RoBERTa or BERT.
//!
//! A loader reads the folder's `config.json` for the encoder's sizes ([`EncoderInit`] carries them
//! into a [`ModelConfig`]), then maps every tensor of `model.safetensors` onto umdflow's parameter
//! names through an explicit table (`clip.rs`, `vit.rs`, `bert.rs`). Every tensor the table expects and does
//! not find, every tensor of the file the table neither maps nor knowingly ignores, and every
//! tensor of the wrong shape is named in one error; nothing is loaded partially. Nothing is
//! downloaded: the folders are obtained by hand (`docs/method.md`).

mod bert;
mod clip;
mod for_data;
mod hf_config;
mod image;
mod input;
mod interpolate;
mod tensors;
mod vit;

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::config::{ModelConfig, VisionActivation};
use crate::error::{ModelError, Result};
use crate::store::ParamStore;

pub use bert::load_text_encoder;
pub use for_data::{InitFolders, MODEL_INPUT_SCALE, MODEL_INPUT_SHIFT, load_for_data};
pub use image::load_image_encoder;
pub use input::{CLIP_MEAN, CLIP_STD, ImageNormalization, PREPROCESSOR_FILE, VIT_MEAN, VIT_STD};
pub use interpolate::bicubic_resize_grid;

/// The file names of a Hugging Face model folder.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The sizes one pretrained encoder imposes on the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSizes {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp: usize,
    pub norm_eps: f64,
}

/// The architecture an image encoder's folder holds (`config.json`'s `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFamily {
    /// CLIP's vision tower: no patch-embedding bias, `ln_pre` (`clip`, `clip_vision_model`).
    Clip,
    /// The plain ViT (`vit`): a patch-embedding bias, no `ln_pre`.
    Vit,
}

impl ImageFamily {
    /// The pixel normalisation its image processor applies when the folder has no
    /// `preprocessor_config.json` (transformers' `CLIPImageProcessor` / `ViTImageProcessor`
    /// defaults).
    pub fn default_normalization(self) -> ImageNormalization {
        let (mean, std) = match self {
            ImageFamily::Clip => (CLIP_MEAN, CLIP_STD),
            ImageFamily::Vit => (VIT_MEAN, VIT_STD),
        };
        ImageNormalization {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }
}

/// Which encoder of the UMD model a pretrained folder initialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderSlot {
    /// The ViT (`vision_encoder.*`); carries the patch size, the image channels, the family
    /// (which parts the ViT has) and the MLP activation.
    Image {
        patch_size: usize,
        channels: usize,
        family: ImageFamily,
        activation: VisionActivation,
    },
    /// The text encoder (`language_encoder.*`); carries the vocabulary size.
    Text { vocab_size: usize },
}

/// A pretrained encoder, read and mapped: its sizes and its tensors under umdflow's parameter
/// names, already shaped for the model (positions resampled or cut to the data's sizes).
#[derive(Debug, Clone)]
pub struct EncoderInit {
    /// The folder it came from (for messages).
    pub source: String,
    pub slot: EncoderSlot,
    pub sizes: EncoderSizes,
    pub tensors: BTreeMap<String, Tensor>,
}

impl EncoderInit {
    /// Writes this encoder's sizes into `config` (widths, depths, heads, epsilon, and the patch
    /// size, channels and the ViT's parts, or the vocabulary size).
    pub fn configure(&self, config: &mut ModelConfig) {
        let s = self.sizes;
        match self.slot {
            EncoderSlot::Image {
                patch_size,
                channels,
                family,
                activation,
            } => {
                config.vision_patch_bias = family == ImageFamily::Vit;
                config.vision_ln_pre = family == ImageFamily::Clip;
                config.vision_activation = activation;
                config.vision_width = s.width;
                config.vision_layers = s.layers;
                config.vision_heads = s.heads;
                config.vision_mlp = s.mlp;
                config.vision_norm_eps = Some(s.norm_eps);
                config.patch_size = patch_size;
                config.channels = channels;
            }
            EncoderSlot::Text { vocab_size } => {
                config.text_width = s.width;
                config.text_layers = s.layers;
                config.text_heads = s.heads;
                config.text_mlp = s.mlp;
                config.text_norm_eps = Some(s.norm_eps);
                config.vocab_size = vocab_size;
            }
        }
    }

    /// Overwrites the store's parameters with this encoder's tensors. The store must hold a model
    /// built from a config this encoder [`configure`](Self::configure)d; every parameter of the
    /// encoder's prefix must be covered, so a model that changed under the table is an error, not
    /// a half-random encoder.
    pub fn copy_into(&self, store: &ParamStore) -> Result<()> {
        let prefix = match self.slot {
            EncoderSlot::Image { .. } => "vision_encoder.",
            EncoderSlot::Text { .. } => "language_encoder.",
        };
        let mut problems = Vec::new();
        for (name, _) in store.iter().filter(|(n, _)| n.starts_with(prefix)) {
            if !self.tensors.contains_key(name) {
                problems.push(format!("model parameter `{name}` has no pretrained tensor"));
            }
        }
        for (name, tensor) in &self.tensors {
            match store.param(name) {
                None => problems.push(format!("`{name}` is not a parameter of the model")),
                Some(p) if p.var.dims() != tensor.dims() => problems.push(format!(
                    "`{name}` is {:?} in the model, {:?} pretrained",
                    p.var.dims(),
                    tensor.dims()
                )),
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            // Checked first, set after: a mismatch leaves the store as it was.
            for (name, tensor) in &self.tensors {
                if let Some(p) = store.param(name) {
                    p.var.set(tensor)?;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::File {
                path: self.source.clone(),
                message: problems.join("; "),
            })
        }
    }
}
