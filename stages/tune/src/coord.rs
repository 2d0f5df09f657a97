//! GM-Coord as OGM-GE (Peng et al., CVPR 2022) adapted to the fused UMD model
//! (paper-digest §5): per batch, each modality's confidence on the true label, their ratio, and a
//! gradient coefficient `1 − tanh(α·ρ)` for the dominant modality's parameters.

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Tensor, Var};
use serde::Serialize;
use umdflow_model::model::layers::Linear;
use umdflow_model::optim::Algorithm;
use umdflow_model::rng::SplitMix64;
use umdflow_model::store::ParamStore;

use crate::error::Result;

/// The two modalities of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Text,
    Image,
}

/// Parameter-name prefixes of each modality's branch: its encoder, projection, fusion stream and
/// pooler (M3AE's module names, which the model crate keeps). Everything else (modality-type
/// embeddings, heads) is shared and never rescaled.
const IMAGE_PREFIXES: [&str; 4] = [
    "vision_encoder.",
    "multi_modal_vision_proj.",
    "multi_modal_vision_layers.",
    "multi_modal_vision_pooler.",
];
const TEXT_PREFIXES: [&str; 4] = [
    "language_encoder.",
    "multi_modal_language_proj.",
    "multi_modal_language_layers.",
    "multi_modal_language_pooler.",
];

/// Which branch a parameter belongs to, by its name.
pub fn modality_of(name: &str) -> Option<Modality> {
    if IMAGE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Some(Modality::Image)
    } else if TEXT_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Some(Modality::Text)
    } else {
        None
    }
}

/// The parameters of both branches, selected once from a store.
#[derive(Debug, Clone, Default)]
pub struct BranchParams {
    pub text: Vec<(String, Var)>,
    pub image: Vec<(String, Var)>,
}

impl BranchParams {
    pub fn from_store(store: &ParamStore) -> Self {
        let mut out = BranchParams::default();
        for (name, param) in store.iter() {
            match modality_of(name) {
                Some(Modality::Text) => out.text.push((name.clone(), param.var.clone())),
                Some(Modality::Image) => out.image.push((name.clone(), param.var.clone())),
                None => {}
            }
        }
        out
    }
}

/// One batch's modulation: the ratio and both coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coefficients {
    /// `s_text / s_image`.
    pub rho: f64,
    pub text: f64,
    pub image: f64,
}

impl Coefficients {
    /// No modulation (outside the window, or GM-Coord disabled).
    pub fn neutral(rho: f64) -> Self {
        Coefficients {
            rho,
            text: 1.0,
            image: 1.0,
        }
    }
}

/// OGM-GE's rule with text in the role of OGM's first modality: ρ = s_text / s_image; if ρ > 1
/// the text branch is slowed by `1 − tanh(α·ρ)`, otherwise the image branch by
/// `1 − tanh(α/ρ)` (OGM's `else` branch, which also takes ρ = 1). With both scores zero there is
/// no evidence of dominance and nothing is scaled.
pub fn coefficients(s_text: f64, s_image: f64, alpha: f64) -> Coefficients {
    if s_text <= 0.0 && s_image <= 0.0 {
        return Coefficients::neutral(f64::NAN);
    }
    let rho = if s_image > 0.0 {
        s_text / s_image
    } else {
        f64::INFINITY
    };
    if rho > 1.0 {
        Coefficients {
            rho,
            text: 1.0 - (alpha * rho).tanh(),
            image: 1.0,
        }
    } else {
        let rho_image = if rho > 0.0 { 1.0 / rho } else { f64::INFINITY };
        Coefficients {
            rho,
            text: 1.0,
            image: 1.0 - (alpha * rho_image).tanh(),
        }
    }
}

/// `Σ_i softmax(logits_i)[labels_i]`, OGM's per-batch confidence score. `logits`: [B, C].
pub fn true_label_confidence(logits: &Tensor, labels: &[u32]) -> Result<f64> {
    let probs = candle_nn::ops::softmax(&logits.to_dtype(DType::F64)?.detach(), D::Minus1)?;
    let index = Tensor::from_vec(labels.to_vec(), (labels.len(), 1), logits.device())?;
    Ok(probs.gather(&index, 1)?.sum_all()?.to_scalar::<f64>()?)
}

