//! TD-Calib (paper-digest §4): continued MR-Pretrain on the downstream TRAINING split's own
//! image-text pairs, from the pre-trained checkpoint. The other reading (task loss plus a weighted
//! MR loss during fine-tuning) is the `joint` mode: the checkpoint passes through unchanged and
//! `calibration.json` tells `coordinate-tune` to add the MR term.
//!
//! Only a [`SplitView<Train>`] ever reaches this module, so test rows cannot be read.

use candle_core::Device;
use serde::{Deserialize, Serialize};
use umdflow_data::artifact::Dataset;
use umdflow_model::ModelError;
use umdflow_model::masking::{MaskPlan, PlanSettings, TokenInfo};
use umdflow_model::model::UmdModel;
use umdflow_model::objective::ObjectiveConfig;
use umdflow_model::optim::OptimConfig;
use umdflow_model::resume::Checkpointer;
use umdflow_model::store::ParamStore;
use umdflow_model::train::{MrRun, StepRecord, StreamNames, TrainObserver, run_mr_steps};

use crate::error::{Result, TuneError};
use crate::views::{SplitView, Train};

/// `calibration.json`, read by `coordinate-tune`.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// Which reading of TD-Calib.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibMode {
    /// A separate stage of continued MR-Pretrain before fine-tuning (the default reading).
    Continued,
    /// `L_task + mr_weight · L_MR` during fine-tuning.
    Joint,
}

/// Which text pairs with an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairText {
    /// The image's own text (report / caption).
    Caption,
    /// Each training question with its image (VQA data).
    Question,
}

/// What `calibration.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    pub mode: CalibMode,
    pub steps: u64,
    /// Joint mode: the weight of the MR term and its settings.
    pub mr_weight: f64,
    pub objective: ObjectiveConfig,
    pub image_ratio: f64,
    pub text_ratio: f64,
}

/// Settings of continued pre-training.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub max_steps: Option<u64>,
    pub seed: u64,
    pub image_ratio: f64,
    pub text_ratio: f64,
    pub pair_text: PairText,
    pub objective: ObjectiveConfig,
    pub optim: OptimConfig,
}

/// A masking plan covering every row of `data` in order (plan position = row).
pub fn plan_for(
    data: &Dataset,
    model: &UmdModel,
    image_ratio: f64,
    text_ratio: f64,
    epochs: usize,
    seed: u64,
) -> Result<MaskPlan> {
    let m = &data.meta;
    let tokens = TokenInfo {
        vocab_size: m.vocab_size,
        mask_id: m.mask_id,
        special_ids: vec![m.pad_id, m.unk_id, m.cls_id, m.sep_id, m.mask_id],
    };
    let settings = PlanSettings {
        epochs,
        image_ratio,
        text_ratio,
        mask_token_prob: 0.8,
        random_token_prob: 0.1,
        patch_size: model.config.patch_size,
        seed,
    };
    let samples: Vec<u32> = (0..data.n as u32).collect();
    Ok(MaskPlan::generate(
        &settings,
        &samples,
        &data.input_ids,
        &data.attention_mask,
        data.max_len,
        data.size,
        &tokens,
    )?)
}

/// The training questions as image-text rows (image repeated per question).
pub fn question_pairs(data: &Dataset) -> Result<Dataset> {
    let vqa = data.vqa.as_ref().ok_or_else(|| {
        TuneError::invalid(
            "pair_text `question` needs questions, but the dataset has no vqa.safetensors",
        )
    })?;
    let q = vqa.len();
    let rows: Vec<usize> = vqa.image_index.iter().map(|&i| i as usize).collect();
    let images: Vec<f32> = rows
        .iter()
        .flat_map(|&i| data.image(i).iter().copied())
        .collect();
    let mut meta = data.meta.clone();
    meta.counts.train = q;
    Ok(Dataset {
        images,
        n: q,
        channels: data.channels,
        size: data.size,
        input_ids: vqa.input_ids.clone(),
        attention_mask: vqa.attention_mask.clone(),
        max_len: data.max_len,
        labels: vqa
            .image_index
            .iter()
            .map(|&i| data.labels[i as usize])
            .collect(),
        split: vec![umdflow_data::artifact::SPLIT_TRAIN; q],
        vqa: None,
        retrieval: None,
        findings: data.findings_of_rows(&rows),
        signatures: data.signatures_of_rows(&rows),
        meta,
    })
}

/// The seeded streams of TD-Calib (distinct from pre-training's, whose seed may be the same).
const CALIB_STREAMS: StreamNames = StreamNames {
    order: "calib-order",
    itm: "calib-itm-negatives",
};

/// Continued MR-Pretrain of `model` on the training view, through the same loop as `pretrain`
/// ([`run_mr_steps`]); returns the step records.
pub fn calibrate(
    store: &ParamStore,
    model: &UmdModel,
    view: &SplitView<Train>,
    settings: &CalibSettings,
    device: &Device,
    observer: &(dyn TrainObserver + Sync),
    checkpoints: Option<&Checkpointer>,
) -> Result<Vec<StepRecord>> {
    let question_data;
    let data = match settings.pair_text {
        PairText::Caption => view.data(),
        PairText::Question => {
            question_data = question_pairs(view.data())?;
            &question_data
        }
    };
    if data.n == 0 || settings.batch_size == 0 {
        return Err(TuneError::invalid(
            "calibration needs at least one training pair and batch_size ≥ 1",
        ));
    }
    settings
        .objective
        .validate(&model.config)
        .map_err(|(field, message)| TuneError::invalid(format!("loss.{field}: {message}")))?;
    let plan = plan_for(
        data,
        model,
        settings.image_ratio,
        settings.text_ratio,
        settings.epochs,
        settings.seed,
    )?;
    let run = MrRun {
        data,
        plan: &plan,
        batch_size: settings.batch_size,
        seed: settings.seed,
        max_steps: settings.max_steps,
        objective: &settings.objective,
        optim: &settings.optim,
        streams: CALIB_STREAMS,
        checkpoints,
    };
    match run_mr_steps(store, model, &run, device, observer) {
        Ok((records, _)) => Ok(records),
        Err(ModelError::Cancelled) => Err(TuneError::Cancelled),
        Err(e) => Err(e.into()),
    }
}
