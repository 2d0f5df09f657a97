//! A linear layer `x · Wᵀ (+ b)` as one op over the `gemm` crate (the matrix-product code candle
//! itself calls), with its own backward pass. Against candle's `matmul(x, W.t())` + bias add:
//! - the bias is written into the output first and the product accumulates onto it (PyTorch's
//!   `addmm`): no separate bias pass, and no output zero-filled before the product writes it;
//! - the backward computes the weight gradient `gᵀ · x` directly in W's `[out, in]` layout, where
//!   candle's graph computes it transposed and then copies it into place;
//! - no product output is zero-filled first (candle's CPU matmul fills every output with zeros).
//!
//! Any 2-D strides are read in place ([`super::matrix`]), so views such as `gᵀ` cost no copy. The
//! product splits over the current rayon pool (the stage's threads); the bytes do not depend on
//! the count.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::matrix::{Matrix, product};
use super::{Float, dispatch_float, same_dtype, storage};

/// `x · Wᵀ + b` for `x` [rows, in], `weight` [out, in], `bias` [out].
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => x.apply_op3(weight, b, LinearBias),
        None => x.apply_op2(weight, Linear),
    }
}

/// Checks the shapes of `x` [rows, in] · `weight` [out, in]ᵀ and returns the output shape.
fn output_shape(kernel: &str, x: &Layout, weight: &Layout) -> Result<Shape> {
    let (xd, wd) = (x.dims(), weight.dims());
    if xd.len() != 2 || wd.len() != 2 || xd[1] != wd[1] {
        candle_core::bail!("{kernel}: input {xd:?} does not match weight {wd:?} ([out, in])");
    }
    Ok(Shape::from((xd[0], wd[0])))
}

/// The product for one float type (the dtype of `x`; the others must match it).
fn typed_forward<T: Float>(
    kernel: &str,
    x: (&[T], &Layout),
    weight: (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<CpuStorage> {
    let x = Matrix::of(x.0, x.1, kernel, "the input")?;
    let w = Matrix::of(
        same_dtype::<T>(weight.0, kernel)?,
        weight.1,
        kernel,
        "the weight",
    )?;
    let bias = match bias {
        Some((s, l)) => {
            let values = super::contiguous(same_dtype::<T>(s, kernel)?, l, kernel)?;
            if values.len() != w.rows {
                candle_core::bail!(
                    "{kernel}: bias {:?} does not match {} outputs",
                    l.dims(),
                    w.rows
                );
            }
            Some(values)
        }
        None => None,
    };
    Ok(storage(product(x, w.t(), bias)))
}

/// Both ops' forward pass: `x · Wᵀ (+ b)` with its shape checked.
fn forward(
    kernel: &str,
    x: (&CpuStorage, &Layout),
    weight: (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let shape = output_shape(kernel, x.1, weight.1)?;
    let out = dispatch_float!(x.0, kernel, |data| typed_forward(
        kernel,
        (data, x.1),
        weight,
        bias
    )?);
    Ok((out, shape))
}

/// `x · Wᵀ`.
struct Linear;

/// `x · Wᵀ + b`.
struct LinearBias;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "umd-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward(self.name(), (s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = input_and_weight_gradients(x, weight, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "umd-linear-bias"
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
        forward(self.name(), (s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = input_and_weight_gradients(x, weight, grad)?;
        let db = super::bias::column_sums(grad)?.reshape(bias.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `g · W` (the input's gradient, [rows, in]) and `gᵀ · x` (the weight's, [out, in]).
fn input_and_weight_gradients(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let dx = grad.apply_op2_no_bwd(weight, &Product)?;
    let dw = grad.t()?.apply_op2_no_bwd(x, &Product)?;
    Ok((dx, dw))
}

/// `a · b` for matrices of any strides, recording no backward pass (for gradients).
struct Product;

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "umd-product"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch_float!(s1, self.name(), |a| {
            let a = Matrix::of(a, l1, self.name(), "the left factor")?;
            let b = Matrix::of(
                same_dtype(s2, self.name())?,
                l2,
                self.name(),
                "the right factor",
            )?;
            if a.cols != b.rows {
                candle_core::bail!(
                    "{}: {:?} · {:?} do not chain",
                    self.name(),
                    l1.dims(),
                    l2.dims()
                );
            }
            let shape = Shape::from((a.rows, b.cols));
            (storage(product(a, b, None)), shape)
        });
        Ok(out)
    }
}
