//! CLIP's vision tower (`CLIPVisionModel`, or the vision half of a full `CLIPModel` such as
//! `openai/clip-vit-base-patch16`) onto umdflow's ViT (`vision_encoder.*`) in its default, CLIP
//! layout (no patch bias, `ln_pre`).
//!
//! The name table, Hugging Face → umdflow (`{P}` is `vision_model.` in a full CLIP checkpoint and
//! empty in a `CLIPVisionModel` saved by transformers 5):
//!
//! | `{P}embeddings.class_embedding` [w] | `class_embedding` |
//! | `{P}embeddings.patch_embedding.weight` [w, C, p, p] | `patch_embed.weight` [w, C·p·p] (channel-major, as `batch::patchify` cuts patches) |
//! | `{P}embeddings.position_embedding.weight` [1 + g², w] | `positional_embedding` [1 + G², w], the patch rows resampled bicubically from g×g to G×G when the image size differs (the class row kept) |
//! | `{P}pre_layrnorm.*` | `ln_pre.*` |
//! | `{P}encoder.layers.{k}.layer_norm1.*` / `layer_norm2.*` | `blocks.{k}.ln1.*` / `ln2.*` |
//! | `{P}encoder.layers.{k}.self_attn.{q,k,v,out}_proj.*` | `blocks.{k}.attn.{q,k,v,o}.*` |
//! | `{P}encoder.layers.{k}.mlp.fc1.*` / `fc2.*` | `blocks.{k}.mlp.fc1.*` / `fc2.*` |
//! | `{P}post_layernorm.*` | `ln_post.*` (M3AE applies it to every token) |
//!
//! Known and not used: `{P}embeddings.position_ids` (a buffer), blocks past `layers` when fewer are
//! kept (M3AE keeps 11 of ViT-B/16's 12), and in a full CLIP checkpoint the text tower
//! (`text_model.*`), both projections and `logit_scale`.

use std::path::Path;

use candle_core::Device;

use super::hf_config::HfConfig;
use super::image::{VisionDefaults, VisionShape};
use super::tensors::{BlockNames, CheckpointTensors, Mapped};
use super::{EncoderInit, ImageFamily, WEIGHTS_FILE};
use crate::error::Result;

/// `CLIPEncoderLayer`'s parts (pre-LN: `layer_norm1` before the attention).
const CLIP_BLOCK: BlockNames = BlockNames {
    q: "self_attn.q_proj",
    k: "self_attn.k_proj",
    v: "self_attn.v_proj",
    o: "self_attn.out_proj",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
    ln1: "layer_norm1",
    ln2: "layer_norm2",
};

/// transformers' `CLIPVisionConfig` defaults.
const CLIP_DEFAULTS: VisionDefaults = VisionDefaults {
    patch_size: 32,
    norm_eps: 1e-5,
    hidden_act: "quick_gelu",
};

/// Reads the CLIP vision encoder of `dir`, whose settings are `config` and whose tensors carry
/// `prefix` (`vision_model.` in a full CLIP checkpoint), for images of `image_size` pixels,
/// keeping its first `layers` blocks (None: all of them).
pub(super) fn load(
    dir: &Path,
    config: &HfConfig,
    prefix: &str,
    image_size: usize,
    layers: Option<usize>,
    device: &Device,
) -> Result<EncoderInit> {
    let shape = VisionShape::read(config, &CLIP_DEFAULTS, image_size, layers)?;
    let (width, channels, patch) = (shape.width, shape.channels, shape.patch);
    let mut file = CheckpointTensors::read(&dir.join(WEIGHTS_FILE), device)?;
    let mut out = Mapped::new("vision_encoder.");
    let p = prefix;
    out.put(
        "class_embedding",
        file.take(&format!("{p}embeddings.class_embedding"), &[], &[width]),
    );
    let kernel = file.take(
        &format!("{p}embeddings.patch_embedding.weight"),
        &[],
        &[width, channels, patch, patch],
    );
    out.put(
        "patch_embed.weight",
        kernel
            .map(|k| k.reshape((width, channels * patch * patch)))
            .transpose()?,
    );
    let positions = file.take(
        &format!("{p}embeddings.position_embedding.weight"),
        &[],
        &[1 + shape.from_grid * shape.from_grid, width],
    );
    out.put(
        "positional_embedding",
        positions
            .map(|t| shape.positions_for_data(&t, device))
            .transpose()?,
    );
    out.norm(&mut file, &format!("{p}pre_layrnorm"), "ln_pre", width);
    out.norm(&mut file, &format!("{p}post_layernorm"), "ln_post", width);
    for k in 0..shape.layers {
        let hf = format!("{p}encoder.layers.{k}");
        out.block(
            &mut file,
            (&hf, &format!("blocks.{k}")),
            &CLIP_BLOCK,
            width,
            shape.mlp,
        );
    }
    let blocks = format!("{p}encoder.layers.");
    file.ignore(|name| {
        name == format!("{p}embeddings.position_ids")
            || shape.dropped_block(name, &blocks)
            || (!p.is_empty()
                && (name.starts_with("text_model.")
                    || name.starts_with("visual_projection.")
                    || name.starts_with("text_projection.")
                    || name == "logit_scale"))
    });
    file.finish("CLIP vision")?;
    Ok(EncoderInit {
        source: dir.display().to_string(),
        slot: shape.slot(ImageFamily::Clip),
        sizes: shape.sizes(),
        tensors: out.tensors,
    })
}
