//! The plain ViT (`ViTModel` such as `google/vit-base-patch16-224-in21k`, or the encoder inside
//! `ViTForImageClassification` such as `google/vit-base-patch16-224`) onto umdflow's ViT
//! (`vision_encoder.*`) in its plain-ViT layout: a patch-embedding bias, no `ln_pre`, exact GELU
//! (`ModelConfig::vision_patch_bias`, `vision_ln_pre`, `vision_activation`).
//!
//! The name table, Hugging Face → umdflow (`{P}` is `vit.` in a checkpoint with a classifier and
//! empty in a bare `ViTModel`; the names `save_pretrained` writes, which are the Hub's):
//!
//! | `{P}embeddings.cls_token` [1, 1, w] | `class_embedding` [w] |
//! | `{P}embeddings.patch_embeddings.projection.weight` [w, C, p, p] / `.bias` [w] | `patch_embed.weight` [w, C·p·p] (channel-major, as `batch::patchify` cuts patches) / `patch_embed.bias` |
//! | `{P}embeddings.position_embeddings` [1, 1 + g², w] | `positional_embedding` [1 + G², w], the patch rows resampled bicubically from g×g to G×G when the image size differs (the class row kept) |
//! | `{P}encoder.layer.{k}.layernorm_before.*` / `layernorm_after.*` | `blocks.{k}.ln1.*` / `ln2.*` |
//! | `{P}encoder.layer.{k}.attention.attention.{query,key,value}.*` | `blocks.{k}.attn.{q,k,v}.*` |
//! | `{P}encoder.layer.{k}.attention.output.dense.*` | `blocks.{k}.attn.o.*` |
//! | `{P}encoder.layer.{k}.intermediate.dense.*` / `output.dense.*` | `blocks.{k}.mlp.fc1.*` / `fc2.*` |
//! | `{P}layernorm.*` | `ln_post.*` (the ViT, like M3AE, normalises every token) |
//!
//! Known and not used: `{P}pooler.*` (`tanh(dense(h[:, 0]))`; M3AE pools through its own fusion
//! poolers, as it leaves CLIP's projection), `{P}embeddings.mask_token` (umdflow's MIM drops the
//! masked patches instead), blocks past `layers` when fewer are kept, and beside `{P}` the
//! `classifier.*`.

use std::path::Path;

use candle_core::Device;

use super::hf_config::HfConfig;
use super::image::{VisionDefaults, VisionShape};
use super::tensors::{BlockNames, CheckpointTensors, Mapped};
use super::{EncoderInit, ImageFamily, WEIGHTS_FILE};
use crate::error::Result;

/// `ViTLayer`'s parts (pre-LN: `layernorm_before` before the attention).
const VIT_BLOCK: BlockNames = BlockNames {
    q: "attention.attention.query",
    k: "attention.attention.key",
    v: "attention.attention.value",
    o: "attention.output.dense",
    fc1: "intermediate.dense",
    fc2: "output.dense",
    ln1: "layernorm_before",
    ln2: "layernorm_after",
};

/// transformers' `ViTConfig` defaults.
const VIT_DEFAULTS: VisionDefaults = VisionDefaults {
    patch_size: 16,
    norm_eps: 1e-12,
    hidden_act: "gelu",
};

/// Reads the plain ViT of `dir` (settings `config`) for images of `image_size` pixels, keeping
/// its first `layers` blocks (None: all of them).
pub(super) fn load(
    dir: &Path,
    config: &HfConfig,
    image_size: usize,
    layers: Option<usize>,
    device: &Device,
) -> Result<EncoderInit> {
    let shape = VisionShape::read(config, &VIT_DEFAULTS, image_size, layers)?;
    if !config.flag("qkv_bias", true)? {
        return Err(config.error("qkv_bias", "true (umdflow's attention has biases)"));
    }
    let (width, channels, patch) = (shape.width, shape.channels, shape.patch);
    let mut file = CheckpointTensors::read(&dir.join(WEIGHTS_FILE), device)?;
    // A checkpoint with a classifier nests the encoder under `vit.`.
    let p = if file.contains("vit.embeddings.cls_token") {
        "vit."
    } else {
        ""
    };
    let mut out = Mapped::new("vision_encoder.");
    let cls = file.take(&format!("{p}embeddings.cls_token"), &[], &[1, 1, width]);
    out.put(
        "class_embedding",
        cls.map(|t| t.reshape(width)).transpose()?,
    );
    let projection = format!("{p}embeddings.patch_embeddings.projection");
    let kernel = file.take(
        &format!("{projection}.weight"),
        &[],
        &[width, channels, patch, patch],
    );
    out.put(
        "patch_embed.weight",
        kernel
            .map(|k| k.reshape((width, channels * patch * patch)))
            .transpose()?,
    );
    out.put(
        "patch_embed.bias",
        file.take(&format!("{projection}.bias"), &[], &[width]),
    );
    let rows = 1 + shape.from_grid * shape.from_grid;
    let positions = file.take(
        &format!("{p}embeddings.position_embeddings"),
        &[],
        &[1, rows, width],
    );
    out.put(
        "positional_embedding",
        positions
            .map(|t| shape.positions_for_data(&t.reshape((rows, width))?, device))
            .transpose()?,
    );
    out.norm(&mut file, &format!("{p}layernorm"), "ln_post", width);
    for k in 0..shape.layers {
        let hf = format!("{p}encoder.layer.{k}");
        out.block(
            &mut file,
            (&hf, &format!("blocks.{k}")),
            &VIT_BLOCK,
            width,
            shape.mlp,
        );
    }
    let blocks = format!("{p}encoder.layer.");
    file.ignore(|name| {
        name == format!("{p}embeddings.mask_token")
            || name.starts_with(&format!("{p}pooler."))
            || shape.dropped_block(name, &blocks)
            || (!p.is_empty() && name.starts_with("classifier."))
    });
    file.finish("ViT")?;
    Ok(EncoderInit {
        source: dir.display().to_string(),
        slot: shape.slot(ImageFamily::Vit),
        sizes: shape.sizes(),
        tensors: out.tensors,
    })
}
