//! The `probe` kind: a frozen-feature linear probe of a pre-trained or calibrated checkpoint,
//! with the raw-pixel baseline beside it on the same split, and the checkpoint's own heads on
//! held-out data (MLM on finding words, ITM with clean negatives, zero-shot through ITM; see
//! [`crate::probe_heads`]). The random-init baseline is the same kind on a `pretrain` stage
//! with `max_steps: 0`.

use serde::{Deserialize, Serialize};
use umdflow_model::checkpoint::load_checkpoint;
use umdflow_model::device::select_device;
use umdflow_stages::params::{resolve_typed, resolve_with_value, typed};
use umdflow_stages::{Params, Problem, StageContext, StageDecl, StageError, StageKind};

use super::{
    check_fits, device_problem, failed, json, needs_inputs, stage_error, with_threads, write,
};
use crate::error::Result;
use crate::probe::{Features, Findings, ProbeScores, ProbeSettings, ProbeSplit, score_probe};
use crate::probe_features::{encoder_features, pixel_features, pool_for};
use crate::probe_heads::{HeadReport, HeadSettings, TestRows, head_measures};
use crate::views::{ProbeTrainImages, SplitView, Test, Train};

/// Parameters of `probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeParams {
    pub device: String,
    pub batch_size: usize,
    pub probe: ProbeSettings,
    /// Also fit the probe on raw pixels (no model), on the same split.
    pub pixels: bool,
    /// Raw pixels are average-pooled to at most this many per image side.
    pub pixel_side: usize,
    /// Held-out MLM accuracy on finding words, beside other words and a frequency baseline.
    pub mlm: bool,
    /// The ITM head's accuracy on held-out matched pairs and on clean negatives.
    pub itm: bool,
    /// Zero-shot classification of the downstream test images through the ITM head.
    pub zero_shot: bool,
    /// Share of each held-out row's non-finding tokens the MLM measure masks (in (0, 1]).
    pub mlm_other_ratio: f64,
    /// Seed of the MLM measure's other-token draw and of the ITM measure's negatives.
    pub measure_seed: u64,
}

impl Default for ProbeParams {
    fn default() -> Self {
        ProbeParams {
            device: "auto".into(),
            batch_size: 64,
            probe: ProbeSettings::default(),
            pixels: true,
            pixel_side: 16,
            mlm: true,
            itm: true,
            zero_shot: true,
            mlm_other_ratio: 0.15,
            measure_seed: 0,
        }
    }
}

/// `metrics.json` of a `probe` stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// The kind of the checkpoint's stage: `pretrain` or `calibrate`.
    pub checkpoint: String,
    pub train_images: usize,
    pub test_images: usize,
    /// Test accuracy of always answering the training split's most frequent class.
    pub majority_accuracy: Option<f64>,
    /// The probe on the checkpoint's image encoder, [CLS ‖ mean of patch tokens].
    pub encoder: ProbeScores,
    /// The probe on average-pooled raw pixels (`pixels: true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels: Option<ProbeScores>,
    /// Side of the pooled pixel grid the pixel probe read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_grid: Option<usize>,
    /// The checkpoint's own heads: `text_source`, `mlm`, `itm`, `zero_shot`, `skipped`.
    #[serde(flatten)]
    pub heads: HeadReport,
}

/// `kind: probe`.
pub struct ProbeKind;

const CHECKPOINT_KINDS: [&str; 2] = ["pretrain", "calibrate"];

