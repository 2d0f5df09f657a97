//! The stage kinds `calibrate`, `coordinate-tune` and `evaluate`: parameters, input lookup,
//! output files. The work itself is in [`crate::calibrate`], [`crate::finetune`] and
//! [`crate::evaluate`].

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use umdflow_model::checkpoint::{
    CheckpointInfo, MODEL_CONFIG_FILE, load_checkpoint, save_checkpoint,
};
use umdflow_model::device::{device_name, select_device};
use umdflow_model::model::UmdModel;
use umdflow_model::model::layers::Linear;
use umdflow_model::objective::ObjectiveConfig;
use umdflow_model::optim::OptimConfig;
use umdflow_model::store::ParamStore;
use umdflow_stages::params::{resolve_typed, typed};
use umdflow_stages::{Params, Problem, StageContext, StageDecl, StageError, StageKind};

use crate::calibrate::{
    CALIBRATION_FILE, CalibMode, CalibObserver, CalibSettings, CalibrationRecord, PairText,
    calibrate,
};
use crate::error::{Result, TuneError};
use crate::evaluate::{EvalSettings, evaluate};
use crate::finetune::{
    CoordStep, FinetuneSettings, GmCoordConfig, JointMr, StepObserver, finetune, steps_csv,
};
use crate::plots::{Panel, confusion_png, curves_png};
use crate::probe::ProbeSettings;
use crate::task::{Task, TaskHead, TaskInfo};
use crate::views::{ProbeTrainImages, SplitView, Test, Train};

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

// ---------------------------------------------------------------------------------------------
// calibrate

/// Parameters of `calibrate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrateParams {
    pub mode: CalibMode,
    pub epochs: usize,
    pub batch_size: usize,
    pub max_steps: Option<u64>,
    pub seed: u64,
    pub device: String,
    pub image_ratio: f64,
    pub text_ratio: f64,
    pub pair_text: PairText,
    /// Joint mode: weight of the MR term added to the task loss.
    pub mr_weight: f64,
    pub loss: ObjectiveConfig,
    pub optim: OptimConfig,
}

impl Default for CalibrateParams {
    fn default() -> Self {
        CalibrateParams {
            mode: CalibMode::Continued,
            epochs: 2,
            batch_size: 16,
            max_steps: None,
            seed: 0,
            device: "auto".into(),
            image_ratio: 0.75,
            text_ratio: 0.15,
            pair_text: PairText::Caption,
            mr_weight: 0.1,
            loss: ObjectiveConfig::default(),
            optim: OptimConfig::default(),
        }
    }
}

/// `kind: calibrate` (TD-Calib).
pub struct CalibrateKind;

struct CalibProgress<'a, 'b>(&'a StageContext<'b>);

