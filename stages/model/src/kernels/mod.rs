//! Fused CPU kernels for the hot operations of [`crate::ops`]: candle custom ops, each with its
//! own backward pass (itself one fused op), so that a layer norm, a softmax or an activation is
//! one pass over memory forward and one backward instead of the 5 to 20 element-wise ops (each
//! allocating its output) of the composite.
//!
//! Rules every kernel keeps:
//! - **CPU, f32 and f64 only.** [`applies`] says when; `ops` falls back to the differentiable
//!   composite on other devices (CUDA) and dtypes, so the `cuda` build is unchanged.
//! - **Deterministic whatever the thread count.** Work is split into row blocks whose size depends
//!   on the row width only ([`rows_per_block`]), each row is computed sequentially, and reductions
//!   across rows (a layer norm's parameter gradients) add the per-block partial sums in block
//!   order; attention computes each (batch element, head) pair on one thread, and products split
//!   their output, never their sum. Same input, same bytes, with 1 or 2 threads.
//! - **Parallel on the caller's rayon pool** (the stage's thread budget: `train::pretrain` runs
//!   inside a pool of `threads`), never on candle's process-wide spinning pool.

pub mod activation;
pub mod adamw;
pub mod attention;
pub mod bias;
pub mod fast_math;
pub mod layer_norm;
pub mod linear;
pub mod matrix;
pub mod softmax;
#[cfg(test)]
pub(crate) mod tests;

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType};
use rayon::prelude::*;

/// Whether the fused kernels handle `x`: a CPU tensor of f32 or f64.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// The float types the kernels are written for.
pub trait Float:
    WithDType
    + Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn of(v: f64) -> Self;
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    fn erf(self) -> Self;
    fn larger(self, other: Self) -> Self;
    fn neg_infinity() -> Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn exp(self) -> Self {
        fast_math::exp(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn erf(self) -> Self {
        fast_math::erf(self)
    }
    #[inline(always)]
    fn larger(self, other: Self) -> Self {
        f32::max(self, other)
    }
    #[inline(always)]
    fn neg_infinity() -> Self {
        f32::NEG_INFINITY
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn of(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
    #[inline(always)]
    fn larger(self, other: Self) -> Self {
        f64::max(self, other)
    }
    #[inline(always)]
    fn neg_infinity() -> Self {
        f64::NEG_INFINITY
    }
}

/// Elements per parallel task: below this a task costs more to hand out than to run.
const BLOCK_ELEMENTS: usize = 16 * 1024;

/// Rows of `width` elements per parallel task (depends on the width only, never on threads).
pub fn rows_per_block(width: usize) -> usize {
    (BLOCK_ELEMENTS / width.max(1)).max(1)
}

/// The contiguous elements of a storage under `layout`, or an error naming the kernel.
pub fn contiguous<'a, T>(data: &'a [T], layout: &Layout, kernel: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{kernel}: the input must be contiguous"),
    }
}

/// An error naming the kernel unless a backward pass's incoming gradient has the shape of the
/// forward tensor it belongs to (`of`: what that tensor is, e.g. `the input`).
pub fn gradient_matches(kernel: &str, gradient: &Layout, forward: &Layout, of: &str) -> Result<()> {
    if gradient.shape() != forward.shape() {
        candle_core::bail!(
            "{kernel}: gradient {:?} does not match {of} {:?}",
            gradient.dims(),
            forward.dims()
        );
    }
    Ok(())
}

/// Calls `f(first_row, rows_out)` on blocks of [`rows_per_block`] rows of `out` (rows of `width`),
/// in parallel on the current rayon pool when there is more than one block.
pub fn for_row_blocks<T: Send>(
    out: &mut [T],
    width: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let rows = rows_per_block(width);
    let block = rows * width.max(1);
    if out.len() <= block {
        f(0, out);
    } else {
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(k, chunk)| f(k * rows, chunk));
    }
}

/// A new vector of `len` elements (rows of `width`) that `fill(first_row, block)` writes in the
/// blocks [`for_row_blocks`] hands out, with no zero-fill pass before it: each element of the
/// output is written once, where `vec![0; len]` and then the kernel wrote it twice.
///
/// # Safety
/// `fill` must write every element of each block it is given.
pub unsafe fn collect_row_blocks<T: Send>(
    len: usize,
    width: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    for_row_blocks(&mut out.spare_capacity_mut()[..len], width, fill);
    // SAFETY: the blocks cover the first `len` elements, and the caller's `fill` wrote all of
    // each block.
    unsafe { out.set_len(len) };
    out
}

/// Whether the kernels run their AVX2 builds of the element loops: the crate is built for
/// baseline x86-64, whose vectors hold 4 f32, AVX2's hold 8. Each such loop is an
/// `#[inline(always)]` function wrapped once more under `#[target_feature(enable = "avx2")]`. The
/// loops use plain IEEE adds and multiplies (Rust never fuses them), so both builds compute the
/// same bits.
pub fn has_wide_vectors() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the activation and AdamW loops run their AVX-512 builds (16 f32 per vector), like
/// [`has_wide_vectors`] for AVX2; the same bits again.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sum of a slice with eight independent accumulators (vectorisable; a fixed order, so the
/// result never depends on threads).
pub fn sum<T: Float>(values: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += *v;
        }
    }
    let mut total = T::ZERO;
    for lane in lanes {
        total += lane;
    }
    for v in tail {
        total += *v;
    }
    total
}

/// `Σ a·b` with the lane pattern of [`sum`].
pub fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += xa[k] * xb[k];
        }
    }
    let mut total = T::ZERO;
    for lane in lanes {
        total += lane;
    }
    for (x, y) in ta.iter().zip(tb) {
        total += *x * *y;
    }
    total
}

/// Runs `f` on the f32 or f64 slices of a storage; other dtypes are an error naming `kernel`.
macro_rules! dispatch_float {
    ($storage:expr, $kernel:expr, |$data:ident| $body:expr) => {
        match $storage {
            candle_core::CpuStorage::F32($data) => $body,
            candle_core::CpuStorage::F64($data) => $body,
            other => candle_core::bail!(
                "{}: unsupported dtype {:?}",
                $kernel,
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}
pub(crate) use dispatch_float;

/// Wraps a result vector as candle storage.
pub fn storage<T: Float>(values: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(values)
}

/// The same float slice type as `like`, or an error naming `kernel` (the inputs of one op must
/// share a dtype).
pub fn same_dtype<'a, T: Float>(storage: &'a CpuStorage, kernel: &str) -> Result<&'a [T]> {
    match T::cpu_storage_as_slice(storage) {
        Ok(slice) => Ok(slice),
        Err(_) => candle_core::bail!("{kernel}: inputs must share one dtype"),
    }
}