impl StageKind for ProbeKind {
    fn name(&self) -> &'static str {
        "probe"
    }

    /// It finds its inputs by kind and never sees stage names, so renaming reruns nothing.
    fn sees_names(&self) -> bool {
        false
    }
    fn version(&self) -> u32 {
        // 3: fused CPU kernels (layer norm, softmax, activations, bias) round differently.
        // 4: finding words are found in byte-level BPE rows (RoBERTa's tokenizer) and matched in
        //    lower case; before, such rows had no finding tokens.
        // 5: fused linear layers, polynomial exp/erf in the f32 kernels: different rounding.
        // 6: fused attention (heads read in place) and gemm's AVX-512 kernels on CPUs that have them: different rounding.
        // 7: the text stream's MLPs run on its real (non-padding) rows only (`layers::RealRows`): the same values wherever a loss or a head reads them, rounded differently.
        // 8: the attention's output projection on the text stream's real rows, and in attention at least `layers::MIN_WIDTH_TO_SKIP_QKV` wide its queries, keys and values too: the same values wherever a loss or a head reads them, rounded differently.
        8
    }
    fn summary(&self) -> &'static str {
        "Frozen-feature linear probe of a pretrain/calibrate checkpoint's image encoder, beside raw pixels; its MLM/ITM heads on held-out data"
    }
    fn default_params(&self) -> std::result::Result<Params, Vec<Problem>> {
        resolve_typed::<ProbeParams>(Params::new())
    }

    fn resolve_params(
        &self,
        decl: &StageDecl<'_>,
        params: Params,
    ) -> std::result::Result<Params, Vec<Problem>> {
        let (resolved, p) = resolve_with_value::<ProbeParams>(params)?;
        let mut problems = needs_inputs(decl, "probe", &[&["ingest"], &CHECKPOINT_KINDS]);
        let checkpoints = decl
            .inputs
            .iter()
            .filter(|(_, k)| CHECKPOINT_KINDS.contains(&k.as_str()))
            .count();
        if checkpoints > 1 {
            problems.push(Problem::new(
                "inputs",
                "a `probe` stage reads one checkpoint: give it one `pretrain` or one `calibrate` stage",
            ));
        }
        if decl.inputs.iter().filter(|(_, k)| k == "ingest").count() > 2 {
            problems.push(Problem::new(
                "inputs",
                "a `probe` stage reads at most two `ingest` stages: the downstream split first, \
                 then (optionally) the held-out report text, e.g. the pre-training corpus",
            ));
        }
        if !(p.mlm_other_ratio > 0.0 && p.mlm_other_ratio <= 1.0) {
            problems.push(Problem::new(
                "params.mlm_other_ratio",
                format!("must lie in (0, 1], got {}", p.mlm_other_ratio),
            ));
        }
        problems.extend(device_problem(&p.device));
        for (field, value) in [
            ("batch_size", p.batch_size),
            ("pixel_side", p.pixel_side),
            ("probe.iterations", p.probe.iterations),
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
        let p: ProbeParams = typed(ctx.params)?;
        let ingest = ctx.require_input("ingest")?;
        let checkpoint = CHECKPOINT_KINDS
            .iter()
            .find_map(|k| ctx.input_of_kind(k))
            .ok_or_else(|| {
                StageError::failed(format!(
                    "stage `{}` needs a `pretrain` or `calibrate` input",
                    ctx.name
                ))
            })?;
        // The second `ingest` input, if any, holds the held-out report text.
        let text_ingest = ctx.inputs.iter().filter(|i| i.kind == "ingest").nth(1);
        let device = select_device(&p.device, ctx.gpus).map_err(failed)?;
        let test = SplitView::<Test>::load(&ingest.dir).map_err(failed)?;
        // The probe's training images and labels (no texts): fitting the probe on them is its purpose.
        let train =
            ProbeTrainImages::from_train(SplitView::<Train>::load(&ingest.dir).map_err(failed)?);
        let (_store, model, _info) = load_checkpoint(&checkpoint.dir, &device).map_err(failed)?;
        check_fits(&model, &test, &ingest.dir).map_err(failed)?;
        let held_out = match text_ingest {
            Some(input) => {
                let view = SplitView::<Test>::load(&input.dir).map_err(failed)?;
                check_fits(&model, &view, &input.dir).map_err(failed)?;
                Some((view, input.dir.as_path()))
            }
            None => None,
        };
        let text = match &held_out {
            Some((view, dir)) => TestRows {
                data: view.data(),
                dir,
            },
            None => TestRows {
                data: test.data(),
                dir: &ingest.dir,
            },
        };
        let downstream = TestRows {
            data: test.data(),
            dir: &ingest.dir,
        };
        let settings = HeadSettings {
            mlm: p.mlm,
            itm: p.itm,
            zero_shot: p.zero_shot,
            mlm_other_ratio: p.mlm_other_ratio,
            seed: p.measure_seed,
            batch: p.batch_size,
        };
        ctx.progress.set_total(2);
        let mut report = with_threads(ctx.threads, || {
            probe_report(&checkpoint.kind, &model, &train, &test, &p, &device)
                .map_err(|e| stage_error(ctx.id, e))
        })?;
        ctx.progress.set_position(1);
        report.heads = with_threads(ctx.threads, || {
            head_measures(
                &model,
                downstream,
                text,
                held_out.is_some(),
                settings,
                &device,
            )
            .map_err(|e| stage_error(ctx.id, e))
        })?;
        ctx.progress.set_position(2);
        write(&ctx.out_dir.join("metrics.json"), &json(&report)?)
    }
}

