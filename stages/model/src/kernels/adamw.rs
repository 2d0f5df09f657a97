//! AdamW's update of one parameter in one pass over memory. The composite in
//! [`crate::optim::Optimiser::step_scaled`] is 13 candle element-wise ops per parameter, each a
//! pass that allocates its output. This computes exactly what they compute: the same operations
//! in the same order, each constant rounded to the dtype the way candle rounds it (a tensor times
//! a float `c` is candle's `affine(c, 0)`, i.e. `x · c + 0`; divided by `c` is `x · (1/c) + 0`;
//! plus `c` is `x · 1 + c`), so the new parameter and moments are bit-identical to the composite's
//! (tested in `optim`).

use candle_core::{Result, Storage, Tensor};

use super::{Float, contiguous, dispatch_float, same_dtype};

const KERNEL: &str = "umd-adamw";

/// One AdamW step's constants for one parameter, as the composite passes them to candle (f64).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// The gradient's clipping factor.
    pub clip: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// `1 − lr · weight_decay` for a decayed parameter.
    pub decay: Option<f64>,
    /// `sqrt(1 − beta2^t)`, the second moment's bias correction.
    pub bias2_sqrt: f64,
    pub eps: f64,
    /// `lr / (1 − beta1^t)`.
    pub step_size: f64,
}

/// The new parameter, first moment and second moment from the parameter `p`, its gradient `g` and
/// the moments `m`, `v`; `None` when the kernel does not apply (not CPU f32/f64 tensors of one
/// dtype and shape), so the caller runs the composite.
pub fn adamw(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamWStep,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let all = [p, g, m, v];
    if !super::applies(p)
        || all
            .iter()
            .any(|t| t.dtype() != p.dtype() || !t.device().is_cpu() || t.shape() != p.shape())
    {
        return Ok(None);
    }
    let (g, m, v) = (g.contiguous()?, m.contiguous()?, v.contiguous()?);
    let p = p.contiguous()?;
    let ((ps, pl), (gs, gl), (ms, ml), (vs, vl)) = (
        p.storage_and_layout(),
        g.storage_and_layout(),
        m.storage_and_layout(),
        v.storage_and_layout(),
    );
    let (Storage::Cpu(ps), Storage::Cpu(gs), Storage::Cpu(ms), Storage::Cpu(vs)) =
        (&*ps, &*gs, &*ms, &*vs)
    else {
        return Ok(None);
    };
    let (new_p, new_m, new_v) = dispatch_float!(ps, KERNEL, |pd| {
        let p_values = contiguous(pd, pl, KERNEL)?;
        let (new_p, new_m, new_v) = update(
            p_values,
            contiguous(same_dtype(gs, KERNEL)?, gl, KERNEL)?,
            contiguous(same_dtype(ms, KERNEL)?, ml, KERNEL)?,
            contiguous(same_dtype(vs, KERNEL)?, vl, KERNEL)?,
            step,
        );
        let device = p.device();
        (
            Tensor::from_vec(new_p, p.shape(), device)?,
            Tensor::from_vec(new_m, p.shape(), device)?,
            Tensor::from_vec(new_v, p.shape(), device)?,
        )
    });
    Ok(Some((new_p, new_m, new_v)))
}

/// The element loop: the composite's ops, one after the other, per element.
fn update<T: Float>(p: &[T], g: &[T], m: &[T], v: &[T], s: &AdamWStep) -> (Vec<T>, Vec<T>, Vec<T>) {
    let c = |x: f64| T::of(x);
    let (clip, b1, one_b1, b2, one_b2) = (
        c(s.clip),
        c(s.beta1),
        c(1.0 - s.beta1),
        c(s.beta2),
        c(1.0 - s.beta2),
    );
    let decay = s.decay.map(c);
    let (inv_bias2, eps, step_size) = (c(1.0 / s.bias2_sqrt), c(s.eps), c(s.step_size));
    let (zero, one) = (T::ZERO, T::ONE);
    let n = p.len();
    let (mut new_p, mut new_m, mut new_v) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n {
        let g = g[i] * clip + zero;
        let m = (m[i] * b1 + zero) + (g * one_b1 + zero);
        let v = (v[i] * b2 + zero) + ((g * g) * one_b2 + zero);
        let p = match decay {
            Some(d) => p[i] * d + zero,
            None => p[i],
        };
        let denom = (v.sqrt() * inv_bias2 + zero) * one + eps;
        let update = (m / denom) * step_size + zero;
        new_p.push(p - update);
        new_m.push(m);
        new_v.push(v);
    }
    (new_p, new_m, new_v)
}
