//! The pretrained encoders `pretrain`'s `init:` names, loaded for one dataset and mask plan.

use std::path::Path;

use candle_core::Device;
use umdflow_data::artifact::Dataset;

use super::{EncoderInit, EncoderSlot, ImageNormalization, load_image_encoder, load_text_encoder};
use crate::error::{ModelError, Result};

/// umdflow's model input `y = 2x − 1` for pixels x in [0, 1] (the scale and shift every caller
/// of `batch::patchify` passes).
pub const MODEL_INPUT_SCALE: f32 = 2.0;
pub const MODEL_INPUT_SHIFT: f32 = -1.0;

/// Local Hugging Face folders to start from (already resolved against the pipeline's folder).
#[derive(Debug, Clone, Default)]
pub struct InitFolders<'a> {
    /// A CLIP vision encoder or a plain ViT.
    pub image: Option<&'a Path>,
    /// A BERT or RoBERTa encoder.
    pub text: Option<&'a Path>,
    /// Keep only the image encoder's first blocks (M3AE: 11 of CLIP ViT-B/16's 12).
    pub image_layers: Option<usize>,
}

/// Loads the encoders `folders` names for `dataset` and a mask plan cutting `patch_size` pixel
/// patches: the image encoder at the data's image size (positions resampled), with its
/// preprocessing folded into its weights (see `input.rs`); the text encoder with the data's
/// `max_len` positions. The patch size and the vocabulary must agree with the data's.
pub fn load_for_data(
    folders: &InitFolders<'_>,
    dataset: &Dataset,
    patch_size: usize,
    device: &Device,
) -> Result<Vec<EncoderInit>> {
    let mut encoders = Vec::new();
    if let Some(dir) = folders.image {
        let mut image = load_image_encoder(dir, dataset.size, folders.image_layers, device)?;
        let (pretrained_patch, channels, family) = match image.slot {
            EncoderSlot::Image {
                patch_size,
                channels,
                family,
                ..
            } => (patch_size, channels, family),
            EncoderSlot::Text { .. } => {
                return Err(ModelError::Config(format!(
                    "{}: not an image encoder",
                    dir.display()
                )));
            }
        };
        if pretrained_patch != patch_size {
            return Err(ModelError::Config(format!(
                "the mask plan cuts {patch_size} px patches; the image encoder in {} was trained on \
                 {pretrained_patch} px patches (set the mask stage's patch_size to \
                 {pretrained_patch})",
                dir.display()
            )));
        }
        let norm = ImageNormalization::read(dir, channels, family.default_normalization())?;
        image.fold_pixel_input(
            dataset.channels,
            &norm,
            MODEL_INPUT_SCALE,
            MODEL_INPUT_SHIFT,
        )?;
        encoders.push(image);
    }
    if let Some(dir) = folders.text {
        let text = load_text_encoder(dir, dataset.max_len, device)?;
        if let EncoderSlot::Text { vocab_size } = text.slot
            && vocab_size != dataset.meta.vocab_size
        {
            return Err(ModelError::Config(format!(
                "the text encoder in {} has a vocabulary of {vocab_size}; the ingest's tokenizer \
                 has {}: the texts must be tokenized with the encoder's own tokenizer.json",
                dir.display(),
                dataset.meta.vocab_size
            )));
        }
        encoders.push(text);
    }
    Ok(encoders)
}
