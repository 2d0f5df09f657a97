//! What the tune crate's integration tests share: running one stage kind outside the engine.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use umdflow_stages::{InputArtifact, NoProgress, Params, StageContext, StageDecl, StageKind};

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
    let cancel = AtomicBool::new(false);
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
        progress: &NoProgress,
        cancel: &cancel,
        resume: None,
    };
    kind.run(&ctx)
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
}
