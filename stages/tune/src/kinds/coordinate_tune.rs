//! The `coordinate-tune` kind (fine-tuning with GM-Coord): parameters, inputs, output files, and
//! [`load_tuned`], which rebuilds a tuned model from its output. The work is in
//! [`crate::finetune`].

use std::path::Path;
use umdflow_model::negatives::NegativeSampling;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use umdflow_model::checkpoint::{CheckpointInfo, MODEL_CONFIG_FILE, save_checkpoint};
use umdflow_model::model::UmdModel;
use umdflow_model::model::layers::Linear;
use umdflow_model::optim::OptimConfig;
use umdflow_model::pretrain_stage::checkpointer;
use umdflow_model::store::ParamStore;
use umdflow_stages::params::{resolve_typed, resolve_with_value, typed};
use umdflow_stages::{Params, Problem, StageContext, StageDecl, StageError, StageKind};

use super::{
    TASK_FILE, TUNED_FILE, TrainingSetup, checkpoint_problem, failed, json, needs_inputs,
    stage_error, training_problems, with_threads, write,
};
use crate::calibrate::{CALIBRATION_FILE, CalibMode, CalibrationRecord};
use crate::error::{Result, TuneError};
use crate::finetune::{
    CoordStep, FinetuneSettings, GmCoordConfig, JointMr, ScoreSource, StepObserver, finetune,
    steps_csv,
};
use crate::plots::{Panel, curves_png};
use crate::task::{HeadKind, Task, TaskHead, TaskInfo};

/// Parameters of `coordinate-tune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinateTuneParams {
    pub task: Task,
    /// VQA/classification head: `mlp` (M3AE's) or `linear` (OGM-GE's concat-fusion classifier).
    /// Retrieval's head is always linear.
    pub head: HeadKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub device: String,
    /// Retrieval: negative texts sampled per image.
    pub negatives: usize,
    /// Retrieval: `signature` never draws a negative text of a study with the same findings.
    pub negative_sampling: NegativeSampling,
    pub optim: OptimConfig,
    pub gmcoord: GmCoordConfig,
    /// How often to write a checkpoint to resume from (`10m`, `500 steps`, `off`); not keyed.
    pub checkpoint_every: String,
}

impl Default for CoordinateTuneParams {
    fn default() -> Self {
        CoordinateTuneParams {
            task: Task::Classification,
            head: HeadKind::Mlp,
            epochs: 3,
            batch_size: 16,
            seed: 0,
            device: "auto".into(),
            negatives: 3,
            negative_sampling: NegativeSampling::Signature,
            // Fine-tuning starts from a higher base rate than pre-training's 1e-4; the task heads
            // get `lr_multiplier_head` on top, as M3AE's.
            optim: OptimConfig {
                lr: 1e-3,
                ..OptimConfig::default()
            },
            gmcoord: GmCoordConfig::default(),
            checkpoint_every: umdflow_stages::resume::DEFAULT_INTERVAL.into(),
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
    fn note(&self, line: &str) {
        super::note(self.0, line);
    }
}

impl StageKind for CoordinateTuneKind {
    fn name(&self) -> &'static str {
        "coordinate-tune"
    }

    /// It finds its inputs by kind and never sees stage names, so renaming reruns nothing.
    fn sees_names(&self) -> bool {
        false
    }
    /// How often it checkpoints changes nothing it computes.
    fn unkeyed_params(&self) -> &'static [&'static str] {
        &["checkpoint_every"]
    }
    fn version(&self) -> u32 {
        // 2: with GM-Coord disabled, its modulation settings leave the key; `scores:
        // encoder_heads` added.
        // 3: task and auxiliary heads get `lr_multiplier_head`; under AdamW the GM-Coord
        // coefficient scales the branch's step, not its gradient; task.json records the head.
        // 4: fused CPU kernels (layer norm, softmax, activations, bias) round differently.
        // 5: fused linear layers, polynomial exp/erf in the f32 kernels: different rounding.
        // 6: fused attention (heads read in place) and gemm's AVX-512 kernels on CPUs that have them: different rounding.
        // 7: the text stream's MLPs run on its real (non-padding) rows only (`layers::RealRows`): the same values wherever a loss or a head reads them, rounded differently.
        // 8: the attention's output projection on the text stream's real rows, and in attention at least `layers::MIN_WIDTH_TO_SKIP_QKV` wide its queries, keys and values too: the same values wherever a loss or a head reads them, rounded differently.
        8
    }
    fn summary(&self) -> &'static str {
        "Task fine-tuning (VQA, classification, retrieval) with GM-Coord gradient modulation"
    }
    fn default_params(&self) -> std::result::Result<Params, Vec<Problem>> {
        resolve_typed::<CoordinateTuneParams>(Params::new())
    }

    fn resolve_params(
        &self,
        decl: &StageDecl<'_>,
        params: Params,
    ) -> std::result::Result<Params, Vec<Problem>> {
        let (resolved, p) = resolve_with_value::<CoordinateTuneParams>(params)?;
        let mut problems = needs_inputs(
            decl,
            "coordinate-tune",
            &[&["ingest"], &["pretrain", "calibrate"]],
        );
        problems.extend(training_problems(&p.device, p.batch_size, &p.optim));
        problems.extend(checkpoint_problem(&p.checkpoint_every));
        if p.gmcoord.scores == ScoreSource::LinearSplit
            && p.task != Task::Retrieval
            && p.head != HeadKind::Linear
        {
            problems.push(Problem::new(
                "params.gmcoord.scores",
                "`linear_split` splits a linear fusion head; set `head: linear` (retrieval's head \
                 is always linear)",
            ));
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
        if problems.is_empty() {
            Ok(without_inert_gmcoord(resolved, &p.gmcoord))
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> std::result::Result<(), StageError> {
        let p: CoordinateTuneParams = typed(ctx.params)?;
        let (source, joint_mr) = match ctx.input_of_kind("calibrate") {
            Some(calib) => (calib, read_joint(&calib.dir)?),
            None => (ctx.require_input("pretrain")?, None),
        };
        let TrainingSetup {
            device,
            view,
            mut store,
            model,
            info,
        } = TrainingSetup::load(ctx, &p.device, &source.dir)?;
        let settings = FinetuneSettings {
            task: p.task,
            head: p.head,
            epochs: p.epochs,
            batch_size: p.batch_size,
            seed: p.seed,
            negatives: p.negatives,
            negative_sampling: p.negative_sampling,
            optim: p.optim.clone(),
            gmcoord: p.gmcoord.clone(),
            joint_mr,
        };
        let checkpoints = checkpointer(ctx, &p.checkpoint_every, "coordinate-tune")?;
        let steps = with_threads(ctx.threads, || {
            finetune(
                &mut store,
                &model,
                &view,
                &settings,
                &device,
                &TuneProgress(ctx),
                checkpoints.as_ref(),
            )
            .map(|(_, log)| log)
            .map_err(|e| stage_error(ctx.id, e))
        })?;
        save_checkpoint(ctx.out_dir, &store, &info).map_err(failed)?;
        let task = crate::finetune::task_info(view.data(), p.task, p.head).map_err(failed)?;
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
        });
        TrainingSetup::write_metrics_for(&device, ctx.out_dir, metrics)
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
    let mut store = ParamStore::new(device, 0).with_weight_init(info.model.weight_init);
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
