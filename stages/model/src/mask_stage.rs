//! The `mask` stage kind: materialises the MR-Pretrain masking plan of an ingest artifact.
//!
//! Output: `mask_plan.safetensors` + `mask_plan.json` (see [`crate::masking`]), `preview.png`
//! (original images beside their masked versions, epoch 0), `metrics.json`.

use serde::{Deserialize, Serialize};
use umdflow_data::artifact::{Dataset, SPLIT_TRAIN};
use umdflow_stages::params::{resolve_typed, resolve_with_value, typed};
use umdflow_stages::{Params, Problem, StageContext, StageDecl, StageError, StageKind};

use crate::masking::{MaskPlan, PlanSettings, TokenInfo};
use crate::plot::Canvas;

/// Parameters of `mask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskParams {
    /// Pre-training epochs the plan covers (each epoch gets fresh masks).
    pub epochs: usize,
    /// Fraction of image patches removed (M3AE: 0.75).
    pub image_ratio: f64,
    /// Probability that a text token is an MLM target (M3AE/BERT: 0.15).
    pub text_ratio: f64,
    /// Of the targets: replaced by [MASK] (0.8), by a random token (0.1), else unchanged.
    pub mask_token_prob: f64,
    pub random_token_prob: f64,
    /// Patch side in pixels; `pretrain` uses the same patches.
    pub patch_size: usize,
    pub seed: u64,
    /// How many samples the preview shows.
    pub preview: usize,
}

impl Default for MaskParams {
    fn default() -> Self {
        MaskParams {
            epochs: 10,
            image_ratio: 0.75,
            text_ratio: 0.15,
            mask_token_prob: 0.8,
            random_token_prob: 0.1,
            patch_size: 16,
            seed: 0,
            preview: 8,
        }
    }
}

impl MaskParams {
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, field: &str, message: String| {
            if !ok {
                problems.push(Problem::new(format!("params.{field}"), message));
            }
        };
        check(
            self.epochs >= 1,
            "epochs",
            format!("must be at least 1, got {}", self.epochs),
        );
        check(
            (0.0..1.0).contains(&self.image_ratio),
            "image_ratio",
            format!("must lie in [0, 1), got {}", self.image_ratio),
        );
        check(
            (0.0..=1.0).contains(&self.text_ratio),
            "text_ratio",
            format!("must lie in [0, 1], got {}", self.text_ratio),
        );
        check(
            self.mask_token_prob >= 0.0
                && self.random_token_prob >= 0.0
                && self.mask_token_prob + self.random_token_prob <= 1.0,
            "mask_token_prob",
            format!(
                "mask_token_prob ({}) and random_token_prob ({}) must be >= 0 and sum to at most 1",
                self.mask_token_prob, self.random_token_prob
            ),
        );
        check(
            self.patch_size >= 1,
            "patch_size",
            "must be at least 1".into(),
        );
        problems
    }
}

/// `kind: mask`.
pub struct MaskKind;

