//! CLIP's vision tower (`CLIPVisionModel`, or the vision half of a full `CLIPModel` such as
//! `openai/clip-vit-base-patch16`) onto umdflow's ViT (`vision_encoder.*`).
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

use candle_core::{Device, Tensor};

use super::hf_config::HfConfig;
use super::interpolate::bicubic_resize_grid;
use super::tensors::{BlockNames, CheckpointTensors, Mapped};
use super::{CONFIG_FILE, EncoderInit, EncoderSizes, EncoderSlot, WEIGHTS_FILE};
use crate::error::{ModelError, Result};

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

/// Reads a CLIP vision encoder from `dir` for images of `image_size` pixels, keeping its first
/// `layers` blocks (None: all of them).
pub fn load_image_encoder(
    dir: &Path,
    image_size: usize,
    layers: Option<usize>,
    device: &Device,
) -> Result<EncoderInit> {
    let file = HfConfig::read(&dir.join(CONFIG_FILE))?;
    let model_type = file.text("model_type", "")?;
    let (config, prefix) = match model_type.as_str() {
        // A full CLIPModel: the vision tower's settings are nested, its tensors prefixed.
        "clip" => (
            file.nested("vision_config")?
                .ok_or_else(|| file.error("vision_config", "the vision tower's settings"))?,
            "vision_model.",
        ),
        "clip_vision_model" => (file, ""),
        other => {
            return Err(ModelError::File {
                path: dir.join(CONFIG_FILE).display().to_string(),
                message: format!(
                    "model_type `{other}`: the image encoder reads CLIP (`clip` or \
                     `clip_vision_model`)"
                ),
            });
        }
    };
    // transformers' CLIPVisionConfig defaults, for keys the file leaves out.
    let width = config.count("hidden_size", 768)?;
    let heads = config.count("num_attention_heads", 12)?;
    let mlp = config.count("intermediate_size", 3072)?;
    let depth = config.count("num_hidden_layers", 12)?;
    let channels = config.count("num_channels", 3)?;
    let source_size = config.count("image_size", 224)?;
    let patch = config.count("patch_size", 32)?;
    let norm_eps = config.positive("layer_norm_eps", 1e-5)?;
    config.require("hidden_act", "quick_gelu", &["quick_gelu"])?;
    if !width.is_multiple_of(heads) {
        return Err(config.error("num_attention_heads", "a divisor of hidden_size"));
    }
    if !source_size.is_multiple_of(patch) {
        return Err(config.error("patch_size", "a divisor of image_size"));
    }
    if !image_size.is_multiple_of(patch) {
        return Err(ModelError::Config(format!(
            "the images are {image_size} px, not a multiple of the pretrained patch size {patch} \
             ({})",
            dir.display()
        )));
    }
    let layers = match layers {
        None => depth,
        Some(n) if (1..=depth).contains(&n) => n,
        Some(n) => {
            return Err(ModelError::Config(format!(
                "{n} image-encoder layers asked for; {} has {depth}",
                dir.display()
            )));
        }
    };

    let mut file = CheckpointTensors::read(&dir.join(WEIGHTS_FILE), device)?;
    let (from, to) = (source_size / patch, image_size / patch);
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
        &[1 + from * from, width],
    );
    out.put(
        "positional_embedding",
        positions
            .map(|t| resample_positions(&t, from, to, device))
            .transpose()?,
    );
    out.norm(&mut file, &format!("{p}pre_layrnorm"), "ln_pre", width);
    out.norm(&mut file, &format!("{p}post_layernorm"), "ln_post", width);
    for k in 0..layers {
        let hf = format!("{p}encoder.layers.{k}");
        out.block(
            &mut file,
            (&hf, &format!("blocks.{k}")),
            &CLIP_BLOCK,
            width,
            mlp,
        );
    }
    let dropped = |name: &str| {
        name.strip_prefix(&format!("{p}encoder.layers."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|k| k.parse::<usize>().ok())
            .is_some_and(|k| k >= layers && k < depth)
    };
    file.ignore(|name| {
        name == format!("{p}embeddings.position_ids")
            || dropped(name)
            || (!p.is_empty()
                && (name.starts_with("text_model.")
                    || name.starts_with("visual_projection.")
                    || name.starts_with("text_projection.")
                    || name == "logit_scale"))
    });
    file.finish("CLIP vision")?;
    Ok(EncoderInit {
        source: dir.display().to_string(),
        slot: EncoderSlot::Image {
            patch_size: patch,
            channels,
        },
        sizes: EncoderSizes {
            width,
            layers,
            heads,
            mlp,
            norm_eps,
        },
        tensors: out.tensors,
    })
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