/// The masked-concat probe: the task head applied to `[text_pool; 0]` and `[0; image_pool]`
/// (pooled = `concat(text_pool, image_pool)` [B, 2W], detached), returning `(s_text, s_image)`.
pub fn masked_concat_scores(
    pooled: &Tensor,
    labels: &[u32],
    head: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(f64, f64)> {
    let pooled = pooled.detach();
    let (b, two_w) = pooled.dims2()?;
    let w = two_w / 2;
    let zeros = Tensor::zeros((b, w), pooled.dtype(), pooled.device())?;
    let text_only = Tensor::cat(&[&pooled.narrow(1, 0, w)?, &zeros], 1)?;
    let image_only = Tensor::cat(&[&zeros, &pooled.narrow(1, w, w)?], 1)?;
    Ok((
        true_label_confidence(&head(&text_only)?, labels)?,
        true_label_confidence(&head(&image_only)?, labels)?,
    ))
}

/// OGM's unimodal logits of a linear concat-fusion head `W [t; v] + b` (OGM-GE `main.py`):
/// `out_text = t · W[:, :D]ᵀ + b/2` and `out_image = v · W[:, D:]ᵀ + b/2`, so that
/// `out_text + out_image` is the fused logit. `pooled` = `concat(t, v)` [B, 2D] (detached here).
pub fn linear_split_logits(pooled: &Tensor, head: &Linear) -> Result<(Tensor, Tensor)> {
    let pooled = pooled.detach();
    let w = pooled.dim(1)? / 2;
    let weight = head.weight.detach();
    let half_bias = match &head.bias {
        Some(b) => Some((b.detach() * 0.5)?),
        None => None,
    };
    let part = |offset: usize| -> Result<Tensor> {
        let x = pooled.narrow(1, offset, w)?;
        let out = x.matmul(&weight.narrow(1, offset, w)?.t()?)?;
        Ok(match &half_bias {
            Some(b) => out.broadcast_add(b)?,
            None => out,
        })
    };
    Ok((part(0)?, part(w)?))
}

/// The optimiser's per-branch step scale for one step (1 outside both branches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScale {
    pub text: f64,
    pub image: f64,
}

impl StepScale {
    pub const NONE: StepScale = StepScale {
        text: 1.0,
        image: 1.0,
    };

    /// The scale of the parameter `name`.
    pub fn of(&self, name: &str) -> f64 {
        match modality_of(name) {
            Some(Modality::Text) => self.text,
            Some(Modality::Image) => self.image,
            None => 1.0,
        }
    }
}

/// Applies one step of GM-Coord where it acts under `algorithm`, and returns the step scale to
/// hand to the optimiser ([`umdflow_model::optim::Optimiser::step_scaled`]):
/// - SGD: OGM-GE exactly: `g ← c·g (+ ε)` and no step scale (the momentum buffer carries the
///   scaled gradient, so a held coefficient c shrinks the step by c);
/// - AdamW: the GE noise (if on) is added to the gradient as OGM-GE does, and the coefficient
///   scales the branch's step, since AdamW's `m̂/√v̂` would cancel a scaled gradient.
pub fn modulate(
    grads: &mut GradStore,
    branches: &BranchParams,
    coefficients: &Coefficients,
    noise: Option<&mut SplitMix64>,
    algorithm: Algorithm,
) -> Result<StepScale> {
    match algorithm {
        Algorithm::Sgd => {
            rewrite_gradients(grads, branches, coefficients, noise)?;
            Ok(StepScale::NONE)
        }
        Algorithm::Adamw => {
            if noise.is_some() {
                let neutral = Coefficients::neutral(coefficients.rho);
                rewrite_gradients(grads, branches, &neutral, noise)?;
            }
            Ok(StepScale {
                text: coefficients.text,
                image: coefficients.image,
            })
        }
    }
}

/// What one rewrite did (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RewriteCount {
    pub text: usize,
    pub image: usize,
}

