//! The `pretrain` stage kind: MR-Pretrain of the UMD model on an ingest artifact with a mask plan.
//!
//! Output: `checkpoint.safetensors` + `model_config.json` (see [`crate::checkpoint`]),
//! `loss_curve.csv` (one row per step), `loss_curve.png`, `metrics.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use umdflow_data::artifact::{Dataset, tokenizer_path};
use umdflow_data::tokenizer::TextTokenizer;
use umdflow_stages::params::{resolve_typed, resolve_with_value, typed};
use umdflow_stages::{
    Interval, Params, Problem, ReadPath, StageContext, StageDecl, StageError, StageKind,
};

use crate::checkpoint::save_checkpoint;
use crate::config::{ModelConfig, PRESETS};
use crate::config::{VisionPositions, WeightInit};
use crate::device::{device_name, select_device, spec_problem};
use crate::error::ModelError;
use crate::masking::MaskPlan;
use crate::objective::{ObjectiveConfig, TERM_ORDER};
use crate::optim::OptimConfig;
use crate::plot::{Series, line_plot};
use crate::pretrained::{EncoderInit, InitFolders, load_for_data};
use crate::resume::Checkpointer;
use crate::train::{
    PretrainStart, StepRecord, TrainObserver, TrainOutcome, TrainSettings, pretrain_with,
};

/// Parameters of `pretrain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainParams {
    /// Model sizes: `tiny`, `small` or `base` (M3AE's).
    pub preset: String,
    pub batch_size: usize,
    pub seed: u64,
    /// `auto`, `cpu` or `cuda:N`.
    pub device: String,
    /// Stop early after this many steps (null: all epochs of the mask plan).
    pub max_steps: Option<u64>,
    /// The ViT's position embeddings: `learned` (CLIP's, M3AE's) or `sincos` (MAE's fixed 2-D
    /// table, not trained).
    pub vision_positions: VisionPositions,
    /// How weight matrices are first drawn: `xavier` (MAE's, scaled by fan-in and fan-out) or
    /// `normal` (N(0, 0.02), M3AE's for its randomly initialised parts at width 768).
    pub weight_init: WeightInit,
    /// Loss terms and feature-target choices.
    pub loss: ObjectiveConfig,
    pub optim: OptimConfig,
    /// How often to write a checkpoint to resume from (`10m`, `90s`, `500 steps`, `off`). It
    /// cannot change the result, so it is not in the key.
    pub checkpoint_every: String,
    /// Pretrained encoders to start from (local Hugging Face folders); absent: random weights.
    /// Left out of the resolved params when absent, so pipelines without it keep their keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<InitParams>,
}

/// `init:` of `pretrain`: folders in the Hugging Face layout, relative to the pipeline file. Their
/// content is hashed into the stage key (see [`PretrainKind::reads`]), their paths are not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitParams {
    /// A CLIP vision encoder or a plain ViT (`config.json`, `model.safetensors`, optionally
    /// `preprocessor_config.json`).
    pub image: Option<String>,
    /// A BERT or RoBERTa encoder (`config.json`, `model.safetensors`).
    pub text: Option<String>,
    /// Keep only the image encoder's first blocks (M3AE keeps 11 of CLIP ViT-B/16's 12).
    pub image_layers: Option<usize>,
}

impl Default for PretrainParams {
    fn default() -> Self {
        PretrainParams {
            preset: "tiny".into(),
            batch_size: 32,
            seed: 0,
            device: "auto".into(),
            max_steps: None,
            vision_positions: VisionPositions::Learned,
            weight_init: WeightInit::Xavier,
            loss: ObjectiveConfig::default(),
            optim: OptimConfig::default(),
            checkpoint_every: umdflow_stages::resume::DEFAULT_INTERVAL.into(),
            init: None,
        }
    }
}

