//! The stage kinds `calibrate`, `coordinate-tune`, `evaluate` and `probe`, one file each: parameters,
//! input lookup, output files. The work itself is in [`crate::calibrate`], [`crate::finetune`]
//! and [`crate::evaluate`]. This file holds what the kinds share.

mod calibrate;
mod coordinate_tune;
mod evaluate;
mod probe;

use std::path::Path;

use serde::Serialize;
use umdflow_model::model::UmdModel;
use umdflow_stages::{Problem, StageDecl, StageError};

use crate::error::{Result, TuneError};
use crate::views::SplitView;

pub use calibrate::{CalibrateKind, CalibrateParams};
pub use coordinate_tune::{
    AuxShape, CoordinateTuneKind, CoordinateTuneParams, TunedInfo, load_tuned,
};
pub use evaluate::{EvaluateKind, EvaluateParams};
pub use probe::{ProbeKind, ProbeParams, ProbeReport};

/// The tuned checkpoint's parameters (backbone + task head [+ GM-Coord's auxiliary heads]).
pub const TUNED_FILE: &str = "checkpoint.safetensors";
/// `task.json` beside a tuned checkpoint.
pub const TASK_FILE: &str = "task.json";

fn failed(e: impl std::fmt::Display) -> StageError {
    StageError::failed(e.to_string())
}

fn write(path: &Path, text: &str) -> std::result::Result<(), StageError> {
    std::fs::write(path, text).map_err(StageError::io(format!("writing {}", path.display())))
}

fn json(value: &impl Serialize) -> std::result::Result<String, StageError> {
    serde_json::to_string_pretty(value).map_err(failed)
}

fn device_problem(device: &str) -> Option<Problem> {
    let ok = device == "auto"
        || device == "cpu"
        || device
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    (!ok).then(|| {
        Problem::new(
            "params.device",
            format!("expected `auto`, `cpu` or `cuda:N`, got `{device}`"),
        )
    })
}

fn needs_inputs(decl: &StageDecl<'_>, kind: &str, groups: &[&[&str]]) -> Vec<Problem> {
    groups
        .iter()
        .filter(|any| !decl.inputs.iter().any(|(_, k)| any.contains(&k.as_str())))
        .map(|any| {
            Problem::new(
                "inputs",
                format!(
                    "a `{kind}` stage needs a stage of kind {} in its inputs",
                    any.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )
        })
        .collect()
}

/// Runs `f` on a rayon pool of `threads` workers (candle's CPU matmuls use the current pool).
fn with_threads<T: Send>(
    threads: usize,
    f: impl FnOnce() -> std::result::Result<T, StageError> + Send,
) -> std::result::Result<T, StageError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(failed)?;
    pool.install(f)
}

fn stage_error(id: &str, e: TuneError) -> StageError {
    match e {
        TuneError::Cancelled => StageError::Cancelled,
        other => StageError::failed(format!("`{id}`: {other}")),
    }
}

/// The checkpoint must have been built for this data's image size, channels and vocabulary.
fn check_fits<S: crate::views::SplitTag>(
    model: &UmdModel,
    view: &SplitView<S>,
    dir: &Path,
) -> Result<()> {
    let (c, d) = (&model.config, view.data());
    if c.image_size != d.size
        || c.channels != d.channels
        || c.vocab_size != d.meta.vocab_size
        || c.max_len < d.max_len
    {
        return Err(TuneError::File {
            path: dir.display().to_string(),
            message: format!(
                "the data ({}px, {} channels, vocabulary {}, {} tokens) does not fit the checkpoint's model ({}px, {} channels, vocabulary {}, {} tokens); \
                 the downstream ingest must reuse the pre-training ingest's tokenizer and image size",
                d.size,
                d.channels,
                d.meta.vocab_size,
                d.max_len,
                c.image_size,
                c.channels,
                c.vocab_size,
                c.max_len
            ),
        });
    }
    Ok(())
}
