//! GELU (exact, with erf) and QuickGELU (`x · σ(1.702 x)`), fused: one pass forward, one pass
//! backward (candle's composite QuickGELU is 5 ops forward, its GELU backward about 10).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{Float, contiguous, dispatch_float, for_row_blocks, storage};

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

// Both inline into loops that match on the kind outside (see `forward`), so each loop has
// constant-folded, branch-free arithmetic that the compiler vectorises.
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

/// `f(x, g)` element by element into a new vector, in blocks on the current rayon pool (`g` is
/// `x` itself where there is no second operand). Slices, not indices, so the loop vectorises.
fn map<T: Float>(x: &[T], g: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    // Blocks of 16K elements: treat the data as rows of one element.
    for_row_blocks(&mut out, 1, |first, block| {
        let end = first + block.len();
        for ((y, &x), &g) in block.iter_mut().zip(&x[first..end]).zip(&g[first..end]) {
            *y = f(x, g);
        }
    });
    out
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
        Kind::Gelu => map(x, x, |x, _| value(Kind::Gelu, x)),
        Kind::QuickGelu => map(x, x, |x, _| value(Kind::QuickGelu, x)),
    }
}

fn backward<T: Float>(kind: Kind, x: &[T], grad: &[T]) -> Vec<T> {
    match kind {
        Kind::Gelu => map(x, grad, |x, g| g * derivative(Kind::Gelu, x)),
        Kind::QuickGelu => map(x, grad, |x, g| g * derivative(Kind::QuickGelu, x)),
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
