//! The `calibrate` kind (TD-Calib): parameters, inputs, output files. The work is in
//! [`crate::calibrate`].

use serde::{Deserialize, Serialize};
use umdflow_model::checkpoint::save_checkpoint;
use umdflow_model::objective::ObjectiveConfig;
use umdflow_model::optim::OptimConfig;
use umdflow_model::pretrain_stage::checkpointer;
use umdflow_model::train::{StepRecord, TrainObserver};
use umdflow_stages::params::{resolve_typed, resolve_with_value, typed};
use umdflow_stages::{Params, Problem, StageContext, StageDecl, StageError, StageKind};

use super::{
    TrainingSetup, checkpoint_problem, failed, json, needs_inputs, stage_error, training_problems,
    with_threads, write,
};
use crate::calibrate::{
    CALIBRATION_FILE, CalibMode, CalibSettings, CalibrationRecord, PairText, calibrate,
};

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
    /// How often to write a checkpoint to resume from (`10m`, `500 steps`, `off`); not keyed.
    pub checkpoint_every: String,
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
            checkpoint_every: umdflow_stages::resume::DEFAULT_INTERVAL.into(),
        }
    }
}

/// `kind: calibrate` (TD-Calib).
pub struct CalibrateKind;

struct CalibProgress<'a, 'b>(&'a StageContext<'b>);

impl TrainObserver for CalibProgress<'_, '_> {
    fn on_start(&self, total: u64) {
        self.0.progress.set_total(total);
    }
    fn on_step(&self, record: &StepRecord) {
        self.0.progress.set_position(record.step + 1);
        self.0
            .progress
            .set_message(&format!("MR loss {:.4}", record.total));
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
    fn note(&self, line: &str) {
        super::note(self.0, line);
    }
}

impl StageKind for CalibrateKind {
    fn name(&self) -> &'static str {
        "calibrate"
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
        // 2: training runs through pretrain's loop (non-finite gradient norms stop it; the EMA
        // momentum can follow a schedule); joint mode with EMA targets works.
        // 3: fused CPU kernels (layer norm, softmax, activations, bias) round differently.
        // 4: pretrain's loop adds the passes' gradients in a fixed order, which rounds
        // differently (`umdflow_model::gradients::mr_gradients`).
        // 5: fused linear layers, polynomial exp/erf in the f32 kernels: different rounding.
        // 6: fused attention (heads read in place) and gemm's AVX-512 kernels on CPUs that have them: different rounding.
        // 7: the text stream's MLPs run on its real (non-padding) rows only (`layers::RealRows`): the same values wherever a loss or a head reads them, rounded differently.
        // 8: the attention's output projection on the text stream's real rows, and in attention at least `layers::MIN_WIDTH_TO_SKIP_QKV` wide its queries, keys and values too: the same values wherever a loss or a head reads them, rounded differently.
        8
    }
    fn summary(&self) -> &'static str {
        "TD-Calib: continued MR-Pretrain on the downstream training split (or the joint-loss mode)"
    }
    fn default_params(&self) -> std::result::Result<Params, Vec<Problem>> {
        resolve_typed::<CalibrateParams>(Params::new())
    }

    fn resolve_params(
        &self,
        decl: &StageDecl<'_>,
        params: Params,
    ) -> std::result::Result<Params, Vec<Problem>> {
        let (resolved, p) = resolve_with_value::<CalibrateParams>(params)?;
        let mut problems = needs_inputs(decl, "calibrate", &[&["ingest"], &["pretrain"]]);
        problems.extend(training_problems(&p.device, p.batch_size, &p.optim));
        problems.extend(loss_problems(&p));
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
        problems.extend(checkpoint_problem(&p.checkpoint_every));
        if !(p.mr_weight.is_finite() && p.mr_weight >= 0.0) {
            problems.push(Problem::new(
                "params.mr_weight",
                "must be a non-negative number",
            ));
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> std::result::Result<(), StageError> {
        let p: CalibrateParams = typed(ctx.params)?;
        let pretrain = ctx.require_input("pretrain")?;
        // Only the training split is ever materialised here.
        let setup = TrainingSetup::load(ctx, &p.device, &pretrain.dir)?;
        let records = match p.mode {
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
                let checkpoints = checkpointer(ctx, &p.checkpoint_every, "calibrate")?;
                with_threads(ctx.threads, || {
                    calibrate(
                        &setup.store,
                        &setup.model,
                        &setup.view,
                        &settings,
                        &setup.device,
                        &CalibProgress(ctx),
                        checkpoints.as_ref(),
                    )
                    .map_err(|e| stage_error(ctx.id, e))
                })?
            }
        };
        save_checkpoint(ctx.out_dir, &setup.store, &setup.info).map_err(failed)?;
        let record = CalibrationRecord {
            mode: p.mode,
            steps: records.len() as u64,
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
        let losses: Vec<f64> = records.iter().map(|r| f64::from(r.total)).collect();
        let mut csv = String::from("step,mr_loss\n");
        for (k, l) in losses.iter().enumerate() {
            csv.push_str(&format!("{k},{l}\n"));
        }
        write(&ctx.out_dir.join("calib_loss.csv"), &csv)?;
        let metrics = serde_json::json!({
            "mode": p.mode,
            "steps": losses.len(),
            "train_pairs": setup.view.len(),
            "first_mr_loss": losses.first(),
            "final_mr_loss": losses.last(),
        });
        setup.write_metrics(ctx.out_dir, metrics)
    }
}

/// The loss settings that can only fail once training runs, rejected before anything runs.
fn loss_problems(p: &CalibrateParams) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err((field, message)) = p.loss.validate_choices() {
        problems.push(Problem::new(format!("params.loss.{field}"), message));
    }
    let l = &p.loss;
    let only_mlm = l.mlm && !(l.mim || l.itm || l.feamim || l.feamlm);
    if p.text_ratio == 0.0 && only_mlm {
        problems.push(Problem::new(
            "params.text_ratio",
            "is 0, so no token is selected for MLM, and every other loss term that would give a \
             step a loss is off (params.loss); raise text_ratio or switch on another term",
        ));
    }
    problems
}
