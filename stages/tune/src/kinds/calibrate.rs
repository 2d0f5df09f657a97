//! The `calibrate` kind (TD-Calib): parameters, inputs, output files. The work is in
//! [`crate::calibrate`].

use serde::{Deserialize, Serialize};
use umdflow_model::checkpoint::{load_checkpoint, save_checkpoint};
use umdflow_model::device::{device_name, select_device};
use umdflow_model::objective::ObjectiveConfig;
use umdflow_model::optim::OptimConfig;
use umdflow_stages::params::{resolve_typed, typed};
use umdflow_stages::{Params, Problem, StageContext, StageDecl, StageError, StageKind};

use super::{
    check_fits, device_problem, failed, json, needs_inputs, stage_error, with_threads, write,
};
use crate::calibrate::{
    CALIBRATION_FILE, CalibMode, CalibObserver, CalibSettings, CalibrationRecord, PairText,
    calibrate,
};
use crate::views::{SplitView, Train};

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

    /// It finds its inputs by kind and never sees stage names, so renaming reruns nothing.
    fn sees_names(&self) -> bool {
        false
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