impl PretrainParams {
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !PRESETS.contains(&self.preset.as_str()) {
            problems.push(Problem::new(
                "params.preset",
                format!(
                    "unknown preset `{}`; expected one of {}",
                    self.preset,
                    PRESETS.join(", ")
                ),
            ));
        }
        if self.batch_size == 0 {
            problems.push(Problem::new("params.batch_size", "must be at least 1"));
        }
        if let Some(message) = spec_problem(&self.device) {
            problems.push(Problem::new("params.device", message));
        }
        // Layer counts and widths do not depend on the data, so the preset can be checked with
        // stand-in sizes. An encoder `init` loads takes its depth from its folder: the loss is
        // checked against it when the stage runs (`train::pretrain_with`).
        if let Ok(mut model) = ModelConfig::preset(&self.preset, 32, 1, 8, 8, 8) {
            let init = self.init.clone().unwrap_or_default();
            let preset_depths: Vec<(&str, usize)> = [
                ("image encoder", model.vision_layers, init.image.is_none()),
                ("text encoder", model.text_layers, init.text.is_none()),
            ]
            .into_iter()
            .filter(|&(_, _, from_preset)| from_preset)
            .map(|(name, blocks, _)| (name, blocks))
            .collect();
            if let Err((field, message)) = self
                .loss
                .validate_choices()
                .and_then(|()| self.loss.validate_depths(&preset_depths))
            {
                problems.push(Problem::new(format!("params.loss.{field}"), message));
            }
            model.vision_positions = self.vision_positions;
            if let Err(e) = model.validate() {
                problems.push(Problem::new("params.vision_positions", e.to_string()));
            }
        }
        if let Err((field, message)) = self.optim.validate() {
            problems.push(Problem::new(format!("params.optim.{field}"), message));
        }
        if let Err(message) = Interval::parse(&self.checkpoint_every) {
            problems.push(Problem::new("params.checkpoint_every", message));
        }
        if let Some(init) = &self.init {
            if init.image.is_none() && init.text.is_none() {
                problems.push(Problem::new(
                    "params.init",
                    "names no folder; give `image:`, `text:` or both (or leave `init` out)",
                ));
            }
            if init.image_layers.is_some() && init.image.is_none() {
                problems.push(Problem::new(
                    "params.init.image_layers",
                    "needs `init.image`",
                ));
            }
            if init.image_layers == Some(0) {
                problems.push(Problem::new(
                    "params.init.image_layers",
                    "must be at least 1",
                ));
            }
        }
        problems
    }
}

/// `kind: pretrain`.
pub struct PretrainKind;

impl StageKind for PretrainKind {
    fn name(&self) -> &'static str {
        "pretrain"
    }

    /// It finds its inputs by kind and never sees stage names, so renaming reruns nothing.
    fn sees_names(&self) -> bool {
        false
    }

    /// How often it checkpoints changes nothing it computes.
    fn unkeyed_params(&self) -> &'static [&'static str] {
        &["checkpoint_every"]
    }

    /// The `init` folders: hashed by content into the key, their paths left out of it.
    fn reads(&self, params: &Params) -> Vec<ReadPath> {
        let init = params.get("init");
        ["image", "text"]
            .into_iter()
            .filter_map(|slot| {
                let path = init?.get(slot)?.as_str()?;
                Some(ReadPath {
                    param: format!("init.{slot}"),
                    path: path.into(),
                })
            })
            .collect()
    }

    fn version(&self) -> u32 {
        // 2: wall-clock times moved from metrics.json to the stage log, so identical runs give
        // identical outputs.
        // 3: model_config.json records `vision_positions`.
        // 4: `weight_init` (default xavier), recorded in model_config.json.
        // 5: fused CPU kernels (layer norm, softmax, activations, bias) round differently.
        // 6: the step's passes are back-propagated separately and their gradients added in a
        // fixed order (`gradients::mr_gradients`), which rounds differently.
        // 7: fused linear layers (bias added before the product), polynomial exp/erf in the f32
        // kernels: different rounding.
        // 8: fused attention (heads read in place) and gemm's AVX-512 kernels on CPUs that have them: different rounding.
        // 9: the text stream's MLPs run on its real (non-padding) rows only (`layers::RealRows`): the same values wherever a loss or a head reads them, rounded differently.
        // 10: the attention's output projection on the text stream's real rows, and in attention at least `layers::MIN_WIDTH_TO_SKIP_QKV` wide its queries, keys and values too: the same values wherever a loss or a head reads them, rounded differently.
        10
    }

    fn summary(&self) -> &'static str {
        "MR-Pretrain: MIM + MLM + ITM + alpha·(FeaMIM + FeaMLM) on an ingest artifact and a mask plan"
    }

    fn default_params(&self) -> Result<Params, Vec<Problem>> {
        resolve_typed::<PretrainParams>(Params::new())
    }

    fn resolve_params(&self, decl: &StageDecl<'_>, params: Params) -> Result<Params, Vec<Problem>> {
        let (resolved, typed) = resolve_with_value::<PretrainParams>(params)?;
        let mut problems = typed.problems();
        for needed in ["ingest", "mask"] {
            if !decl.inputs.iter().any(|(_, kind)| kind == needed) {
                problems.push(Problem::new(
                    "inputs",
                    format!("a `pretrain` stage needs a `{needed}` stage in its inputs"),
                ));
            }
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        let params: PretrainParams = typed(ctx.params)?;
        let ingest = ctx.require_input("ingest")?;
        let mask = ctx.require_input("mask")?;
        let dataset = Dataset::load(&ingest.dir).map_err(|e| StageError::failed(e.to_string()))?;
        let plan = MaskPlan::load(&mask.dir).map_err(failed)?;
        let device = select_device(&params.device, ctx.gpus).map_err(failed)?;
        let pretrained = load_init(
            params.init.as_ref(),
            ctx,
            &ingest.dir,
            &dataset,
            &plan,
            &device,
        )?;
        let settings = TrainSettings {
            preset: params.preset.clone(),
            batch_size: params.batch_size,
            seed: params.seed,
            objective: params.loss.clone(),
            optim: params.optim.clone(),
            max_steps: params.max_steps,
            vision_positions: params.vision_positions,
            weight_init: params.weight_init,
        };
        let observer = StageObserver { ctx };
        let checkpoints = checkpointer(ctx, &params.checkpoint_every, "pretrain")?;
        let start = PretrainStart {
            pretrained: &pretrained,
            checkpoints: checkpoints.as_ref(),
        };
        let outcome = pretrain_with(
            &dataset,
            &plan,
            &settings,
            &start,
            &device,
            ctx.threads,
            &observer,
        )
        .map_err(|e| match e {
            ModelError::Cancelled => StageError::Cancelled,
            other => StageError::failed(format!("pretrain `{}`: {other}", ctx.id)),
        })?;
        write_outputs(
            ctx.out_dir,
            &outcome,
            &settings,
            &device_name(&device),
            ctx.threads,
        )
        .map_err(failed)?;
        ctx.log(&format!(
            "trained {} steps in {:.2} s ({:.1} samples/s)",
            outcome.records.len(),
            outcome.seconds,
            outcome.samples_seen as f64 / outcome.seconds.max(1e-9)
        ))
    }
}