/// Rewrites the gradients of both branches: `g ← c·g`, plus with `noise` OGM-GE's
/// generalisation-enhancement term `N(0, σ²)` element-wise, σ = std(g) + 1e-8 (the unbiased
/// standard deviation of that tensor's unscaled gradient, as `torch.std`). Parameters without a
/// gradient are left alone.
pub fn rewrite_gradients(
    grads: &mut GradStore,
    branches: &BranchParams,
    coefficients: &Coefficients,
    mut noise: Option<&mut SplitMix64>,
) -> Result<RewriteCount> {
    let mut count = RewriteCount::default();
    for (modality, params, c) in [
        (Modality::Text, &branches.text, coefficients.text),
        (Modality::Image, &branches.image, coefficients.image),
    ] {
        for (_, var) in params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut scaled = (g * c)?;
            if let Some(rng) = noise.as_deref_mut() {
                let sigma = unbiased_std(g)? + 1e-8;
                let values: Vec<f32> = (0..g.elem_count())
                    .map(|_| (rng.normal() * sigma) as f32)
                    .collect();
                let eps = Tensor::from_vec(values, g.shape(), g.device())?.to_dtype(g.dtype())?;
                scaled = (scaled + eps)?;
            }
            grads.insert(var.as_tensor(), scaled);
            match modality {
                Modality::Text => count.text += 1,
                Modality::Image => count.image += 1,
            }
        }
    }
    Ok(count)
}

