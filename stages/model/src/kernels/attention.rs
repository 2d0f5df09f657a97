//! Multi-head scaled dot-product attention as one op with its own backward pass:
//! `softmax(scale · Q_h K_hᵀ + bias) · V_h` for every batch element and head `h`. Against the
//! composite (split the heads, batched product, softmax, batched product, merge the heads):
//! - the heads are read in place from the `[B, S, W]` projections (head `h` is columns
//!   `h·dh..(h+1)·dh`) and the output is written merged, `[B, Sq, W]`: no copies to split or merge
//!   the heads, forward or backward;
//! - the (batch element, head) pairs run side by side on the stage's rayon pool, where candle's
//!   batched product runs them one after another on one thread (umdflow sets candle's own thread
//!   count to 1);
//! - the softmax runs in place on the scores, and its output (the attention weights) is kept for
//!   the backward pass, as the composite's graph keeps it.
//!
//! The bias is a constant (attention's padding bias, built from the mask): it gets no gradient,
//! and `ops` uses the composite for a bias that records one. Each pair is computed on one thread
//! in a fixed order, so the bytes do not depend on the thread count.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::matrix::{Destination, Matrix, Threads, Write, gemm_into};
use super::softmax::{backward_row, normalise_row};
use super::{Float, contiguous, dispatch_float, has_wide_vectors, same_dtype, storage};

const KERNEL: &str = "umd-attention";

/// Attention over `q` [B, Sq, W] and `k`, `v` [B, Sk, W] with `heads` heads of W / heads columns
/// each; `key_bias`: `None` or 1 or B rows of Sk additive key biases (e.g. [B, 1, 1, Sk]), a
/// constant. Returns [B, Sq, W].
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
) -> Result<Tensor> {
    let op = Attention {
        heads,
        bias: key_bias.map(|b| b.detach().contiguous()).transpose()?,
        weights: Mutex::new(None),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

struct Attention {
    heads: usize,
    bias: Option<Tensor>,
    /// The attention weights [B, H, Sq, Sk] of the forward pass, for the backward pass.
    weights: Mutex<Option<CpuStorage>>,
}

/// The sizes of one call.
#[derive(Clone, Copy)]
struct Sizes {
    batch: usize,
    heads: usize,
    sq: usize,
    sk: usize,
    width: usize,
    head_dim: usize,
}

impl Sizes {
    fn of(q: &Layout, k: &Layout, v: &Layout, heads: usize) -> Result<Self> {
        let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
        if qd.len() != 3 || kd.len() != 3 || kd != vd || qd[0] != kd[0] || qd[2] != kd[2] {
            candle_core::bail!(
                "{KERNEL}: queries {qd:?}, keys {kd:?} and values {vd:?} do not match \
                 ([B, Sq, W], [B, Sk, W], [B, Sk, W])"
            );
        }
        if heads == 0 || !qd[2].is_multiple_of(heads) {
            candle_core::bail!("{KERNEL}: {heads} heads do not divide the width {}", qd[2]);
        }
        Ok(Sizes {
            batch: qd[0],
            heads,
            sq: qd[1],
            sk: kd[1],
            width: qd[2],
            head_dim: qd[2] / heads,
        })
    }

    fn pairs(&self) -> usize {
        self.batch * self.heads
    }

    /// Where (batch element, head) `pair` starts in a [B, S, W] tensor with `rows` = S.
    fn head_start(&self, pair: usize, rows: usize) -> usize {
        let (b, h) = (pair / self.heads, pair % self.heads);
        b * rows * self.width + h * self.head_dim
    }

    /// One head of one batch element of a [B, S, W] tensor, as an S × dh view.
    fn head<'a, T>(&self, data: &'a [T], pair: usize, rows: usize) -> Matrix<'a, T> {
        Matrix::block(
            data,
            self.head_start(pair, rows),
            (rows, self.head_dim),
            self.width,
        )
    }
}

/// The bias row of each batch element: `groups` rows of `sk`, groups 1 (shared) or B.
fn bias_rows<'a, T>(bias: Option<&'a [T]>, s: &Sizes) -> Result<Option<&'a [T]>> {
    let Some(bias) = bias else {
        return Ok(None);
    };
    let rows = bias.len().checked_div(s.sk).unwrap_or(0);
    if bias.len() != rows * s.sk || !(rows == 1 || rows == s.batch) {
        candle_core::bail!(
            "{KERNEL}: a key bias of {} elements is not 1 or {} rows of {} keys",
            bias.len(),
            s.batch,
            s.sk
        );
    }
    Ok(Some(bias))
}

/// Softmax of the scaled scores `p` (rows of `sk`) plus the bias row, in place.
#[inline(always)]
fn softmax_scores<T: Float>(p: &mut [T], sk: usize, bias: Option<&[T]>) {
    for row in p.chunks_exact_mut(sk) {
        if let Some(bias) = bias {
            for (y, b) in row.iter_mut().zip(bias) {
                *y += *b;
            }
        }
        normalise_row(row);
    }
}

