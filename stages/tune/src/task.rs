//! The downstream task heads and their losses (M3AE's heads, paper-digest §8.2):
//! VQA as classification over the answer vocabulary (soft-target BCE × number of answers),
//! image-text classification (cross-entropy), and retrieval (a pair-scoring head initialised from
//! the ITM head's "match" row, trained with CE over [positive, sampled negatives]).

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use umdflow_data::artifact::Dataset;
use umdflow_model::batch::patchify;
use umdflow_model::losses::cross_entropy;
use umdflow_model::model::UmdModel;
use umdflow_model::model::layers::{Linear, Norm};
use umdflow_model::ops;
use umdflow_model::store::ParamStore;

use crate::error::{Result, TuneError};

/// The downstream task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Vqa,
    Classification,
    Retrieval,
}

/// The shape of a VQA or classification head (retrieval's `irtr_head` is always linear).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// M3AE's `vqa_head`/`cls_head`: Linear(2W → 4W) → GELU → LayerNorm → Linear.
    #[default]
    Mlp,
    /// One linear layer over `concat(text_pool, image_pool)`: OGM-GE's concat-fusion classifier,
    /// whose weight halves give each modality's own logits (`scores: linear_split`).
    Linear,
}

/// `task.json` beside a tuned checkpoint: which head exists and its width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task: Task,
    /// Answers (VQA), classes (classification) or 1 (retrieval).
    pub outputs: usize,
    /// VQA/classification head shape (absent in task.json files written before it existed: mlp).
    #[serde(default)]
    pub head: HeadKind,
}

impl TaskInfo {
    /// Whether the head is one linear layer over the pooled pair (always so for retrieval).
    pub fn linear_head(&self) -> bool {
        self.task == Task::Retrieval || self.head == HeadKind::Linear
    }
}

/// M3AE's `vqa_head` / `cls_head`: Linear(2W → 4W) → GELU → LayerNorm → Linear(4W → outputs).
#[derive(Debug, Clone)]
pub struct MlpClassifier {
    pub fc1: Linear,
    pub norm: Norm,
    pub fc2: Linear,
}