/// The encoders `init` names, read from folders relative to the pipeline file.
fn load_init(
    init: Option<&InitParams>,
    ctx: &StageContext<'_>,
    ingest_dir: &Path,
    dataset: &Dataset,
    plan: &MaskPlan,
    device: &candle_core::Device,
) -> Result<Vec<EncoderInit>, StageError> {
    let Some(init) = init else {
        return Ok(Vec::new());
    };
    // `join` keeps an absolute path as it is.
    let image = init.image.as_ref().map(|p| ctx.work_dir.join(p));
    let text = init.text.as_ref().map(|p| ctx.work_dir.join(p));
    let folders = InitFolders {
        image: image.as_deref(),
        text: text.as_deref(),
        image_layers: init.image_layers,
    };
    if let Some(text) = &text {
        same_tokenizer(text, ingest_dir).map_err(|message| {
            StageError::failed(format!("pretrain `{}`: init.text: {message}", ctx.id))
        })?;
    }
    load_for_data(&folders, dataset, plan.meta.patch_size, device)
        .map_err(|e| StageError::failed(format!("pretrain `{}`: init: {e}", ctx.id)))
}

/// The ingest's token ids mean what the text encoder learned only if they come from its own
/// tokenizer: when the encoder's folder has a `tokenizer.json`, the ingest's must have the same
/// vocabulary (token → id).
fn same_tokenizer(text_dir: &Path, ingest_dir: &Path) -> Result<(), String> {
    let theirs = tokenizer_path(text_dir);
    if !theirs.is_file() {
        return Ok(());
    }
    let load = |path: &Path| TextTokenizer::load(path).map_err(|e| e.to_string());
    let theirs_vocab = load(&theirs)?.vocab();
    let ours_vocab = load(&tokenizer_path(ingest_dir))?.vocab();
    if theirs_vocab == ours_vocab {
        Ok(())
    } else {
        Err(format!(
            "the ingest tokenized with another vocabulary ({} tokens) than {} ({} tokens); give \
             the ingest `tokenizer: {}`",
            ours_vocab.len(),
            theirs.display(),
            theirs_vocab.len(),
            theirs.display()
        ))
    }
}

fn failed(e: ModelError) -> StageError {
    StageError::failed(e.to_string())
}

/// The checkpoints of a training kind, in the instance's resume folder (none without one, e.g.
/// in tests that run a kind directly). `purpose` names the kind, so two never share a file.
pub fn checkpointer(
    ctx: &StageContext<'_>,
    every: &str,
    purpose: &str,
) -> Result<Option<Checkpointer>, StageError> {
    let interval = Interval::parse(every).map_err(StageError::Failed)?;
    Ok(ctx.resume.map(|resume| Checkpointer {
        path: resume.dir.join(format!("{purpose}.ckpt")),
        key: resume.key.to_string(),
        purpose: purpose.to_string(),
        interval,
    }))
}

