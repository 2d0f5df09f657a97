//! The MR-Pretrain training loop, independent of the stage machinery (the `pretrain` stage,
//! the tests and the benchmark all call [`pretrain`]).

use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use umdflow_data::artifact::Dataset;

use crate::batch::build_batch;
use crate::checkpoint::CheckpointInfo;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::masking::MaskPlan;
use crate::model::UmdModel;
use crate::objective::{EmaTarget, ObjectiveConfig, TargetNetwork, mr_losses};
use crate::optim::{AdamW, OptimConfig};
use crate::rng::SplitMix64;
use crate::store::ParamStore;

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

/// Number of optimiser steps the settings give for a plan.
pub fn total_steps(plan: &MaskPlan, settings: &TrainSettings) -> u64 {
    let per_epoch = plan.meta.num_samples.div_ceil(settings.batch_size.max(1)) as u64;
    let all = per_epoch * plan.meta.epochs as u64;
    settings.max_steps.map_or(all, |m| m.min(all))
}

/// Trains a freshly initialised model (seeded by `settings.seed`) on the plan's samples, with
/// CPU matrix products on a pool of `threads` worker threads.
///
/// candle's CPU matrix products split their work over the *current* rayon pool, so running
/// inside a pool of `threads` bounds them (candle still cuts the work into as many pieces as
/// the machine has cores, or `RAYON_NUM_THREADS`). Same seed and thread count give the same
/// checkpoint bit for bit; the products split rows, never the summation, so in practice the
/// thread count does not change the result either.
pub fn pretrain(
    dataset: &Dataset,
    plan: &MaskPlan,
    settings: &TrainSettings,
    device: &Device,
    threads: usize,
    observer: &(dyn TrainObserver + Sync),
) -> Result<TrainOutcome> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| {
            ModelError::Config(format!("could not start {threads} worker threads: {e}"))
        })?;
    pool.install(|| pretrain_here(dataset, plan, settings, device, observer))
}

fn pretrain_here(
    dataset: &Dataset,
    plan: &MaskPlan,
    settings: &TrainSettings,
    device: &Device,
    observer: &(dyn TrainObserver + Sync),
) -> Result<TrainOutcome> {
    if settings.batch_size == 0 {
        return Err(ModelError::Config("batch_size must be at least 1".into()));
    }
    if plan.meta.num_samples == 0 {
        return Err(ModelError::Data(
            "the masking plan covers no training sample".into(),
        ));
    }
    let config = model_config_for(dataset, plan, &settings.preset)?;
    let obj = &settings.objective;
    let feature_dims = obj.feature_dims(&config);
    let mut store = ParamStore::new(device, settings.seed);
    let model = UmdModel::new(&mut store, &config, feature_dims)?;
    let ema = if (obj.feamim || obj.feamlm) && obj.target_network == TargetNetwork::Ema {
        Some(EmaTarget::new(&store, &model)?)
    } else {
        None
    };
    let mut optimiser = AdamW::new(&store, &settings.optim)?;
    let total = total_steps(plan, settings);
    observer.on_start(total);

    let started = Instant::now();
    let mut itm_rng = SplitMix64::derived(settings.seed, "itm-negatives");
    let mut records = Vec::with_capacity(total as usize);
    let mut step = 0u64;
    let mut samples_seen = 0u64;
    'epochs: for epoch in 0..plan.meta.epochs {
        let mut order: Vec<usize> = (0..plan.meta.num_samples).collect();
        SplitMix64::derived(
            settings.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9),
            "batch-order",
        )
        .shuffle(&mut order);
        for positions in order.chunks(settings.batch_size) {
            if step >= total {
                break 'epochs;
            }
            if observer.cancelled() {
                return Err(ModelError::Cancelled);
            }
            let batch = build_batch(
                dataset,
                plan,
                epoch,
                positions,
                obj.itm_negatives,
                &mut itm_rng,
                device,
            )?;
            let terms = mr_losses(&model, ema.as_ref(), &batch, obj)?;
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
            let grads = terms.total.backward()?;
            let lr = settings.optim.lr_at(step, total);
            let grad_norm = optimiser.step(&grads, lr)?;
            if !grad_norm.is_finite() {
                return Err(ModelError::NonFinite {
                    step,
                    term: "gradient norm".into(),
                    value: grad_norm as f32,
                });
            }
            if let Some(ema) = &ema {
                ema.update(&store, obj.ema_momentum)?;
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
            records.push(record);
            samples_seen += positions.len() as u64;
            step += 1;
        }
    }
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
