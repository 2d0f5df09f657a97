//! The MR-Pretrain losses. Each is a plain function of tensors so that later stages (calibrate,
//! evaluate) can reuse them, and each has a finite-difference test.

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ops;

/// MAE's normalised-pixel targets: every patch (last dimension) is shifted to mean 0 and scaled
/// by `1 / sqrt(var + 1e-6)`, with the unbiased variance as in M3AE (`norm_pix_loss = True`).
pub fn normalized_pixel_targets(patches: &Tensor) -> Result<Tensor> {
    let n = patches.dim(D::Minus1)?;
    let mean = patches.mean_keepdim(D::Minus1)?;
    let centred = patches.broadcast_sub(&mean)?;
    let unbiased = (centred.sqr()?.sum_keepdim(D::Minus1)? / (n.max(2) - 1) as f64)?;
    Ok(centred.broadcast_div(&(unbiased + 1e-6)?.sqrt()?)?)
}

/// L_MIM: the mean squared error per patch, averaged over the REMOVED patches only.
/// `pred`, `target`: [B, L, P]; `removed`: [B, L], 1 where a patch was removed, else 0.
pub fn masked_patch_mse(pred: &Tensor, target: &Tensor, removed: &Tensor) -> Result<Tensor> {
    let per_patch = (pred - target)?.sqr()?.mean(D::Minus1)?;
    weighted_mean(&per_patch, removed)
}

/// Mean cross-entropy of `logits` [N, C] against class indices `labels` (U32 [N]).
/// Used for L_MLM (rows = masked tokens only) and L_ITM.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// The distance used by the feature-level losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureDistance {
    /// Mean squared error over the feature dimension.
    Mse,
    /// `1 − cos(pred, target)`.
    Cosine,
    /// Smooth L1 (Huber with β = 1), mean over the feature dimension.
    SmoothL1,
}

