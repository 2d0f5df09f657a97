//! Strided matrix views of candle's CPU storage and the one call into the `gemm` crate (the
//! matrix-product code candle itself uses) that the linear and attention kernels share.
//!
//! The gemm crate takes row and column strides for every operand, so transposes and sub-blocks
//! (one attention head's columns of a `[B, S, W]` projection) are read and written in place. It
//! splits the output, never the sum over `k`, so its bytes do not depend on the thread count.

use candle_core::{Layout, Result};
use gemm::Parallelism;

use super::Float;

/// A read-only 2-D view of a storage: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Matrix<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Matrix<'a, T> {
    /// The matrix a 2-D layout describes, or an error naming the kernel and the operand.
    pub fn of(data: &'a [T], layout: &Layout, kernel: &str, what: &str) -> Result<Self> {
        let (dims, stride) = (layout.dims(), layout.stride());
        if dims.len() != 2 {
            candle_core::bail!("{kernel}: {what} must be a matrix, got shape {dims:?}");
        }
        let (rows, cols) = (dims[0], dims[1]);
        let (rs, cs) = (stride[0], stride[1]);
        let start = layout.start_offset();
        if !reaches_inside(data.len(), start, rows, cols, rs, cs) {
            candle_core::bail!("{kernel}: {what}'s layout reaches past its storage");
        }
        Ok(Matrix {
            data: &data[start.min(data.len())..],
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// The `rows × cols` block that starts at element `start` of `data`, rows `rs` apart, columns
    /// `cs` apart. Callers check their shapes first; a block outside `data` is a bug here.
    pub fn block(data: &'a [T], start: usize, (rows, cols): (usize, usize), rs: usize) -> Self {
        assert!(
            reaches_inside(data.len(), start, rows, cols, rs, 1),
            "matrix block outside its storage"
        );
        Matrix {
            data: &data[start.min(data.len())..],
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// Whether the last element a `rows × cols` view with these strides reads lies inside `len`.
fn reaches_inside(
    len: usize,
    start: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> bool {
    rows == 0 || cols == 0 || start + (rows - 1) * rs + (cols - 1) * cs < len
}

/// Where a product is written: `rows × cols` elements at `ptr`, rows `rs` apart, columns
/// contiguous.
#[derive(Clone, Copy)]
pub struct Destination<T> {
    pub ptr: *mut T,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
}

impl<T> Destination<T> {
    /// `rows × cols` elements at `ptr`, row after row.
    pub fn row_major(ptr: *mut T, (rows, cols): (usize, usize)) -> Self {
        Destination {
            ptr,
            rows,
            cols,
            rs: cols,
        }
    }

    /// A matrix at `ptr` whose rows are `rs` apart, to take [`Self::block`]s of.
    pub fn rows_apart(ptr: *mut T, rs: usize) -> Self {
        Destination {
            ptr,
            rows: 0,
            cols: 0,
            rs,
        }
    }

    /// The block as a slice, once it has been written.
    ///
    /// # Safety
    /// The block must be contiguous (`rs == cols`), every element of it written, and no other
    /// reference to it alive while the slice is.
    pub unsafe fn written<'a>(self) -> &'a mut [T] {
        debug_assert!(self.rs == self.cols || self.rows <= 1);
        // SAFETY: the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.rows * self.cols) }
    }

    /// The `rows × cols` block that starts `start` elements past this one's first element, with
    /// the same row stride (e.g. one head's columns of one batch element's rows).
    pub fn block(self, start: usize, (rows, cols): (usize, usize)) -> Self {
        Destination {
            ptr: self.ptr.wrapping_add(start),
            rows,
            cols,
            rs: self.rs,
        }
    }
}

// SAFETY: a `Destination` is a plain address; the functions that write through it require the
// blocks that different threads write to be disjoint.
unsafe impl<T: Send> Send for Destination<T> {}
unsafe impl<T: Sync> Sync for Destination<T> {}

/// How a product treats what its destination already holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Overwrite it (it may be uninitialised).
    Replace,
    /// Add the product onto it.
    Accumulate,
}

/// How a product uses threads.
#[derive(Clone, Copy)]
pub enum Threads {
    /// Split over the current rayon pool (the stage's threads).
    Pool,
    /// On the calling thread only (the caller already runs products side by side).
    One,
}

/// `dst (+)= scale · lhs · rhs`.
///
/// # Safety
/// `dst` must be valid for writes (and, with [`Write::Accumulate`], reads) of every element of
/// its block, and no other thread may touch that block during the call.
pub unsafe fn gemm_into<T: Float>(
    dst: Destination<T>,
    write: Write,
    lhs: Matrix<T>,
    rhs: Matrix<T>,
    scale: T,
    threads: Threads,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(
        rhs.rows == k && dst.rows == m && dst.cols == n,
        "gemm_into: {m}×{k} · {}×{n} into {}×{}",
        rhs.rows,
        dst.rows,
        dst.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if write == Write::Replace {
            for i in 0..m {
                // SAFETY: row i of the destination block (the caller's guarantee).
                unsafe { std::slice::from_raw_parts_mut(dst.ptr.add(i * dst.rs), n) }.fill(T::ZERO);
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::Pool if rayon::current_num_threads() > 1 => {
            Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => Parallelism::None,
    };
    // SAFETY: the operands cover every element their strides reach (checked when the views were
    // made); the destination is the caller's guarantee. With `read_dst` false gemm writes every
    // destination element without reading it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.rs as isize,
            write == Write::Accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `lhs · rhs` into a new row-major vector, onto `bias` repeated on every row when given, split
/// over the current rayon pool.
pub fn product<T: Float>(lhs: Matrix<T>, rhs: Matrix<T>, bias: Option<&[T]>) -> Vec<T> {
    let (m, n) = (lhs.rows, rhs.cols);
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    let write = match bias {
        Some(bias) => {
            for _ in 0..m {
                out.extend_from_slice(bias);
            }
            Write::Accumulate
        }
        None => Write::Replace,
    };
    let dst = Destination::row_major(out.as_mut_ptr(), (m, n));
    // SAFETY: `out` has room for m·n elements, all written by `gemm_into` (Replace) or above
    // (Accumulate); nothing else holds it.
    unsafe {
        gemm_into(dst, write, lhs, rhs, T::ONE, Threads::Pool);
        out.set_len(m * n);
    }
    out
}