impl CalibObserver for CalibProgress<'_, '_> {
    fn on_start(&self, total: u64) {
        self.0.progress.set_total(total);
    }
    fn on_step(&self, step: u64, loss: f64) {
        self.0.progress.set_position(step + 1);
        self.0.progress.set_message(&format!("MR loss {loss:.4}"));
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

impl StageKind for CalibrateKind {
    fn name(&self) -> &'static str {
        "calibrate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "TD-Calib: continued MR-Pretrain on the downstream training split (or the joint-loss mode)"
    }
    fn resolve_params(
        &self,
        decl: &StageDecl<'_>,
        params: Params,
    ) -> std::result::Result<Params, Vec<Problem>> {
        let resolved = resolve_typed::<CalibrateParams>(params)?;
        let p: CalibrateParams =
            typed(&resolved).map_err(|e| vec![Problem::new("params", e.to_string())])?;
        let mut problems = needs_inputs(decl, "calibrate", &[&["ingest"], &["pretrain"]]);
        problems.extend(device_problem(&p.device));
        if p.batch_size == 0 {
            problems.push(Problem::new("params.batch_size", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&p.image_ratio) {
            problems.push(Problem::new(
                "params.image_ratio",
                format!("must lie in [0, 1), got {}", p.image_ratio),
            ));
        }
        if !(0.0..=1.0).contains(&p.text_ratio) {
            problems.push(Problem::new(
                "params.text_ratio",
                format!("must lie in [0, 1], got {}", p.text_ratio),
            ));
        }
        if !(p.mr_weight.is_finite() && p.mr_weight >= 0.0) {
            problems.push(Problem::new(
                "params.mr_weight",
                "must be a non-negative number",
            ));
        }
        if let Err((field, message)) = p.optim.validate() {
            problems.push(Problem::new(format!("params.optim.{field}"), message));
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> std::result::Result<(), StageError> {
        let p: CalibrateParams = typed(ctx.params)?;
        let ingest = ctx.require_input("ingest")?;
        let pretrain = ctx.require_input("pretrain")?;
        let device = select_device(&p.device).map_err(failed)?;
        // Only the training split is ever materialised here.
        let view = SplitView::<Train>::load(&ingest.dir).map_err(failed)?;
        let (store, model, info) = load_checkpoint(&pretrain.dir, &device).map_err(failed)?;
        check_fits(&model, &view, &ingest.dir).map_err(failed)?;
        let losses = match p.mode {
            CalibMode::Joint => Vec::new(),
            CalibMode::Continued => {
                let settings = CalibSettings {
                    epochs: p.epochs,
                    batch_size: p.batch_size,
                    max_steps: p.max_steps,
                    seed: p.seed,
                    image_ratio: p.image_ratio,
                    text_ratio: p.text_ratio,
                    pair_text: p.pair_text,
                    objective: p.loss.clone(),
                    optim: p.optim.clone(),
                };
                with_threads(ctx.threads, || {
                    calibrate(
                        &store,
                        &model,
                        &view,
                        &settings,
                        &device,
                        &CalibProgress(ctx),
                    )
                    .map_err(|e| stage_error(ctx.id, e))
                })?
            }
        };
        save_checkpoint(ctx.out_dir, &store, &info).map_err(failed)?;
        let record = CalibrationRecord {
            mode: p.mode,
            steps: losses.len() as u64,
            mr_weight: if p.mode == CalibMode::Joint {
                p.mr_weight
            } else {
                0.0
            },
            objective: p.loss.clone(),
            image_ratio: p.image_ratio,
            text_ratio: p.text_ratio,
        };
        write(&ctx.out_dir.join(CALIBRATION_FILE), &json(&record)?)?;
        let mut csv = String::from("step,mr_loss\n");
        for (k, l) in losses.iter().enumerate() {
            csv.push_str(&format!("{k},{l}\n"));
        }
        write(&ctx.out_dir.join("calib_loss.csv"), &csv)?;
        let metrics = serde_json::json!({
            "mode": p.mode,
            "steps": losses.len(),
            "train_pairs": view.len(),
            "first_mr_loss": losses.first(),
            "final_mr_loss": losses.last(),
            "device": device_name(&device),
        });
        write(&ctx.out_dir.join("metrics.json"), &json(&metrics)?)
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

// ---------------------------------------------------------------------------------------------
// coordinate-tune

/// Parameters of `coordinate-tune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinateTuneParams {
    pub task: Task,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub device: String,
    /// Retrieval: negative texts sampled per image.
    pub negatives: usize,
    pub optim: OptimConfig,
    pub gmcoord: GmCoordConfig,
}

impl Default for CoordinateTuneParams {
    fn default() -> Self {
        CoordinateTuneParams {
            task: Task::Classification,
            epochs: 3,
            batch_size: 16,
            seed: 0,
            device: "auto".into(),
            negatives: 3,
            // The new task heads get no head multiplier from the model crate's optimiser (it
            // knows only the pre-training heads), so fine-tuning starts from a higher base rate
            // than pre-training's 1e-4.
            optim: OptimConfig {
                lr: 1e-3,
                ..OptimConfig::default()
            },
            gmcoord: GmCoordConfig::default(),
        }
    }
}

/// `task.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunedInfo {
    pub task: TaskInfo,
    /// GM-Coord's auxiliary heads, when the score source trains them (their parameters are saved).
    pub aux: Option<AuxShape>,
}

/// The shape of GM-Coord's auxiliary heads: input widths per modality, and the output width.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AuxShape {
    pub text_inputs: usize,
    pub image_inputs: usize,
    pub outputs: usize,
}

/// `kind: coordinate-tune` (task fine-tuning with GM-Coord).
pub struct CoordinateTuneKind;

struct TuneProgress<'a, 'b>(&'a StageContext<'b>);

impl StepObserver for TuneProgress<'_, '_> {
    fn on_start(&self, total: u64) {
        self.0.progress.set_total(total);
    }
    fn on_step(&self, s: &CoordStep) {
        self.0.progress.set_position(s.step + 1);
        self.0
            .progress
            .set_message(&format!("loss {:.4} rho {:.3}", s.task_loss, s.rho));
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

impl StageKind for CoordinateTuneKind {
    fn name(&self) -> &'static str {
        "coordinate-tune"
    }
    fn version(&self) -> u32 {
        // 2: with GM-Coord disabled, its modulation settings leave the key; `scores:
        // encoder_heads` added.
        2
    }
    fn summary(&self) -> &'static str {
        "Task fine-tuning (VQA, classification, retrieval) with GM-Coord gradient modulation"
    }
    fn resolve_params(
        &self,
        decl: &StageDecl<'_>,
        params: Params,
    ) -> std::result::Result<Params, Vec<Problem>> {
        let resolved = resolve_typed::<CoordinateTuneParams>(params)?;
        let p: CoordinateTuneParams =
            typed(&resolved).map_err(|e| vec![Problem::new("params", e.to_string())])?;
        let mut problems = needs_inputs(
            decl,
            "coordinate-tune",
            &[&["ingest"], &["pretrain", "calibrate"]],
        );
        problems.extend(device_problem(&p.device));
        if p.batch_size == 0 {
            problems.push(Problem::new("params.batch_size", "must be at least 1"));
        }
        if p.task == Task::Retrieval && p.negatives == 0 {
            problems.push(Problem::new(
                "params.negatives",
                "retrieval needs at least 1 negative per image",
            ));
        }
        if !(p.gmcoord.alpha.is_finite() && p.gmcoord.alpha >= 0.0) {
            problems.push(Problem::new(
                "params.gmcoord.alpha",
                "must be a non-negative number",
            ));
        }
        if p.gmcoord.start_epoch > p.gmcoord.end_epoch {
            problems.push(Problem::new(
                "params.gmcoord.start_epoch",
                "must not be after end_epoch",
            ));
        }
        if let Err((field, message)) = p.optim.validate() {
            problems.push(Problem::new(format!("params.optim.{field}"), message));
        }
        if problems.is_empty() {
            Ok(without_inert_gmcoord(resolved, &p.gmcoord))
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> std::result::Result<(), StageError> {
        let p: CoordinateTuneParams = typed(ctx.params)?;
        let ingest = ctx.require_input("ingest")?;
        let (source, joint_mr) = match ctx.input_of_kind("calibrate") {
            Some(calib) => (calib, read_joint(&calib.dir)?),
            None => (ctx.require_input("pretrain")?, None),
        };
        let device = select_device(&p.device).map_err(failed)?;
        let view = SplitView::<Train>::load(&ingest.dir).map_err(failed)?;
        let (mut store, model, info) = load_checkpoint(&source.dir, &device).map_err(failed)?;
        check_fits(&model, &view, &ingest.dir).map_err(failed)?;
        let settings = FinetuneSettings {
            task: p.task,
            epochs: p.epochs,
            batch_size: p.batch_size,
            seed: p.seed,
            negatives: p.negatives,
            optim: p.optim.clone(),
            gmcoord: p.gmcoord.clone(),
            joint_mr,
        };
        let steps = with_threads(ctx.threads, || {
            finetune(
                &mut store,
                &model,
                &view,
                &settings,
                &device,
                &TuneProgress(ctx),
            )
            .map(|(_, log)| log)
            .map_err(|e| stage_error(ctx.id, e))
        })?;
        save_checkpoint(ctx.out_dir, &store, &info).map_err(failed)?;
        let task = crate::finetune::task_info(view.data(), p.task).map_err(failed)?;
        let tuned = TunedInfo {
            aux: p
                .gmcoord
                .scores
                .aux_widths(&model.config)
                .map(|(text, image)| AuxShape {
                    text_inputs: text,
                    image_inputs: image,
                    outputs: task.outputs,
                }),
            task,
        };
        write(&ctx.out_dir.join(TASK_FILE), &json(&tuned)?)?;
        write(&ctx.out_dir.join("gmcoord.csv"), &steps_csv(&steps))?;
        let x: Vec<f64> = steps.iter().map(|s| s.step as f64).collect();
        let col = |f: fn(&CoordStep) -> f64| steps.iter().map(f).collect::<Vec<f64>>();
        let (rho, ct, ci, loss) = (
            col(|s| s.rho),
            col(|s| s.coeff_text),
            col(|s| s.coeff_image),
            col(|s| s.task_loss),
        );
        curves_png(
            &ctx.out_dir.join("gmcoord.png"),
            &x,
            &[
                Panel {
                    title: "rho = s_text / s_image",
                    series: vec![("rho", &rho)],
                },
                Panel {
                    title: "gradient coefficients",
                    series: vec![("text", &ct), ("image", &ci)],
                },
                Panel {
                    title: "task loss",
                    series: vec![("task loss", &loss)],
                },
            ],
        )
        .map_err(failed)?;
        let finite_rho: Vec<f64> = rho.iter().copied().filter(|r| r.is_finite()).collect();
        let metrics = serde_json::json!({
            "task": p.task,
            "steps": steps.len(),
            "final_task_loss": loss.last(),
            "mean_rho": (!finite_rho.is_empty()).then(|| finite_rho.iter().sum::<f64>() / finite_rho.len() as f64),
            "mean_coeff_text": (!ct.is_empty()).then(|| ct.iter().sum::<f64>() / ct.len() as f64),
            "mean_coeff_image": (!ci.is_empty()).then(|| ci.iter().sum::<f64>() / ci.len() as f64),
            "gmcoord_enabled": p.gmcoord.enabled,
            "device": device_name(&device),
        });
        write(&ctx.out_dir.join("metrics.json"), &json(&metrics)?)
    }
}

/// With GM-Coord disabled, `alpha`, `noise` and the epoch window change nothing, so they leave the
/// resolved params (and the key): sweeping `alpha` then reruns only the arms that modulate.
/// `scores` stays, because auxiliary heads are trained (and saved) even when nothing is modulated.
fn without_inert_gmcoord(mut resolved: Params, gmcoord: &GmCoordConfig) -> Params {
    if !gmcoord.enabled {
        resolved.insert(
            "gmcoord".into(),
            serde_json::json!({"enabled": false, "scores": gmcoord.scores}),
        );
    }
    resolved
}

/// The joint-mode MR settings from a `calibrate` output (None for the continued mode).
fn read_joint(dir: &Path) -> std::result::Result<Option<JointMr>, StageError> {
    let path = dir.join(CALIBRATION_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(StageError::io(format!("reading {}", path.display())))?;
    let record: CalibrationRecord = serde_json::from_str(&text)
        .map_err(|e| StageError::failed(format!("{}: {e}", path.display())))?;
    Ok((record.mode == CalibMode::Joint).then_some(JointMr {
        weight: record.mr_weight,
        objective: record.objective,
        image_ratio: record.image_ratio,
        text_ratio: record.text_ratio,
    }))
}

/// Rebuilds a tuned model (backbone + task head [+ auxiliary heads]) from a `coordinate-tune`
/// output folder.
pub fn load_tuned(
    dir: &Path,
    device: &Device,
) -> Result<(ParamStore, UmdModel, TaskHead, TunedInfo)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| TuneError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    let info: CheckpointInfo =
        serde_json::from_str(&read(MODEL_CONFIG_FILE)?).map_err(|e| TuneError::File {
            path: dir.join(MODEL_CONFIG_FILE).display().to_string(),
            message: e.to_string(),
        })?;
    let tuned: TunedInfo =
        serde_json::from_str(&read(TASK_FILE)?).map_err(|e| TuneError::File {
            path: dir.join(TASK_FILE).display().to_string(),
            message: e.to_string(),
        })?;
    let mut store = ParamStore::new(device, 0);
    let model = UmdModel::new(&mut store, &info.model, info.feature_dims)?;
    let head = TaskHead::new(&mut store, &model, &tuned.task)?;
    if let Some(aux) = tuned.aux {
        Linear::new(
            &mut store,
            "gmcoord_aux.text",
            aux.text_inputs,
            aux.outputs,
            true,
        )?;
        Linear::new(
            &mut store,
            "gmcoord_aux.image",
            aux.image_inputs,
            aux.outputs,
            true,
        )?;
    }
    store.load_into(&dir.join(TUNED_FILE))?;
    Ok((store, model, head, tuned))
}

// ---------------------------------------------------------------------------------------------
// evaluate

/// Parameters of `evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluateParams {
    pub device: String,
    pub batch_size: usize,
    pub retrieval_cap: usize,
    pub ece_bins: usize,
    pub linear_probe: bool,
    pub probe: ProbeSettings,
}

impl Default for EvaluateParams {
    fn default() -> Self {
        let e = EvalSettings::default();
        EvaluateParams {
            device: "auto".into(),
            batch_size: e.batch_size,
            retrieval_cap: e.retrieval_cap,
            ece_bins: e.ece_bins,
            linear_probe: e.linear_probe,
            probe: e.probe,
        }
    }
}

/// `kind: evaluate`.
pub struct EvaluateKind;

impl StageKind for EvaluateKind {
    fn name(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Test-split metrics (VQA, classification, retrieval), ECE and an image-only linear probe"
    }
    fn resolve_params(
        &self,
        decl: &StageDecl<'_>,
        params: Params,
    ) -> std::result::Result<Params, Vec<Problem>> {
        let resolved = resolve_typed::<EvaluateParams>(params)?;
        let p: EvaluateParams =
            typed(&resolved).map_err(|e| vec![Problem::new("params", e.to_string())])?;
        let mut problems = needs_inputs(decl, "evaluate", &[&["ingest"], &["coordinate-tune"]]);
        problems.extend(device_problem(&p.device));
        for (field, value) in [
            ("batch_size", p.batch_size),
            ("retrieval_cap", p.retrieval_cap),
            ("ece_bins", p.ece_bins),
        ] {
            if value == 0 {
                problems.push(Problem::new(
                    format!("params.{field}"),
                    "must be at least 1",
                ));
            }
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> std::result::Result<(), StageError> {
        let p: EvaluateParams = typed(ctx.params)?;
        let ingest = ctx.require_input("ingest")?;
        let tuned_dir = &ctx.require_input("coordinate-tune")?.dir;
        let device = select_device(&p.device).map_err(failed)?;
        let test = SplitView::<Test>::load(&ingest.dir).map_err(failed)?;
        // The probe's training images (no texts): fitting the probe on them is its purpose.
        let probe_train = if p.linear_probe {
            Some(ProbeTrainImages::from_train(
                SplitView::<Train>::load(&ingest.dir).map_err(failed)?,
            ))
        } else {
            None
        };
        let (_store, model, head, tuned) = load_tuned(tuned_dir, &device).map_err(failed)?;
        check_fits(&model, &test, &ingest.dir).map_err(failed)?;
        let settings = EvalSettings {
            batch_size: p.batch_size,
            retrieval_cap: p.retrieval_cap,
            ece_bins: p.ece_bins,
            linear_probe: p.linear_probe,
            probe: p.probe,
        };
        ctx.progress.set_total(1);
        let report = with_threads(ctx.threads, || {
            evaluate(
                &model,
                &head,
                &tuned.task,
                &test,
                probe_train.as_ref(),
                &settings,
                &device,
            )
            .map_err(|e| stage_error(ctx.id, e))
        })?;
        ctx.progress.set_position(1);
        if let Some(matrix) = &report.confusion {
            confusion_png(
                &ctx.out_dir.join("confusion.png"),
                matrix,
                &test.data().meta.classes,
            )
            .map_err(failed)?;
            write(&ctx.out_dir.join("confusion.json"), &json(matrix)?)?;
        }
        write(&ctx.out_dir.join("metrics.json"), &json(&report)?)
    }
}
