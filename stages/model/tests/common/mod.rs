//! Shared test fixtures: a SynthRad `ci` dataset made by the real `ingest` stage, and a way to
//! run any stage kind into a temporary folder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use serde_json::{Value, json};
use umdflow_data::IngestKind;
use umdflow_data::artifact::Dataset;
use umdflow_model::batch::{Batch, build_batch};
use umdflow_model::masking::{MaskPlan, PlanSettings, TokenInfo};
use umdflow_model::negatives::NegativeSampling;
use umdflow_model::rng::SplitMix64;
use umdflow_stages::{
    InputArtifact, NoProgress, Params, ProgressSink, Resume, StageContext, StageDecl, StageError,
    StageKind,
};

pub fn params(value: Value) -> Params {
    value.as_object().cloned().expect("a JSON object")
}

/// Resolves `params` for `kind` and runs it into `out`, with the given inputs.
pub fn run_stage(
    kind: &dyn StageKind,
    raw: Value,
    inputs: &[InputArtifact],
    out: &Path,
    progress: &dyn ProgressSink,
    cancel: &AtomicBool,
) -> Result<(), StageError> {
    run_stage_resumable(kind, raw, inputs, out, progress, cancel, None)
}

/// [`run_stage`] with a resume folder, as the engine gives one; the stage log is `out/stage.log`.
pub fn run_stage_resumable(
    kind: &dyn StageKind,
    raw: Value,
    inputs: &[InputArtifact],
    out: &Path,
    progress: &dyn ProgressSink,
    cancel: &AtomicBool,
    resume: Option<Resume<'_>>,
) -> Result<(), StageError> {
    let decl_inputs: Vec<(String, String)> = inputs
        .iter()
        .map(|i| (i.stage.clone(), i.kind.clone()))
        .collect();
    let decl = StageDecl {
        name: kind.name(),
        run: None,
        inputs: &decl_inputs,
    };
    let resolved = kind
        .resolve_params(&decl, params(raw))
        .map_err(|p| StageError::failed(format!("{p:?}")))?;
    std::fs::create_dir_all(out).unwrap();
    let log = out.join("stage.log");
    let ctx = StageContext {
        id: kind.name(),
        name: kind.name(),
        params: &resolved,
        run: None,
        inputs,
        out_dir: out,
        work_dir: out,
        log_path: &log,
        threads: 2,
        gpus: None,
        progress,
        cancel,
        resume,
    };
    kind.run(&ctx)
}

/// candle 0.11 runs large element-wise ops on a process-wide pool of spinning worker threads,
/// sized once from `CANDLE_NUM_THREADS` at first use; on a loaded machine the spinning slows a
/// `tiny` step 10× (see docs/benchmarks.md). The tests keep element-wise ops on the calling
/// thread; matrix products still use the stage's rayon pool. A value already in the environment
/// is kept (the `train_step` benchmark sets it to its thread count, as the CLI does).
pub fn single_threaded_elementwise() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            // SAFETY: runs once, before this test process makes its first candle call (every
            // test reaches candle through the fixtures below), and no C code reads the
            // environment then.
            unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
        }
    });
}

struct Fixture {
    _dir: tempfile::TempDir,
    ingest: PathBuf,
}

/// A SynthRad `ci` ingest (32×32 grey images, 64 tokens), made once per test binary.
pub fn ci_ingest_dir() -> &'static Path {
    single_threaded_elementwise();
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    &FIXTURE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let ingest = dir.path().join("ingest");
            run_stage(
                &IngestKind,
                json!({"source": "synthrad", "preset": "ci", "seed": 1}),
                &[],
                &ingest,
                &NoProgress,
                &AtomicBool::new(false),
            )
            .expect("ingest of SynthRad ci");
            Fixture { _dir: dir, ingest }
        })
        .ingest
}

pub fn ci_dataset() -> Dataset {
    Dataset::load(ci_ingest_dir()).expect("load the ci artifact")
}

/// Runs the real `mask` stage (params `mask`) on `ingest` into `mask_dir`; returns the inputs a
/// `pretrain` takes: the ingest, then the mask plan.
pub fn mask_inputs(ingest: InputArtifact, mask_dir: &Path, mask: Value) -> Vec<InputArtifact> {
    run_stage(
        &umdflow_model::MaskKind,
        mask,
        std::slice::from_ref(&ingest),
        mask_dir,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    vec![ingest, input("masks", "mask", mask_dir)]
}

pub fn input(stage: &str, kind: &str, dir: &Path) -> InputArtifact {
    InputArtifact {
        stage: stage.into(),
        kind: kind.into(),
        dir: dir.to_path_buf(),
    }
}

/// The first `size` samples of the plan's epoch 0 as one CPU batch (random ITM negatives, stream
/// seed 1).
pub fn first_batch(dataset: &Dataset, plan: &MaskPlan, size: usize) -> Batch {
    let positions: Vec<usize> = (0..size).collect();
    build_batch(
        dataset,
        plan,
        0,
        &positions,
        NegativeSampling::Random,
        &mut SplitMix64::new(1),
        &Device::Cpu,
    )
    .unwrap()
}

/// A masking plan over the training split (patch 8, M3AE ratios).
pub fn plan_for(dataset: &Dataset, epochs: usize, seed: u64) -> MaskPlan {
    let samples: Vec<u32> = dataset
        .indices_of_split(0)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let m = &dataset.meta;
    let tokens = TokenInfo {
        vocab_size: m.vocab_size,
        mask_id: m.mask_id,
        special_ids: vec![m.pad_id, m.unk_id, m.cls_id, m.sep_id, m.mask_id],
    };
    let settings = PlanSettings {
        epochs,
        image_ratio: 0.75,
        text_ratio: 0.15,
        mask_token_prob: 0.8,
        random_token_prob: 0.1,
        patch_size: 8,
        seed,
    };
    MaskPlan::generate(
        &settings,
        &samples,
        &dataset.input_ids,
        &dataset.attention_mask,
        dataset.max_len,
        dataset.size,
        &tokens,
    )
    .unwrap()
}
