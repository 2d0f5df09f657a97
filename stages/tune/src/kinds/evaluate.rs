//! The `evaluate` kind: parameters, inputs, output files. The work is in [`crate::evaluate`].

use serde::{Deserialize, Serialize};
use umdflow_model::device::select_device;
use umdflow_stages::params::{resolve_typed, resolve_with_value, typed};
use umdflow_stages::{Params, Problem, StageContext, StageDecl, StageError, StageKind};

use super::coordinate_tune::load_tuned;
use super::{
    check_fits, device_problem, failed, json, needs_inputs, stage_error, with_threads, write,
};
use crate::evaluate::{EvalSettings, evaluate};
use crate::plots::confusion_png;
use crate::probe::ProbeSettings;
use crate::views::{ProbeTrainImages, SplitView, Test, Train};

/// Parameters of `evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluateParams {
    pub device: String,
    pub batch_size: usize,
    pub retrieval_cap: usize,
    pub ece_bins: usize,
    pub blind: bool,
    pub tuned_probe: bool,
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
            blind: e.blind,
            tuned_probe: e.tuned_probe,
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

    /// It finds its inputs by kind and never sees stage names, so renaming reruns nothing.
    fn sees_names(&self) -> bool {
        false
    }
    fn version(&self) -> u32 {
        // 3: fused CPU kernels (layer norm, softmax, activations, bias) round differently.
        // 4: fused linear layers, polynomial exp/erf in the f32 kernels: different rounding.
        // 5: fused attention (heads read in place) and gemm's AVX-512 kernels on CPUs that have them: different rounding.
        // 6: the text stream's MLPs run on its real (non-padding) rows only (`layers::RealRows`): the same values wherever a loss or a head reads them, rounded differently.
        // 7: the attention's output projection on the text stream's real rows, and in attention at least `layers::MIN_WIDTH_TO_SKIP_QKV` wide its queries, keys and values too: the same values wherever a loss or a head reads them, rounded differently.
        7
    }
    fn summary(&self) -> &'static str {
        "Test-split metrics (VQA, classification, retrieval), ECE, blank-image and blank-text passes"
    }
    fn default_params(&self) -> std::result::Result<Params, Vec<Problem>> {
        resolve_typed::<EvaluateParams>(Params::new())
    }

    fn resolve_params(
        &self,
        decl: &StageDecl<'_>,
        params: Params,
    ) -> std::result::Result<Params, Vec<Problem>> {
        let (resolved, p) = resolve_with_value::<EvaluateParams>(params)?;
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
        let device = select_device(&p.device, ctx.gpus).map_err(failed)?;
        let test = SplitView::<Test>::load(&ingest.dir).map_err(failed)?;
        // The probe's training images (no texts): fitting the probe on them is its purpose.
        let probe_train = if p.tuned_probe {
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
            blind: p.blind,
            tuned_probe: p.tuned_probe,
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
        if let Some(matrix) = &report.normal.confusion {
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
