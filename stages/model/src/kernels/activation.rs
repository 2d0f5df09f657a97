//! GELU (the erf form, not the tanh approximation; in f32 `erf` is a polynomial within 5e-7, see
//! [`super::fast_math`]) and QuickGELU (`x · σ(1.702 x)`), fused: one pass forward, one pass
//! backward (candle's composite QuickGELU is 5 ops forward, its GELU backward about 10).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{
    Float, collect_row_blocks, contiguous, dispatch_float, has_avx512, has_wide_vectors, storage,
};

/// Which activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gelu,
    QuickGelu,
}

/// The activation `kind` applied element-wise to `x`.
pub fn activation(x: &Tensor, kind: Kind) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Activation { kind })
}

struct Activation {
    kind: Kind,
}

const QUICK: f64 = 1.702;
/// 1 / sqrt(2π).
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

// Both inline into loops whose kind is a constant (see `element`), so each loop is
// branch-free arithmetic that the compiler vectorises.
#[inline(always)]
fn value<T: Float>(kind: Kind, x: T) -> T {
    match kind {
        Kind::Gelu => {
            T::of(0.5) * x * (T::ONE + (x * T::of(std::f64::consts::FRAC_1_SQRT_2)).erf())
        }
        Kind::QuickGelu => x * (T::ONE / ((-(T::of(QUICK) * x)).exp() + T::ONE)),
    }
}

#[inline(always)]
fn derivative<T: Float>(kind: Kind, x: T) -> T {
    match kind {
        Kind::Gelu => {
            let cdf = T::of(0.5) * (T::ONE + (x * T::of(std::f64::consts::FRAC_1_SQRT_2)).erf());
            cdf + x * T::of(INV_SQRT_2PI) * (T::of(-0.5) * x * x).exp()
        }
        Kind::QuickGelu => {
            let s = T::ONE / ((-(T::of(QUICK) * x)).exp() + T::ONE);
            s + x * T::of(QUICK) * s * (T::ONE - s)
        }
    }
}

/// `value` forward, `g · derivative` backward, with the kind and the direction as constants, so
/// that each of the four loops is straight-line arithmetic.
#[inline(always)]
fn element<T: Float, const GELU: bool, const BACKWARD: bool>(x: T, g: T) -> T {
    let kind = if GELU { Kind::Gelu } else { Kind::QuickGelu };
    if BACKWARD {
        g * derivative(kind, x)
    } else {
        value(kind, x)
    }
}

#[inline(always)]
fn map_block<T: Float, const GELU: bool, const BACKWARD: bool>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    g: &[T],
) {
    for ((y, &x), &g) in out.iter_mut().zip(x).zip(g) {
        y.write(element::<T, GELU, BACKWARD>(x, g));
    }
}

/// [`map_block`] compiled for AVX2 (see [`super::has_wide_vectors`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_block_avx2<T: Float, const GELU: bool, const BACKWARD: bool>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    g: &[T],
) {
    map_block::<T, GELU, BACKWARD>(out, x, g)
}

/// [`map_block`] compiled for AVX-512 (see [`super::has_avx512`]): 16 f32 per vector, where
/// PyTorch's own vectorised GELU also runs on such a CPU.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn map_block_avx512<T: Float, const GELU: bool, const BACKWARD: bool>(
    out: &mut [MaybeUninit<T>],
    x: &[T],
    g: &[T],
) {
    map_block::<T, GELU, BACKWARD>(out, x, g)
}

/// [`element`] over `x` (and the gradient `g`, `x` itself forward) into a new vector, in blocks on
/// the current rayon pool.
fn map<T: Float, const GELU: bool, const BACKWARD: bool>(x: &[T], g: &[T]) -> Vec<T> {
    let (wide, widest) = (has_wide_vectors(), has_avx512());
    // Blocks of 16K elements: treat the data as rows of one element.
    let fill = |first: usize, block: &mut [MaybeUninit<T>]| {
        let end = first + block.len();
        let (x, g) = (&x[first..end], &g[first..end]);
        #[cfg(target_arch = "x86_64")]
        if widest {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { map_block_avx512::<T, GELU, BACKWARD>(block, x, g) };
        }
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the CPU has AVX2.
            return unsafe { map_block_avx2::<T, GELU, BACKWARD>(block, x, g) };
        }
        let _ = (wide, widest);
        map_block::<T, GELU, BACKWARD>(block, x, g)
    };
    // SAFETY: `x`, `g` and the output have one length, so `map_block` writes every element of
    // each block.
    unsafe { collect_row_blocks(x.len(), 1, fill) }
}

