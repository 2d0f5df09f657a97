//! An ML run killed mid-training resumes from its checkpoint on the next run, and its cached
//! result is byte-identical to an uninterrupted run's (the lock files, which hold every key and
//! output digest, are equal).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Pre-training long enough to be killed in the middle (40 steps), checkpointing every 2 steps.
const PRETRAIN: &str = r#"name: resume
stages:
  corpus:
    kind: ingest
    params: {source: synthrad, preset: ci, count: 64, seed: 0}
  mask:
    kind: mask
    inputs: [corpus]
    params: {epochs: 20, patch_size: 8, seed: 0}
  pretrain:
    kind: pretrain
    inputs: [corpus, mask]
    params: {batch_size: 8, max_steps: 40, device: cpu, checkpoint_every: 2 steps}
"#;

/// A short pre-training, then TD-Calib long enough to be killed in the middle.
const CALIBRATE: &str = r#"
  downstream:
    kind: ingest
    inputs: [corpus]
    params: {source: synthrad, preset: ci, domain: target, count: 64, seed: 1}
  calibrate:
    kind: calibrate
    inputs: [downstream, pretrain]
    params: {epochs: 20, batch_size: 8, max_steps: 30, device: cpu, checkpoint_every: 2 steps}
"#;

/// A short pre-training, then fine-tuning long enough to be killed in the middle (30 steps), with
/// GM-Coord's GE noise so that its stream matters too.
const COORDINATE_TUNE: &str = r#"
  downstream:
    kind: ingest
    inputs: [corpus]
    params: {source: synthrad, preset: ci, domain: target, count: 64, seed: 1}
  tune:
    kind: coordinate-tune
    inputs: [downstream, pretrain]
    params:
      task: classification
      epochs: 10
      batch_size: 16
      device: cpu
      gmcoord: {noise: true}
      checkpoint_every: 2 steps
"#;

fn run_to_end(project: &Project, cache: &str) -> String {
    let run = project.json(&["run", "p.yaml", "--cache", cache], 0);
    assert_eq!(with_status(&run, "failed"), Vec::<String>::new(), "{run}");
    std::fs::read_to_string(project.path("p.lock.json")).unwrap()
}

/// The checkpoint file `name` of a key being trained in `cache`, once one exists.
fn checkpoint_in(project: &Project, cache: &str, name: &str) -> Option<std::path::PathBuf> {
    let resume = project.path(cache).join("resume");
    std::fs::read_dir(resume)
        .ok()?
        .flatten()
        .map(|entry| entry.path().join(name))
        .find(|path| path.is_file())
}

#[test]
fn a_killed_pretrain_resumes_and_caches_what_an_uninterrupted_run_does() {
    killed_then_resumed(PRETRAIN, "pretrain", "pretrain");
}

#[test]
fn a_killed_calibrate_resumes_and_caches_what_an_uninterrupted_run_does() {
    killed_then_resumed(&format!("{PRETRAIN}{CALIBRATE}"), "calibrate", "calibrate");
}

#[test]
fn a_killed_coordinate_tune_resumes_and_caches_what_an_uninterrupted_run_does() {
    killed_then_resumed(
        &format!("{PRETRAIN}{COORDINATE_TUNE}"),
        "tune",
        "coordinate-tune",
    );
}

/// Runs `pipeline` to the end in one cache; in another, SIGKILLs the run once `stage` (of `kind`)
/// wrote a checkpoint, then runs it again: it must resume and cache the same results (equal lock
/// files).
fn killed_then_resumed(pipeline: &str, stage: &str, kind: &str) {
    let project = Project::new();
    project.write("p.yaml", pipeline);
    let reference = run_to_end(&project, "reference");
    let checkpoint_name = format!("{kind}.ckpt");

    let mut child = project
        .command(&["run", "p.yaml", "--cache", "work"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let checkpoint = loop {
        if let Some(path) = checkpoint_in(&project, "work", &checkpoint_name) {
            break path;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it wrote a checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL: no chance to write anything more
    child.wait().unwrap();
    assert!(checkpoint.is_file(), "a kill keeps the checkpoint");
    // `gc` keeps what the pipeline still has to compute, so the next run can resume.
    let gc = project.umdflow(&["gc", "p.yaml", "--cache", "work"]);
    let said = String::from_utf8_lossy(&gc.stdout);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(said.contains("kept 1 resume folders"), "{said}");
    assert!(checkpoint.is_file(), "gc removed a pending checkpoint");

    let resumed = run_to_end(&project, "work");
    let log = project.umdflow(&["log", "p.yaml", "--cache", "work", stage]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("resumed from step "), "{log}");
    assert_eq!(
        resumed, reference,
        "a resumed run caches what an uninterrupted one does"
    );
    assert!(
        !checkpoint.parent().unwrap().exists(),
        "the resume folder goes once the key is committed"
    );
}
