//! AdamW (or SGD with momentum, OGM-GE's optimiser) with M3AE's parameter groups, a warm-up +
//! linear-decay schedule, global-norm gradient clipping and a per-parameter step scale (GM-Coord's
//! coefficient acts there, see [`Optimiser::step_scaled`]). Written here (not candle_nn's) because
//! candle's AdamW has one learning rate and decays every tensor.

use candle_core::Tensor;
use candle_core::backprop::GradStore;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::kernels;
use crate::store::{ParamRole, ParamStore};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// AdamW with decoupled weight decay (M3AE).
    Adamw,
    /// SGD with heavy-ball momentum and L2 weight decay added to the gradient, as
    /// `torch.optim.SGD` (OGM-GE's optimiser).
    Sgd,
}

/// Optimiser settings (pipeline parameters of `pretrain`, `calibrate` and `coordinate-tune`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub algorithm: Algorithm,
    /// Peak learning rate of the backbone.
    pub lr: f64,
    /// SGD's momentum (unused by AdamW, whose moments are `beta1`/`beta2`).
    pub momentum: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay; never applied to biases and norm parameters.
    pub weight_decay: f64,
    /// Multiplier for the heads ([`HEAD_PREFIXES`]: the pre-training heads, the task heads and
    /// GM-Coord's auxiliary heads).
    pub lr_multiplier_head: f64,
    /// Multiplier for every parameter whose name contains `multi_modal` (fusion, projections).
    pub lr_multiplier_fusion: f64,
    /// Fraction of the steps spent warming up linearly; then linear decay to 0.
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub max_grad_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            algorithm: Algorithm::Adamw,
            lr: 1e-4,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.01,
            lr_multiplier_head: 5.0,
            lr_multiplier_fusion: 5.0,
            warmup_ratio: 0.1,
            max_grad_norm: 1.0,
        }
    }
}

impl OptimConfig {
    /// Returns `(field, message)` for the first bad setting.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let positive = [
            ("lr", self.lr),
            ("eps", self.eps),
            ("lr_multiplier_head", self.lr_multiplier_head),
            ("lr_multiplier_fusion", self.lr_multiplier_fusion),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err((name.into(), format!("must be a positive number, got {v}")));
            }
        }
        for (name, v) in [
            ("momentum", self.momentum),
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("warmup_ratio", self.warmup_ratio),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err((name.into(), format!("must lie in [0, 1), got {v}")));
            }
        }
        for (name, v) in [
            ("weight_decay", self.weight_decay),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err((name.into(), format!("must be a number >= 0, got {v}")));
            }
        }
        Ok(())
    }

    /// The learning-rate multiplier of a parameter, by name (M3AE's groups).
    pub fn multiplier(&self, name: &str) -> f64 {
        if HEAD_PREFIXES.iter().any(|h| name.starts_with(h)) {
            self.lr_multiplier_head
        } else if name.contains("multi_modal") {
            self.lr_multiplier_fusion
        } else {
            1.0
        }
    }

    /// The backbone learning rate at `step` (0-based) of `total`: linear warm-up reaching `lr` at
    /// the end of the warm-up, then linear decay to 0 at `total`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let warmup = (self.warmup_ratio * total as f64).ceil() as u64;
        if step < warmup {
            self.lr * (step + 1) as f64 / warmup as f64
        } else {
            let remaining = total.saturating_sub(warmup).max(1);
            self.lr * (1.0 - (step - warmup) as f64 / remaining as f64).max(0.0)
        }
    }
}

/// Parameter-name prefixes of the head group (`lr_multiplier_head`): M3AE's `head_names`
/// (pre-training and task heads), the feature-level heads and GM-Coord's auxiliary heads.
pub const HEAD_PREFIXES: [&str; 9] = [
    "mim_head.",
    "mlm_head.",
    "itm_head.",
    "feamim_head.",
    "feamlm_head.",
    "vqa_head.",
    "cls_head.",
    "irtr_head.",
    "gmcoord_aux.",
];

struct Slot {
    name: String,
    var: candle_core::Var,
    /// AdamW's first moment, or SGD's momentum buffer.
    m: Tensor,
    /// AdamW's second moment (unused by SGD).
    v: Tensor,
    lr_multiplier: f64,
    decay: bool,
}

