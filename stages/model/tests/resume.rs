//! A `pretrain` interrupted after a checkpoint and run again resumes from it, and its output is
//! byte-identical to an uninterrupted run's; a damaged or foreign checkpoint is ignored (training
//! starts over) and the output is still identical.

mod common;
mod resume_support;

use resume_support::{StopAt, check_unusable_checkpoints};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use umdflow_model::PretrainKind;
use umdflow_stages::{InputArtifact, NoProgress, ProgressSink, Resume, StageError};

const OUTPUTS: [&str; 5] = [
    "checkpoint.safetensors",
    "model_config.json",
    "loss_curve.csv",
    "loss_curve.png",
    "metrics.json",
];
const KEY: &str = "k-pretrain";

struct Setup {
    tmp: tempfile::TempDir,
    inputs: Vec<InputArtifact>,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let ingest = common::input("prep", "ingest", common::ci_ingest_dir());
    let mask = json!({"epochs": 2, "patch_size": 8, "seed": 4});
    let inputs = common::mask_inputs(ingest, &tmp.path().join("mask"), mask);
    Setup { tmp, inputs }
}

/// Eight steps over two epochs (the ci training split is 24 pairs: three batches an epoch) with
/// EMA targets and random ITM negatives, so every piece of state a resume needs is exercised.
fn params(every: &str) -> Value {
    json!({
        "max_steps": 8,
        "batch_size": 8,
        "device": "cpu",
        "loss": {"itm_negatives": "random"},
        "checkpoint_every": every,
    })
}

fn run(
    setup: &Setup,
    out: &Path,
    resume: Option<Resume<'_>>,
    progress: &dyn ProgressSink,
    cancel: &AtomicBool,
) -> Result<(), StageError> {
    common::run_stage_resumable(
        &PretrainKind,
        params("2 steps"),
        &setup.inputs,
        out,
        progress,
        cancel,
        resume,
    )
}

fn log_of(out: &Path) -> String {
    std::fs::read_to_string(out.join("stage.log")).unwrap_or_default()
}

fn assert_same_outputs(reference: &Path, out: &Path, what: &str) {
    resume_support::assert_same_outputs(reference, out, &OUTPUTS, what);
}

/// The uninterrupted run, without any resume folder.
fn reference(setup: &Setup) -> PathBuf {
    let out = setup.tmp.path().join("reference");
    run(setup, &out, None, &NoProgress, &AtomicBool::new(false)).unwrap();
    out
}

#[test]
fn an_interrupted_pretrain_resumes_and_ends_byte_identical() {
    let setup = setup();
    let reference = reference(&setup);
    let resume_dir = setup.tmp.path().join("resume");
    std::fs::create_dir_all(&resume_dir).unwrap();
    let resume = Resume {
        dir: &resume_dir,
        key: KEY,
    };
    let checkpoint = resume_dir.join("pretrain.ckpt");

    // Stopped after 5 steps: the stop writes a checkpoint at step 5 itself. Keep the periodic
    // one of step 4 aside, to play a SIGKILL afterwards (which leaves only the periodic one).
    let periodic = setup.tmp.path().join("periodic.ckpt");
    let keep_periodic = || {
        std::fs::copy(&checkpoint, &periodic).expect("a checkpoint after 4 steps (every 2)");
    };
    let cancel = AtomicBool::new(false);
    let stop = StopAt {
        at: 5,
        cancel: &cancel,
        before_stop: &keep_periodic,
    };
    let first = setup.tmp.path().join("first");
    let result = run(&setup, &first, Some(resume), &stop, &cancel);
    assert!(matches!(result, Err(StageError::Cancelled)), "{result:?}");

    let second = setup.tmp.path().join("second");
    run(
        &setup,
        &second,
        Some(resume),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(
        log_of(&second).contains("resumed from step 5 of 8"),
        "{}",
        log_of(&second)
    );
    assert_same_outputs(&reference, &second, "resumed after a stop");

    // A kill after the periodic checkpoint of step 4.
    std::fs::copy(&periodic, &checkpoint).unwrap();
    let third = setup.tmp.path().join("third");
    run(
        &setup,
        &third,
        Some(resume),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(
        log_of(&third).contains("resumed from step 4 of 8"),
        "{}",
        log_of(&third)
    );
    assert_same_outputs(&reference, &third, "resumed after a kill");
}

#[test]
fn a_damaged_or_foreign_checkpoint_is_ignored_and_training_starts_over() {
    let setup = setup();
    let reference = reference(&setup);
    let resume_dir = setup.tmp.path().join("resume");
    std::fs::create_dir_all(&resume_dir).unwrap();
    let checkpoint = resume_dir.join("pretrain.ckpt");
    // A real checkpoint of this run after 6 steps, to damage.
    let cancel = AtomicBool::new(false);
    let stop = StopAt {
        at: 6,
        cancel: &cancel,
        before_stop: &|| {},
    };
    let resume = Resume {
        dir: &resume_dir,
        key: KEY,
    };
    let partial = setup.tmp.path().join("partial");
    let _ = run(&setup, &partial, Some(resume), &stop, &cancel);
    let good = std::fs::read(&checkpoint).unwrap();

    check_unusable_checkpoints(&checkpoint, &good, KEY, |what, key| {
        let out = setup.tmp.path().join(what.replace(' ', "-"));
        let resume = Resume {
            dir: &resume_dir,
            key,
        };
        run(
            &setup,
            &out,
            Some(resume),
            &NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_same_outputs(&reference, &out, what);
        log_of(&out)
    });
}
