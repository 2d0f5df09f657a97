//! The UMD model: M3AE's backbone (ViT + text encoder + co-attention fusion) with the
//! MR-Pretrain heads. Parameter names follow M3AE's module names so checkpoints read naturally
//! next to the reference code (see `docs/method.md` for the full list).

pub mod encoders;
pub mod heads;
pub mod layers;

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::store::ParamStore;
use encoders::{TextEncoder, VisionEncoder};
use heads::{MimDecoder, MlmHead, MlpHead};
use layers::{CoAttentionLayer, Embedding, Linear, Pooler, key_bias};

/// Output widths of the feature-level heads (they predict the chosen target features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureDims {
    pub image: usize,
    pub text: usize,
}

/// Both streams after every fusion layer: `text[0]`/`image[0]` are the projected encoder outputs
/// (with modality-type embeddings), `text[k]`/`image[k]` the outputs of fusion layer k.
#[derive(Debug, Clone)]
pub struct FusionOutput {
    pub text: Vec<Tensor>,
    pub image: Vec<Tensor>,
}

/// The whole model. Build it with [`UmdModel::new`] from a [`ParamStore`]; all tensors are views of
/// the store's variables, so optimiser updates are seen at once.
#[derive(Debug, Clone)]
pub struct UmdModel {
    pub config: ModelConfig,
    pub feature_dims: FeatureDims,
    pub vision: VisionEncoder,
    pub text: TextEncoder,
    pub vision_proj: Linear,
    pub text_proj: Linear,
    pub modality_type: Embedding,
    pub vision_layers: Vec<CoAttentionLayer>,
    pub text_layers: Vec<CoAttentionLayer>,
    pub vision_pooler: Pooler,
    pub text_pooler: Pooler,
    pub mim_head: MimDecoder,
    pub mlm_head: MlmHead,
    pub itm_head: Linear,
    pub feamim_head: Linear,
    pub feamlm_head: MlpHead,
    device: Device,
}

