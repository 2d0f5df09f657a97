//! A stage that fills the disk (issue 11, item 8): the failure says the disk is full, and shows
//! the command's last output although its log could not be written. The cache sits on a real
//! 2 MiB tmpfs, so this needs root (as CI and the developers' machines have).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_stage_that_fills_the_disk_says_so() {
    let project = Project::new();
    let disk = Tmpfs::mount(&project.path("small-disk"), "2m");
    let cache = disk.0.join("cache");
    project.write(
        "p.yaml",
        "name: p\nstages:\n  fill:\n    kind: cmd\n    run: 'echo writing the model; head -c 8000000 /dev/zero > \"$UMDFLOW_OUT/model.bin\" || exit 1'\n",
    );
    let output = project.umdflow(&[
        "run",
        "p.yaml",
        "--cache",
        cache.to_str().unwrap(),
        "--no-lock-file",
        "-q",
    ]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("is full"), "{err}");
    assert!(err.contains(cache.to_str().unwrap()), "{err}");
    // The log sits on the full disk too; the output kept in memory still explains the failure.
    assert!(err.contains("No space left on device"), "{err}");
    drop(disk);
}
