//! Task fine-tuning with GM-Coord, independent of the stage machinery: per step the task loss,
//! OGM-GE's confidence scores and coefficients, the gradient rewrite, and an optional weighted
//! MR-Pretrain loss (TD-Calib's joint reading).

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use umdflow_data::artifact::Dataset;
use umdflow_model::batch::build_batch;
use umdflow_model::config::ModelConfig;
use umdflow_model::masking::MaskPlan;
use umdflow_model::model::UmdModel;
use umdflow_model::model::layers::Linear;
use umdflow_model::negatives::{NegativeSampling, draw_negative};
use umdflow_model::objective::{EmaTarget, ObjectiveConfig, mr_losses};
use umdflow_model::optim::{OptimConfig, Optimiser};
use umdflow_model::resume::{Checkpointer, LoopCheckpoints};
use umdflow_model::rng::SplitMix64;
use umdflow_model::store::ParamStore;
use umdflow_model::train::epoch_order;

use crate::coord::{
    BranchParams, Coefficients, StepScale, coefficients, linear_split_logits, masked_concat_scores,
    modulate, true_label_confidence,
};
use crate::error::{Result, TuneError};
use crate::finetune_state::TuneState;
use crate::task::{HeadKind, PairRows, Task, TaskHead, TaskInfo, ce_loss, features, vqa_bce_loss};
use crate::views::{SplitView, Train};

/// Where GM-Coord reads the unimodal confidences from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreSource {
    /// The task head on `[text_pool; 0]` and `[0; image_pool]` (no extra parameters).
    MaskedConcat,
    /// OGM-GE's own scores for a linear fusion head (`head: linear`, or retrieval): the weight
    /// split into its text and image halves, each with half the bias.
    LinearSplit,
    /// Linear heads on each detached pool, trained alongside (they never move the backbone).
    AuxHeads,
    /// Linear heads on each unimodal encoder's detached class token, before fusion: unlike the
    /// pools, these have not attended to the other modality.
    EncoderHeads,
}

impl ScoreSource {
    /// Input widths `(text, image)` of the auxiliary heads this source trains, if any.
    pub fn aux_widths(self, config: &ModelConfig) -> Option<(usize, usize)> {
        match self {
            ScoreSource::MaskedConcat | ScoreSource::LinearSplit => None,
            ScoreSource::AuxHeads => Some((config.fusion_width, config.fusion_width)),
            ScoreSource::EncoderHeads => Some((config.text_width, config.vision_width)),
        }
    }
}

/// GM-Coord settings (`params.gmcoord`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GmCoordConfig {
    /// false = plain fine-tuning (the ablation arm); scores are still logged.
    pub enabled: bool,
    /// OGM-GE's α.
    pub alpha: f64,
    pub scores: ScoreSource,
    /// OGM-GE's generalisation-enhancement noise.
    pub noise: bool,
    /// Modulate only in epochs `start_epoch ..= end_epoch` (0-based).
    pub start_epoch: usize,
    pub end_epoch: usize,
}

impl Default for GmCoordConfig {
    fn default() -> Self {
        GmCoordConfig {
            enabled: true,
            alpha: 0.5,
            scores: ScoreSource::MaskedConcat,
            noise: false,
            start_epoch: 0,
            end_epoch: 50,
        }
    }
}

/// The joint reading of TD-Calib: `L_task + weight · L_MR` with a fresh masking plan over the
/// training images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointMr {
    pub weight: f64,
    pub objective: ObjectiveConfig,
    pub image_ratio: f64,
    pub text_ratio: f64,
}

/// Everything the loop needs besides data and model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSettings {
    pub task: Task,
    /// VQA/classification head shape.
    pub head: HeadKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Retrieval: sampled negative texts per image.
    pub negatives: usize,
    /// Retrieval: how the negative texts are drawn (`signature`: never a text of a study with
    /// the same findings).
    pub negative_sampling: NegativeSampling,
    pub optim: OptimConfig,
    pub gmcoord: GmCoordConfig,
    pub joint_mr: Option<JointMr>,
}