/// [`softmax_scores`] compiled for AVX2 (see [`super::has_wide_vectors`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn softmax_scores_avx2<T: Float>(p: &mut [T], sk: usize, bias: Option<&[T]>) {
    softmax_scores(p, sk, bias)
}

/// The scores' gradient `scale · P ⊙ (dP − Σ dP·P)` from the weights' gradient `dp`, in place.
#[inline(always)]
fn scores_gradient<T: Float>(dp: &mut [T], p: &[T], sk: usize, scale: T) {
    for (d, y) in dp.chunks_exact_mut(sk).zip(p.chunks_exact(sk)) {
        backward_row(d, y, scale);
    }
}

/// [`scores_gradient`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scores_gradient_avx2<T: Float>(dp: &mut [T], p: &[T], sk: usize, scale: T) {
    scores_gradient(dp, p, sk, scale)
}

/// The output [B, Sq, W] and the attention weights [B, H, Sq, Sk].
fn forward<T: Float>(s: Sizes, q: &[T], k: &[T], v: &[T], bias: Option<&[T]>) -> (Vec<T>, Vec<T>) {
    let scale = T::of(1.0 / (s.head_dim as f64).sqrt());
    let per_pair = s.sq * s.sk;
    // Both outputs start uninitialised: the products below write every element of them (each
    // pair its own block of scores and its own rows and head columns of the output) before
    // anything reads it, and `set_len` comes after.
    let mut weights: Vec<T> = Vec::with_capacity(s.pairs() * per_pair);
    let mut out: Vec<T> = Vec::with_capacity(s.batch * s.sq * s.width);
    let weights_at = Destination::row_major(weights.as_mut_ptr(), (s.pairs() * s.sq, s.sk));
    let out_at = Destination::rows_apart(out.as_mut_ptr(), s.width);
    let groups = bias.map_or(1, |b| b.len() / s.sk.max(1));
    let wide = has_wide_vectors();
    (0..s.pairs()).into_par_iter().for_each(|pair| {
        let bias_row = bias.map(|b| {
            let row = (pair / s.heads) % groups;
            &b[row * s.sk..(row + 1) * s.sk]
        });
        let scores = weights_at.block(pair * per_pair, (s.sq, s.sk));
        // SAFETY: `scores` is this pair's own block of `weights`, and the product writes all
        // of it before `written` makes it a slice.
        let p = unsafe {
            gemm_into(
                scores,
                Write::Replace,
                s.head(q, pair, s.sq),
                s.head(k, pair, s.sk).t(),
                scale,
                Threads::One,
            );
            scores.written()
        };
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: the CPU has AVX2.
            unsafe { softmax_scores_avx2(p, s.sk, bias_row) };
        } else {
            softmax_scores(p, s.sk, bias_row);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = wide;
            softmax_scores(p, s.sk, bias_row);
        }
        let dst = out_at.block(s.head_start(pair, s.sq), (s.sq, s.head_dim));
        // SAFETY: pairs write disjoint blocks of `out` (their own rows and head columns).
        unsafe {
            gemm_into(
                dst,
                Write::Replace,
                Matrix::block(p, 0, (s.sq, s.sk), s.sk),
                s.head(v, pair, s.sk),
                T::ONE,
                Threads::One,
            )
        };
    });
    // SAFETY: every element of both was written above.
    unsafe {
        weights.set_len(s.pairs() * per_pair);
        out.set_len(s.batch * s.sq * s.width);
    }
    (out, weights)
}

/// The gradients of q, k and v.
struct Gradients<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
}

