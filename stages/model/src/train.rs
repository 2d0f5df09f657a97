//! The MR-Pretrain training loop, independent of the stage machinery (the `pretrain` stage,
//! the tests and the benchmark all call [`pretrain`]).

use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use umdflow_data::artifact::Dataset;

use crate::batch::build_batch;
use crate::checkpoint::CheckpointInfo;
use crate::config::{ModelConfig, VisionPositions, WeightInit};
use crate::error::{ModelError, Result};
use crate::gradients::mr_gradients;
use crate::masking::MaskPlan;
use crate::model::UmdModel;
use crate::objective::{EmaTarget, ObjectiveConfig};
use crate::optim::{OptimConfig, Optimiser};
use crate::pretrained::EncoderInit;
use crate::resume::{Checkpointer, LoopCheckpoints};
use crate::rng::SplitMix64;
use crate::store::ParamStore;
use crate::train_state::MrProgress;

/// What to train and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub preset: String,
    pub batch_size: usize,
    pub seed: u64,
    pub objective: ObjectiveConfig,
    pub optim: OptimConfig,
    /// Stop after this many steps (None: every epoch of the masking plan).
    pub max_steps: Option<u64>,
    /// The ViT's position embeddings.
    #[serde(default)]
    pub vision_positions: VisionPositions,
    /// How the weight matrices are first drawn.
    #[serde(default)]
    pub weight_init: WeightInit,
}

/// One row of the loss curve.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: usize,
    pub lr: f64,
    pub grad_norm: f64,
    pub total: f32,
    pub terms: Vec<(&'static str, f32)>,
}

