//! A bias's gradient: the sum over rows of the output gradient, in one contiguous pass (candle's
//! broadcast add materialises a zero gradient of the broadcast bias, adds into it and reduces it
//! with a strided sum). The forward `+ b` is folded into the product in [`super::linear`].

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::{Float, contiguous, dispatch_float, rows_per_block, storage};

/// The sums over rows of `x` [rows, n] (any leading dimensions count as rows): [n].
pub fn column_sums(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&ColumnSum)
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
