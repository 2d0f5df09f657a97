//! Adding a bias row to every row of a matrix (a linear layer's `+ b`), fused: the backward pass
//! hands the output gradient through and sums it over rows in one contiguous pass, where candle's
//! broadcast add materialises a zero gradient of the broadcast bias, adds into it and reduces it
//! with a strided sum.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{Float, contiguous, dispatch_float, for_row_blocks, rows_per_block, storage};

/// `y + b` for `y` [rows, n] and `b` [n].
pub fn add_bias(y: &Tensor, bias: &Tensor) -> Result<Tensor> {
    y.contiguous()?.apply_op2(&bias.contiguous()?, AddBias)
}

struct AddBias;

fn forward<T: Float>(y: &[T], bias: &[T]) -> Vec<T> {
    let width = bias.len();
    let mut out = vec![T::ZERO; y.len()];
    for_row_blocks(&mut out, width, |first, block| {
        let rows = &y[first * width..first * width + block.len()];
        for (o, r) in block.chunks_exact_mut(width).zip(rows.chunks_exact(width)) {
            for ((o, v), b) in o.iter_mut().zip(r).zip(bias) {
                *o = *v + *b;
            }
        }
    });
    out
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "umd-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let width = l2.shape().elem_count();
        if l1.dims().last() != Some(&width) {
            candle_core::bail!(
                "umd-add-bias: bias {:?} does not match the rows of {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let out = dispatch_float!(s1, self.name(), |y| {
            let y = contiguous(y, l1, self.name())?;
            let bias = contiguous(super::same_dtype(s2, self.name())?, l2, self.name())?;
            storage(forward(y, bias))
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dbias = grad
            .contiguous()?
            .apply_op1_no_bwd(&ColumnSum)?
            .reshape(bias.shape())?;
        Ok((Some(grad.clone()), Some(dbias)))
    }
}

/// The sum over rows of a [rows, n] matrix: per block of rows a partial sum, added in block order
/// (the same bytes whatever the thread count).
struct ColumnSum;

fn column_sum<T: Float>(x: &[T], width: usize) -> Vec<T> {
    use rayon::prelude::*;
    let block = rows_per_block(width) * width;
    let partial = |chunk: &[T]| {
        let mut acc = vec![T::ZERO; width];
        for row in chunk.chunks_exact(width) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += *v;
            }
        }
        acc
    };
    let partials: Vec<Vec<T>> = if x.len() <= block {
        vec![partial(x)]
    } else {
        x.par_chunks(block).map(partial).collect()
    };
    let mut total = vec![T::ZERO; width];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "umd-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let width = l.dims().last().copied().unwrap_or(1).max(1);
        let out = dispatch_float!(s, self.name(), |x| {
            let x = contiguous(x, l, self.name())?;
            storage(column_sum(x, width))
        });
        Ok((out, Shape::from(width)))
    }
}
