//! Pre-training heads: the MAE-style image decoder (MIM), the MLM head, the ITM head and the
//! feature-level heads (FeaMIM, FeaMLM).

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::model::layers::{Activation, Block, Linear, Norm};
use crate::ops;
use crate::store::{Init, ParamRole, ParamStore};

/// MAE's fixed 2-D sin-cos positions for a `grid`×`grid` patch grid plus a leading all-zero row
/// for the class token: [1 + grid², width]. The first half of each row encodes the column, the
/// second half the row (as MAE's `get_2d_sincos_pos_embed`).
pub fn sincos_2d(width: usize, grid: usize) -> Vec<f32> {
    let half = width / 2;
    let quarter = half / 2;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut out = vec![0f32; (1 + grid * grid) * width];
    for row in 0..grid {
        for col in 0..grid {
            let base = (1 + row * grid + col) * width;
            for (part, coord) in [(0, col as f64), (1, row as f64)] {
                for (i, w) in omega.iter().enumerate() {
                    out[base + part * half + i] = (coord * w).sin() as f32;
                    out[base + part * half + quarter + i] = (coord * w).cos() as f32;
                }
            }
        }
    }
    out
}

/// The MAE decoder reading the image stream at fusion layer `mim_layer` (`mim_head.`):
/// Linear → mask tokens at the removed patches → fixed 2-D sin-cos positions → pre-LN blocks →
/// norm. [`MimDecoder::pixels`] maps the decoded patches to pixel values.
#[derive(Debug, Clone)]
pub struct MimDecoder {
    pub embed: Linear,
    pub mask_token: Tensor,
    pub positions: Tensor,
    pub blocks: Vec<Block>,
    pub norm: Norm,
    pub pixel: Linear,
}

impl MimDecoder {
    pub fn new(store: &mut ParamStore, c: &ModelConfig, device: &Device) -> Result<Self> {
        let p = "mim_head";
        let w = c.decoder_width;
        let positions = Tensor::from_vec(sincos_2d(w, c.grid()), (1 + c.num_patches(), w), device)?;
        Ok(MimDecoder {
            embed: Linear::new(store, &format!("{p}.embed"), c.fusion_width, w, true)?,
            mask_token: store.get(
                &format!("{p}.mask_token"),
                &[w],
                ParamRole::Embedding,
                Init::Normal(0.02),
            )?,
            positions,
            blocks: (0..c.decoder_layers)
                .map(|k| {
                    Block::new(
                        store,
                        &format!("{p}.blocks.{k}"),
                        w,
                        c.decoder_heads,
                        c.decoder_mlp,
                        Activation::QuickGelu,
                        true,
                        c.norm_eps,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            norm: Norm::new(store, &format!("{p}.norm"), w, c.norm_eps)?,
            pixel: Linear::new(store, &format!("{p}.pixel"), w, c.patch_dim(), true)?,
        })
    }

    /// `image`: [B, 1 + K, fusion_width] (class token, then the K visible patches);
    /// `restore`: U32 [B, L], for each patch position the index of its visible token in 0..K, or
    /// K for a removed patch (which gets the mask token). Returns decoded patches [B, L, width].
    pub fn decode(&self, image: &Tensor, restore: &Tensor) -> Result<Tensor> {
        let x = self.embed.forward(image)?;
        let (b, s, w) = x.dims3()?;
        let l = restore.dim(1)?;
        let cls = x.narrow(1, 0, 1)?;
        let visible = x.narrow(1, 1, s - 1)?;
        let mask = self
            .mask_token
            .reshape((1, 1, w))?
            .broadcast_as((b, 1, w))?;
        let pool = Tensor::cat(&[&visible, &mask], 1)?;
        let index = restore
            .unsqueeze(2)?
            .broadcast_as((b, l, w))?
            .contiguous()?;
        let full = pool.contiguous()?.gather(&index, 1)?;
        let mut x = Tensor::cat(&[&cls, &full], 1)?.broadcast_add(&self.positions.narrow(
            0,
            0,
            l + 1,
        )?)?;
        for block in &self.blocks {
            x = block.forward(&x, None)?;
        }
        Ok(self.norm.forward(&x)?.narrow(1, 1, l)?)
    }

    /// Pixel values per patch [B, L, patch_dim] from decoded patches.
    pub fn pixels(&self, decoded: &Tensor) -> Result<Tensor> {
        self.pixel.forward(decoded)
    }
}

/// BERT's prediction head (`mlm_head.`): dense → GELU → norm → vocabulary projection.
#[derive(Debug, Clone)]
pub struct MlmHead {
    pub dense: Linear,
    pub norm: Norm,
    pub decoder: Linear,
}

impl MlmHead {
    pub fn new(store: &mut ParamStore, c: &ModelConfig) -> Result<Self> {
        Ok(MlmHead {
            dense: Linear::new(
                store,
                "mlm_head.transform.dense",
                c.fusion_width,
                c.fusion_width,
                true,
            )?,
            norm: Norm::new(store, "mlm_head.transform.norm", c.fusion_width, c.norm_eps)?,
            decoder: Linear::new(
                store,
                "mlm_head.decoder",
                c.fusion_width,
                c.vocab_size,
                true,
            )?,
        })
    }

    /// Vocabulary logits for the given text features [..., fusion_width].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm.forward(&ops::gelu(&self.dense.forward(x)?)?)?;
        self.decoder.forward(&h)
    }
}

/// A two-layer MLP head `fc2(gelu(fc1 x))` (used for FeaMLM).
#[derive(Debug, Clone)]
pub struct MlpHead {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl MlpHead {
    pub fn new(store: &mut ParamStore, name: &str, input: usize, output: usize) -> Result<Self> {
        Ok(MlpHead {
            fc1: Linear::new(store, &format!("{name}.fc1"), input, input, true)?,
            fc2: Linear::new(store, &format!("{name}.fc2"), input, output, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&ops::gelu(&self.fc1.forward(x)?)?)
    }
}

/// Builds the gather indices for MAE masking from a [B·L] removed-patch mask (row-major):
/// `keep` U32 [B, K] lists each sample's visible patches in patch order; `restore` U32 [B, L] maps
/// each patch to its visible slot, or to K (the mask token) when removed. Every sample must keep
/// the same number K of patches (the masking plan guarantees it).
pub fn mae_indices(removed: &[bool], batch: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    if batch == 0 || !removed.len().is_multiple_of(batch) {
        return Err(crate::error::ModelError::Data(format!(
            "patch mask of length {} does not split into {batch} samples",
            removed.len()
        )));
    }
    let patches = removed.len() / batch;
    let visible = removed[..patches].iter().filter(|r| !**r).count();
    let mut keep = Vec::with_capacity(batch * visible);
    let mut restore = Vec::with_capacity(batch * patches);
    for (sample_index, sample) in removed.chunks(patches).enumerate() {
        let mut next = 0u32;
        for (position, &is_removed) in sample.iter().enumerate() {
            if is_removed {
                restore.push(visible as u32);
            } else {
                keep.push(position as u32);
                restore.push(next);
                next += 1;
            }
        }
        if next as usize != visible {
            return Err(crate::error::ModelError::Data(format!(
                "sample {sample_index} of the batch keeps {next} patches, the first keeps {visible}; \
                 MAE masking needs the same count for every sample"
            )));
        }
    }
    Ok((
        Tensor::from_vec(keep, (batch, visible), device)?,
        Tensor::from_vec(restore, (batch, patches), device)?,
    ))
}
