//! What a pretrained image encoder expects of its pixels, folded into its weights so that it
//! reads umdflow's input unchanged.
//!
//! CLIP was trained on RGB pixels normalised per channel, `z_c = (x_c − mean_c) / std_c`. umdflow
//! feeds every encoder `y = scale · x + shift` (`x · 2 − 1`, see `batch::patchify`) with the data's
//! channels (1 for the grey X-rays of every source umdflow reads). The patch embedding is linear,
//! so the normalisation and the grey-to-RGB repetition fold into it exactly:
//!
//! `W'[o, d, ·] = Σ_{c reads d} W[o, c, ·] / (scale · std_c)` and a constant
//! `b[o] = −Σ_c (shift / scale + mean_c) / std_c · Σ_pixels W[o, c, ·]`, added to every patch row
//! of the position table (the class token never passes through the patch embedding).
//!
//! A plain ViT normalises the same way (mean = std = 0.5 unless its folder says otherwise); its
//! own patch-embedding bias is added after the kernel and is left as it is.
//!
//! The folded encoder computes what CLIP computes on the grey image repeated to 3 channels and
//! normalised (tested), and the model, its checkpoint and every later stage keep one channel.

use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use super::EncoderInit;
use super::EncoderSlot;
use crate::error::{ModelError, Result};

/// The preprocessor file of a Hugging Face image model.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// OpenAI CLIP's per-channel mean and standard deviation (transformers' `OPENAI_CLIP_MEAN/STD`),
/// used when a folder has no `preprocessor_config.json`.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)] // transformers' digits, as written there
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The plain ViT's (`google/vit-*`) mean and standard deviation (transformers'
/// `IMAGENET_STANDARD_MEAN/STD`), used when its folder has no `preprocessor_config.json`.
pub const VIT_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
pub const VIT_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// `(x − mean[c]) / std[c]` per channel, for pixels `x` in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageNormalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ImageNormalization {
    /// `image_mean` and `image_std` of `dir/preprocessor_config.json`, or `fallback` (the
    /// family's own, see [`super::ImageFamily::default_normalization`]) when the file is absent;
    /// each must have one positive-std entry per channel.
    pub fn read(dir: &Path, channels: usize, fallback: ImageNormalization) -> Result<Self> {
        let path = dir.join(PREPROCESSOR_FILE);
        let norm = if path.is_file() {
            let fail = |message: String| ModelError::File {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
            let value: Value =
                serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
            let list = |key: &str| -> Result<Vec<f32>> {
                value
                    .get(key)
                    .and_then(Value::as_array)
                    .and_then(|xs| xs.iter().map(|x| x.as_f64().map(|x| x as f32)).collect())
                    .ok_or_else(|| fail(format!("field `{key}`: expected a list of numbers")))
            };
            ImageNormalization {
                mean: list("image_mean")?,
                std: list("image_std")?,
            }
        } else {
            fallback
        };
        if norm.mean.len() != channels
            || norm.std.len() != channels
            || norm.std.iter().any(|&s| s <= 0.0)
        {
            return Err(ModelError::File {
                path: path.display().to_string(),
                message: format!(
                    "image_mean {:?} and image_std {:?} must have {channels} entries (the \
                     encoder's channels), with positive std",
                    norm.mean, norm.std
                ),
            });
        }
        Ok(norm)
    }
}

impl EncoderInit {
    /// Folds `norm` and umdflow's input scaling `y = scale · x + shift` into the patch embedding
    /// and the position table, for data with `data_channels` channels (1: grey, repeated to every
    /// channel of the encoder; or the encoder's own channel count). Afterwards the encoder reads
    /// `data_channels` channels.
    pub fn fold_pixel_input(
        &mut self,
        data_channels: usize,
        norm: &ImageNormalization,
        scale: f32,
        shift: f32,
    ) -> Result<()> {
        let EncoderSlot::Image {
            patch_size,
            channels,
            family,
            activation,
        } = self.slot
        else {
            return Err(ModelError::Config(
                "pixel input can only be folded into an image encoder".into(),
            ));
        };
        if data_channels != 1 && data_channels != channels {
            return Err(ModelError::Config(format!(
                "the images have {data_channels} channels; the pretrained encoder ({}) reads \
                 {channels} (or grey images, repeated)",
                self.source
            )));
        }
        let kernel_name = "vision_encoder.patch_embed.weight";
        let positions_name = "vision_encoder.positional_embedding";
        let (Some(kernel), Some(positions)) = (
            self.tensors.get(kernel_name),
            self.tensors.get(positions_name),
        ) else {
            return Err(ModelError::Config(format!(
                "{}: the image encoder has no patch embedding or position table",
                self.source
            )));
        };
        let pixels = patch_size * patch_size;
        let kernel = kernel.to_vec2::<f32>()?;
        let device = positions.device().clone();
        let mut folded = vec![vec![0f32; data_channels * pixels]; kernel.len()];
        let mut constant = vec![0f32; kernel.len()];
        for (o, row) in kernel.iter().enumerate() {
            for c in 0..channels {
                let d = if data_channels == 1 { 0 } else { c };
                let weights = &row[c * pixels..(c + 1) * pixels];
                for (f, w) in folded[o][d * pixels..(d + 1) * pixels]
                    .iter_mut()
                    .zip(weights)
                {
                    *f += w / (scale * norm.std[c]);
                }
                let offset = (shift / scale + norm.mean[c]) / norm.std[c];
                constant[o] -= offset * weights.iter().sum::<f32>();
            }
        }
        let width = kernel.len();
        let flat: Vec<f32> = folded.into_iter().flatten().collect();
        let kernel = Tensor::from_vec(flat, (width, data_channels * pixels), &device)?;
        let rows = positions.dim(0)?;
        let constant = Tensor::from_vec(constant, width, &device)?;
        let positions = Tensor::cat(
            &[
                &positions.narrow(0, 0, 1)?,
                &positions.narrow(0, 1, rows - 1)?.broadcast_add(&constant)?,
            ],
            0,
        )?;
        self.tensors.insert(kernel_name.into(), kernel);
        self.tensors.insert(positions_name.into(), positions);
        self.slot = EncoderSlot::Image {
            patch_size,
            channels: data_channels,
            family,
            activation,
        };
        Ok(())
    }
}