impl CustomOp1 for Activation {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Gelu => "umd-gelu",
            Kind::QuickGelu => "umd-quick-gelu",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(s, self.name(), |x| {
            let x = contiguous(x, l, self.name())?;
            storage(forward(self.kind, x))
        });
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx =
            x.apply_op2_no_bwd(&grad.contiguous()?, &ActivationBackward { kind: self.kind })?;
        Ok(Some(dx))
    }
}

fn forward<T: Float>(kind: Kind, x: &[T]) -> Vec<T> {
    match kind {
        Kind::Gelu => map::<T, true, false>(x, x),
        Kind::QuickGelu => map::<T, false, false>(x, x),
    }
}

fn backward<T: Float>(kind: Kind, x: &[T], grad: &[T]) -> Vec<T> {
    match kind {
        Kind::Gelu => map::<T, true, true>(x, grad),
        Kind::QuickGelu => map::<T, false, true>(x, grad),
    }
}

/// `g · f'(x)` from the activation's input `x` and output gradient `g`.
struct ActivationBackward {
    kind: Kind,
}

impl CustomOp2 for ActivationBackward {
    fn name(&self) -> &'static str {
        "umd-activation-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::gradient_matches(self.name(), l2, l1, "the input")?;
        let out = dispatch_float!(s1, self.name(), |x| {
            let x = contiguous(x, l1, self.name())?;
            let grad = contiguous(super::same_dtype(s2, self.name())?, l2, self.name())?;
            storage(backward(self.kind, x, grad))
        });
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 and AVX-512 builds of each loop compute the same bits as the baseline build.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_wide_loops_compute_the_baseline_bits() {
        if !has_wide_vectors() {
            println!("skipped: this CPU has no AVX2");
            return;
        }
        let x: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.0) * 0.0037).collect();
        let g: Vec<f32> = (0..4099)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        type Loop = fn(&mut [MaybeUninit<f32>], &[f32], &[f32]);
        let check = |name: &str, base: Loop, wide: Loop, g: &[f32]| {
            let zeros = vec![MaybeUninit::new(0f32); x.len()];
            let (mut a, mut b) = (zeros.clone(), zeros);
            base(&mut a, &x, g);
            wide(&mut b, &x, g);
            // SAFETY: both started as zeros (initialised).
            let bits = |v: &[MaybeUninit<f32>]| {
                v.iter()
                    .map(|f| unsafe { f.assume_init() }.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&a), bits(&b), "{name}");
        };
        let loops: [(&str, Loop, Loop, Loop, &[f32]); 4] = [
            (
                "gelu",
                map_block::<f32, true, false>,
                // SAFETY (each wide build): called only when the CPU has the feature.
                |o, x, g| unsafe { map_block_avx2::<f32, true, false>(o, x, g) },
                |o, x, g| unsafe { map_block_avx512::<f32, true, false>(o, x, g) },
                &x,
            ),
            (
                "gelu backward",
                map_block::<f32, true, true>,
                |o, x, g| unsafe { map_block_avx2::<f32, true, true>(o, x, g) },
                |o, x, g| unsafe { map_block_avx512::<f32, true, true>(o, x, g) },
                &g,
            ),
            (
                "quick_gelu",
                map_block::<f32, false, false>,
                |o, x, g| unsafe { map_block_avx2::<f32, false, false>(o, x, g) },
                |o, x, g| unsafe { map_block_avx512::<f32, false, false>(o, x, g) },
                &x,
            ),
            (
                "quick_gelu backward",
                map_block::<f32, false, true>,
                |o, x, g| unsafe { map_block_avx2::<f32, false, true>(o, x, g) },
                |o, x, g| unsafe { map_block_avx512::<f32, false, true>(o, x, g) },
                &g,
            ),
        ];
        for (name, base, avx2, avx512, g) in loops {
            check(name, base, avx2, g);
            if has_avx512() {
                check(name, base, avx512, g);
            } else {
                println!("skipped the AVX-512 builds: this CPU has no AVX-512F");
            }
        }
    }
}