impl Slot {
    /// torch.optim.SGD (dampening 0, no Nesterov): g += wd·p; buf = μ·buf + g (the buffer starts
    /// at 0, so the first step sets it to g); p -= lr·buf.
    fn sgd(&mut self, g: &Tensor, clip: f64, lr: f64, c: &OptimConfig) -> Result<()> {
        let g = (g * clip)?;
        let p = self.var.as_tensor();
        let g = if self.decay && c.weight_decay > 0.0 {
            (g + (p * c.weight_decay)?)?
        } else {
            g
        };
        self.m = ((&self.m * c.momentum)? + g)?;
        self.var.set(&(p - (&self.m * lr)?)?)?;
        Ok(())
    }

    /// AdamW (decoupled weight decay, bias-corrected moments); one fused pass on the CPU that
    /// writes the parameter in place ([`kernels::adamw`], bit-identical to the composite below).
    fn adamw(
        &mut self,
        g: &Tensor,
        clip: f64,
        lr: f64,
        c: &OptimConfig,
        (bias1, bias2): (f64, f64),
    ) -> Result<()> {
        let decay = (self.decay && c.weight_decay > 0.0).then_some(1.0 - lr * c.weight_decay);
        let step = kernels::adamw::AdamWStep {
            clip,
            beta1: c.beta1,
            beta2: c.beta2,
            decay,
            bias2_sqrt: bias2.sqrt(),
            eps: c.eps,
            step_size: lr / bias1,
        };
        // The kernel writes the parameter into the variable's storage itself.
        if let Some((m, v)) =
            kernels::adamw::adamw(self.var.as_tensor(), g, &self.m, &self.v, &step)?
        {
            self.m = m;
            self.v = v;
            return Ok(());
        }
        let (new_p, m, v) = adamw_composite(self.var.as_tensor(), g, &self.m, &self.v, &step)?;
        self.m = m;
        self.v = v;
        self.var.set(&new_p)?;
        Ok(())
    }
}