/// One logged step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoordStep {
    pub step: u64,
    pub epoch: usize,
    pub s_text: f64,
    pub s_image: f64,
    pub rho: f64,
    pub coeff_text: f64,
    pub coeff_image: f64,
    pub task_loss: f64,
    pub mr_loss: f64,
}

/// Receives steps and answers "stop?".
pub trait StepObserver {
    fn on_start(&self, _total: u64) {}
    fn on_step(&self, _step: &CoordStep) {}
    fn cancelled(&self) -> bool {
        false
    }
    /// A line for the stage's log (resuming, checkpoints ignored).
    fn note(&self, _line: &str) {}
}

pub struct Quiet;
impl StepObserver for Quiet {}

/// The number of training items of a task: questions for VQA, images otherwise.
pub fn item_count(data: &Dataset, task: Task) -> Result<usize> {
    match task {
        Task::Vqa => Ok(data
            .vqa
            .as_ref()
            .ok_or_else(|| {
                TuneError::invalid(
                    "task `vqa` needs questions, but the dataset has no vqa.safetensors",
                )
            })?
            .len()),
        _ => Ok(data.n),
    }
}

/// The head a task needs on this dataset.
pub fn task_info(data: &Dataset, task: Task, head: HeadKind) -> Result<TaskInfo> {
    let outputs = match task {
        Task::Vqa => data.meta.answers.len(),
        Task::Classification => data.meta.classes.len(),
        Task::Retrieval => 1,
    };
    if outputs == 0 {
        return Err(TuneError::invalid(format!(
            "task {task:?}: the dataset's meta.json lists no answers/classes"
        )));
    }
    Ok(TaskInfo {
        task,
        outputs,
        head,
    })
}

/// Auxiliary unimodal heads (`gmcoord_aux.text`, `gmcoord_aux.image`).
struct AuxHeads {
    text: Linear,
    image: Linear,
}

/// One batch: the pairs, the labels the logits are scored against, and how many pair rows form
/// one logit row (1, or 1 + negatives for retrieval).
struct StepBatch<'a> {
    pairs: PairRows<'a>,
    labels: Vec<u32>,
    group: usize,
}

fn step_batch<'a>(
    data: &'a Dataset,
    task: Task,
    items: &[usize],
    negatives: usize,
    sampling: NegativeSampling,
    rng: &mut SplitMix64,
) -> Result<StepBatch<'a>> {
    Ok(match task {
        Task::Classification => StepBatch {
            pairs: PairRows::own_texts(data, items),
            labels: items.iter().map(|&i| data.labels[i]).collect(),
            group: 1,
        },
        Task::Vqa => {
            let answers = &data
                .vqa
                .as_ref()
                .ok_or_else(|| TuneError::invalid("no questions"))?
                .answer;
            StepBatch {
                pairs: PairRows::questions(data, items)?,
                labels: items.iter().map(|&q| answers[q]).collect(),
                group: 1,
            }
        }
        Task::Retrieval => {
            if data.n < 2 {
                return Err(TuneError::invalid(
                    "retrieval needs at least 2 training images",
                ));
            }
            let mut images = Vec::new();
            let mut texts = Vec::new();
            for &i in items {
                images.push(i);
                texts.push(i);
                for _ in 0..negatives {
                    let text = draw_negative(i, data.n, sampling, |k| data.signature(k), rng)
                        .ok_or_else(|| {
                            TuneError::invalid(
                                "retrieval negatives: every training item has the same finding signature as the positive; use `negative_sampling: random`",
                            )
                        })?;
                    images.push(i);
                    texts.push(text);
                }
            }
            StepBatch {
                pairs: PairRows::with_texts(data, &images, &texts),
                labels: vec![0; items.len()],
                group: 1 + negatives,
            }
        }
    })
}