/// L_FeaMIM / L_FeaMLM: the distance between predicted and target features per position,
/// averaged with `weights` [N] (1 at the positions that count, e.g. masked ones, 0 elsewhere).
/// `pred`, `target`: [N, D].
pub fn feature_loss(
    pred: &Tensor,
    target: &Tensor,
    weights: &Tensor,
    distance: FeatureDistance,
) -> Result<Tensor> {
    let per_row = match distance {
        FeatureDistance::Mse => (pred - target)?.sqr()?.mean(D::Minus1)?,
        FeatureDistance::Cosine => {
            let dot = (pred * target)?.sum(D::Minus1)?;
            let norms = ((pred.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?
                * (target.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?)?;
            (1.0 - (dot / norms)?)?
        }
        FeatureDistance::SmoothL1 => {
            let diff = (pred - target)?.abs()?;
            // |d| < 1: d²/2, else |d| − 1/2; written as min(|d|,1)·(|d| − min(|d|,1)/2).
            let small = diff.clamp(0.0, 1.0)?;
            (&small * (&diff - (&small * 0.5)?)?)?.mean(D::Minus1)?
        }
    };
    weighted_mean(&per_row, weights)
}

/// `Σ wᵢ xᵢ / max(Σ wᵢ, 1)`: zero (not NaN) when nothing is selected.
pub fn weighted_mean(values: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let weights = weights.to_dtype(values.dtype())?.reshape(values.shape())?;
    let total = (values * &weights)?.sum_all()?;
    let count = weights.sum_all()?.maximum(1.0)?;
    Ok(total.div(&count)?)
}

/// Per-token layer norm without parameters, applied to feature targets (data2vec/MaskFeat style).
pub fn normalize_features(x: &Tensor) -> Result<Tensor> {
    Ok(ops::layer_norm(x, None, None, 1e-6)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::rng::SplitMix64;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = SplitMix64::new(seed);
        let n: usize = shape.iter().product();
        Tensor::from_vec(
            (0..n).map(|_| rng.normal()).collect::<Vec<f64>>(),
            shape,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Checks the autograd gradient of `loss(x)` against central differences, in f64.
    fn check_gradient(x0: &Tensor, loss: impl Fn(&Tensor) -> Tensor) {
        let x = Var::from_tensor(x0).unwrap();
        let grads = loss(x.as_tensor()).backward().unwrap();
        let analytic = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = x0.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let at = |v: Vec<f64>| {
                loss(&Tensor::from_vec(v, x0.shape(), &Device::Cpu).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (at(plus) - at(minus)) / (2.0 * h);
            assert!(
                (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                "element {i}: finite difference {numeric}, autograd {}",
                analytic[i]
            );
        }
    }

    fn removed_mask() -> Tensor {
        Tensor::new(&[[1f64, 0.0, 1.0], [0.0, 0.0, 1.0]], &Device::Cpu).unwrap()
    }

    #[test]
    fn masked_patch_mse_matches_finite_differences() {
        let target = random(&[2, 3, 4], 2);
        let removed = removed_mask();
        check_gradient(&random(&[2, 3, 4], 1), |p| {
            masked_patch_mse(p, &target, &removed).unwrap()
        });
    }

    #[test]
    fn cross_entropy_matches_finite_differences_and_a_hand_value() {
        let labels = Tensor::new(&[2u32, 0, 1], &Device::Cpu).unwrap();
        check_gradient(&random(&[3, 4], 3), |l| cross_entropy(l, &labels).unwrap());
        let logits = Tensor::new(&[[0f64, 0.0]], &Device::Cpu).unwrap();
        let one = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let value = cross_entropy(&logits, &one)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((value - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn feature_losses_match_finite_differences() {
        let target = random(&[4, 5], 5);
        let weights = Tensor::new(&[1f64, 0.0, 1.0, 1.0], &Device::Cpu).unwrap();
        for distance in [
            FeatureDistance::Mse,
            FeatureDistance::Cosine,
            FeatureDistance::SmoothL1,
        ] {
            // Scale up so smooth-L1 sees both of its branches.
            let pred = (random(&[4, 5], 4) * 1.5).unwrap();
            check_gradient(&pred, |p| {
                feature_loss(p, &target, &weights, distance).unwrap()
            });
        }
        check_gradient(&random(&[3, 6], 6), |x| {
            (normalize_features(x).unwrap() * &random(&[3, 6], 7))
                .unwrap()
                .sum_all()
                .unwrap()
        });
    }

    #[test]
    fn smooth_l1_and_cosine_have_their_textbook_values() {
        let dev = Device::Cpu;
        let pred = Tensor::new(&[[0.5f64, 3.0]], &dev).unwrap();
        let zero = Tensor::zeros((1, 2), DType::F64, &dev).unwrap();
        let w = Tensor::ones(1, DType::F64, &dev).unwrap();
        let v = feature_loss(&pred, &zero, &w, FeatureDistance::SmoothL1)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((v - (0.125 + 2.5) / 2.0).abs() < 1e-12, "{v}");
        let v = feature_loss(&pred, &(&pred * 2.0).unwrap(), &w, FeatureDistance::Cosine)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(v.abs() < 1e-9, "{v}");
    }

    #[test]
    fn masked_losses_ignore_unmasked_positions() {
        let pred = random(&[2, 3, 4], 1);
        let target = random(&[2, 3, 4], 2);
        let removed = removed_mask();
        let before = masked_patch_mse(&pred, &target, &removed)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        // Change the target only where nothing was removed: the loss must not move.
        let keep = (1.0 - &removed)
            .unwrap()
            .unsqueeze(2)
            .unwrap()
            .broadcast_as((2, 3, 4))
            .unwrap();
        let changed = (&target + (keep * 100.0).unwrap()).unwrap();
        let after = masked_patch_mse(&pred, &changed, &removed)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(before, after);
        // ... and changing a removed patch must move it.
        let moved = (&target
            + (removed
                .unsqueeze(2)
                .unwrap()
                .broadcast_as((2, 3, 4))
                .unwrap()
                * 1.0)
                .unwrap())
        .unwrap();
        assert_ne!(
            before,
            masked_patch_mse(&pred, &moved, &removed)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        );

        let fpred = random(&[4, 5], 8);
        let ftarget = random(&[4, 5], 9);
        let w = Tensor::new(&[1f64, 0.0, 0.0, 1.0], &Device::Cpu).unwrap();
        let before = feature_loss(&fpred, &ftarget, &w, FeatureDistance::Mse)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let rows_zero = Tensor::new(&[[0f64], [1.0], [1.0], [0.0]], &Device::Cpu)
            .unwrap()
            .broadcast_as((4, 5))
            .unwrap();
        let changed = (&ftarget + (rows_zero * 50.0).unwrap()).unwrap();
        let after = feature_loss(&fpred, &changed, &w, FeatureDistance::Mse)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn normalised_pixel_targets_have_zero_mean_and_unit_unbiased_variance() {
        let t = normalized_pixel_targets(&random(&[2, 3, 8], 11)).unwrap();
        let rows = t.reshape((6, 8)).unwrap().to_vec2::<f64>().unwrap();
        for row in rows {
            let mean = row.iter().sum::<f64>() / 8.0;
            let var = row.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 7.0;
            assert!(
                mean.abs() < 1e-9 && (var - 1.0).abs() < 1e-4,
                "{mean} {var}"
            );
        }
    }
}