/// AdamW's update from candle's element-wise ops: the path off the CPU, and the reference the
/// fused kernel is tested against. Returns the new parameter, first and second moment.
fn adamw_composite(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &kernels::adamw::AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = (g * s.clip)?;
    let m = ((m * s.beta1)? + (&g * (1.0 - s.beta1))?)?;
    let v = ((v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
    let p = match s.decay {
        Some(d) => (p * d)?,
        None => p.clone(),
    };
    let denom = ((v.sqrt()? / s.bias2_sqrt)? + s.eps)?;
    let update = ((&m / denom)? * s.step_size)?;
    Ok(((p - update)?, m, v))
}

/// Optimiser state over a [`ParamStore`]: AdamW or SGD with momentum, by
/// [`OptimConfig::algorithm`].
pub struct Optimiser {
    config: OptimConfig,
    slots: Vec<Slot>,
    steps: i32,
}

/// The name the optimiser had when it only did AdamW.
pub type AdamW = Optimiser;

impl Optimiser {
    pub fn new(store: &ParamStore, config: &OptimConfig) -> Result<Self> {
        let slots = store
            .iter()
            .map(|(name, p)| {
                Ok(Slot {
                    name: name.clone(),
                    var: p.var.clone(),
                    m: p.var.zeros_like()?,
                    v: p.var.zeros_like()?,
                    lr_multiplier: config.multiplier(name),
                    decay: matches!(p.role, ParamRole::Weight | ParamRole::Embedding),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Optimiser {
            config: config.clone(),
            slots,
            steps: 0,
        })
    }

    /// The learning-rate multiplier each parameter got from its group (for tests and docs).
    pub fn multipliers(&self) -> Vec<(&str, f64)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.lr_multiplier))
            .collect()
    }

    /// The global L2 norm of all gradients present.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum = 0f64;
        for slot in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                sum += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sum.sqrt())
    }

    /// One update with backbone learning rate `lr`; clips first. Parameters without a gradient
    /// (their loss term is off) are left untouched. Returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        self.step_scaled(grads, lr, &|_| 1.0)
    }

    /// [`Self::step`] with the learning rate of each parameter multiplied by `scale(name)`, so
    /// that the parameter's *step* (update and decay) shrinks by that factor whatever the
    /// gradient's size. This is where GM-Coord's coefficient acts under AdamW: scaling the
    /// gradient instead would cancel in `m̂ / √v̂` once the coefficient has held for a while.
    pub fn step_scaled(
        &mut self,
        grads: &GradStore,
        lr: f64,
        scale: &dyn Fn(&str) -> f64,
    ) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let clip = if self.config.max_grad_norm > 0.0 && norm > self.config.max_grad_norm {
            self.config.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.steps += 1;
        let c = &self.config;
        let bias1 = 1.0 - c.beta1.powi(self.steps);
        let bias2 = 1.0 - c.beta2.powi(self.steps);
        // Each parameter's learning rate first (`scale` need not be thread-safe).
        let lrs: Vec<f64> = self
            .slots
            .iter()
            .map(|slot| lr * slot.lr_multiplier * scale(&slot.name))
            .collect();
        let update = |slot: &mut Slot, lr: f64| -> Result<()> {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                return Ok(());
            };
            match c.algorithm {
                Algorithm::Sgd => slot.sgd(g, clip, lr, c),
                Algorithm::Adamw => slot.adamw(g, clip, lr, c, (bias1, bias2)),
            }
        };
        // On the CPU the parameters update side by side on the stage's pool (each one's update
        // is sequential, so the result does not depend on the thread count); elsewhere in turn.
        if self.slots.first().is_some_and(|s| s.var.device().is_cpu()) {
            self.slots
                .par_iter_mut()
                .zip(lrs)
                .try_for_each(|(slot, lr)| update(slot, lr))?;
        } else {
            for (slot, lr) in self.slots.iter_mut().zip(lrs) {
                update(slot, lr)?;
            }
        }
        Ok(norm)
    }

    /// How many updates were made (AdamW's bias correction depends on it).
    pub fn steps(&self) -> i32 {
        self.steps
    }

    /// Each parameter's moments, by name: `(name, m, v)` (see [`Slot`]), for a checkpoint.
    pub fn moments(&self) -> impl Iterator<Item = (&str, &Tensor, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.m, &s.v))
    }

    /// Puts back the state [`Self::steps`] and [`Self::moments`] described; `moments` must hold
    /// every parameter's, with its shape (the caller checks that before touching anything).
    pub fn restore(
        &mut self,
        steps: i32,
        moments: &mut std::collections::HashMap<String, (Tensor, Tensor)>,
    ) -> Result<()> {
        for slot in &mut self.slots {
            let (m, v) = moments.remove(&slot.name).ok_or_else(|| {
                crate::error::ModelError::Data(format!("no optimiser moments for `{}`", slot.name))
            })?;
            slot.m = m;
            slot.v = v;
        }
        self.steps = steps;
        Ok(())
    }

    /// Names of the parameters that get weight decay (for documentation and tests).
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Init;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let c = OptimConfig {
            lr: 1.0,
            warmup_ratio: 0.1,
            ..OptimConfig::default()
        };
        assert!((c.lr_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10, 100) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(55, 100) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(99, 100) > 0.0 && c.lr_at(100, 100) == 0.0);
    }

    #[test]
    fn groups_and_decay_follow_m3ae() {
        let c = OptimConfig::default();
        assert_eq!(c.multiplier("mlm_head.decoder.weight"), 5.0);
        assert_eq!(
            c.multiplier("multi_modal_vision_layers.0.mlp.fc1.weight"),
            5.0
        );
        assert_eq!(c.multiplier("vision_encoder.ln_pre.weight"), 1.0);
        let mut store = ParamStore::new(&Device::Cpu, 1);
        store
            .get("a.weight", &[2, 2], ParamRole::Weight, Init::Normal(0.02))
            .unwrap();
        store
            .get("a.bias", &[2], ParamRole::Bias, Init::Zeros)
            .unwrap();
        store
            .get("n.weight", &[2], ParamRole::Norm, Init::Ones)
            .unwrap();
        let opt = AdamW::new(&store, &c).unwrap();
        assert_eq!(opt.decayed(), vec!["a.weight"]);
    }

    #[test]
    fn one_step_matches_the_adamw_formula() {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 1);
        let w = store
            .get("w.weight", &[2], ParamRole::Weight, Init::Ones)
            .unwrap();
        let c = OptimConfig {
            weight_decay: 0.1,
            max_grad_norm: 0.0,
            ..OptimConfig::default()
        };
        let mut opt = AdamW::new(&store, &c).unwrap();
        let loss = (&w * Tensor::new(&[3f32, -2.0], &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, 0.01).unwrap();
        let after = w.to_vec1::<f32>().unwrap();
        // First step: m̂ = g, v̂ = g², so the update is lr · sign(g) (eps aside) after decay.
        let expect = [
            1.0 * (1.0 - 0.01 * 0.1) - 0.01,
            1.0 * (1.0 - 0.01 * 0.1) + 0.01,
        ];
        for (a, e) in after.iter().zip(expect) {
            assert!((*a as f64 - e).abs() < 1e-6, "{a} vs {e}");
        }
    }

    #[test]
    fn task_and_auxiliary_heads_get_the_head_multiplier() {
        let c = OptimConfig {
            lr_multiplier_head: 7.0,
            ..OptimConfig::default()
        };
        for name in [
            "vqa_head.fc1.weight",
            "cls_head.fc2.bias",
            "irtr_head.weight",
            "gmcoord_aux.text.weight",
        ] {
            assert_eq!(c.multiplier(name), 7.0, "{name}");
        }
        // And the optimiser applies it: AdamW's first step moves a weight by lr · multiplier.
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 1);
        let head = store
            .get("vqa_head.fc1.weight", &[1], ParamRole::Weight, Init::Zeros)
            .unwrap();
        let backbone = store
            .get("vision_encoder.w", &[1], ParamRole::Weight, Init::Zeros)
            .unwrap();
        let c = OptimConfig {
            max_grad_norm: 0.0,
            weight_decay: 0.0,
            ..c
        };
        let mut opt = Optimiser::new(&store, &c).unwrap();
        assert!(opt.multipliers().contains(&("vqa_head.fc1.weight", 7.0)));
        let loss = (&head + &backbone).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.01).unwrap();
        let moved = |t: &Tensor| t.to_vec1::<f32>().unwrap()[0].abs() as f64;
        assert!((moved(&head) - 0.07).abs() < 1e-6, "{}", moved(&head));
        assert!((moved(&backbone) - 0.01).abs() < 1e-6);
    }

    /// Parameter change after `steps` steps of a loss with a fixed gradient `g` per element, with
    /// the step scaled by `step_scale` and the gradient by `grad_scale`.
    fn change_after(config: &OptimConfig, steps: usize, step_scale: f64, grad_scale: f64) -> f64 {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 1);
        let w = store
            .get("w.weight", &[2], ParamRole::Weight, Init::Zeros)
            .unwrap();
        let mut opt = Optimiser::new(&store, config).unwrap();
        let g = Tensor::new(&[0.3f32, -0.2], &dev).unwrap();
        for _ in 0..steps {
            let loss = (&w * (&g * grad_scale).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            opt.step_scaled(&grads, 0.01, &|_| step_scale).unwrap();
        }
        w.to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| (*v as f64).abs())
            .sum()
    }

    #[test]
    fn a_held_step_scale_shrinks_the_change_by_that_factor_under_both_algorithms() {
        let adamw = OptimConfig {
            weight_decay: 0.0,
            max_grad_norm: 0.0,
            ..OptimConfig::default()
        };
        let sgd = OptimConfig {
            algorithm: Algorithm::Sgd,
            ..adamw.clone()
        };
        let c = 0.3;
        for config in [&adamw, &sgd] {
            let ratio = change_after(config, 100, c, 1.0) / change_after(config, 100, 1.0, 1.0);
            assert!((ratio - c).abs() < 1e-3, "{:?}: {ratio}", config.algorithm);
        }
        // Scaling the gradient instead cancels under AdamW (m̂/√v̂), but not under SGD.
        let ratio = change_after(&adamw, 100, 1.0, c) / change_after(&adamw, 100, 1.0, 1.0);
        assert!(
            (ratio - 1.0).abs() < 1e-3,
            "AdamW with a scaled gradient: {ratio}"
        );
        let ratio = change_after(&sgd, 100, 1.0, c) / change_after(&sgd, 100, 1.0, 1.0);
        assert!(
            (ratio - c).abs() < 1e-3,
            "SGD with a scaled gradient: {ratio}"
        );
    }

    #[test]
    fn sgd_follows_torch_with_momentum_and_weight_decay() {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 1);
        let w = store
            .get("w.weight", &[1], ParamRole::Weight, Init::Ones)
            .unwrap();
        let c = OptimConfig {
            algorithm: Algorithm::Sgd,
            momentum: 0.9,
            weight_decay: 0.1,
            max_grad_norm: 0.0,
            ..OptimConfig::default()
        };
        let mut opt = Optimiser::new(&store, &c).unwrap();
        // loss = 2w: g = 2. Step 1: g' = 2 + 0.1·1 = 2.1, buf = 2.1, w = 1 − 0.1·2.1 = 0.79.
        // Step 2: g' = 2 + 0.079 = 2.079, buf = 0.9·2.1 + 2.079 = 3.969, w = 0.79 − 0.3969.
        for _ in 0..2 {
            let loss = (&w * 2.0).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        }
        let after = w.to_vec1::<f32>().unwrap()[0] as f64;
        assert!((after - (0.79 - 0.3969)).abs() < 1e-6, "{after}");
    }

    #[test]
    fn clipping_bounds_the_update_norm() {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, 1);
        let w = store
            .get("w.weight", &[2], ParamRole::Weight, Init::Zeros)
            .unwrap();
        let opt = AdamW::new(&store, &OptimConfig::default()).unwrap();
        let loss = (&w * Tensor::new(&[30f32, 40.0], &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        assert!((opt.grad_norm(&grads).unwrap() - 50.0).abs() < 1e-4);
    }

    /// The fused AdamW kernel computes the composite's bits, with and without weight decay and
    /// clipping, over several steps (the moments carry over), in f32 and f64.
    #[test]
    fn the_fused_adamw_update_is_bit_identical_to_the_composite() {
        use candle_core::DType;
        let dev = Device::Cpu;
        let mut rng = crate::rng::SplitMix64::new(41);
        let mut random = |n: usize, dtype: DType| {
            let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            Tensor::from_vec(v, n, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let bits = |t: &Tensor| -> Vec<u64> {
            let t = t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            t.iter().map(|v| v.to_bits()).collect()
        };
        for dtype in [DType::F32, DType::F64] {
            for (clip, decay) in [(1.0, None), (0.37, Some(1.0 - 3e-4 * 0.01))] {
                let (p, mut m, mut v) = (
                    random(1037, dtype),
                    random(1037, dtype),
                    random(1037, dtype),
                );
                v = v.abs().unwrap();
                let start = bits(&p);
                // A copy: the kernel writes `p` in place, and a clone would share its storage.
                let (mut cp, mut cm, mut cv) = (p.copy().unwrap(), m.clone(), v.clone());
                for t in 1..=3 {
                    let g = random(1037, dtype);
                    let step = kernels::adamw::AdamWStep {
                        clip,
                        beta1: 0.9,
                        beta2: 0.98,
                        decay,
                        bias2_sqrt: (1.0 - 0.98f64.powi(t)).sqrt(),
                        eps: 1e-8,
                        step_size: 3e-4 / (1.0 - 0.9f64.powi(t)),
                    };
                    (m, v) = kernels::adamw::adamw(&p, &g, &m, &v, &step)
                        .unwrap()
                        .expect("the kernel applies to CPU tensors");
                    (cp, cm, cv) = adamw_composite(&cp, &g, &cm, &cv, &step).unwrap();
                    for (fused, composite) in [(&p, &cp), (&m, &cm), (&v, &cv)] {
                        assert_eq!(bits(fused), bits(composite), "{dtype:?}, step {t}");
                    }
                }
                assert_ne!(bits(&p), start, "the parameter moved");
            }
        }
    }

    /// A gradient or moment that shares the parameter's storage is not run in place (for the
    /// second moment the op would wait forever on the parameter's lock): the kernel declines and
    /// leaves the parameter as it was, so the caller runs the composite.
    #[test]
    fn the_fused_adamw_declines_an_input_that_shares_the_parameter() {
        let p = Tensor::new(&[0.5f32, -0.25, 1.0], &Device::Cpu).unwrap();
        let (g, m) = (p.ones_like().unwrap(), p.zeros_like().unwrap());
        let step = kernels::adamw::AdamWStep {
            clip: 1.0,
            beta1: 0.9,
            beta2: 0.98,
            decay: None,
            bias2_sqrt: 0.2,
            eps: 1e-8,
            step_size: 1e-3,
        };
        let shared = p.clone();
        for (g, m, v) in [(&shared, &m, &g), (&g, &shared, &m), (&g, &m, &shared)] {
            assert!(kernels::adamw::adamw(&p, g, m, v, &step).unwrap().is_none());
            assert_eq!(p.to_vec1::<f32>().unwrap(), [0.5, -0.25, 1.0]);
        }
        // The negative control: a separate second moment runs in place.
        let v = p.copy().unwrap();
        assert!(
            kernels::adamw::adamw(&p, &g, &m, &v, &step)
                .unwrap()
                .is_some()
        );
        assert_ne!(p.to_vec1::<f32>().unwrap(), [0.5, -0.25, 1.0]);
    }
}
