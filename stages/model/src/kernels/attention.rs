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
//!   the backward pass, as the composite's graph keeps it;
//! - q, k and v may come packed side by side in one tensor ([`self_attention`]: `[B, S, 3W]`, the
//!   output of one fused projection; [`cross_attention`]: k and v in `[B, Sk, 2W]`). Their
//!   gradient is then written packed the same way, so the projection's backward pass is one
//!   product and candle adds no per-projection gradients of the layer's input.
//!
//! The bias is a constant (attention's padding bias, built from the mask): it gets no gradient,
//! and `ops` uses the composite for a bias that records one. Each pair is computed on one thread
//! in a fixed order, so the bytes do not depend on the thread count.

use std::sync::Mutex;

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};
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
    let op = Attention::new(Packing::Separate, heads, key_bias)?;
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// Self-attention over `qkv` [B, S, 3W]: columns `0..W` are the queries, `W..2W` the keys and
/// `2W..3W` the values. Otherwise as [`attention`]; the gradient comes back as one [B, S, 3W].
pub fn self_attention(qkv: &Tensor, heads: usize, key_bias: Option<&Tensor>) -> Result<Tensor> {
    let op = Attention::new(Packing::Qkv, heads, key_bias)?;
    qkv.contiguous()?.apply_op1(op)
}

/// Attention of `q` [B, Sq, W] over `kv` [B, Sk, 2W]: columns `0..W` are the keys, `W..2W` the
/// values. Otherwise as [`attention`].
pub fn cross_attention(
    q: &Tensor,
    kv: &Tensor,
    heads: usize,
    key_bias: Option<&Tensor>,
) -> Result<Tensor> {
    let op = Attention::new(Packing::QAndKv, heads, key_bias)?;
    q.contiguous()?.apply_op2(&kv.contiguous()?, op)
}

/// Where the queries, keys and values sit in the op's inputs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Packing {
    /// Three inputs: q [B, Sq, W], k and v [B, Sk, W].
    Separate,
    /// One input [B, S, 3W]: q, k and v side by side.
    Qkv,
    /// Two inputs: q [B, Sq, W], and k and v side by side in [B, Sk, 2W].
    QAndKv,
}

impl Packing {
    /// Each input's width in units of W.
    fn input_widths(self) -> &'static [usize] {
        match self {
            Packing::Separate => &[1, 1, 1],
            Packing::Qkv => &[3],
            Packing::QAndKv => &[1, 2],
        }
    }

    /// (input, first column in units of W) of q, k and v.
    fn places(self) -> [(usize, usize); 3] {
        match self {
            Packing::Separate => [(0, 0), (1, 0), (2, 0)],
            Packing::Qkv => [(0, 0), (0, 1), (0, 2)],
            Packing::QAndKv => [(0, 0), (1, 0), (1, 1)],
        }
    }

    /// What the inputs should be, for errors.
    fn expected(self) -> &'static str {
        match self {
            Packing::Separate => "[B, Sq, W], [B, Sk, W], [B, Sk, W]",
            Packing::Qkv => "[B, S, 3W]",
            Packing::QAndKv => "[B, Sq, W], [B, Sk, 2W]",
        }
    }
}

struct Attention {
    packing: Packing,
    heads: usize,
    bias: Option<Tensor>,
    /// The attention weights [B, H, Sq, Sk] of the forward pass, for the backward pass.
    weights: Mutex<Option<CpuStorage>>,
}

impl Attention {
    fn new(packing: Packing, heads: usize, key_bias: Option<&Tensor>) -> Result<Self> {
        Ok(Attention {
            packing,
            heads,
            bias: key_bias.map(|b| b.detach().contiguous()).transpose()?,
            weights: Mutex::new(None),
        })
    }
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
    /// The sizes the inputs' shapes give under `packing`, or an error saying what was expected.
    fn of(packing: Packing, inputs: &[&Layout], heads: usize) -> Result<Self> {
        let dims: Vec<&[usize]> = inputs.iter().map(|l| l.dims()).collect();
        let widths = packing.input_widths();
        let mismatch = || {
            candle_core::bail!(
                "{KERNEL}: inputs {dims:?} do not match {}",
                packing.expected()
            )
        };
        if dims.len() != widths.len() || dims.iter().any(|d| d.len() != 3) {
            return mismatch();
        }
        let width = dims[0][2] / widths[0];
        let batch = dims[0][0];
        let (sq, sk) = (dims[0][1], dims[dims.len() - 1][1]);
        let fits = dims
            .iter()
            .zip(widths)
            .enumerate()
            .all(|(i, (d, &w))| d[0] == batch && d[2] == w * width && (i == 0 || d[1] == sk));
        if !fits {
            return mismatch();
        }
        if heads == 0 || !width.is_multiple_of(heads) {
            candle_core::bail!("{KERNEL}: {heads} heads do not divide the width {width}");
        }
        Ok(Sizes {
            batch,
            heads,
            sq,
            sk,
            width,
            head_dim: width / heads,
        })
    }