/// Receives progress and answers "stop?".
pub trait TrainObserver {
    fn on_start(&self, _total_steps: u64) {}
    fn on_step(&self, _record: &StepRecord) {}
    fn cancelled(&self) -> bool {
        false
    }
    /// A line for the stage's log (resuming, checkpoints ignored).
    fn note(&self, _line: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl TrainObserver for Silent {}

/// The trained model and its history.
pub struct TrainOutcome {
    pub store: ParamStore,
    pub model: UmdModel,
    pub info: CheckpointInfo,
    pub records: Vec<StepRecord>,
    pub seconds: f64,
    pub samples_seen: u64,
}

/// The model sizes for a dataset and plan.
pub fn model_config_for(dataset: &Dataset, plan: &MaskPlan, preset: &str) -> Result<ModelConfig> {
    if plan.meta.image_size != dataset.size || plan.meta.max_len != dataset.max_len {
        return Err(ModelError::Data(format!(
            "the masking plan was made for {}px images and {} tokens, the dataset has {}px and {}",
            plan.meta.image_size, plan.meta.max_len, dataset.size, dataset.max_len
        )));
    }
    ModelConfig::preset(
        preset,
        dataset.size,
        dataset.channels,
        plan.meta.patch_size,
        dataset.meta.vocab_size,
        dataset.max_len,
    )
}

/// Trains a freshly initialised model (seeded by `settings.seed`) on the plan's samples, with
/// CPU matrix products on a pool of `threads` worker threads.
///
/// Each step runs its independent passes side by side on this pool ([`mr_gradients`]), and
/// candle's CPU matrix products and the fused kernels split their work over the *current* rayon
/// pool, so running inside a pool of `threads` bounds them (candle still cuts a product into as
/// many pieces as the machine has cores, or `RAYON_NUM_THREADS`). Same seed gives the same
/// checkpoint bit for bit, whatever the thread count: the passes' gradients are added in a fixed
/// order, and the products and kernels split rows, never a sum.
pub fn pretrain(
    dataset: &Dataset,
    plan: &MaskPlan,
    settings: &TrainSettings,
    device: &Device,
    threads: usize,
    observer: &(dyn TrainObserver + Sync),
) -> Result<TrainOutcome> {
    pretrain_with(
        dataset,
        plan,
        settings,
        &PretrainStart::default(),
        device,
        threads,
        observer,
    )
}

/// Where a pre-training starts from besides the seed: pretrained encoders, and a checkpoint of an
/// interrupted attempt at the same run.
#[derive(Default)]
pub struct PretrainStart<'a> {
    /// Encoders to use in place of random ones (sizes and weights, see
    /// [`crate::pretrained::load_for_data`]).
    pub pretrained: &'a [EncoderInit],
    /// Checkpoints as they say, resuming from theirs when one of this run is there; the outcome is
    /// bit-identical to an uninterrupted run's.
    pub checkpoints: Option<&'a Checkpointer>,
}

/// [`pretrain`] from `start`.
pub fn pretrain_with(
    dataset: &Dataset,
    plan: &MaskPlan,
    settings: &TrainSettings,
    start: &PretrainStart<'_>,
    device: &Device,
    threads: usize,
    observer: &(dyn TrainObserver + Sync),
) -> Result<TrainOutcome> {
    crate::allocator::retain_freed_memory();
    let pool = crate::worker_pool::stage_pool(threads).map_err(|e| {
        ModelError::Config(format!("could not start {threads} worker threads: {e}"))
    })?;
    pool.install(|| pretrain_here(dataset, plan, settings, start, device, observer))
}

fn pretrain_here(
    dataset: &Dataset,
    plan: &MaskPlan,
    settings: &TrainSettings,
    start: &PretrainStart<'_>,
    device: &Device,
    observer: &(dyn TrainObserver + Sync),
) -> Result<TrainOutcome> {
    let mut config = model_config_for(dataset, plan, &settings.preset)?;
    for encoder in start.pretrained {
        encoder.configure(&mut config);
    }
    config.vision_positions = settings.vision_positions;
    config.weight_init = settings.weight_init;
    config.validate()?;
    // The encoders' depths are known only now when `init` loaded one (CLIP with
    // `image_layers: 11` has 11 blocks whatever the preset says).
    settings
        .objective
        .validate(&config)
        .map_err(|(field, message)| ModelError::Config(format!("loss.{field}: {message}")))?;
    let feature_dims = settings.objective.feature_dims(&config);
    let mut store = ParamStore::new(device, settings.seed).with_weight_init(config.weight_init);
    let model = UmdModel::new(&mut store, &config, feature_dims)?;
    for encoder in start.pretrained {
        encoder.copy_into(&store)?;
    }
    let started = Instant::now();
    let run = MrRun {
        data: dataset,
        plan,
        batch_size: settings.batch_size,
        seed: settings.seed,
        max_steps: settings.max_steps,
        objective: &settings.objective,
        optim: &settings.optim,
        streams: PRETRAIN_STREAMS,
        checkpoints: start.checkpoints,
    };
    let (records, samples_seen) = run_mr_steps(&store, &model, &run, device, observer)?;
    let info = CheckpointInfo {
        preset: settings.preset.clone(),
        model: config,
        feature_dims,
    };
    Ok(TrainOutcome {
        store,
        model,
        info,
        records,
        seconds: started.elapsed().as_secs_f64(),
        samples_seen,
    })
}

/// Names of the seeded streams of one MR training run (batch order, ITM negatives), so that two
/// callers of [`run_mr_steps`] draw independent streams from the same seed.
#[derive(Debug, Clone, Copy)]
pub struct StreamNames {
    pub order: &'static str,
    pub itm: &'static str,
}

/// The streams of `pretrain`.
pub const PRETRAIN_STREAMS: StreamNames = StreamNames {
    order: "batch-order",
    itm: "itm-negatives",
};

/// One MR-Pretrain run over a masking plan: used by `pretrain` from a fresh model and by TD-Calib
/// from a pre-trained one.
#[derive(Debug, Clone, Copy)]
pub struct MrRun<'a> {
    pub data: &'a Dataset,
    /// Plan position k reads dataset row `plan.samples[k]`; its epochs are the run's epochs.
    pub plan: &'a MaskPlan,
    pub batch_size: usize,
    pub seed: u64,
    /// Stop after this many steps (None: every epoch of the plan).
    pub max_steps: Option<u64>,
    pub objective: &'a ObjectiveConfig,
    pub optim: &'a OptimConfig,
    pub streams: StreamNames,
    /// Where and how often to checkpoint, and the checkpoint to resume from (None: neither).
    pub checkpoints: Option<&'a Checkpointer>,
}

/// Optimiser steps of a run: every batch of every epoch of the plan, capped by `max_steps`.
pub fn step_count(plan: &MaskPlan, batch_size: usize, max_steps: Option<u64>) -> u64 {
    let per_epoch = plan.meta.num_samples.div_ceil(batch_size.max(1)) as u64;
    let all = per_epoch * plan.meta.epochs as u64;
    max_steps.map_or(all, |m| m.min(all))
}

/// The order in which epoch `epoch` visits `n` items: a seeded shuffle, the same for every
/// training loop of the workspace (pretrain, calibrate, fine-tuning).
pub fn epoch_order(seed: u64, epoch: usize, n: usize, stream: &str) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::derived(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9), stream)
        .shuffle(&mut order);
    order
}