/// Fits and scores the encoder probe (and the pixel probe) on one split; `checkpoint` is the
/// kind of the stage the model came from.
fn probe_report(
    checkpoint: &str,
    model: &umdflow_model::model::UmdModel,
    train: &ProbeTrainImages,
    test: &SplitView<Test>,
    p: &ProbeParams,
    device: &candle_core::Device,
) -> Result<ProbeReport> {
    let (tr, te) = (train.data(), test.data());
    let classes = te.meta.classes.len().max(1);
    let train_labels: Vec<usize> = tr.labels.iter().map(|&l| l as usize).collect();
    let test_labels: Vec<usize> = te.labels.iter().map(|&l| l as usize).collect();
    let score = |train_features: &Features, test_features: &Features| -> Result<ProbeScores> {
        score_probe(
            ProbeSplit {
                features: train_features,
                labels: &train_labels,
                findings: Findings::of(tr),
            },
            ProbeSplit {
                features: test_features,
                labels: &test_labels,
                findings: Findings::of(te),
            },
            classes,
            p.probe,
        )
    };
    let encoder = score(
        &encoder_features(model, tr, p.batch_size, device)?,
        &encoder_features(model, te, p.batch_size, device)?,
    )?;
    let (pixels, pixel_grid) = if p.pixels {
        let pool = pool_for(te.size, p.pixel_side);
        let scores = score(&pixel_features(tr, pool)?, &pixel_features(te, pool)?)?;
        (Some(scores), Some(te.size / pool))
    } else {
        (None, None)
    };
    Ok(ProbeReport {
        checkpoint: checkpoint.to_string(),
        train_images: tr.n,
        test_images: te.n,
        majority_accuracy: majority_accuracy(&train_labels, &test_labels, classes),
        encoder,
        pixels,
        pixel_grid,
        heads: HeadReport::default(),
    })
}

/// Test accuracy of predicting the most frequent training class (the lowest index on ties).
fn majority_accuracy(train: &[usize], test: &[usize], classes: usize) -> Option<f64> {
    let mut counts = vec![0usize; classes];
    for &l in train {
        if let Some(c) = counts.get_mut(l) {
            *c += 1;
        }
    }
    let majority = crate::probe::argmax(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>());
    (!test.is_empty())
        .then(|| test.iter().filter(|&&l| l == majority).count() as f64 / test.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_is_the_training_majority_scored_on_test() {
        // Training majority is class 2; test has one 2 in four.
        assert_eq!(
            majority_accuracy(&[2, 2, 0, 1], &[0, 2, 1, 1], 3),
            Some(0.25)
        );
        assert_eq!(majority_accuracy(&[0], &[], 3), None);
    }
}
