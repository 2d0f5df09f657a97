//! Softmax over the last dimension of `x · scale + bias`, fused: attention's scaling, padding bias
//! and softmax in one pass forward and one backward.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::{
    Float, contiguous, dispatch_float, dot, for_row_blocks, has_wide_vectors, storage, sum,
};

/// `softmax(x · scale + bias)` over the last dimension. `x`: [..., S]; `bias`: `None`, or a tensor
/// of `groups × S` elements where group `r / (rows / groups)` belongs to row `r` of `x` (for
/// attention scores [B, H, Sq, Sk] and a key bias [B, 1, 1, Sk]: one group per batch element).
pub fn scaled_softmax(x: &Tensor, scale: f64, bias: Option<&Tensor>) -> Result<Tensor> {
    let width = x.dim(candle_core::D::Minus1)?;
    let bias = match bias {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(width, x.dtype(), x.device())?,
    };
    x.contiguous()?.apply_op2(&bias, ScaledSoftmax { scale })
}

struct ScaledSoftmax {
    scale: f64,
}

/// Rows of `x` per bias row, or an error when the bias does not split the rows evenly.
fn rows_per_group(x: &Layout, bias: &Layout, kernel: &str) -> Result<(usize, usize)> {
    let width = x.dims().last().copied().unwrap_or(1).max(1);
    let rows = x.shape().elem_count() / width;
    let bias_elems = bias.shape().elem_count();
    if bias_elems == 0 || !bias_elems.is_multiple_of(width) {
        candle_core::bail!(
            "{kernel}: bias {:?} is not a whole number of rows of {width}",
            bias.dims()
        );
    }
    let groups = bias_elems / width;
    if !rows.is_multiple_of(groups) {
        candle_core::bail!(
            "{kernel}: {groups} bias rows do not divide the {rows} rows of x {:?}",
            x.dims()
        );
    }
    Ok((width, rows / groups))
}

/// Where the rows of one block read their input: `x`, the bias groups, and the constants.
#[derive(Clone, Copy)]
struct Rows<'a, T> {
    x: &'a [T],
    bias: &'a [T],
    width: usize,
    per_group: usize,
    scale: T,
}

/// Softmax of rows `first..` of `x · scale + bias` into `block`.
#[inline(always)]
fn softmax_rows<T: Float>(block: &mut [T], first: usize, rows: Rows<T>) {
    let Rows {
        x,
        bias,
        width,
        per_group,
        scale,
    } = rows;
    for (k, y) in block.chunks_exact_mut(width).enumerate() {
        let r = first + k;
        let row = &x[r * width..(r + 1) * width];
        let b = &bias[(r / per_group) * width..(r / per_group + 1) * width];
        for ((y, v), b) in y.iter_mut().zip(row).zip(b) {
            *y = *v * scale + *b;
        }
        normalise_row(y);
    }
}

/// The softmax of one row, in place: `y ← exp(y − max) / Σ exp(y − max)`.
#[inline(always)]
pub(super) fn normalise_row<T: Float>(y: &mut [T]) {
    let mut max = T::neg_infinity();
    for v in y.iter() {
        max = max.larger(*v);
    }
    // The exponentials alone, then the sum in lanes: both loops vectorise.
    for y in y.iter_mut() {
        *y = (*y - max).exp();
    }
    let inv = T::ONE / sum(y);
    for y in y.iter_mut() {
        *y *= inv;
    }
}

/// One row of the softmax's backward pass, in place: `d ← scale · y · (d − Σ d·y)`, where `y` is
/// the softmax's output and `d` holds the gradient of that output.
#[inline(always)]
pub(super) fn backward_row<T: Float>(d: &mut [T], y: &[T], scale: T) {
    let inner = dot(d, y);
    for (d, y) in d.iter_mut().zip(y) {
        *d = scale * *y * (*d - inner);
    }
}

/// [`softmax_rows`] compiled for AVX2 (see [`super::has_wide_vectors`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn softmax_rows_avx2<T: Float>(block: &mut [T], first: usize, rows: Rows<T>) {
    softmax_rows(block, first, rows)
}

fn forward<T: Float>(x: &[T], bias: &[T], width: usize, per_group: usize, scale: f64) -> Vec<T> {
    let rows = Rows {
        x,
        bias,
        width,
        per_group,
        scale: T::of(scale),
    };
    let mut out = vec![T::ZERO; x.len()];
    let wide = has_wide_vectors();
    for_row_blocks(&mut out, width, |first, block| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the CPU has AVX2.
            return unsafe { softmax_rows_avx2(block, first, rows) };
        }
        let _ = wide;
        softmax_rows(block, first, rows)
    });
    out
}

impl CustomOp2 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "umd-scaled-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (width, per_group) = rows_per_group(l1, l2, self.name())?;
        let out = dispatch_float!(s1, self.name(), |x| {
            let x = contiguous(x, l1, self.name())?;
            let bias = contiguous(super::same_dtype(s2, self.name())?, l2, self.name())?;
            storage(forward(x, bias, width, per_group, self.scale))
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d(softmax input) = y · (g − Σ g·y); x's gradient is that times the scale.
        let grad = grad.contiguous()?;
        let dx = y.apply_op2_no_bwd(&grad, &SoftmaxBackward { scale: self.scale })?;
        // The attention bias is a constant (built from the padding mask); only a tracked bias
        // gets a gradient, summed over the rows of its group.
        let dbias = if bias.track_op() {
            let d_input = y.apply_op2_no_bwd(&grad, &SoftmaxBackward { scale: 1.0 })?;
            let width = bias.dim(candle_core::D::Minus1)?;
            let groups = bias.elem_count() / width;
            let rows = d_input.elem_count() / width;
            Some(
                d_input
                    .reshape((groups, rows / groups, width))?
                    .sum(1)?
                    .reshape(bias.shape())?,
            )
        } else {
            None
        };
        Ok((Some(dx), dbias))
    }
}

/// `scale · y · (g − Σ g·y)` per row, from the softmax output `y` and its gradient `g`.
struct SoftmaxBackward {
    scale: f64,
}

fn backward<T: Float>(y: &[T], grad: &[T], width: usize, scale: f64) -> Vec<T> {
    let scale = T::of(scale);
    let mut out = vec![T::ZERO; y.len()];
    for_row_blocks(&mut out, width, |first, block| {
        for (k, d) in block.chunks_exact_mut(width).enumerate() {
            let range = (first + k) * width..(first + k + 1) * width;
            d.copy_from_slice(&grad[range.clone()]);
            backward_row(d, &y[range], scale);
        }
    });
    out
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "umd-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::gradient_matches(self.name(), l2, l1, "the output")?;
        let width = l1.dims().last().copied().unwrap_or(1).max(1);
        let out = dispatch_float!(s1, self.name(), |y| {
            let y = contiguous(y, l1, self.name())?;
            let grad = contiguous(super::same_dtype(s2, self.name())?, l2, self.name())?;
            storage(backward(y, grad, width, self.scale))
        });
        Ok((out, l1.shape().clone()))
    }
}
