//! The image encoder `init.image` names: `config.json`'s `model_type` says which architecture the
//! folder holds (CLIP's vision tower or the plain ViT), and that family's table (`clip.rs`,
//! `vit.rs`) maps its tensors. The sizes, the kept blocks and the position resampling are shared.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::hf_config::HfConfig;
use super::interpolate::bicubic_resize_grid;
use super::{CONFIG_FILE, EncoderInit, ImageFamily, clip, vit};
use crate::config::VisionActivation;
use crate::error::{ModelError, Result};

/// Reads the image encoder in `dir` (CLIP or plain ViT, from `config.json`'s `model_type`) for
/// images of `image_size` pixels, keeping its first `layers` blocks (None: all of them).
pub fn load_image_encoder(
    dir: &Path,
    image_size: usize,
    layers: Option<usize>,
    device: &Device,
) -> Result<EncoderInit> {
    let file = HfConfig::read(&dir.join(CONFIG_FILE))?;
    let model_type = file.text("model_type", "")?;
    match model_type.as_str() {
        // A full CLIPModel: the vision tower's settings are nested, its tensors prefixed.
        "clip" => {
            let vision = file
                .nested("vision_config")?
                .ok_or_else(|| file.error("vision_config", "the vision tower's settings"))?;
            clip::load(dir, &vision, "vision_model.", image_size, layers, device)
        }
        "clip_vision_model" => clip::load(dir, &file, "", image_size, layers, device),
        "vit" => vit::load(dir, &file, image_size, layers, device),
        other => Err(ModelError::File {
            path: file.path().display().to_string(),
            message: format!(
                "model_type `{other}`: the image encoder reads CLIP (`clip` or \
                 `clip_vision_model`) or the plain ViT (`vit`)"
            ),
        }),
    }
}

/// The sizes of a ViT's `config.json`, checked against the data's image size and the blocks
/// asked for.
pub(super) struct VisionShape {
    pub(super) width: usize,
    pub(super) heads: usize,
    pub(super) mlp: usize,
    /// Blocks in the file.
    pub(super) depth: usize,
    /// Blocks kept (the first ones).
    pub(super) layers: usize,
    pub(super) channels: usize,
    pub(super) patch: usize,
    /// Patches per side the position table was trained for, and the data's.
    pub(super) from_grid: usize,
    pub(super) to_grid: usize,
    pub(super) norm_eps: f64,
    pub(super) activation: VisionActivation,
}

/// transformers' defaults for the keys a family's `config.json` may leave out.
pub(super) struct VisionDefaults {
    pub(super) patch_size: usize,
    pub(super) norm_eps: f64,
    pub(super) hidden_act: &'static str,
}

impl VisionShape {
    pub(super) fn read(
        config: &HfConfig,
        defaults: &VisionDefaults,
        image_size: usize,
        layers: Option<usize>,
    ) -> Result<Self> {
        let width = config.count("hidden_size", 768)?;
        let heads = config.count("num_attention_heads", 12)?;
        let mlp = config.count("intermediate_size", 3072)?;
        let depth = config.count("num_hidden_layers", 12)?;
        let channels = config.count("num_channels", 3)?;
        let source_size = config.count("image_size", 224)?;
        let patch = config.count("patch_size", defaults.patch_size)?;
        let norm_eps = config.positive("layer_norm_eps", defaults.norm_eps)?;
        // transformers' "gelu" is the exact (erf) GELU.
        let activation = match config
            .require("hidden_act", defaults.hidden_act, &["quick_gelu", "gelu"])?
            .as_str()
        {
            "gelu" => VisionActivation::Gelu,
            _ => VisionActivation::QuickGelu,
        };
        if !width.is_multiple_of(heads) {
            return Err(config.error("num_attention_heads", "a divisor of hidden_size"));
        }
        if !source_size.is_multiple_of(patch) {
            return Err(config.error("patch_size", "a divisor of image_size"));
        }
        if !image_size.is_multiple_of(patch) {
            return Err(ModelError::Config(format!(
                "the images are {image_size} px, not a multiple of the pretrained patch size \
                 {patch} ({})",
                config.path().display()
            )));
        }
        let layers = match layers {
            None => depth,
            Some(n) if (1..=depth).contains(&n) => n,
            Some(n) => {
                return Err(ModelError::Config(format!(
                    "{n} image-encoder layers asked for; {} has {depth}",
                    config.path().display()
                )));
            }
        };
        Ok(VisionShape {
            width,
            heads,
            mlp,
            depth,
            layers,
            channels,
            patch,
            from_grid: source_size / patch,
            to_grid: image_size / patch,
            norm_eps,
            activation,
        })
    }

    /// Whether `name` is a tensor of a block past the kept ones (`{blocks}{k}.…` with
    /// `layers <= k < depth`): known, and not used.
    pub(super) fn dropped_block(&self, name: &str, blocks: &str) -> bool {
        name.strip_prefix(blocks)
            .and_then(|rest| rest.split('.').next())
            .and_then(|k| k.parse::<usize>().ok())
            .is_some_and(|k| k >= self.layers && k < self.depth)
    }

    /// The position table [1 + from², width] for the data's grid: the class row kept, the patch
    /// rows resampled bicubically when the grids differ.
    pub(super) fn positions_for_data(&self, table: &Tensor, device: &Device) -> Result<Tensor> {
        resample_positions(table, self.from_grid, self.to_grid, device)
    }

    pub(super) fn sizes(&self) -> super::EncoderSizes {
        super::EncoderSizes {
            width: self.width,
            layers: self.layers,
            heads: self.heads,
            mlp: self.mlp,
            norm_eps: self.norm_eps,
        }
    }

    pub(super) fn slot(&self, family: ImageFamily) -> super::EncoderSlot {
        super::EncoderSlot::Image {
            patch_size: self.patch,
            channels: self.channels,
            family,
            activation: self.activation,
        }
    }
}

/// The class row kept, the `from`×`from` patch rows resampled to `to`×`to`.
fn resample_positions(table: &Tensor, from: usize, to: usize, device: &Device) -> Result<Tensor> {
    if from == to {
        return Ok(table.clone());
    }
    let width = table.dim(1)?;
    let rows = table.to_vec2::<f32>()?;
    let grid: Vec<f32> = rows[1..].iter().flatten().copied().collect();
    let mut values = rows[0].clone();
    values.extend(bicubic_resize_grid(&grid, from, to, width));
    Ok(Tensor::from_vec(values, (1 + to * to, width), device)?)
}