impl MlpClassifier {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        outputs: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(MlpClassifier {
            fc1: Linear::new(store, &format!("{name}.fc1"), input, 2 * input, true)?,
            norm: Norm::new(store, &format!("{name}.norm"), 2 * input, eps)?,
            fc2: Linear::new(store, &format!("{name}.fc2"), 2 * input, outputs, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm.forward(&ops::gelu(&self.fc1.forward(x)?)?)?;
        Ok(self.fc2.forward(&h)?)
    }
}

/// The head of one task, with its parameters in the model's store.
#[derive(Debug, Clone)]
pub enum TaskHead {
    /// `vqa_head` / `cls_head` as M3AE's MLP.
    Mlp(MlpClassifier),
    /// `vqa_head.fc` / `cls_head.fc` as one linear layer (OGM-GE's fusion classifier).
    Linear(Linear),
    /// `irtr_head`: one score per (image, text) pair.
    Retrieval(Linear),
}

impl TaskHead {
    /// Creates (or, when the store already has them, reuses) the head's parameters. A new
    /// retrieval head copies the ITM head's "match" row (class 1), as M3AE does.
    pub fn new(store: &mut ParamStore, model: &UmdModel, info: &TaskInfo) -> Result<Self> {
        let input = 2 * model.config.fusion_width;
        let eps = model.config.norm_eps;
        let name = match info.task {
            Task::Vqa => "vqa_head",
            Task::Classification => "cls_head",
            Task::Retrieval => "irtr_head",
        };
        Ok(match (info.task, info.head) {
            (Task::Vqa | Task::Classification, HeadKind::Mlp) => {
                TaskHead::Mlp(MlpClassifier::new(store, name, input, info.outputs, eps)?)
            }
            (Task::Vqa | Task::Classification, HeadKind::Linear) => TaskHead::Linear(Linear::new(
                store,
                &format!("{name}.fc"),
                input,
                info.outputs,
                true,
            )?),
            (Task::Retrieval, _) => {
                let existed = store.param("irtr_head.weight").is_some();
                let head = Linear::new(store, name, input, 1, true)?;
                if !existed {
                    copy_param(
                        store,
                        "irtr_head.weight",
                        &model.itm_head.weight.narrow(0, 1, 1)?,
                    )?;
                    if let Some(bias) = &model.itm_head.bias {
                        copy_param(store, "irtr_head.bias", &bias.narrow(0, 1, 1)?)?;
                    }
                }
                TaskHead::Retrieval(head)
            }
        })
    }

    /// Logits [B, outputs] from pooled features [B, 2W].
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        match self {
            TaskHead::Mlp(h) => h.forward(pooled),
            TaskHead::Linear(h) | TaskHead::Retrieval(h) => Ok(h.forward(pooled)?),
        }
    }

    /// The linear layer over the pooled pair, when the head is one (`linear` heads, retrieval).
    pub fn linear(&self) -> Option<&Linear> {
        match self {
            TaskHead::Mlp(_) => None,
            TaskHead::Linear(h) | TaskHead::Retrieval(h) => Some(h),
        }
    }
}

fn copy_param(store: &ParamStore, name: &str, value: &Tensor) -> Result<()> {
    let param = store.param(name).ok_or_else(|| {
        TuneError::invalid(format!("internal: parameter `{name}` was not created"))
    })?;
    param.var.set(&value.copy()?)?;
    Ok(())
}

/// M3AE's VQA loss: `BCEWithLogits(logits, one-hot targets)` averaged over all elements and
/// multiplied by the number of answers. Written with `max(x,0) − x·y + log(1 + e^{−|x|})`,
/// which never overflows.
pub fn vqa_bce_loss(logits: &Tensor, answers: &[u32]) -> Result<Tensor> {
    let (b, k) = logits.dims2()?;
    let mut targets = vec![0f32; b * k];
    for (row, &a) in answers.iter().enumerate() {
        if a as usize >= k {
            return Err(TuneError::invalid(format!(
                "answer index {a} is outside the {k} answers"
            )));
        }
        targets[row * k + a as usize] = 1.0;
    }
    let y = Tensor::from_vec(targets, (b, k), logits.device())?.to_dtype(logits.dtype())?;
    let per = ((logits.relu()? - (logits * &y)?)? + ((logits.abs()?.neg()?.exp()? + 1.0)?.log())?)?;
    Ok((per.mean_all()? * k as f64)?)
}

/// Cross-entropy of logits [B, C] against class indices.
pub fn ce_loss(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let labels = Tensor::from_vec(labels.to_vec(), labels.len(), logits.device())?;
    Ok(cross_entropy(logits, &labels)?)
}

/// Image rows and text rows of a batch of pairs: text row k is paired with image row k.
#[derive(Debug, Clone)]
pub struct PairRows<'a> {
    pub images: Vec<usize>,
    /// Token ids and attention masks, [B·T] row-major.
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    pub data: &'a Dataset,
}

impl<'a> PairRows<'a> {
    /// Image i with its own text i, for each i.
    pub fn own_texts(data: &'a Dataset, rows: &[usize]) -> Self {
        Self::with_texts(data, rows, rows)
    }

    /// Image `images[k]` with the dataset's text `texts[k]`.
    pub fn with_texts(data: &'a Dataset, images: &[usize], texts: &[usize]) -> Self {
        let t = data.max_len;
        PairRows {
            images: images.to_vec(),
            ids: texts
                .iter()
                .flat_map(|&j| data.input_ids[j * t..(j + 1) * t].iter().copied())
                .collect(),
            mask: texts
                .iter()
                .flat_map(|&j| data.attention_mask[j * t..(j + 1) * t].iter().copied())
                .collect(),
            data,
        }
    }

