//! A `coordinate-tune` interrupted after a checkpoint and run again resumes from it, and its
//! output is byte-identical to an uninterrupted run's; a damaged or foreign checkpoint is ignored
//! (training starts over) and the output is still identical.
//!
//! The run is set up so that every piece of state the fine-tuning loop carries across steps
//! changes the output: retrieval with sampled negatives (their stream), GM-Coord with GE noise
//! (its stream) and auxiliary heads (their parameters and moments), joint TD-Calib with the
//! default loss (EMA targets and ITM negatives: the EMA network and the ITM stream), AdamW
//! (moments and step count) and the step log (`gmcoord.csv`).

mod common;
#[path = "../../model/tests/resume_support/mod.rs"]
mod resume_support;

use resume_support::{StopAt, check_unusable_checkpoints};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::{Value, json};
use umdflow_data::IngestKind;
use umdflow_model::ModelConfig;
use umdflow_stages::{NoProgress, ProgressSink, Resume, StageError};
use umdflow_tune::{CalibrateKind, CoordinateTuneKind};

const OUTPUTS: [&str; 6] = [
    "checkpoint.safetensors",
    "model_config.json",
    "task.json",
    "gmcoord.csv",
    "gmcoord.png",
    "metrics.json",
];
const KEY: &str = "k-tune";
const MAX_LEN: usize = 32;

struct Setup {
    tmp: tempfile::TempDir,
    ingest: PathBuf,
    calibrate: PathBuf,
}

/// A SynthRad `ci` ingest with about 24 training pairs, a fresh tiny checkpoint, and a joint-mode
/// `calibrate` of it with the default loss (EMA feature targets, signature ITM negatives).
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let ingest = tmp.path().join("ingest");
    common::run_kind(
        &IngestKind,
        &[],
        json!({"source": "synthrad", "preset": "ci", "count": 40, "split": [0.6, 0.2, 0.2],
               "max_len": MAX_LEN, "preview": 0, "seed": 3}),
        &ingest,
    );
    let pretrain = tmp.path().join("pretrain");
    checkpoint(&pretrain, &ingest);
    let calibrate = tmp.path().join("calibrate");
    common::run_kind(
        &CalibrateKind,
        &[("ingest", &ingest), ("pretrain", &pretrain)],
        json!({"mode": "joint", "device": "cpu"}),
        &calibrate,
    );
    Setup {
        tmp,
        ingest,
        calibrate,
    }
}

/// A fresh tiny checkpoint for the ingest in `ingest`.
fn checkpoint(dir: &Path, ingest: &Path) {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(ingest.join("meta.json")).unwrap()).unwrap();
    let size = meta["image_size"].as_u64().unwrap() as usize;
    let vocab = meta["vocab_size"].as_u64().unwrap() as usize;
    let channels = meta["channels"].as_u64().unwrap() as usize;
    let config = ModelConfig::preset("tiny", size, channels, 8, vocab, MAX_LEN).unwrap();
    common::save_fresh_checkpoint(dir, config);
}

/// Two epochs of batches of 6 (at least 8 steps), a checkpoint every 2.
fn params() -> Value {
    json!({
        "task": "retrieval",
        "negatives": 2,
        "epochs": 2,
        "batch_size": 6,
        "device": "cpu",
        "gmcoord": {"scores": "aux_heads", "noise": true},
        "checkpoint_every": "2 steps",
    })
}

fn run(
    setup: &Setup,
    out: &Path,
    resume: Option<Resume<'_>>,
    progress: &dyn ProgressSink,
    cancel: &AtomicBool,
) -> Result<(), StageError> {
    common::run_kind_resumable(
        &CoordinateTuneKind,
        &[("ingest", &setup.ingest), ("calibrate", &setup.calibrate)],
        params(),
        out,
        progress,
        cancel,
        resume,
    )
}

fn log_of(out: &Path) -> String {
    std::fs::read_to_string(out.join("log.txt")).unwrap_or_default()
}

fn assert_same_outputs(reference: &Path, out: &Path, what: &str) {
    resume_support::assert_same_outputs(reference, out, &OUTPUTS, what);
}

/// The uninterrupted run, without any resume folder, and its step count.
fn reference(setup: &Setup) -> (PathBuf, usize) {
    let out = setup.tmp.path().join("reference");
    run(setup, &out, None, &NoProgress, &AtomicBool::new(false)).unwrap();
    let csv = std::fs::read_to_string(out.join("gmcoord.csv")).unwrap();
    let steps = csv.lines().count() - 1;
    assert!(steps >= 8, "{csv}");
    (out, steps)
}

#[test]
fn an_interrupted_coordinate_tune_resumes_and_ends_byte_identical() {
    let setup = setup();
    let (reference, steps) = reference(&setup);
    let resume_dir = setup.tmp.path().join("resume");
    std::fs::create_dir_all(&resume_dir).unwrap();
    let resume = Resume {
        dir: &resume_dir,
        key: KEY,
    };
    let checkpoint = resume_dir.join("coordinate-tune.ckpt");

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
        log_of(&second).contains(&format!("resumed from step 5 of {steps}")),
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
        log_of(&third).contains(&format!("resumed from step 4 of {steps}")),
        "{}",
        log_of(&third)
    );
    assert_same_outputs(&reference, &third, "resumed after a kill");
}

#[test]
fn a_damaged_or_foreign_checkpoint_is_ignored_and_tuning_starts_over() {
    let setup = setup();
    let (reference, _) = reference(&setup);
    let resume_dir = setup.tmp.path().join("resume");
    std::fs::create_dir_all(&resume_dir).unwrap();
    let checkpoint = resume_dir.join("coordinate-tune.ckpt");
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