/// The gradients of q, k and v from the output's gradient `g` [B, Sq, W] and the weights.
fn backward<T: Float>(
    s: Sizes,
    (q, k, v): (&[T], &[T], &[T]),
    weights: &[T],
    g: &[T],
) -> Gradients<T> {
    let scale = T::of(1.0 / (s.head_dim as f64).sqrt());
    let per_pair = s.sq * s.sk;
    // The gradients start uninitialised: every pair writes its own rows and head columns of all
    // three, which together cover them, before `set_len` below.
    let mut grads = Gradients {
        q: Vec::with_capacity(q.len()),
        k: Vec::with_capacity(k.len()),
        v: Vec::with_capacity(v.len()),
    };
    let at = |data: &mut Vec<T>| Destination::rows_apart(data.as_mut_ptr(), s.width);
    let (dq_at, dk_at, dv_at) = (at(&mut grads.q), at(&mut grads.k), at(&mut grads.v));
    let wide = has_wide_vectors();
    (0..s.pairs()).into_par_iter().for_each_init(
        || vec![T::ZERO; per_pair],
        |scratch, pair| {
            let p = Matrix::block(weights, pair * per_pair, (s.sq, s.sk), s.sk);
            let gh = s.head(g, pair, s.sq);
            let (qh, kh, vh) = (
                s.head(q, pair, s.sq),
                s.head(k, pair, s.sk),
                s.head(v, pair, s.sk),
            );
            let key_block = (s.sk, s.head_dim);
            let key_start = s.head_start(pair, s.sk);
            let dp = Destination::row_major(scratch.as_mut_ptr(), (s.sq, s.sk));
            // SAFETY (all four products): `scratch` belongs to this task, and pairs write
            // disjoint blocks (their own rows and head columns) of the three gradients.
            // dV = Pᵀ · dO, dP = dO · Vᵀ.
            unsafe {
                gemm_into(
                    dv_at.block(key_start, key_block),
                    Write::Replace,
                    p.t(),
                    gh,
                    T::ONE,
                    Threads::One,
                );
                gemm_into(dp, Write::Replace, gh, vh.t(), T::ONE, Threads::One);
            }
            let p_rows = &weights[pair * per_pair..(pair + 1) * per_pair];
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: the CPU has AVX2.
                unsafe { scores_gradient_avx2(scratch, p_rows, s.sk, scale) };
            } else {
                scores_gradient(scratch, p_rows, s.sk, scale);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = wide;
                scores_gradient(scratch, p_rows, s.sk, scale);
            }
            // dQ = dS · K, dK = dSᵀ · Q (the scale is already in dS).
            let ds = Matrix::block(scratch.as_slice(), 0, (s.sq, s.sk), s.sk);
            unsafe {
                gemm_into(
                    dq_at.block(s.head_start(pair, s.sq), (s.sq, s.head_dim)),
                    Write::Replace,
                    ds,
                    kh,
                    T::ONE,
                    Threads::One,
                );
                gemm_into(
                    dk_at.block(key_start, key_block),
                    Write::Replace,
                    ds.t(),
                    qh,
                    T::ONE,
                    Threads::One,
                );
            }
        },
    );
    // SAFETY: the products above wrote every element of the three.
    unsafe {
        grads.q.set_len(q.len());
        grads.k.set_len(k.len());
        grads.v.set_len(v.len());
    }
    grads
}

/// The CPU storage behind a tensor's storage, or an error naming the kernel.
fn cpu(storage: &Storage) -> Result<&CpuStorage> {
    match storage {
        Storage::Cpu(s) => Ok(s),
        _ => candle_core::bail!("{KERNEL}: the inputs must be on the CPU"),
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        KERNEL
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
        let sizes = Sizes::of(l1, l2, l3, self.heads)?;
        let bias = self.bias.as_ref().map(|b| b.storage_and_layout());
        let (out, weights) = dispatch_float!(s1, KERNEL, |q| {
            let q = contiguous(q, l1, KERNEL)?;
            let k = contiguous(same_dtype(s2, KERNEL)?, l2, KERNEL)?;
            let v = contiguous(same_dtype(s3, KERNEL)?, l3, KERNEL)?;
            let bias = match &bias {
                Some((st, l)) => Some(contiguous(same_dtype(cpu(st)?, KERNEL)?, l, KERNEL)?),
                None => None,
            };
            let (out, weights) = forward(sizes, q, k, v, bias_rows(bias, &sizes)?);
            (storage(out), storage(weights))
        });
        match self.weights.lock() {
            Ok(mut kept) => *kept = Some(weights),
            Err(_) => candle_core::bail!("{KERNEL}: the kept attention weights are poisoned"),
        }
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let kept = match self.weights.lock() {
            Ok(kept) => kept,
            Err(_) => candle_core::bail!("{KERNEL}: the kept attention weights are poisoned"),
        };
        let Some(weights) = kept.as_ref() else {
            candle_core::bail!("{KERNEL}: backward pass without a forward pass");
        };
        let ((qs, ql), (ks, kl), (vs, vl)) = (
            q.storage_and_layout(),
            k.storage_and_layout(),
            v.storage_and_layout(),
        );
        let (gs, gl) = grad.storage_and_layout();
        let sizes = Sizes::of(ql, kl, vl, self.heads)?;
        super::gradient_matches(KERNEL, gl, ql, "the output")?;
        let (dq, dk, dv) = dispatch_float!(cpu(&qs)?, KERNEL, |qd| {
            let inputs = (
                contiguous(qd, ql, KERNEL)?,
                contiguous(same_dtype(cpu(&ks)?, KERNEL)?, kl, KERNEL)?,
                contiguous(same_dtype(cpu(&vs)?, KERNEL)?, vl, KERNEL)?,
            );
            let g = contiguous(same_dtype(cpu(&gs)?, KERNEL)?, gl, KERNEL)?;
            let weights = same_dtype(weights, KERNEL)?;
            if weights.len() != sizes.pairs() * sizes.sq * sizes.sk {
                candle_core::bail!("{KERNEL}: the kept weights do not match the inputs");
            }
            let grads = backward(sizes, inputs, weights, g);
            (
                Tensor::from_vec(grads.q, q.shape(), q.device())?,
                Tensor::from_vec(grads.k, k.shape(), k.device())?,
                Tensor::from_vec(grads.v, v.shape(), v.device())?,
            )
        });
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}
