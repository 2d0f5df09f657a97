//! Free space on the disk that holds the cache: when a stage fails with almost none left, the
//! failure says that the disk is full (the stage's own message rarely does, and its log may be
//! empty because it sits on that disk).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Below this much free space a failed stage is reported as having filled the disk.
pub const NEARLY_FULL_BYTES: u64 = 16 << 20;

/// Bytes an unprivileged process may still write on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is a valid place for statvfs to fill.
    let status = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// A sentence for a failed stage's message if the disk holding `path` is (nearly) full.
pub fn full_note(path: &Path) -> Option<String> {
    let free = free_bytes(path)?;
    (free < NEARLY_FULL_BYTES).then(|| {
        format!(
            "the disk holding {} is full ({free} bytes free); free space and run again",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roomy_disk_is_not_reported_full() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some());
        if free_bytes(dir.path()).unwrap() > NEARLY_FULL_BYTES {
            assert_eq!(full_note(dir.path()), None);
        }
        assert_eq!(free_bytes(Path::new("/no/such/folder/umdflow")), None);
    }
}
