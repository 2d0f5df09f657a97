//! Layer normalisation over the last dimension with an affine part, fused: one pass forward, one
//! pass backward (which also yields the gradients of gamma and beta).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::{
    Float, collect_row_blocks, contiguous, dispatch_float, dot, rows_per_block, storage, sum,
};

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta` per row (biased variance), `x` contiguous
/// [..., D], `gamma` and `beta` [D].
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, LayerNorm { eps })
}

struct LayerNorm {
    eps: f64,
}

/// Mean and `1 / sqrt(var + eps)` of one row.
fn moments<T: Float>(row: &[T], eps: f64) -> (T, T) {
    let n = T::of(row.len() as f64);
    let mean = sum(row) / n;
    let mut lanes = [T::ZERO; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            let d = *v - mean;
            *lane += d * d;
        }
    }
    let mut squares = T::ZERO;
    for lane in lanes {
        squares += lane;
    }
    for v in tail {
        let d = *v - mean;
        squares += d * d;
    }
    let var = squares / n;
    (mean, T::ONE / (var + T::of(eps)).sqrt())
}

fn forward<T: Float>(x: &[T], gamma: &[T], beta: &[T], eps: f64) -> Vec<T> {
    let width = gamma.len();
    let fill = |first: usize, block: &mut [MaybeUninit<T>]| {
        for (k, y) in block.chunks_exact_mut(width).enumerate() {
            let row = &x[(first + k) * width..(first + k + 1) * width];
            let (mean, rstd) = moments(row, eps);
            for (((y, v), g), b) in y.iter_mut().zip(row).zip(gamma).zip(beta) {
                y.write((*v - mean) * rstd * *g + *b);
            }
        }
    };
    // SAFETY: `x` is whole rows of `width` (checked by the op), so the blocks are whole rows and
    // every element of each is written.
    unsafe { collect_row_blocks(x.len(), width, fill) }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "umd-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let width = l2.shape().elem_count();
        if l1.dims().last() != Some(&width) || l3.shape().elem_count() != width {
            candle_core::bail!(
                "umd-layer-norm: x {:?}, gamma {:?} and beta {:?} do not match",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let out = dispatch_float!(s1, self.name(), |x| {
            let x = contiguous(x, l1, self.name())?;
            let gamma = contiguous(super::same_dtype(s2, self.name())?, l2, self.name())?;
            let beta = contiguous(super::same_dtype(s3, self.name())?, l3, self.name())?;
            storage(forward(x, gamma, beta, self.eps))
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let width = gamma.elem_count();
        let rows = x.elem_count() / width.max(1);
        // One op computes all three gradients: rows of dx, then a row of dgamma, a row of dbeta.
        let packed = x.apply_op3_no_bwd(
            gamma,
            &grad.contiguous()?,
            &LayerNormBackward { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, rows, 1)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, rows + 1, 1)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The backward pass: from `x`, `gamma` and the output gradient `g`, a [rows + 2, D] tensor of
/// `dx` rows (`rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))` with `ĝ = g·gamma`), `dgamma = Σ g·x̂` and
/// `dbeta = Σ g`.
struct LayerNormBackward {
    eps: f64,
}

fn backward<T: Float>(x: &[T], gamma: &[T], grad: &[T], eps: f64) -> Vec<T> {
    let width = gamma.len();
    let rows = x.len() / width.max(1);
    // Uninitialised: the dx rows are all written below, the two parameter rows at the end.
    let mut out: Vec<T> = Vec::with_capacity((rows + 2) * width);
    let (dx, params) = out.spare_capacity_mut()[..(rows + 2) * width].split_at_mut(rows * width);
    let block_rows = rows_per_block(width);
    let blocks = rows.div_ceil(block_rows);
    // Per block: [dgamma partial, dbeta partial], added in block order below.
    let mut partials = vec![T::ZERO; blocks * 2 * width];
    let n = T::of(width as f64);
    let work = |first: usize, dx_block: &mut [MaybeUninit<T>], partial: &mut [T]| {
        let (pg, pb) = partial.split_at_mut(width);
        let mut g_hat = vec![T::ZERO; width];
        let mut x_hat = vec![T::ZERO; width];
        for (k, d) in dx_block.chunks_exact_mut(width).enumerate() {
            let range = (first + k) * width..(first + k + 1) * width;
            let (row, g) = (&x[range.clone()], &grad[range]);
            let (mean, rstd) = moments(row, eps);
            for i in 0..width {
                x_hat[i] = (row[i] - mean) * rstd;
                g_hat[i] = g[i] * gamma[i];
                pg[i] += g[i] * x_hat[i];
                pb[i] += g[i];
            }
            let mean_g = sum(&g_hat) / n;
            let mean_gx = dot(&g_hat, &x_hat) / n;
            for i in 0..width {
                d[i].write(rstd * (g_hat[i] - mean_g - x_hat[i] * mean_gx));
            }
        }
    };
    let block = block_rows * width;
    if blocks <= 1 {
        work(0, dx, &mut partials);
    } else {
        use rayon::prelude::*;
        dx.par_chunks_mut(block)
            .zip(partials.par_chunks_mut(2 * width))
            .enumerate()
            .for_each(|(k, (dx_block, partial))| work(k * block_rows, dx_block, partial));
    }
    let mut totals = vec![T::ZERO; 2 * width];
    for partial in partials.chunks_exact(2 * width) {
        for (p, v) in totals.iter_mut().zip(partial) {
            *p += *v;
        }
    }
    for (p, total) in params.iter_mut().zip(totals) {
        p.write(total);
    }
    // SAFETY: the blocks wrote every dx row (`x` is whole rows of `width`), and the loop above
    // both parameter rows.
    unsafe { out.set_len((rows + 2) * width) };
    out
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "umd-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let width = l2.shape().elem_count();
        let rows = l1.shape().elem_count() / width.max(1);
        super::gradient_matches(self.name(), l3, l1, "x")?;
        let out = dispatch_float!(s1, self.name(), |x| {
            let x = contiguous(x, l1, self.name())?;
            let gamma = contiguous(super::same_dtype(s2, self.name())?, l2, self.name())?;
            let grad = contiguous(super::same_dtype(s3, self.name())?, l3, self.name())?;
            storage(backward(x, gamma, grad, self.eps))
        });
        Ok((out, Shape::from((rows + 2, width))))
    }
}
