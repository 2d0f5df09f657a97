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

/// The constants of one update in the parameter's dtype, rounded as candle rounds them.
#[derive(Clone, Copy)]
struct Constants<T> {
    clip: T,
    beta1: T,
    one_minus_beta1: T,
    beta2: T,
    one_minus_beta2: T,
    /// 1 when the parameter is not decayed (then unused).
    decay: T,
    decayed: bool,
    inv_bias2: T,
    eps: T,
    step_size: T,
}

impl<T: Float> Constants<T> {
    fn of(s: &AdamWStep) -> Self {
        let c = |x: f64| T::of(x);
        Constants {
            clip: c(s.clip),
            beta1: c(s.beta1),
            one_minus_beta1: c(1.0 - s.beta1),
            beta2: c(s.beta2),
            one_minus_beta2: c(1.0 - s.beta2),
            decay: c(s.decay.unwrap_or(1.0)),
            decayed: s.decay.is_some(),
            inv_bias2: c(1.0 / s.bias2_sqrt),
            eps: c(s.eps),
            step_size: c(s.step_size),
        }
    }
}

/// The element loop over whole slices (so it vectorises): the composite's ops, one after the
/// other, per element. `p`, `m` and `v` are read and overwritten in place.
#[inline(always)]
fn update_in_place<const DECAYED: bool, T: Float>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    k: Constants<T>,
) {
    let zero = T::ZERO;
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = *g * k.clip + zero;
        *m = (*m * k.beta1 + zero) + (g * k.one_minus_beta1 + zero);
        *v = (*v * k.beta2 + zero) + ((g * g) * k.one_minus_beta2 + zero);
        let decayed = if DECAYED { *p * k.decay + zero } else { *p };
        let denom = (v.sqrt() * k.inv_bias2 + zero) * T::ONE + k.eps;
        *p = decayed - ((*m / denom) * k.step_size + zero);
    }
}

/// [`update_in_place`] compiled for AVX-512 (see [`super::has_avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn update_in_place_avx512<const DECAYED: bool, T: Float>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    k: Constants<T>,
) {
    update_in_place::<DECAYED, T>(p, g, m, v, k)
}

/// The new parameter, first and second moment.
fn update<T: Float>(p: &[T], g: &[T], m: &[T], v: &[T], s: &AdamWStep) -> (Vec<T>, Vec<T>, Vec<T>) {
    let k = Constants::<T>::of(s);
    let (mut p, mut m, mut v) = (p.to_vec(), m.to_vec(), v.to_vec());
    let n = p.len().min(g.len());
    let (p_, g, m_, v_) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe {
            if k.decayed {
                update_in_place_avx512::<true, T>(p_, g, m_, v_, k)
            } else {
                update_in_place_avx512::<false, T>(p_, g, m_, v_, k)
            }
        }
        return (p, m, v);
    }
    if k.decayed {
        update_in_place::<true, T>(p_, g, m_, v_, k)
    } else {
        update_in_place::<false, T>(p_, g, m_, v_, k)
    }
    (p, m, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 build of the loop computes the baseline build's bits (the optimiser's test
    /// compares whichever build this CPU runs against the composite).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx512_loop_computes_the_baseline_bits() {
        if !super::super::has_avx512() {
            println!("skipped: this CPU has no AVX-512F");
            return;
        }
        let wave =
            |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32) * f).sin()).collect() };
        let g = wave(1031, 0.37);
        let step = AdamWStep {
            clip: 0.5,
            beta1: 0.9,
            beta2: 0.98,
            decay: Some(0.999),
            bias2_sqrt: 0.2,
            eps: 1e-8,
            step_size: 1e-3,
        };
        let k = Constants::<f32>::of(&step);
        let run = |wide: bool| {
            let (mut p, mut m) = (wave(1031, 0.11), wave(1031, 0.05));
            let mut v: Vec<f32> = wave(1031, 0.07).iter().map(|x| x.abs()).collect();
            if wide {
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { update_in_place_avx512::<true, f32>(&mut p, &g, &mut m, &mut v, k) }
            } else {
                update_in_place::<true, f32>(&mut p, &g, &mut m, &mut v, k)
            }
            [p, m, v].map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(run(false), run(true));
    }
}
