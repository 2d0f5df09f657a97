//! Running the ingest kind the way the engine does, for integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use umdflow_data::IngestKind;
use umdflow_stages::{
    InputArtifact, NoProgress, Params, StageContext, StageDecl, StageError, StageKind,
};

/// Resolves `params` like the engine, then runs the kind into `out` (created fresh).
pub fn run_ingest(
    params: serde_json::Value,
    inputs: &[InputArtifact],
    work_dir: &Path,
    out: &Path,
    threads: usize,
) -> Result<Params, StageError> {
    let params: Params = params.as_object().cloned().unwrap_or_default();
    let input_kinds: Vec<(String, String)> = inputs
        .iter()
        .map(|i| (i.stage.clone(), i.kind.clone()))
        .collect();
    let decl = StageDecl {
        name: "data",
        run: None,
        inputs: &input_kinds,
    };
    let resolved = IngestKind
        .resolve_params(&decl, params)
        .map_err(|problems| StageError::failed(format!("{problems:?}")))?;
    std::fs::create_dir_all(out).expect("create out dir");
    let log = out.with_extension("log");
    let cancel = AtomicBool::new(false);
    let ctx = StageContext {
        id: "data",
        name: "data",
        params: &resolved,
        run: None,
        inputs,
        out_dir: out,
        work_dir,
        log_path: &log,
        threads,
        gpus: None,
        progress: &NoProgress,
        cancel: &cancel,
        resume: None,
    };
    IngestKind.run(&ctx)?;
    Ok(resolved)
}

pub fn ingest_input(dir: &Path) -> InputArtifact {
    InputArtifact {
        stage: "pretrain-data".into(),
        kind: "ingest".into(),
        dir: dir.to_path_buf(),
    }
}

/// The committed fixtures of this crate.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}