impl StageKind for MaskKind {
    fn name(&self) -> &'static str {
        "mask"
    }

    /// It finds its inputs by kind and never sees stage names, so renaming reruns nothing.
    fn sees_names(&self) -> bool {
        false
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "MR-Pretrain masking plan (image patches, 80/10/10 text tokens) per epoch and sample, from a seed"
    }

    fn default_params(&self) -> Result<Params, Vec<Problem>> {
        resolve_typed::<MaskParams>(Params::new())
    }

    fn resolve_params(&self, decl: &StageDecl<'_>, params: Params) -> Result<Params, Vec<Problem>> {
        let (resolved, typed) = resolve_with_value::<MaskParams>(params)?;
        let mut problems = typed.problems();
        if !decl.inputs.iter().any(|(_, kind)| kind == "ingest") {
            problems.push(Problem::new(
                "inputs",
                "a `mask` stage needs an `ingest` stage in its inputs",
            ));
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems)
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        let params: MaskParams = typed(ctx.params)?;
        let ingest = ctx.require_input("ingest")?;
        let dataset = Dataset::load(&ingest.dir).map_err(|e| StageError::failed(e.to_string()))?;
        if dataset.size % params.patch_size != 0 {
            return Err(StageError::failed(format!(
                "params.patch_size: {} does not divide the image size {} of input `{}`",
                params.patch_size, dataset.size, ingest.stage
            )));
        }
        let samples: Vec<u32> = dataset
            .indices_of_split(SPLIT_TRAIN)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        if samples.is_empty() {
            return Err(StageError::failed(format!(
                "input `{}` has no training samples to mask",
                ingest.stage
            )));
        }
        let meta = &dataset.meta;
        let tokens = TokenInfo {
            vocab_size: meta.vocab_size,
            mask_id: meta.mask_id,
            special_ids: vec![
                meta.pad_id,
                meta.unk_id,
                meta.cls_id,
                meta.sep_id,
                meta.mask_id,
            ],
        };
        let settings = PlanSettings {
            epochs: params.epochs,
            image_ratio: params.image_ratio,
            text_ratio: params.text_ratio,
            mask_token_prob: params.mask_token_prob,
            random_token_prob: params.random_token_prob,
            patch_size: params.patch_size,
            seed: params.seed,
        };
        ctx.progress.set_total(3);
        let plan = MaskPlan::generate(
            &settings,
            &samples,
            &dataset.input_ids,
            &dataset.attention_mask,
            dataset.max_len,
            dataset.size,
            &tokens,
        )
        .map_err(|e| StageError::failed(e.to_string()))?;
        ctx.progress.set_position(1);
        if ctx.cancelled() {
            return Err(StageError::Cancelled);
        }
        plan.save(ctx.out_dir)
            .map_err(|e| StageError::failed(e.to_string()))?;
        ctx.progress.set_position(2);
        write_preview(&dataset, &plan, params.preview, ctx)
            .map_err(|e| StageError::failed(e.to_string()))?;
        let metrics = serde_json::json!({
            "samples": plan.meta.num_samples,
            "epochs": plan.meta.epochs,
            "num_patches": plan.meta.num_patches,
            "keep_patches": plan.meta.keep_patches,
            "selected_token_fraction": plan.meta.selected_fraction,
        });
        let path = ctx.out_dir.join("metrics.json");
        std::fs::write(&path, metrics.to_string())
            .map_err(StageError::io(format!("writing {}", path.display())))?;
        ctx.progress.set_position(3);
        Ok(())
    }
}

/// `preview.png`: for the first samples of the plan, the original image (left) beside the
/// image with its epoch-0 removed patches greyed out (right), enlarged to at least 96 px.
fn write_preview(
    dataset: &Dataset,
    plan: &MaskPlan,
    count: usize,
    ctx: &StageContext<'_>,
) -> crate::error::Result<()> {
    let count = count.min(plan.meta.num_samples);
    if count == 0 {
        return Ok(());
    }
    let (size, channels, patch) = (dataset.size, dataset.channels, plan.meta.patch_size);
    let zoom = 96usize.div_ceil(size).max(1);
    let cell = size * zoom;
    let gap = 4;
    let mut canvas = Canvas::new(
        2 * cell + 3 * gap,
        count * (cell + gap) + gap,
        [255, 255, 255],
    );
    let grid = size / patch;
    for row in 0..count {
        let index = plan.samples[row] as usize;
        let mask = plan.sample(0, row, dataset.text_ids(index))?;
        let original = zoom_image(dataset.image(index), channels, size, zoom);
        let mut masked = dataset.image(index).to_vec();
        for (p, _) in mask.removed.iter().enumerate().filter(|(_, r)| **r) {
            let (gy, gx) = (p / grid, p % grid);
            for c in 0..channels {
                for y in gy * patch..(gy + 1) * patch {
                    masked[(c * size + y) * size + gx * patch
                        ..(c * size + y) * size + (gx + 1) * patch]
                        .fill(0.5);
                }
            }
        }
        let y = gap + row * (cell + gap);
        canvas.paste(&original, channels, cell, gap, y);
        canvas.paste(
            &zoom_image(&masked, channels, size, zoom),
            channels,
            cell,
            2 * gap + cell,
            y,
        );
    }
    canvas.save_png(&ctx.out_dir.join("preview.png"))
}

/// Nearest-neighbour enlargement of a C×S×S image.
fn zoom_image(image: &[f32], channels: usize, size: usize, zoom: usize) -> Vec<f32> {
    let big = size * zoom;
    let mut out = vec![0f32; channels * big * big];
    for c in 0..channels {
        for y in 0..big {
            for x in 0..big {
                out[(c * big + y) * big + x] = image[(c * size + y / zoom) * size + x / zoom];
            }
        }
    }
    out
}
