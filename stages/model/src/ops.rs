//! The hot operations of the model, each behind one small function so that a fused kernel (a
//! candle custom op with its own backward pass) can replace it later without touching the model.
//!
//! On the CPU in f32/f64, linear layers, layer norm, softmax, multi-head attention (scores, padding
//! bias, softmax and the product with the values, heads read in place) and the activations run as
//! fused kernels with their own backward pass
//! ([`crate::kernels`]); elsewhere (CUDA, other dtypes) they fall back to the differentiable
//! composites in [`composite`].
//! candle's own fused `candle_nn::LayerNorm` and `softmax_last_dim` record no backward pass and
//! must not be used in training code.

use candle_core::{D, Result, Tensor};

use crate::kernels;
use crate::kernels::activation::Kind;

/// `x · Wᵀ + b` for `x` of any rank, as ONE matrix product over all leading dimensions
/// (candle would otherwise run one small product per batch element).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let in_dim = x.dim(D::Minus1)?;
    let mut out_dims = x.dims().to_vec();
    let rows = x.elem_count() / in_dim.max(1);
    let x2 = x.reshape((rows, in_dim))?;
    let same = |t: &Tensor| t.dtype() == x.dtype() && t.device().same_device(x.device());
    let y = if kernels::applies(x) && same(weight) && bias.is_none_or(same) {
        kernels::linear::linear(&x2, weight, bias)?
    } else {
        let y = x2.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        }
    };
    if let Some(last) = out_dims.last_mut() {
        *last = weight.dim(0)?;
    }
    y.reshape(out_dims)
}

/// Layer normalisation over the last dimension, with an optional affine part.
pub fn layer_norm(
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let same = |t: Option<&Tensor>| {
        t.is_none_or(|t| t.dtype() == x.dtype() && t.device().same_device(x.device()))
    };
    if !(kernels::applies(x) && same(gamma) && same(beta)) {
        return composite::layer_norm(x, gamma, beta, eps);
    }
    let width = x.dim(D::Minus1)?;
    let ones;
    let gamma = match gamma {
        Some(g) => g,
        None => {
            ones = Tensor::ones(width, x.dtype(), x.device())?;
            &ones
        }
    };
    let zeros;
    let beta = match beta {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(width, x.dtype(), x.device())?;
            &zeros
        }
    };
    kernels::layer_norm::layer_norm(x, gamma, beta, eps)
}

/// BERT's GELU (exact, with erf).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(x) {
        return kernels::activation::activation(x, Kind::Gelu);
    }
    composite::gelu(x)
}

/// CLIP's QuickGELU, `x · σ(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(x) {
        return kernels::activation::activation(x, Kind::QuickGelu);
    }
    composite::quick_gelu(x)
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(x) {
        return kernels::softmax::scaled_softmax(x, 1.0, None);
    }
    composite::softmax(x)
}

/// Multi-head scaled dot-product attention on projections that hold the heads side by side:
/// `q` [B, Sq, W], `k`/`v` [B, Sk, W], W = heads · dh; `key_bias`: [B or 1, 1, 1, Sk] additive (0
/// for real keys, a large negative number for padding) or None. Returns [B, Sq, W], heads merged.
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
) -> Result<Tensor> {
    let same = |t: &Tensor| t.dtype() == q.dtype() && t.device().same_device(q.device());
    // The fused kernel treats the bias as a constant (it is built from the padding mask).
    let bias_fits = key_bias.is_none_or(|b| {
        let d = b.dims();
        same(b)
            && !b.track_op()
            && d.len() == 4
            && (d[0] == 1 || Some(d[0]) == q.dims().first().copied())
            && d[1] == 1
            && d[2] == 1
    });
    if kernels::applies(q) && same(k) && same(v) && bias_fits {
        return kernels::attention::attention(q, k, v, heads, key_bias);
    }
    composite::multi_head_attention(q, k, v, heads, key_bias)
}

/// The same operations built from differentiable candle primitives: the fallback on devices and
/// dtypes the fused kernels do not cover (CUDA), and the reference the kernels are tested against.
pub mod composite {
    use candle_core::{D, Result, Tensor};

    pub fn layer_norm(
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        let scaled = match gamma {
            Some(g) => normed.broadcast_mul(g)?,
            None => normed,
        };
        match beta {
            Some(b) => scaled.broadcast_add(b),
            None => Ok(scaled),
        }
    }

    pub fn gelu(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }

    pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
        let sig = (x.affine(-1.702, 0.0)?.exp()? + 1.0)?.recip()?;
        x * sig
    }

    pub fn softmax(x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(x, D::Minus1)
    }

    /// [`super::multi_head_attention`] from candle's primitives: the heads split into
    /// [B, H, S, dh] copies, batched products, softmax, and the heads merged again.
    pub fn multi_head_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        key_bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (q, k, v) = (
            split_heads(q, heads)?,
            split_heads(k, heads)?,
            split_heads(v, heads)?,
        );
        let head_dim = q.dim(D::Minus1)?;
        let scores = q.matmul(&k.t()?)?;
        let probs = scaled_softmax(&scores, 1.0 / (head_dim as f64).sqrt(), key_bias)?;
        merge_heads(&probs.matmul(&v)?)
    }

    /// [B, S, W] → [B, H, S, W/H].
    fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, s, w) = x.dims3()?;
        if heads == 0 || w % heads != 0 {
            candle_core::bail!("attention: {heads} heads do not divide the width {w}");
        }
        x.reshape((b, s, heads, w / heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// [B, H, S, dh] → [B, S, H·dh].
    fn merge_heads(x: &Tensor) -> Result<Tensor> {
        let (b, h, s, dh) = x.dims4()?;
        x.transpose(1, 2)?.contiguous()?.reshape((b, s, h * dh))
    }

    /// `softmax(x · scale + bias)` with `bias` broadcast to `x`.
    pub fn scaled_softmax(x: &Tensor, scale: f64, bias: Option<&Tensor>) -> Result<Tensor> {
        let scores = (x * scale)?;
        let scores = match bias {
            Some(bias) => scores.broadcast_add(bias)?,
            None => scores,
        };
        softmax(&scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn linear_matches_a_plain_product_and_layer_norm_normalises() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let w = Tensor::arange(0f32, 20.0, &dev)
            .unwrap()
            .reshape((5, 4))
            .unwrap();
        let b = Tensor::ones(5, candle_core::DType::F32, &dev).unwrap();
        let y = linear(&x, &w, Some(&b)).unwrap();
        let expect = x
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert_eq!(
            y.to_vec3::<f32>().unwrap(),
            expect.to_vec3::<f32>().unwrap()
        );
        let n = layer_norm(&x, None, None, 1e-5).unwrap();
        let mean = n
            .mean_keepdim(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(mean.iter().all(|m| m.abs() < 1e-5));
    }

    #[test]
    fn softmax_and_layer_norm_pass_gradients() {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&Tensor::new(&[[1f32, 2.0, 0.5], [0.1, -1.0, 3.0]], &dev).unwrap())
                .unwrap();
        let w = Tensor::new(&[[1f32, -2.0, 0.5], [2.0, 1.0, -1.0]], &dev).unwrap();
        let loss = (softmax(&layer_norm(x.as_tensor(), None, None, 1e-5).unwrap()).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("gradient recorded");
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }
}
