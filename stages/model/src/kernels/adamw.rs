//! AdamW's update of one parameter in one pass over memory. The composite in
//! [`crate::optim::Optimiser::step_scaled`] is 13 candle element-wise ops per parameter, each a
//! pass that allocates its output. This computes exactly what they compute: the same operations
//! in the same order, each constant rounded to the dtype the way candle rounds it (a tensor times
//! a float `c` is candle's `affine(c, 0)`, i.e. `x · c + 0`; divided by `c` is `x · (1/c) + 0`;
//! plus `c` is `x · 1 + c`), so the new parameter and moments are bit-identical to the composite's
//! (tested in `optim`).
//!
//! The parameter is written in place, in its own storage (candle's in-place op), where the
//! variable's `set` would copy a new tensor into it; the new moments are written once into
//! uninitialised vectors. So the pass reads four arrays and writes three, with no copies.

use std::mem::MaybeUninit;
use std::sync::Mutex;

use candle_core::{CpuStorage, Device, InplaceOp3, Layout, Result, Storage, Tensor};

use super::{Float, contiguous, same_dtype};

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

/// Updates the parameter `p` in place (every tensor sharing its storage sees the new values, as
/// with `Var::set`) from its gradient `g` and the moments `m`, `v`, and returns the new first and
/// second moments; `None` when the kernel does not apply (not CPU f32/f64 tensors of one dtype
/// and shape, `p` not contiguous, or one of the others sharing `p`'s storage), and then `p` is
/// untouched and the caller runs the composite.
pub fn adamw(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamWStep,
) -> Result<Option<(Tensor, Tensor)>> {
    let all = [p, g, m, v];
    if !super::applies(p)
        || !p.is_contiguous()
        || all
            .iter()
            .any(|t| t.dtype() != p.dtype() || !t.device().is_cpu() || t.shape() != p.shape())
    {
        return Ok(None);
    }
    let (g, m, v) = (g.contiguous()?, m.contiguous()?, v.contiguous()?);
    // The op reads `v` while it holds `p`'s storage locked for writing, so a `v` sharing that
    // storage would wait on it forever, and candle's in-place op refuses a `g` or `m` sharing it;
    // such a call (never the optimiser's) takes the composite.
    let target = storage_address(p);
    if [&g, &m, &v].iter().any(|t| storage_address(t) == target) {
        return Ok(None);
    }
    let op = InPlace {
        v,
        step: *step,
        moments: Mutex::new(None),
    };
    p.inplace_op3(&g, &m, &op)?;
    let moments = match op.moments.into_inner() {
        Ok(moments) => moments,
        Err(_) => candle_core::bail!("{KERNEL}: the new moments are poisoned"),
    };
    match moments {
        Some(moments) => Ok(Some(moments)),
        None => candle_core::bail!("{KERNEL}: the update did not run"),
    }
}

/// Where a tensor's storage lives (its read lock is released before this returns).
fn storage_address(t: &Tensor) -> *const Storage {
    let (storage, _) = t.storage_and_layout();
    &*storage as *const Storage
}

/// The in-place op on the parameter; `g` and `m` come in as its operands, `v` with the op.
struct InPlace {
    v: Tensor,
    step: AdamWStep,
    /// The new first and second moments, once the op has run.
    moments: Mutex<Option<(Tensor, Tensor)>>,
}

