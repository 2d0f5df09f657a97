//! What the tune crate's integration tests share: running one stage kind outside the engine.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use serde_json::Value;
use umdflow_model::ModelConfig;
use umdflow_model::checkpoint::{CheckpointInfo, save_checkpoint};
use umdflow_model::model::{FeatureDims, UmdModel};
use umdflow_model::store::ParamStore;
use umdflow_stages::{
    InputArtifact, NoProgress, Params, ProgressSink, Resume, StageContext, StageDecl, StageError,
    StageKind,
};

/// A kind's resolved params for inputs named `(stage, kind)`; panics on problems.
pub fn params(kind: &dyn StageKind, inputs: &[(String, String)], p: Value) -> Params {
    let decl = StageDecl {
        name: "s",
        run: None,
        inputs,
    };
    kind.resolve_params(&decl, p.as_object().cloned().unwrap())
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Runs a kind with the given inputs `(kind, dir)` into `out` (created), as the engine would.
pub fn run_kind(kind: &dyn StageKind, inputs: &[(&str, &Path)], p: Value, out: &Path) {
    run_kind_resumable(
        kind,
        inputs,
        p,
        out,
        &NoProgress,
        &AtomicBool::new(false),
        None,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
}

/// [`run_kind`] with a progress sink, a cancel flag and a resume folder, as the engine gives
/// them; the stage log is `out/log.txt`.
pub fn run_kind_resumable(
    kind: &dyn StageKind,
    inputs: &[(&str, &Path)],
    p: Value,
    out: &Path,
    progress: &dyn ProgressSink,
    cancel: &AtomicBool,
    resume: Option<Resume<'_>>,
) -> Result<(), StageError> {
    let named: Vec<(String, String)> = inputs
        .iter()
        .map(|(k, _)| (k.to_string(), k.to_string()))
        .collect();
    let params = params(kind, &named, p);
    let artifacts: Vec<InputArtifact> = inputs
        .iter()
        .map(|(k, d)| InputArtifact {
            stage: k.to_string(),
            kind: k.to_string(),
            dir: d.to_path_buf(),
        })
        .collect();
    std::fs::create_dir_all(out).unwrap();
    let ctx = StageContext {
        id: "test",
        name: "test",
        params: &params,
        run: None,
        inputs: &artifacts,
        out_dir: out,
        work_dir: out,
        log_path: &out.join("log.txt"),
        threads: 1,
        gpus: None,
        progress,
        cancel,
        resume,
    };
    kind.run(&ctx)
}

/// Saves a freshly initialised `tiny` checkpoint of `config` (parameter seed 11) in `dir`.
pub fn save_fresh_checkpoint(dir: &Path, config: ModelConfig) {
    let dims = FeatureDims {
        image: config.fusion_width,
        text: config.fusion_width,
    };
    let mut store = ParamStore::new(&Device::Cpu, 11);
    UmdModel::new(&mut store, &config, dims).unwrap();
    let info = CheckpointInfo {
        preset: "tiny".into(),
        model: config,
        feature_dims: dims,
    };
    std::fs::create_dir_all(dir).unwrap();
    save_checkpoint(dir, &store, &info).unwrap();
}