    fn pairs(&self) -> usize {
        self.batch * self.heads
    }

    /// Where (batch element, head) `pair` starts in a [B, S, stride] tensor with `rows` = S whose
    /// W columns of interest start at column `offset`.
    fn head_start(&self, pair: usize, rows: usize, stride: usize, offset: usize) -> usize {
        let (b, h) = (pair / self.heads, pair % self.heads);
        b * rows * stride + offset + h * self.head_dim
    }

    /// One head of one batch element of an operand, as an S × dh view.
    fn head<'a, T>(&self, x: Operand<'a, T>, pair: usize, rows: usize) -> Matrix<'a, T> {
        Matrix::block(
            x.data,
            self.head_start(pair, rows, x.stride, x.offset),
            (rows, self.head_dim),
            x.stride,
        )
    }

    /// Where one head of one batch element of a gradient is written.
    fn head_target<T>(&self, x: Target<T>, pair: usize, rows: usize) -> Destination<T> {
        let start = self.head_start(pair, rows, x.at.rs, x.offset);
        x.at.block(start, (rows, self.head_dim))
    }

    /// q, k and v in `inputs` (contiguous, in the op's order) under `packing`.
    fn operands<'a, T>(&self, packing: Packing, inputs: &[&'a [T]]) -> [Operand<'a, T>; 3] {
        let widths = packing.input_widths();
        packing.places().map(|(input, column)| Operand {
            data: inputs[input],
            stride: widths[input] * self.width,
            offset: column * self.width,
        })
    }
}

/// One of q, k and v: the W columns from `offset` of a [B, S, stride] tensor.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    data: &'a [T],
    stride: usize,
    offset: usize,
}

/// Where the gradient of one of q, k and v goes: the W columns from `offset` of a gradient whose
/// rows are `at.rs` apart.
#[derive(Clone, Copy)]
struct Target<T> {
    at: Destination<T>,
    offset: usize,
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
fn forward<T: Float>(s: Sizes, [q, k, v]: [Operand<T>; 3], bias: Option<&[T]>) -> (Vec<T>, Vec<T>) {
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
        let dst = out_at.block(s.head_start(pair, s.sq, s.width, 0), (s.sq, s.head_dim));
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

/// Writes the gradients of q, k and v (into `targets`, in that order) from the output's gradient
/// `g` [B, Sq, W] and the kept weights.
///
/// # Safety
/// Each target must be valid for writes of the rows and columns its operand covers, and no two
/// targets may overlap.
unsafe fn backward<T: Float>(
    s: Sizes,
    [q, k, v]: [Operand<T>; 3],
    weights: &[T],
    g: &[T],
    [dq_at, dk_at, dv_at]: [Target<T>; 3],
) {
    let scale = T::of(1.0 / (s.head_dim as f64).sqrt());
    let per_pair = s.sq * s.sk;
    let g = Operand {
        data: g,
        stride: s.width,
        offset: 0,
    };
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
            let dp = Destination::row_major(scratch.as_mut_ptr(), (s.sq, s.sk));
            // SAFETY (all four products): `scratch` belongs to this task, and pairs write
            // disjoint blocks (their own rows and head columns) of the three gradients.
            // dV = Pᵀ · dO, dP = dO · Vᵀ.
            unsafe {
                gemm_into(
                    s.head_target(dv_at, pair, s.sk),
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
                    s.head_target(dq_at, pair, s.sq),
                    Write::Replace,
                    ds,
                    kh,
                    T::ONE,
                    Threads::One,
                );
                gemm_into(
                    s.head_target(dk_at, pair, s.sk),
                    Write::Replace,
                    ds.t(),
                    qh,
                    T::ONE,
                    Threads::One,
                );
            }
        },
    );
}

/// The contiguous data of every input, in the type of the first.
fn typed_inputs<'a, T: Float>(
    first: &'a [T],
    inputs: &[(&'a CpuStorage, &Layout)],
) -> Result<Vec<&'a [T]>> {
    let mut data = vec![contiguous(first, inputs[0].1, KERNEL)?];
    for (storage, layout) in &inputs[1..] {
        data.push(contiguous(same_dtype(storage, KERNEL)?, layout, KERNEL)?);
    }
    Ok(data)
}

