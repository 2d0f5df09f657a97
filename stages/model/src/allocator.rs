//! Keeps freed memory in the process for the next training step.
//!
//! A training step allocates and frees the same tensors (megabytes each) every step. With glibc's
//! defaults, freeing them gives the memory back to the kernel (the heap top is trimmed, blocks
//! above the mmap threshold are unmapped), and the next step's allocations fault every page in
//! again: on a `small` step that was about 20 % of the time (docs/benchmarks.md). Raising the trim
//! threshold and the mmap threshold keeps the memory for reuse; the process holds on to its peak
//! step memory, as any training process does at steady state.

/// glibc's `mallopt` parameters (malloc.h).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    pub const M_TRIM_THRESHOLD: i32 = -1;
    pub const M_TOP_PAD: i32 = -2;
    pub const M_MMAP_THRESHOLD: i32 = -3;
    unsafe extern "C" {
        pub fn mallopt(param: i32, value: i32) -> i32;
    }
}

/// Tells the allocator to keep freed memory (once per process; a no-op off glibc). Returns
/// whether the settings were applied.
pub fn retain_freed_memory() -> bool {
    static APPLIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *APPLIED.get_or_init(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            use glibc::*;
            // SAFETY: mallopt only changes allocator tuning parameters; it is thread-safe in
            // glibc and valid at any time.
            unsafe {
                // 32 MiB is glibc's largest mmap threshold on 64-bit: tensors below it come from
                // the heap and are reused.
                mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
                    && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
                    && mallopt(M_TOP_PAD, 64 << 20) == 1
            }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        {
            false
        }
    })
}
