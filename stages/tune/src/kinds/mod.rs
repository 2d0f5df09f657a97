//! The stage kinds `calibrate`, `coordinate-tune`, `evaluate` and `probe`, one file each: parameters,
//! input lookup, output files. The work itself is in [`crate::calibrate`], [`crate::finetune`]
//! and [`crate::evaluate`]. This file holds what the kinds share.

mod calibrate;
mod coordinate_tune;
mod evaluate;
mod probe;

use std::path::Path;

use candle_core::Device;
use serde::Serialize;
use umdflow_model::checkpoint::{CheckpointInfo, load_checkpoint};
use umdflow_model::device::{device_name, select_device, spec_problem};
use umdflow_model::model::UmdModel;
use umdflow_model::optim::OptimConfig;
use umdflow_model::store::ParamStore;
use umdflow_stages::{Problem, StageContext, StageDecl, StageError};

use crate::error::{Result, TuneError};
use crate::views::{SplitView, Train};

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

/// `params.device` against the one device rule ([`spec_problem`]).
fn device_problem(device: &str) -> Option<Problem> {
    spec_problem(device).map(|message| Problem::new("params.device", message))
}

/// The plan-time checks every training kind shares: device, batch size, optimiser.
fn training_problems(device: &str, batch_size: usize, optim: &OptimConfig) -> Vec<Problem> {
    let mut problems: Vec<Problem> = device_problem(device).into_iter().collect();
    if batch_size == 0 {
        problems.push(Problem::new("params.batch_size", "must be at least 1"));
    }
    if let Err((field, message)) = optim.validate() {
        problems.push(Problem::new(format!("params.optim.{field}"), message));
    }
    problems
}

/// `params.checkpoint_every` of a training kind must be an interval (`10m`, `500 steps`, `off`).
fn checkpoint_problem(every: &str) -> Option<Problem> {
    umdflow_stages::Interval::parse(every)
        .err()
        .map(|message| Problem::new("params.checkpoint_every", message))
}

/// A line of a training loop (resuming, a checkpoint ignored) for the stage's log and the trace.
fn note(ctx: &StageContext<'_>, line: &str) {
    tracing::info!("{}: {line}", ctx.id);
    let _ = ctx.log(line);
}

/// What a training kind (`calibrate`, `coordinate-tune`) loads before it trains: the device, the
/// ingest's TRAINING split only, and the input checkpoint, checked to fit the data.
struct TrainingSetup {
    device: Device,
    view: SplitView<Train>,
    store: ParamStore,
    model: UmdModel,
    info: CheckpointInfo,
}

impl TrainingSetup {
    fn load(
        ctx: &StageContext<'_>,
        device: &str,
        checkpoint_dir: &Path,
    ) -> std::result::Result<Self, StageError> {
        let ingest = ctx.require_input("ingest")?;
        let device = select_device(device, ctx.gpus).map_err(failed)?;
        let view = SplitView::<Train>::load(&ingest.dir).map_err(failed)?;
        let (store, model, info) = load_checkpoint(checkpoint_dir, &device).map_err(failed)?;
        check_fits(&model, &view, &ingest.dir).map_err(failed)?;
        Ok(TrainingSetup {
            device,
            view,
            store,
            model,
            info,
        })
    }

    /// Writes `metrics.json`: the object `metrics` plus the device the run used.
    fn write_metrics(
        &self,
        out_dir: &Path,
        metrics: serde_json::Value,
    ) -> std::result::Result<(), StageError> {
        Self::write_metrics_for(&self.device, out_dir, metrics)
    }

    /// [`Self::write_metrics`] once the setup has been taken apart.
    fn write_metrics_for(
        device: &Device,
        out_dir: &Path,
        mut metrics: serde_json::Value,
    ) -> std::result::Result<(), StageError> {
        if let Some(fields) = metrics.as_object_mut() {
            fields.insert("device".into(), device_name(device).into());
        }
        write(&out_dir.join("metrics.json"), &json(&metrics)?)
    }
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

/// Runs `f` on a stage pool of `threads` workers (candle's CPU matmuls use the current pool).
fn with_threads<T: Send>(
    threads: usize,
    f: impl FnOnce() -> std::result::Result<T, StageError> + Send,
) -> std::result::Result<T, StageError> {
    let pool = umdflow_model::worker_pool::stage_pool(threads).map_err(failed)?;
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