/// Logits [B, C] from pair scores: for retrieval, regroup [B·(1+n), 1] into [B, 1+n].
fn grouped(logits: Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(logits);
    }
    let rows = logits.dim(0)? / group;
    Ok(logits.reshape((rows, group))?)
}

fn task_loss(task: Task, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    match task {
        Task::Vqa => vqa_bce_loss(logits, labels),
        _ => ce_loss(logits, labels),
    }
}

/// Fine-tunes `model` (whose parameters live in `store`) on the training view; creates the task
/// head in `store` and returns it with the step log. With `checkpoints`, it checkpoints as they
/// say and resumes from theirs when one of this run is there; the outcome is bit-identical to an
/// uninterrupted run's.
pub fn finetune(
    store: &mut ParamStore,
    model: &UmdModel,
    view: &SplitView<Train>,
    settings: &FinetuneSettings,
    device: &Device,
    observer: &dyn StepObserver,
    checkpoints: Option<&Checkpointer>,
) -> Result<(TaskHead, Vec<CoordStep>)> {
    let data = view.data();
    let task = settings.task;
    let info = task_info(data, task, settings.head)?;
    let head = TaskHead::new(store, model, &info)?;
    let aux = match settings.gmcoord.scores.aux_widths(&model.config) {
        Some((text, image)) => Some(AuxHeads {
            text: Linear::new(store, "gmcoord_aux.text", text, info.outputs, true)?,
            image: Linear::new(store, "gmcoord_aux.image", image, info.outputs, true)?,
        }),
        None => None,
    };
    let n_items = item_count(data, task)?;
    if n_items == 0 || settings.batch_size == 0 {
        return Err(TuneError::invalid(
            "fine-tuning needs at least one training item and batch_size ≥ 1",
        ));
    }
    if settings.gmcoord.scores == ScoreSource::LinearSplit && head.linear().is_none() {
        return Err(TuneError::invalid(
            "gmcoord.scores `linear_split` needs a linear task head (`head: linear`)",
        ));
    }
    let plan = match &settings.joint_mr {
        Some(joint) => {
            joint
                .objective
                .validate(&model.config)
                .map_err(|(field, message)| {
                    TuneError::invalid(format!("calibrate loss.{field}: {message}"))
                })?;
            Some(joint_plan(data, model, joint, settings)?)
        }
        None => None,
    };
    // Joint TD-Calib with EMA feature targets: the target network starts as the input
    // checkpoint and follows the online model after every step, as in pre-training.
    let ema = match &settings.joint_mr {
        Some(joint) if joint.objective.needs_ema() => Some(EmaTarget::new(store, model)?),
        _ => None,
    };
    let store = &*store;
    let branches = BranchParams::from_store(store);
    let mut optimiser = Optimiser::new(store, &settings.optim)?;
    let total = (n_items.div_ceil(settings.batch_size) * settings.epochs) as u64;
    observer.on_start(total);
    let mut state = TuneState::new(settings.seed, total);
    let mut step = 0u64;
    let note = |line: &str| observer.note(line);
    let mut checkpoints =
        checkpoints.map(|c| LoopCheckpoints::new(c, store, ema.as_ref(), total, &note));
    if let Some((resumed, saved)) = checkpoints
        .as_mut()
        .and_then(|c| c.resume::<TuneState>(&mut optimiser, device))
    {
        step = resumed;
        state = saved;
        if let Some(last) = state.log.last() {
            observer.on_step(last);
        }
    }
    // Batch k is the same batch whether or not the run resumed (epochs and their order come from
    // the seed), so resuming skips the first `resumed_at` batches.
    let resumed_at = step;
    let mut batch_index = 0u64;
    for epoch in 0..settings.epochs {
        let order = epoch_order(settings.seed, epoch, n_items, "finetune-order");
        for items in order.chunks(settings.batch_size) {
            batch_index += 1;
            if batch_index <= resumed_at {
                continue;
            }
            if observer.cancelled() {
                // Stopped by a time limit or Ctrl-C: keep what was done since the last checkpoint.
                if let Some(c) = &checkpoints {
                    c.at_stop(&mut optimiser, step, &state);
                }
                return Err(TuneError::Cancelled);
            }
            let batch = step_batch(
                data,
                task,
                items,
                settings.negatives,
                settings.negative_sampling,
                &mut state.neg_rng,
            )?;
            let forward = features(model, &batch.pairs, device)?;
            let pooled = &forward.pooled;
            let logits = grouped(head.forward(pooled)?, batch.group)?;
            let loss = task_loss(task, &logits, &batch.labels)?;
            let (s_text, s_image, aux_loss) = match (&aux, head.linear()) {
                (None, Some(linear)) if settings.gmcoord.scores == ScoreSource::LinearSplit => {
                    let (text_logits, image_logits) = linear_split_logits(pooled, linear)?;
                    (
                        true_label_confidence(&grouped(text_logits, batch.group)?, &batch.labels)?,
                        true_label_confidence(&grouped(image_logits, batch.group)?, &batch.labels)?,
                        None,
                    )
                }
                (None, _) => {
                    let (st, si) = masked_concat_scores(pooled, &batch.labels, |x| {
                        grouped(head.forward(x)?, batch.group)
                    })?;
                    (st, si, None)
                }
                (Some(aux), _) => {
                    let (text_in, image_in) = match settings.gmcoord.scores {
                        ScoreSource::EncoderHeads => {
                            (forward.text_cls.clone(), forward.image_cls.clone())
                        }
                        _ => {
                            let w = pooled.dim(1)? / 2;
                            (pooled.narrow(1, 0, w)?, pooled.narrow(1, w, w)?)
                        }
                    };
                    let text_logits = grouped(aux.text.forward(&text_in.detach())?, batch.group)?;
                    let image_logits =
                        grouped(aux.image.forward(&image_in.detach())?, batch.group)?;
                    let aux_loss = (task_loss(task, &text_logits, &batch.labels)?
                        + task_loss(task, &image_logits, &batch.labels)?)?;
                    (
                        true_label_confidence(&text_logits, &batch.labels)?,
                        true_label_confidence(&image_logits, &batch.labels)?,
                        Some(aux_loss),
                    )
                }
            };
            let mut total_loss = match aux_loss {
                Some(a) => (&loss + a)?,
                None => loss.clone(),
            };
            let mut mr_value = 0.0;
            if let (Some(joint), Some(plan)) = (&settings.joint_mr, &plan) {
                let images: Vec<usize> = batch
                    .pairs
                    .images
                    .iter()
                    .step_by(batch.group)
                    .copied()
                    .collect();
                let mr_batch = build_batch(
                    data,
                    plan,
                    epoch,
                    &images,
                    joint.objective.itm_negatives,
                    &mut state.itm_rng,
                    device,
                )?;
                let terms = mr_losses(model, ema.as_ref(), &mr_batch, &joint.objective)?;
                mr_value = terms
                    .total
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
                total_loss = (total_loss + (terms.total * joint.weight)?)?;
            }
            let task_value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !task_value.is_finite() || !mr_value.is_finite() {
                return Err(TuneError::invalid(format!(
                    "the loss became non-finite at step {step} (task {task_value}, MR {mr_value})"
                )));
            }
            let mut grads = total_loss.backward()?;
            let in_window =
                (settings.gmcoord.start_epoch..=settings.gmcoord.end_epoch).contains(&epoch);
            let (coeffs, scale) = if settings.gmcoord.enabled && in_window {
                let c = coefficients(s_text, s_image, settings.gmcoord.alpha);
                let scale = modulate(
                    &mut grads,
                    &branches,
                    &c,
                    settings.gmcoord.noise.then_some(&mut state.noise_rng),
                    settings.optim.algorithm,
                )?;
                (c, scale)
            } else {
                (Coefficients::neutral(s_text / s_image), StepScale::NONE)
            };
            let lr = settings.optim.lr_at(step, total);
            optimiser.step_scaled(&grads, lr, &|name| scale.of(name))?;
            if let (Some(ema), Some(joint)) = (&ema, &settings.joint_mr) {
                ema.update(store, joint.objective.ema_momentum_at(step, total))?;
            }
            let record = CoordStep {
                step,
                epoch,
                s_text,
                s_image,
                rho: coeffs.rho,
                coeff_text: coeffs.text,
                coeff_image: coeffs.image,
                task_loss: task_value,
                mr_loss: mr_value,
            };
            observer.on_step(&record);
            state.log.push(record);
            step += 1;
            if let Some(c) = &mut checkpoints {
                c.after_step(&mut optimiser, step, &state);
            }
        }
    }
    Ok((head, state.log))
}