fn unbiased_std(g: &Tensor) -> Result<f64> {
    let n = g.elem_count();
    if n < 2 {
        return Ok(0.0);
    }
    let g = g.to_dtype(DType::F64)?.flatten_all()?;
    let centred = g.broadcast_sub(&g.mean_all()?)?;
    Ok((centred.sqr()?.sum_all()?.to_scalar::<f64>()? / (n - 1) as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use umdflow_model::store::{Init, ParamRole};

    #[test]
    fn names_map_to_branches() {
        assert_eq!(
            modality_of("vision_encoder.blocks.0.attn.q.weight"),
            Some(Modality::Image)
        );
        assert_eq!(
            modality_of("multi_modal_vision_pooler.dense.weight"),
            Some(Modality::Image)
        );
        assert_eq!(
            modality_of("multi_modal_language_layers.1.ffn.fc1.bias"),
            Some(Modality::Text)
        );
        assert_eq!(
            modality_of("language_encoder.word_embeddings.weight"),
            Some(Modality::Text)
        );
        assert_eq!(modality_of("modality_type_embeddings.weight"), None);
        assert_eq!(modality_of("itm_head.fc.weight"), None);
        assert_eq!(modality_of("vqa_head.fc1.weight"), None);
    }

    #[test]
    fn coefficients_follow_ogm_ge() {
        let c = coefficients(3.0, 1.0, 0.5);
        assert_eq!((c.rho, c.image), (3.0, 1.0));
        assert!((c.text - (1.0 - 1.5f64.tanh())).abs() < 1e-15);
        let c = coefficients(1.0, 4.0, 0.5);
        assert_eq!((c.rho, c.text), (0.25, 1.0));
        assert!((c.image - (1.0 - 2.0f64.tanh())).abs() < 1e-15);
        // ρ = 1 falls in OGM's else branch: the image side gets 1 − tanh(α).
        let c = coefficients(2.0, 2.0, 0.1);
        assert!((c.image - (1.0 - 0.1f64.tanh())).abs() < 1e-15 && c.text == 1.0);
        assert_eq!(coefficients(1.0, 0.0, 0.1).text, 0.0);
        let c = coefficients(0.0, 0.0, 0.1);
        assert_eq!((c.text, c.image), (1.0, 1.0));
    }

    #[test]
    fn probe_scores_match_a_hand_computation() {
        // W = 1, pooled = [t; v] with W = 1 per side. Head: logits = [x0 + x1, -(x0 + x1)].
        // Sample 0: t = 1, v = 2, label 0. Sample 1: t = -1, v = 0.5, label 1.
        // Text-only inputs [t, 0]: logits ±t -> p(label) = σ(2t) for label 0, σ(-2t) for label 1:
        //   s_text = σ(2) + σ(2). Image-only [0, v]: s_image = σ(4) + σ(-1).
        let dev = Device::Cpu;
        let pooled = Tensor::new(&[[1f64, 2.0], [-1.0, 0.5]], &dev).unwrap();
        let head = |x: &Tensor| -> Result<Tensor> {
            let s = x.sum_keepdim(1)?;
            Ok(Tensor::cat(&[&s, &s.neg()?], 1)?)
        };
        let (st, si) = masked_concat_scores(&pooled, &[0, 1], head).unwrap();
        let sigma = |z: f64| 1.0 / (1.0 + (-z).exp());
        assert!((st - 2.0 * sigma(2.0)).abs() < 1e-12, "{st}");
        assert!((si - (sigma(4.0) + sigma(-1.0))).abs() < 1e-12, "{si}");
    }

    #[test]
    fn linear_split_halves_the_weight_and_the_bias() {
        // W = [[1, 2, 3, 4]], b = [0.5]; t = [1, -1], v = [2, 1]:
        // out_t = 1·1 + 2·(−1) + 0.25 = −0.75; out_v = 3·2 + 4·1 + 0.25 = 10.25.
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 0);
        let head = Linear::new(&mut store, "cls_head.fc", 4, 1, true).unwrap();
        store
            .param("cls_head.fc.weight")
            .unwrap()
            .var
            .set(&Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &dev).unwrap())
            .unwrap();
        store
            .param("cls_head.fc.bias")
            .unwrap()
            .var
            .set(&Tensor::new(&[0.5f32], &dev).unwrap())
            .unwrap();
        let pooled = Tensor::new(&[[1f32, -1.0, 2.0, 1.0]], &dev).unwrap();
        let (t, v) = linear_split_logits(&pooled, &head).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), [[-0.75]]);
        assert_eq!(v.to_vec2::<f32>().unwrap(), [[10.25]]);
        // Together they are the fused logit.
        let fused = head.forward(&pooled).unwrap().to_vec2::<f32>().unwrap()[0][0];
        assert_eq!(fused, -0.75 + 10.25);
    }

    /// How far the text branch's parameter moves in 100 steps of a loss with a fixed gradient,
    /// with the coefficient `c` held on the text branch; `gradient_only` applies it the old way
    /// (scaling the gradient, then a plain optimiser step).
    fn text_change(algorithm: Algorithm, c: f64, gradient_only: bool) -> f64 {
        use umdflow_model::optim::{OptimConfig, Optimiser};
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 3);
        let text = store
            .get("language_encoder.w", &[3], ParamRole::Weight, Init::Zeros)
            .unwrap();
        let image = store
            .get("vision_encoder.w", &[3], ParamRole::Weight, Init::Zeros)
            .unwrap();
        let config = OptimConfig {
            algorithm,
            lr: 0.01,
            weight_decay: 0.0,
            max_grad_norm: 0.0,
            ..OptimConfig::default()
        };
        let mut optimiser = Optimiser::new(&store, &config).unwrap();
        let branches = BranchParams::from_store(&store);
        let held = Coefficients {
            rho: 2.0,
            text: c,
            image: 1.0,
        };
        let g = Tensor::new(&[0.5f32, -0.1, 0.2], &dev).unwrap();
        for _ in 0..100 {
            let loss = ((&text * &g).unwrap() + (&image * &g).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let mut grads = loss.backward().unwrap();
            let scale = if gradient_only {
                rewrite_gradients(&mut grads, &branches, &held, None).unwrap();
                StepScale::NONE
            } else {
                modulate(&mut grads, &branches, &held, None, algorithm).unwrap()
            };
            optimiser
                .step_scaled(&grads, 0.01, &|name| scale.of(name))
                .unwrap();
        }
        text.to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| (*v as f64).abs())
            .sum()
    }

    #[test]
    fn a_held_coefficient_shrinks_the_branch_change_by_about_c_under_both_optimisers() {
        let c = 0.25;
        for algorithm in [Algorithm::Adamw, Algorithm::Sgd] {
            let ratio = text_change(algorithm, c, false) / text_change(algorithm, 1.0, false);
            assert!((ratio - c).abs() < 0.01 * c, "{algorithm:?}: {ratio}");
        }
        // The old rewrite (gradient scaling) under AdamW: the coefficient cancels in m̂/√v̂.
        let ratio =
            text_change(Algorithm::Adamw, c, true) / text_change(Algorithm::Adamw, 1.0, true);
        assert!((ratio - 1.0).abs() < 0.01, "old AdamW rewrite: {ratio}");
    }

    #[test]
    fn ge_noise_reaches_the_gradient_under_adamw_too() {
        let (store, loss) = tiny_store();
        let branches = BranchParams::from_store(&store);
        let c = coefficients(5.0, 1.0, 0.1);
        let var = &store.param("language_encoder.w").unwrap().var;
        let read = |grads: &GradStore| {
            grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let clean = read(&loss.backward().unwrap());
        let mut grads = loss.backward().unwrap();
        let mut rng = SplitMix64::new(4);
        let scale = modulate(&mut grads, &branches, &c, Some(&mut rng), Algorithm::Adamw).unwrap();
        // The coefficient moved to the step; the gradient carries only the noise.
        assert_eq!(scale.of("language_encoder.w"), c.text);
        assert_eq!(scale.of("vision_encoder.w"), 1.0);
        assert_eq!(scale.of("itm_head.fc.weight"), 1.0);
        let noisy = read(&grads);
        assert!(noisy.iter().zip(&clean).any(|(a, b)| a != b));
        let scaled_by_c = clean.iter().map(|v| v * c.text as f32).collect::<Vec<_>>();
        assert_ne!(noisy, scaled_by_c);
    }

    fn tiny_store() -> (ParamStore, Tensor) {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 3);
        let names = [
            "vision_encoder.w",
            "multi_modal_vision_proj.weight",
            "language_encoder.w",
            "multi_modal_language_pooler.dense.weight",
            "itm_head.fc.weight",
        ];
        let mut loss = Tensor::zeros((), DType::F32, &dev).unwrap();
        for (k, name) in names.iter().enumerate() {
            let p = store
                .get(name, &[2, 3], ParamRole::Weight, Init::Normal(1.0))
                .unwrap();
            loss = (loss
                + (p.sqr().unwrap() * (k + 1) as f64)
                    .unwrap()
                    .sum_all()
                    .unwrap())
            .unwrap();
        }
        (store, loss)
    }

    #[test]
    fn rewriting_touches_exactly_the_dominant_branch_by_the_coefficient() {
        let (store, loss) = tiny_store();
        let mut grads = loss.backward().unwrap();
        let before: Vec<(String, Vec<f32>)> = store
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    grads
                        .get(p.var.as_tensor())
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                )
            })
            .collect();
        let branches = BranchParams::from_store(&store);
        let c = coefficients(1.0, 3.0, 0.7);
        let count = rewrite_gradients(&mut grads, &branches, &c, None).unwrap();
        assert_eq!(count, RewriteCount { text: 2, image: 2 });
        for (name, old) in before {
            let new: Vec<f32> = grads
                .get(store.param(&name).unwrap().var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let factor = if modality_of(&name) == Some(Modality::Image) {
                c.image as f32
            } else {
                1.0
            };
            assert!(factor < 1.0 || modality_of(&name) != Some(Modality::Image));
            for (o, n) in old.iter().zip(&new) {
                assert_eq!(*n, o * factor, "{name}");
            }
        }
    }

    #[test]
    fn generalisation_noise_is_seeded_and_scaled_by_the_gradient_spread() {
        let (store, loss) = tiny_store();
        let branches = BranchParams::from_store(&store);
        let c = coefficients(5.0, 1.0, 0.1);
        let run = |seed: u64| {
            let mut grads = loss.backward().unwrap();
            let mut rng = SplitMix64::new(seed);
            rewrite_gradients(&mut grads, &branches, &c, Some(&mut rng)).unwrap();
            let var = &store.param("language_encoder.w").unwrap().var;
            grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // The shared head's gradient never changes.
        let mut grads = loss.backward().unwrap();
        let head = store
            .param("itm_head.fc.weight")
            .unwrap()
            .var
            .as_tensor()
            .clone();
        let old = grads
            .get(&head)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        rewrite_gradients(&mut grads, &branches, &c, Some(&mut SplitMix64::new(1))).unwrap();
        assert_eq!(
            grads
                .get(&head)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            old
        );
    }
}