impl UmdModel {
    /// Creates every parameter in `store` (seeded) and the model reading them.
    pub fn new(
        store: &mut ParamStore,
        config: &ModelConfig,
        feature_dims: FeatureDims,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let f = c.fusion_width;
        let device = store.device().clone();
        let fusion = |store: &mut ParamStore, stream: &str| {
            (0..c.fusion_layers)
                .map(|k| {
                    CoAttentionLayer::new(
                        store,
                        &format!("multi_modal_{stream}_layers.{k}"),
                        f,
                        c.fusion_heads,
                        c.fusion_mlp,
                        c.norm_eps,
                    )
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok(UmdModel {
            vision: VisionEncoder::new(store, c)?,
            text: TextEncoder::new(store, c)?,
            vision_proj: Linear::new(store, "multi_modal_vision_proj", c.vision_width, f, true)?,
            text_proj: Linear::new(store, "multi_modal_language_proj", c.text_width, f, true)?,
            modality_type: Embedding::new(store, "modality_type_embeddings", 2, f)?,
            vision_layers: fusion(store, "vision")?,
            text_layers: fusion(store, "language")?,
            vision_pooler: Pooler::new(store, "multi_modal_vision_pooler", f)?,
            text_pooler: Pooler::new(store, "multi_modal_language_pooler", f)?,
            mim_head: MimDecoder::new(store, c, &device)?,
            mlm_head: MlmHead::new(store, c)?,
            itm_head: Linear::new(store, "itm_head.fc", 2 * f, 2, true)?,
            feamim_head: Linear::new(
                store,
                "feamim_head.fc",
                c.decoder_width,
                feature_dims.image,
                true,
            )?,
            feamlm_head: MlpHead::new(store, "feamlm_head", f, feature_dims.text)?,
            config: config.clone(),
            feature_dims,
            device,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Projects the encoder outputs into the fusion width and adds the modality-type embeddings
    /// (0 = text, 1 = image).
    pub fn project(&self, text: &Tensor, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let types = self.modality_type.table.clone();
        let text = self
            .text_proj
            .forward(text)?
            .broadcast_add(&types.get(0)?)?;
        let image = self
            .vision_proj
            .forward(image)?
            .broadcast_add(&types.get(1)?)?;
        Ok((text, image))
    }

    /// Runs the projections and the first `layers` co-attention layers. Both streams of layer
    /// k+1 are computed from layer k (M3AE's parallel update). `text_mask`: F32 [B, T].
    pub fn fuse(
        &self,
        text: &Tensor,
        text_mask: &Tensor,
        image: &Tensor,
        layers: usize,
    ) -> Result<FusionOutput> {
        let (mut t, mut i) = self.project(text, image)?;
        let text_bias = key_bias(text_mask)?;
        let text_rows = crate::model::layers::RealRows::of(text_mask)?;
        let mut out = FusionOutput {
            text: vec![t.clone()],
            image: vec![i.clone()],
        };
        for k in 0..layers.min(self.text_layers.len()) {
            let text_rows = text_rows.as_ref();
            let t_next =
                self.text_layers[k].forward(&t, Some(&text_bias), text_rows, &i, None, None)?;
            let i_next =
                self.vision_layers[k].forward(&i, None, None, &t, Some(&text_bias), text_rows)?;
            t = t_next;
            i = i_next;
            out.text.push(t.clone());
            out.image.push(i.clone());
        }
        Ok(out)
    }

    /// `concat(text_pool, image_pool)` [B, 2·fusion_width] from the final fusion layer.
    pub fn pooled(&self, fused: &FusionOutput) -> Result<Tensor> {
        let (Some(t), Some(i)) = (fused.text.last(), fused.image.last()) else {
            return Err(crate::error::ModelError::Config(
                "fusion produced no layers".into(),
            ));
        };
        Ok(Tensor::cat(
            &[
                &self.text_pooler.forward(t)?,
                &self.vision_pooler.forward(i)?,
            ],
            1,
        )?)
    }

    /// ITM logits [B, 2] (class 1 = matched pair).
    pub fn itm_logits(&self, pooled: &Tensor) -> Result<Tensor> {
        self.itm_head.forward(pooled)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::layers::tests::{differences, mask, poisoned, real_rows};
    use super::*;

    /// The `tiny` model with text and fusion streams wide enough to skip padding rows in every
    /// projection ([`layers::MIN_WIDTH_TO_SKIP_QKV`]), on 6-token texts (the mask of
    /// `layers::tests`) and 32-wide image features.
    fn tiny_with_wide_text() -> UmdModel {
        let mut config = ModelConfig::preset("tiny", 32, 1, 8, 100, 6).unwrap();
        config.text_width = layers::MIN_WIDTH_TO_SKIP_QKV;
        config.fusion_width = layers::MIN_WIDTH_TO_SKIP_QKV;
        let mut store = ParamStore::new(&Device::Cpu, 7);
        UmdModel::new(
            &mut store,
            &config,
            FeatureDims {
                image: 32,
                text: config.text_width,
            },
        )
        .unwrap()
    }

    /// Deterministic, varied values of `shape`.
    fn values(shape: (usize, usize, usize)) -> Tensor {
        Tensor::arange(0u32, (shape.0 * shape.1 * shape.2) as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .affine(0.29, 0.1)
            .unwrap()
            .sin()
            .unwrap()
            .reshape(shape)
            .unwrap()
    }

    // The wiring: the text encoder and the fusion's text stream do skip their residual branches
    // on padding rows (their outputs there differ from every-row blocks), the fusion's image stream
    // reads the text's real rows only, and nothing a real row reads changes.
    #[test]
    fn the_text_encoder_and_the_fusion_skip_padding_rows_only() {
        let model = tiny_with_wide_text();
        let (mask, bias) = (mask(), key_bias(&mask()).unwrap());
        let ids = (values((3, 6, 1))
            .squeeze(2)
            .unwrap()
            .affine(40.0, 50.0)
            .unwrap())
        .to_dtype(DType::U32)
        .unwrap();
        let text = model.text.forward(&ids, &mask).unwrap();
        let mut every_row = model
            .text
            .ln_embed
            .forward(
                &model
                    .text
                    .word_embeddings
                    .forward(&ids)
                    .unwrap()
                    .broadcast_add(&model.text.position_embeddings)
                    .unwrap(),
            )
            .unwrap();
        for block in &model.text.blocks {
            every_row = block.forward(&every_row, Some(&bias)).unwrap();
        }
        let (real, padding) = differences(&text.last, &every_row);
        assert!(real < 1e-5, "text encoder: real rows differ by {real}");
        assert!(
            padding > 1e-3,
            "text encoder: padding rows differ by {padding}"
        );

        let image = values((3, 5, 32));
        let fused = model.fuse(&text.last, &mask, &image, 2).unwrap();
        let (mut t, mut i) = model.project(&text.last, &image).unwrap();
        for k in 0..2 {
            let t_next = model.text_layers[k]
                .forward(&t, Some(&bias), None, &i, None, None)
                .unwrap();
            i = model.vision_layers[k]
                .forward(&i, None, None, &t, Some(&bias), None)
                .unwrap();
            t = t_next;
        }
        let (real, padding) = differences(fused.text.last().unwrap(), &t);
        assert!(real < 1e-5, "fusion text: real rows differ by {real}");
        assert!(
            padding > 1e-3,
            "fusion text: padding rows differ by {padding}"
        );
        let image_difference = crate::kernels::tests::max_abs_diff(fused.image.last().unwrap(), &i);
        assert!(image_difference < 1e-5, "fusion image: {image_difference}");

        // Both streams read the text's keys and values on its real rows only: NaN in the padding
        // rows reaches neither the image stream nor a real text row.
        let fused = model.fuse(&poisoned(&text.last), &mask, &image, 2).unwrap();
        let image_difference = crate::kernels::tests::max_abs_diff(fused.image.last().unwrap(), &i);
        assert!(image_difference < 1e-5, "fusion image: {image_difference}");
        let text_difference = crate::kernels::tests::max_abs_diff(
            &real_rows(fused.text.last().unwrap()),
            &real_rows(&t),
        );
        assert!(text_difference < 1e-5, "fusion text: {text_difference}");
    }
}