/// A masking plan over every training image (plan position = view row) for the joint MR loss.
fn joint_plan(
    data: &Dataset,
    model: &UmdModel,
    joint: &JointMr,
    settings: &FinetuneSettings,
) -> Result<MaskPlan> {
    crate::calibrate::plan_for(
        data,
        model,
        joint.image_ratio,
        joint.text_ratio,
        settings.epochs,
        settings.seed,
    )
}

/// `gmcoord.csv`: one row per step.
pub fn steps_csv(steps: &[CoordStep]) -> String {
    let mut out =
        String::from("step,epoch,s_text,s_image,rho,coeff_text,coeff_image,task_loss,mr_loss\n");
    for s in steps {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            s.step,
            s.epoch,
            s.s_text,
            s.s_image,
            s.rho,
            s.coeff_text,
            s.coeff_image,
            s.task_loss,
            s.mr_loss
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_negatives_never_share_the_positive_signature() {
        let mut data = crate::views::tests::marked_dataset();
        // Rows 0, 1, 2, 4 are "normal" (signature 0); rows 3 and 5 show a finding.
        data.signatures = Some(vec![0, 0, 0, 1, 0, 1]);
        let mut rng = SplitMix64::new(2);
        let items: Vec<usize> = (0..6).collect();
        for _ in 0..20 {
            let batch = step_batch(
                &data,
                Task::Retrieval,
                &items,
                3,
                NegativeSampling::Signature,
                &mut rng,
            )
            .unwrap();
            assert_eq!(batch.group, 4);
            for (images, &i) in batch.pairs.images.chunks(4).zip(&items) {
                assert!(images.iter().all(|&image| image == i));
            }
            // Pair rows are [positive, 3 negatives] per item; a negative text is the dataset row
            // whose ids it copied, so compare the text rows' signatures through their ids.
            let t = data.max_len;
            let text_row = |r: usize| {
                (0..data.n)
                    .find(|&j| data.text_ids(j) == &batch.pairs.ids[r * t..(r + 1) * t])
                    .unwrap()
            };
            for (k, &i) in items.iter().enumerate() {
                assert_eq!(text_row(k * 4), i);
                for r in k * 4 + 1..k * 4 + 4 {
                    let j = text_row(r);
                    assert_ne!(
                        data.signature(j),
                        data.signature(i),
                        "item {i}, negative {j}"
                    );
                }
            }
        }
        // Every item sharing one signature leaves no valid negative: a clear error.
        data.signatures = Some(vec![4; 6]);
        let err = step_batch(
            &data,
            Task::Retrieval,
            &items,
            1,
            NegativeSampling::Signature,
            &mut rng,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("negative_sampling: random"),
            "{err}"
        );
        assert!(
            step_batch(
                &data,
                Task::Retrieval,
                &items,
                1,
                NegativeSampling::Random,
                &mut rng
            )
            .is_ok()
        );
    }
}