struct StageObserver<'a, 'b> {
    ctx: &'a StageContext<'b>,
}

impl TrainObserver for StageObserver<'_, '_> {
    fn on_start(&self, total_steps: u64) {
        self.ctx.progress.set_total(total_steps);
    }

    fn on_step(&self, record: &StepRecord) {
        self.ctx.progress.set_position(record.step + 1);
        self.ctx
            .progress
            .set_message(&format!("loss {:.4}", record.total));
    }

    fn cancelled(&self) -> bool {
        self.ctx.cancelled()
    }

    fn note(&self, line: &str) {
        tracing::info!("{}: {line}", self.ctx.id);
        let _ = self.ctx.log(line);
    }
}

/// Colours of the curves in `loss_curve.png` (also listed in `metrics.json`).
pub const CURVE_COLOURS: [(&str, [u8; 3]); 6] = [
    ("total", [0, 0, 0]),
    ("mim", [214, 39, 40]),
    ("mlm", [31, 119, 180]),
    ("itm", [44, 160, 44]),
    ("feamim", [255, 127, 14]),
    ("feamlm", [148, 103, 189]),
];

/// Writes checkpoint, curves and metrics of a finished run into `dir`.
pub fn write_outputs(
    dir: &Path,
    outcome: &TrainOutcome,
    settings: &TrainSettings,
    device: &str,
    threads: usize,
) -> crate::error::Result<()> {
    save_checkpoint(dir, &outcome.store, &outcome.info)?;
    let file_err = |path: &Path, e: std::io::Error| ModelError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };

    let mut csv = String::from("step,epoch,lr,grad_norm,total,mim,mlm,itm,feamim,feamlm\n");
    for r in &outcome.records {
        let _ = write!(
            csv,
            "{},{},{:e},{},{}",
            r.step, r.epoch, r.lr, r.grad_norm, r.total
        );
        for name in TERM_ORDER {
            match r.terms.iter().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    let _ = write!(csv, ",{v}");
                }
                None => csv.push(','),
            }
        }
        csv.push('\n');
    }
    let path = dir.join("loss_curve.csv");
    std::fs::write(&path, csv).map_err(|e| file_err(&path, e))?;

    let curves: Vec<(&str, [u8; 3], Vec<f32>)> = CURVE_COLOURS
        .iter()
        .filter_map(|(name, colour)| {
            let values: Vec<f32> = outcome
                .records
                .iter()
                .filter_map(|r| {
                    if *name == "total" {
                        Some(r.total)
                    } else {
                        r.terms.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
                    }
                })
                .collect();
            (!values.is_empty()).then_some((*name, *colour, values))
        })
        .collect();
    let series: Vec<Series<'_>> = curves
        .iter()
        .map(|(_, colour, values)| Series {
            colour: *colour,
            values,
        })
        .collect();
    line_plot(&series, 800, 400).save_png(&dir.join("loss_curve.png"))?;

    let metrics = metrics_json(outcome, settings, device, threads, &curves);
    let path = dir.join("metrics.json");
    let text =
        serde_json::to_string_pretty(&metrics).map_err(|e| ModelError::Data(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| file_err(&path, e))
}

/// Mean of each curve over the first and the last tenth of the steps (at least one step).
fn metrics_json(
    outcome: &TrainOutcome,
    settings: &TrainSettings,
    device: &str,
    threads: usize,
    curves: &[(&str, [u8; 3], Vec<f32>)],
) -> serde_json::Value {
    let mut first = serde_json::Map::new();
    let mut last = serde_json::Map::new();
    for (name, _, values) in curves {
        let window = (values.len() / 10).max(1);
        let mean = |xs: &[f32]| xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len().max(1) as f64;
        first.insert(name.to_string(), mean(&values[..window]).into());
        last.insert(
            name.to_string(),
            mean(&values[values.len() - window..]).into(),
        );
    }
    serde_json::json!({
        "steps": outcome.records.len(),
        "samples_seen": outcome.samples_seen,
        "loss_first": first,
        "loss_final": last,
        "parameters": outcome.store.num_scalars(),
        "preset": settings.preset,
        "device": device,
        "threads": threads,
        "plot_colours": CURVE_COLOURS.iter().map(|(n, c)| (n.to_string(), serde_json::Value::from(format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])))).collect::<serde_json::Map<_, _>>(),
    })
}