impl InplaceOp3 for InPlace {
    fn name(&self) -> &'static str {
        KERNEL
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        pl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> Result<()> {
        let (vs, vl) = self.v.storage_and_layout();
        let Storage::Cpu(v) = &*vs else {
            candle_core::bail!("{KERNEL}: the second moment must be on the CPU");
        };
        let step = &self.step;
        let moments = match p {
            CpuStorage::F32(p) => typed(p, pl, (g, gl), (m, ml), (v, vl), step)?,
            CpuStorage::F64(p) => typed(p, pl, (g, gl), (m, ml), (v, vl), step)?,
            other => candle_core::bail!(
                "{KERNEL}: unsupported dtype {:?}",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        };
        match self.moments.lock() {
            Ok(mut slot) => *slot = Some(moments),
            Err(_) => candle_core::bail!("{KERNEL}: the new moments are poisoned"),
        }
        Ok(())
    }
}

/// The update for one float type: `p` in place, the new moments as tensors of `p`'s shape.
fn typed<T: Float>(
    p: &mut [T],
    pl: &Layout,
    (g, gl): (&CpuStorage, &Layout),
    (m, ml): (&CpuStorage, &Layout),
    (v, vl): (&CpuStorage, &Layout),
    step: &AdamWStep,
) -> Result<(Tensor, Tensor)> {
    let Some((start, end)) = pl.contiguous_offsets() else {
        candle_core::bail!("{KERNEL}: the parameter must be contiguous");
    };
    let Some(p) = p.get_mut(start..end) else {
        candle_core::bail!("{KERNEL}: the parameter's layout reaches past its storage");
    };
    let g = contiguous(same_dtype::<T>(g, KERNEL)?, gl, KERNEL)?;
    let m = contiguous(same_dtype::<T>(m, KERNEL)?, ml, KERNEL)?;
    let v = contiguous(same_dtype::<T>(v, KERNEL)?, vl, KERNEL)?;
    if [g.len(), m.len(), v.len()].iter().any(|&n| n != p.len()) {
        candle_core::bail!("{KERNEL}: the gradient and moments do not match the parameter");
    }
    let (new_m, new_v) = update(p, g, m, v, step);
    let shape = pl.shape();
    Ok((
        Tensor::from_vec(new_m, shape, &Device::Cpu)?,
        Tensor::from_vec(new_v, shape, &Device::Cpu)?,
    ))
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
/// other, per element. `p` is read and overwritten in place; the new moments go to `new_m` and
/// `new_v`, every element of which is written (all six slices have one length).
#[inline(always)]
fn update_elements<const DECAYED: bool, T: Float>(
    p: &mut [T],
    g: &[T],
    (m, v): (&[T], &[T]),
    (new_m, new_v): (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]),
    k: Constants<T>,
) {
    let zero = T::ZERO;
    let moments = m.iter().zip(v).zip(new_m.iter_mut().zip(new_v.iter_mut()));
    for ((p, g), ((m, v), (new_m, new_v))) in p.iter_mut().zip(g).zip(moments) {
        let g = *g * k.clip + zero;
        let m = (*m * k.beta1 + zero) + (g * k.one_minus_beta1 + zero);
        let v = (*v * k.beta2 + zero) + ((g * g) * k.one_minus_beta2 + zero);
        new_m.write(m);
        new_v.write(v);
        let decayed = if DECAYED { *p * k.decay + zero } else { *p };
        let denom = (v.sqrt() * k.inv_bias2 + zero) * T::ONE + k.eps;
        *p = decayed - ((m / denom) * k.step_size + zero);
    }
}

/// [`update_elements`] compiled for AVX-512 (see [`super::has_avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn update_elements_avx512<const DECAYED: bool, T: Float>(
    p: &mut [T],
    g: &[T],
    old: (&[T], &[T]),
    new: (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]),
    k: Constants<T>,
) {
    update_elements::<DECAYED, T>(p, g, old, new, k)
}

/// Updates `p` in place and returns the new first and second moment (`g`, `m` and `v` have `p`'s
/// length, checked by the caller).
fn update<T: Float>(p: &mut [T], g: &[T], m: &[T], v: &[T], s: &AdamWStep) -> (Vec<T>, Vec<T>) {
    let k = Constants::<T>::of(s);
    let n = p.len();
    let (mut new_m, mut new_v): (Vec<T>, Vec<T>) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let new = (
        &mut new_m.spare_capacity_mut()[..n],
        &mut new_v.spare_capacity_mut()[..n],
    );
    let old = (&m[..n], &v[..n]);
    let g = &g[..n];
    #[cfg(target_arch = "x86_64")]
    let wide = super::has_avx512();
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    match (wide, k.decayed) {
        // SAFETY (both wide arms): the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        (true, true) => unsafe { update_elements_avx512::<true, T>(p, g, old, new, k) },
        #[cfg(target_arch = "x86_64")]
        (true, false) => unsafe { update_elements_avx512::<false, T>(p, g, old, new, k) },
        (_, true) => update_elements::<true, T>(p, g, old, new, k),
        (_, false) => update_elements::<false, T>(p, g, old, new, k),
    }
    // SAFETY: all six slices had length n, so the loop wrote every element of both.
    unsafe {
        new_m.set_len(n);
        new_v.set_len(n);
    }
    (new_m, new_v)
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
            let (mut p, m) = (wave(1031, 0.11), wave(1031, 0.05));
            let v: Vec<f32> = wave(1031, 0.07).iter().map(|x| x.abs()).collect();
            let zeros = vec![MaybeUninit::new(0f32); p.len()];
            let (mut new_m, mut new_v) = (zeros.clone(), zeros);
            let new = (new_m.as_mut_slice(), new_v.as_mut_slice());
            if wide {
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { update_elements_avx512::<true, f32>(&mut p, &g, (&m, &v), new, k) }
            } else {
                update_elements::<true, f32>(&mut p, &g, (&m, &v), new, k)
            }
            // SAFETY: both started as zeros (initialised).
            let read = |x: &[MaybeUninit<f32>]| -> Vec<f32> {
                x.iter().map(|f| unsafe { f.assume_init() }).collect()
            };
            [p, read(&new_m), read(&new_v)]
                .map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(run(false), run(true));
    }
}