    /// Image `image_index[q]` with question q, for the questions `questions`.
    pub fn questions(data: &'a Dataset, questions: &[usize]) -> Result<Self> {
        let vqa = data.vqa.as_ref().ok_or_else(|| {
            TuneError::invalid("the dataset has no VQA questions (no vqa.safetensors)")
        })?;
        let t = data.max_len;
        Ok(PairRows {
            images: questions
                .iter()
                .map(|&q| vqa.image_index[q] as usize)
                .collect(),
            ids: questions
                .iter()
                .flat_map(|&q| vqa.input_ids[q * t..(q + 1) * t].iter().copied())
                .collect(),
            mask: questions
                .iter()
                .flat_map(|&q| vqa.attention_mask[q * t..(q + 1) * t].iter().copied())
                .collect(),
            data,
        })
    }
}

/// The pooled features `concat(text_pool, image_pool)` [B, 2W] of a batch of pairs, through the
/// full (unmasked) encoders and every fusion layer. Images are scaled to [-1, 1] as in
/// pre-training.
pub fn pooled_features(model: &UmdModel, pairs: &PairRows<'_>, device: &Device) -> Result<Tensor> {
    Ok(features(model, pairs, device)?.pooled)
}

/// What one forward pass over image-text pairs yields for fine-tuning.
pub struct PairFeatures {
    /// `concat(text_pool, image_pool)` after the fusion layers [B, 2W].
    pub pooled: Tensor,
    /// The text encoder's [CLS] output before fusion [B, text_width]: sees no image.
    pub text_cls: Tensor,
    /// The vision encoder's class token before fusion [B, vision_width]: sees no text.
    pub image_cls: Tensor,
}

/// Pooled fused features plus each unimodal encoder's own class token (GM-Coord's
/// `encoder_heads` read the latter, which no cross-attention has mixed).
pub fn features(model: &UmdModel, pairs: &PairRows<'_>, device: &Device) -> Result<PairFeatures> {
    let c = &model.config;
    let b = pairs.images.len();
    let t = pairs.data.max_len;
    let patches = Tensor::from_vec(
        patchify(pairs.data, &pairs.images, c.patch_size, 2.0, -1.0)?,
        (b, c.num_patches(), c.patch_dim()),
        device,
    )?;
    let ids = Tensor::from_vec(pairs.ids.clone(), (b, t), device)?;
    let mask: Vec<f32> = pairs.mask.iter().map(|&m| f32::from(m != 0)).collect();
    let mask = Tensor::from_vec(mask, (b, t), device)?;
    let vision = model.vision.forward(&patches, None)?;
    let text = model.text.forward(&ids, &mask)?;
    let fused = model.fuse(&text.last, &mask, &vision.last, c.fusion_layers)?;
    Ok(PairFeatures {
        pooled: model.pooled(&fused)?,
        text_cls: text.last.narrow(1, 0, 1)?.squeeze(1)?,
        image_cls: vision.last.narrow(1, 0, 1)?.squeeze(1)?,
    })
}

/// Softmax probabilities of logits [B, C] as f64 rows.
pub fn probabilities(logits: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(candle_nn::ops::softmax(&logits.to_dtype(DType::F64)?, D::Minus1)?.to_vec2::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vqa_bce_matches_the_formula() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2f64, -1.0, 0.0], [0.5, 30.0, -30.0]], &dev).unwrap();
        let value = vqa_bce_loss(&logits, &[0, 1])
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let bce = |x: f64, y: f64| {
            -(y * (1.0 / (1.0 + (-x).exp())).ln() + (1.0 - y) * (1.0 / (1.0 + x.exp())).ln())
        };
        let expected = (bce(2.0, 1.0)
            + bce(-1.0, 0.0)
            + bce(0.0, 0.0)
            + bce(0.5, 0.0)
            + bce(30.0, 1.0)
            + bce(-30.0, 0.0))
            / 6.0
            * 3.0;
        assert!((value - expected).abs() < 1e-9, "{value} vs {expected}");
        assert!(vqa_bce_loss(&logits, &[0, 3]).is_err());
    }
}