/// Trains `model` (parameters in `store`) with the MR-Pretrain objective: AdamW (or SGD), the EMA
/// target network when the objective reads one, and a stop with [`ModelError::NonFinite`] naming
/// the step at the first non-finite loss term, total or gradient norm. Returns the step records
/// and the number of samples seen.
pub fn run_mr_steps(
    store: &ParamStore,
    model: &UmdModel,
    run: &MrRun<'_>,
    device: &Device,
    observer: &(dyn TrainObserver + Sync),
) -> Result<(Vec<StepRecord>, u64)> {
    if run.batch_size == 0 {
        return Err(ModelError::Config("batch_size must be at least 1".into()));
    }
    if run.plan.meta.num_samples == 0 {
        return Err(ModelError::Data(
            "the masking plan covers no training sample".into(),
        ));
    }
    let obj = run.objective;
    let ema = if obj.needs_ema() {
        Some(EmaTarget::new(store, model)?)
    } else {
        None
    };
    let mut optimiser = Optimiser::new(store, run.optim)?;
    let total = step_count(run.plan, run.batch_size, run.max_steps);
    observer.on_start(total);
    let mut progress = MrProgress {
        samples_seen: 0,
        itm_rng: SplitMix64::derived(run.seed, run.streams.itm),
        records: Vec::with_capacity(total as usize),
    };
    let mut step = 0u64;
    let note = |line: &str| observer.note(line);
    let mut checkpoints = run
        .checkpoints
        .map(|c| LoopCheckpoints::new(c, store, ema.as_ref(), total, &note));
    if let Some((resumed, state)) = checkpoints
        .as_mut()
        .and_then(|c| c.resume::<MrProgress>(&mut optimiser, device))
    {
        step = resumed;
        progress = state;
        if let Some(last) = progress.records.last() {
            observer.on_step(last);
        }
    }
    let resumed_at = step;
    // Batch k of the run is the same batch whether or not the run resumed: epochs and their
    // order come from the seed, so resuming skips the first `resumed_at` batches.
    let mut batch_index = 0u64;
    'epochs: for epoch in 0..run.plan.meta.epochs {
        let order = epoch_order(
            run.seed,
            epoch,
            run.plan.meta.num_samples,
            run.streams.order,
        );
        for positions in order.chunks(run.batch_size) {
            if step >= total {
                break 'epochs;
            }
            batch_index += 1;
            if batch_index <= resumed_at {
                continue;
            }
            if observer.cancelled() {
                // Killed by a time limit or Ctrl-C: keep what was done since the last checkpoint.
                if let Some(c) = &checkpoints {
                    c.at_stop(&mut optimiser, step, &progress);
                }
                return Err(ModelError::Cancelled);
            }
            let batch = build_batch(
                run.data,
                run.plan,
                epoch,
                positions,
                obj.itm_negatives,
                &mut progress.itm_rng,
                device,
            )?;
            let (terms, grads) = mr_gradients(model, ema.as_ref(), &batch, obj)?;
            let total_value = terms
                .total
                .to_dtype(candle_core::DType::F32)?
                .to_scalar::<f32>()?;
            if let Some((term, value)) = terms.values.iter().find(|(_, v)| !v.is_finite()) {
                return Err(ModelError::NonFinite {
                    step,
                    term: term.to_string(),
                    value: *value,
                });
            }
            if !total_value.is_finite() {
                return Err(ModelError::NonFinite {
                    step,
                    term: "total".into(),
                    value: total_value,
                });
            }
            let lr = run.optim.lr_at(step, total);
            let grad_norm = optimiser.step(&grads, lr)?;
            if !grad_norm.is_finite() {
                return Err(ModelError::NonFinite {
                    step,
                    term: "gradient norm".into(),
                    value: grad_norm as f32,
                });
            }
            if let Some(ema) = &ema {
                ema.update(store, obj.ema_momentum_at(step, total))?;
            }
            let record = StepRecord {
                step,
                epoch,
                lr,
                grad_norm,
                total: total_value,
                terms: terms.values,
            };
            observer.on_step(&record);
            progress.records.push(record);
            progress.samples_seen += positions.len() as u64;
            step += 1;
            if let Some(c) = &mut checkpoints {
                c.after_step(&mut optimiser, step, &progress);
            }
        }
    }
    Ok((progress.records, progress.samples_seen))
}