/// The gradients of every input (each input's shape, q, k and v in their packed places).
fn gradients<T: Float>(
    s: Sizes,
    packing: Packing,
    inputs: &[&[T]],
    weights: &[T],
    g: &[T],
) -> Vec<Vec<T>> {
    // The gradients start uninitialised: the inputs' q, k and v columns cover them, and every
    // pair writes its own rows and head columns of all three before `set_len` below.
    let mut grads: Vec<Vec<T>> = inputs.iter().map(|x| Vec::with_capacity(x.len())).collect();
    let widths = packing.input_widths();
    let targets = packing.places().map(|(input, column)| Target {
        at: Destination::rows_apart(grads[input].as_mut_ptr(), widths[input] * s.width),
        offset: column * s.width,
    });
    // SAFETY: each target is its input's gradient buffer (room for the input's length), q, k and
    // v occupy disjoint columns of it, and nothing else holds the buffers.
    unsafe {
        backward(s, s.operands(packing, inputs), weights, g, targets);
        for (grad, x) in grads.iter_mut().zip(inputs) {
            grad.set_len(x.len());
        }
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

impl Attention {
    /// The forward pass over the inputs in the op's order: the output [B, Sq, W], with the
    /// weights kept for the backward pass.
    fn run_forward(&self, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let layouts: Vec<&Layout> = inputs.iter().map(|(_, l)| *l).collect();
        let sizes = Sizes::of(self.packing, &layouts, self.heads)?;
        let bias = self.bias.as_ref().map(|b| b.storage_and_layout());
        let (out, weights) = dispatch_float!(inputs[0].0, KERNEL, |first| {
            let data = typed_inputs(first, inputs)?;
            let bias = match &bias {
                Some((st, l)) => Some(contiguous(same_dtype(cpu(st)?, KERNEL)?, l, KERNEL)?),
                None => None,
            };
            let operands = sizes.operands(self.packing, &data);
            let (out, weights) = forward(sizes, operands, bias_rows(bias, &sizes)?);
            (storage(out), storage(weights))
        });
        match self.weights.lock() {
            Ok(mut kept) => *kept = Some(weights),
            Err(_) => candle_core::bail!("{KERNEL}: the kept attention weights are poisoned"),
        }
        Ok((out, Shape::from((sizes.batch, sizes.sq, sizes.width))))
    }

    /// The gradients of the inputs (in the op's order) from the output's gradient.
    fn run_backward(&self, inputs: &[&Tensor], grad: &Tensor) -> Result<Vec<Tensor>> {
        let grad = grad.contiguous()?;
        let kept = match self.weights.lock() {
            Ok(kept) => kept,
            Err(_) => candle_core::bail!("{KERNEL}: the kept attention weights are poisoned"),
        };
        let Some(weights) = kept.as_ref() else {
            candle_core::bail!("{KERNEL}: backward pass without a forward pass");
        };
        let guards: Vec<_> = inputs.iter().map(|x| x.storage_and_layout()).collect();
        let layouts: Vec<&Layout> = guards.iter().map(|(_, l)| *l).collect();
        let sizes = Sizes::of(self.packing, &layouts, self.heads)?;
        let (gs, gl) = grad.storage_and_layout();
        if gl.dims() != [sizes.batch, sizes.sq, sizes.width] {
            candle_core::bail!(
                "{KERNEL}: gradient {:?} does not match the output [{}, {}, {}]",
                gl.dims(),
                sizes.batch,
                sizes.sq,
                sizes.width
            );
        }
        let mut storages = Vec::with_capacity(guards.len());
        for ((st, l), _) in guards.iter().zip(inputs) {
            storages.push((cpu(st)?, *l));
        }
        let grads = dispatch_float!(storages[0].0, KERNEL, |first| {
            let data = typed_inputs(first, &storages)?;
            let g = contiguous(same_dtype(cpu(&gs)?, KERNEL)?, gl, KERNEL)?;
            let weights = same_dtype(weights, KERNEL)?;
            if weights.len() != sizes.pairs() * sizes.sq * sizes.sk {
                candle_core::bail!("{KERNEL}: the kept weights do not match the inputs");
            }
            let mut tensors = Vec::with_capacity(inputs.len());
            for (values, x) in gradients(sizes, self.packing, &data, weights, g)
                .into_iter()
                .zip(inputs)
            {
                tensors.push(Tensor::from_vec(values, x.shape(), x.device())?);
            }
            tensors
        });
        Ok(grads)
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        KERNEL
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run_forward(&[(s1, l1)])
    }

    fn bwd(&self, qkv: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.run_backward(&[qkv], grad)?.pop())
    }
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        KERNEL
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run_forward(&[(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.run_backward(&[q, kv], grad)?.into_iter();
        Ok((grads.next(), grads.next()))
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
        self.run_forward(&[(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.run_backward(&[q, k, v], grad)?.into_iter();
        Ok((grads.next(), grads.next(), grads.next()))
    }
}
