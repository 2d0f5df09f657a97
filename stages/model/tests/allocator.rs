//! `allocator::retain_freed_memory` stops the page faults of re-allocating freed tensors. Its own
//! test binary: the fault counter is per process, and the setting cannot be undone.

/// Minor page faults of this process so far (`/proc/self/stat`, field 10).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name
        .split_whitespace()
        .nth(7)
        .unwrap()
        .parse()
        .unwrap()
}

/// Faults of ten steps that each allocate, fill and free two 8 MiB buffers (the shape of a
/// training step's large activations).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn faults_of_steps() -> u64 {
    let start = minor_faults();
    for step in 0..10u8 {
        let a = std::hint::black_box(vec![step; 8 << 20]);
        let b = std::hint::black_box(vec![step.wrapping_add(1); 8 << 20]);
        drop(b);
        drop(a);
    }
    minor_faults() - start
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn retained_memory_is_reused_without_page_faults() {
    let default = faults_of_steps();
    assert!(umdflow_model::allocator::retain_freed_memory());
    faults_of_steps(); // the first step after the change still grows the heap once
    let retained = faults_of_steps();
    assert!(
        retained * 10 < default,
        "page faults of ten steps: {default} with glibc's defaults, {retained} with freed memory retained"
    );
}
