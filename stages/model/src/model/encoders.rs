//! The unimodal encoders: a ViT for images (CLIP layout) and a BERT/RoBERTa-style text encoder.

use candle_core::Tensor;

use crate::config::{ModelConfig, VisionActivation, VisionPositions};
use crate::error::Result;
use crate::model::heads::sincos_2d;
use crate::model::layers::{Activation, Block, Embedding, Norm, key_bias};
use crate::store::{Init, ParamRole, ParamStore};

/// What an encoder returns: the output of every block (before the final norm) and the final
/// output.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `blocks[k]` is the output of block k+1.
    pub blocks: Vec<Tensor>,
    pub last: Tensor,
}

/// CLIP-style ViT: linear patch embedding (a stride-`patch` convolution without bias), class
/// token, learned (or fixed sin-cos, see [`VisionPositions`]) positions, `ln_pre`, pre-LN blocks
/// with QuickGELU, `ln_post`. The plain ViT (`google/vit-*`) differs in three switches of
/// [`ModelConfig`]: a patch-embedding bias (`vision_patch_bias`), no `ln_pre` (`vision_ln_pre`)
/// and exact GELU (`vision_activation`); its final `layernorm` is `ln_post`.
/// Parameters under `vision_encoder.`.
#[derive(Debug, Clone)]
pub struct VisionEncoder {
    pub patch_embed: Tensor,
    /// `patch_embed.bias` [width], when `vision_patch_bias`.
    pub patch_bias: Option<Tensor>,
    pub class_embedding: Tensor,
    pub positional_embedding: Tensor,
    /// None when `vision_ln_pre` is false.
    pub ln_pre: Option<Norm>,
    pub blocks: Vec<Block>,
    pub ln_post: Norm,
}

impl VisionEncoder {
    pub fn new(store: &mut ParamStore, c: &ModelConfig) -> Result<Self> {
        let p = "vision_encoder";
        let w = c.vision_width;
        let patch_embed = store.get(
            &format!("{p}.patch_embed.weight"),
            &[w, c.patch_dim()],
            ParamRole::Weight,
            Init::Matrix {
                fan_in: c.patch_dim(),
                fan_out: w,
            },
        )?;
        let patch_bias = if c.vision_patch_bias {
            Some(store.get(
                &format!("{p}.patch_embed.bias"),
                &[w],
                ParamRole::Bias,
                Init::Zeros,
            )?)
        } else {
            None
        };
        let class_embedding = store.get(
            &format!("{p}.class_embedding"),
            &[w],
            ParamRole::Embedding,
            Init::Normal(0.02),
        )?;
        let positional_embedding = match c.vision_positions {
            VisionPositions::Learned => store.get(
                &format!("{p}.positional_embedding"),
                &[c.num_patches() + 1, w],
                ParamRole::Embedding,
                Init::Normal(0.02),
            )?,
            // A constant, not a store entry: no optimiser, EMA or checkpoint ever sees it.
            VisionPositions::Sincos => Tensor::from_vec(
                sincos_2d(w, c.grid()),
                (c.num_patches() + 1, w),
                store.device(),
            )?,
        };
        let ln_pre = if c.vision_ln_pre {
            Some(Norm::new(store, &format!("{p}.ln_pre"), w, c.vision_eps())?)
        } else {
            None
        };
        let activation = match c.vision_activation {
            VisionActivation::QuickGelu => Activation::QuickGelu,
            VisionActivation::Gelu => Activation::Gelu,
        };
        let blocks = (0..c.vision_layers)
            .map(|k| {
                Block::new(
                    store,
                    &format!("{p}.blocks.{k}"),
                    w,
                    c.vision_heads,
                    c.vision_mlp,
                    activation,
                    true,
                    c.vision_eps(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_post = Norm::new(store, &format!("{p}.ln_post"), w, c.vision_eps())?;
        Ok(VisionEncoder {
            patch_embed,
            patch_bias,
            class_embedding,
            positional_embedding,
            ln_pre,
            blocks,
            ln_post,
        })
    }

    /// `patches`: [B, L, patch_dim] (see [`crate::batch::patchify`]). `keep`: U32 [B, K] indices of
    /// the visible patches (MAE-style: positions are added first, then only the visible tokens are
    /// gathered; no mask tokens enter the encoder), or None for all patches. Returns
    /// [B, 1 + K, width] with the class token first.
    pub fn forward(&self, patches: &Tensor, keep: Option<&Tensor>) -> Result<EncoderOutput> {
        let (b, l, _) = patches.dims3()?;
        let width = self.class_embedding.dim(0)?;
        let x = crate::ops::linear(patches, &self.patch_embed, self.patch_bias.as_ref())?;
        let x = x.broadcast_add(&self.positional_embedding.narrow(0, 1, l)?)?;
        let x = match keep {
            Some(keep) => {
                let (_, k) = keep.dims2()?;
                let index = keep
                    .unsqueeze(2)?
                    .broadcast_as((b, k, width))?
                    .contiguous()?;
                x.gather(&index, 1)?
            }
            None => x,
        };
        let cls = (&self.class_embedding + self.positional_embedding.get(0)?)?
            .reshape((1, 1, width))?
            .broadcast_as((b, 1, width))?;
        let mut x = Tensor::cat(&[&cls, &x], 1)?;
        if let Some(ln_pre) = &self.ln_pre {
            x = ln_pre.forward(&x)?;
        }
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(&x, None)?;
            blocks.push(x.clone());
        }
        Ok(EncoderOutput {
            last: self.ln_post.forward(&x)?,
            blocks,
        })
    }
}

/// BERT/RoBERTa-style text encoder: word and position embeddings, embedding layer norm, post-LN
/// blocks with GELU and a padding mask. Parameters under `language_encoder.`.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    pub word_embeddings: Embedding,
    pub position_embeddings: Tensor,
    pub ln_embed: Norm,
    pub blocks: Vec<Block>,
}

impl TextEncoder {
    pub fn new(store: &mut ParamStore, c: &ModelConfig) -> Result<Self> {
        let p = "language_encoder";
        let w = c.text_width;
        let word_embeddings =
            Embedding::new(store, &format!("{p}.word_embeddings"), c.vocab_size, w)?;
        let position_embeddings = store.get(
            &format!("{p}.position_embeddings.weight"),
            &[c.max_len, w],
            ParamRole::Embedding,
            Init::Normal(0.02),
        )?;
        let ln_embed = Norm::new(store, &format!("{p}.ln_embed"), w, c.text_eps())?;
        let blocks = (0..c.text_layers)
            .map(|k| {
                Block::new(
                    store,
                    &format!("{p}.blocks.{k}"),
                    w,
                    c.text_heads,
                    c.text_mlp,
                    Activation::Gelu,
                    false,
                    c.text_eps(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TextEncoder {
            word_embeddings,
            position_embeddings,
            ln_embed,
            blocks,
        })
    }

    /// `ids`: U32 [B, T]; `mask`: F32 [B, T], 1 for real tokens. Returns [B, T, width].
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<EncoderOutput> {
        let (_, t) = ids.dims2()?;
        let x = self
            .word_embeddings
            .forward(ids)?
            .broadcast_add(&self.position_embeddings.narrow(0, 0, t)?)?;
        let mut x = self.ln_embed.forward(&x)?;
        let bias = key_bias(mask)?;
        let rows = super::layers::RealRows::of(mask)?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward_rows(&x, Some(&bias), rows.as_ref())?;
            blocks.push(x.clone());
        }
        Ok(EncoderOutput { last: x, blocks })
    }
}
