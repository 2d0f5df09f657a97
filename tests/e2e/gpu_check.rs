//! `scripts/gpu-check.sh` and its helper `scripts/gpu_check.py`, on a machine without a GPU: the
//! clear failure when there is none, the loss-curve comparison, and the `--device cpu` mode.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

const HEADER: &str = "step,epoch,lr,grad_norm,total,mim,mlm,itm,feamim,feamlm\n";

/// A loss curve of three steps whose `total` at step 1 is `total1`.
fn curve(project: &Project, name: &str, total1: &str) -> PathBuf {
    let rows = format!(
        "{HEADER}0,0,1e-4,2.5,13.26,1.73,5.96,1.17,3.09,1.28\n\
         1,0,1e-4,2.4,{total1},1.72,5.94,0.98,2.98,1.27\n\
         2,0,1e-4,2.3,12.48,1.71,5.93,0.79,2.81,1.22\n"
    );
    project.write(name, &rows);
    project.path(name)
}

fn compare(a: &Path, b: &Path, exact: bool) -> Output {
    let mut command = Command::new("python3");
    command
        .arg(script("gpu_check.py"))
        .arg("compare")
        .arg(a)
        .arg(b);
    if exact {
        command.arg("--exact");
    }
    command.output().expect("run python3")
}

#[test]
fn the_curve_comparison_accepts_reordered_f32_sums_and_rejects_real_differences() {
    let project = Project::new();
    let cpu = curve(&project, "cpu.csv", "12.91");
    let same = curve(&project, "same.csv", "12.91");
    let last_bits = curve(&project, "bits.csv", "12.910002");
    let wrong = curve(&project, "wrong.csv", "13.91");

    let out = compare(&cpu, &same, true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bit-identical over 3 steps"));

    let out = compare(&cpu, &last_bits, false);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = compare(&cpu, &last_bits, true);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 3 (step 1), column total"),
        "{}",
        stderr(&out)
    );

    let out = compare(&cpu, &wrong, false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("12.91 vs 13.91"), "{}", stderr(&out));

    project.write("short.csv", HEADER);
    let out = compare(&cpu, &project.path("short.csv"), false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no steps"), "{}", stderr(&out));
}

#[test]
fn the_gpu_check_fails_in_one_line_without_a_gpu() {
    let project = Project::new();
    // An nvidia-smi that finds no device, first on PATH, so the test means the same on any machine.
    let fake = project.path("bin/nvidia-smi");
    project.write(
        "bin/nvidia-smi",
        "#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n",
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        project.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(script("gpu-check.sh"))
        .arg("--no-build")
        .env("PATH", path)
        .env("GPU_CHECK_WORK", project.path("work"))
        .output()
        .expect("run gpu-check.sh");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "gpu-check: FAILED: no NVIDIA GPU found (nvidia-smi lists none: No devices were found)"
    );
}

#[test]
fn the_cpu_mode_runs_the_pipeline_twice_and_finds_bit_identical_curves() {
    let project = Project::new();
    let out = Command::new(script("gpu-check.sh"))
        .args(["--device", "cpu", "--no-build"])
        .env("UMDFLOW_BIN", BIN)
        .env("GPU_CHECK_WORK", project.path("work"))
        .env_remove("UMDFLOW_CACHE")
        .output()
        .expect("run gpu-check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains("loss curves bit-identical over 28 steps"),
        "{stdout}"
    );
    assert!(stdout.contains("gpu-check: passed"), "{stdout}");
}
