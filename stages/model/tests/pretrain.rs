//! MR-Pretrain on SynthRad `ci` data: gradients reach every parameter, the loss falls, runs repeat
//! bit for bit, checkpoints round-trip, and a non-finite loss stops training with its step.

mod common;

use candle_core::Device;
use umdflow_model::batch::build_batch;
use umdflow_model::checkpoint::{CHECKPOINT_FILE, load_checkpoint, save_checkpoint};
use umdflow_model::error::ModelError;
use umdflow_model::model::UmdModel;
use umdflow_model::negatives::NegativeSampling;
use umdflow_model::objective::{EmaTarget, ObjectiveConfig, TargetNetwork, mr_losses};
use umdflow_model::optim::OptimConfig;
use umdflow_model::rng::SplitMix64;
use umdflow_model::store::ParamStore;
use umdflow_model::train::{Silent, TrainSettings, model_config_for, pretrain};

fn settings(seed: u64, max_steps: u64) -> TrainSettings {
    TrainSettings {
        preset: "tiny".into(),
        batch_size: 32,
        seed,
        objective: ObjectiveConfig::default(),
        optim: OptimConfig {
            lr: 1e-3,
            ..OptimConfig::default()
        },
        max_steps: Some(max_steps),
        vision_positions: Default::default(),
        weight_init: Default::default(),
    }
}

fn gradient_reaches_every_parameter(objective: ObjectiveConfig) {
    let mut dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 3);
    // Make one sample's text fill every position, so that every text position embedding is used.
    let first = plan.samples[0] as usize;
    let t = dataset.max_len;
    dataset.attention_mask[first * t..(first + 1) * t].fill(1);
    let config = model_config_for(&dataset, &plan, "tiny").unwrap();
    let mut store = ParamStore::new(&Device::Cpu, 5);
    let model = UmdModel::new(&mut store, &config, objective.feature_dims(&config)).unwrap();
    let ema = EmaTarget::new(&store, &model).unwrap();
    let batch = common::first_batch(&dataset, &plan, 8);
    let terms = mr_losses(&model, Some(&ema), &batch, &objective).unwrap();
    assert_eq!(terms.values.len(), 5, "{:?}", terms.values);
    let grads = terms.total.backward().unwrap();
    let mut without = Vec::new();
    for (name, param) in store.iter() {
        let norm = grads
            .get(param.var.as_tensor())
            .map(|g| {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .unwrap_or(0.0);
        if norm <= 0.0 || !norm.is_finite() {
            without.push(name.clone());
        }
    }
    assert!(
        without.is_empty(),
        "{} of {} parameters got no gradient: {without:?}",
        without.len(),
        store.len()
    );
}

#[test]
fn every_trainable_parameter_receives_a_gradient_with_ema_targets() {
    gradient_reaches_every_parameter(ObjectiveConfig::default());
}

#[test]
fn every_trainable_parameter_receives_a_gradient_with_stopgrad_block_targets() {
    gradient_reaches_every_parameter(ObjectiveConfig {
        target_network: TargetNetwork::Stopgrad,
        target_layer: Some(1),
        distance: umdflow_model::losses::FeatureDistance::Cosine,
        ..ObjectiveConfig::default()
    });
}

#[test]
fn total_loss_falls_on_synthrad_ci() {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 2, 0);
    let outcome = pretrain(&dataset, &plan, &settings(0, 40), &Device::Cpu, 1, &Silent).unwrap();
    let totals: Vec<f32> = outcome.records.iter().map(|r| r.total).collect();
    assert_eq!(totals.len(), 40);
    let head = totals[..5].iter().sum::<f32>() / 5.0;
    let tail = totals[35..].iter().sum::<f32>() / 5.0;
    assert!(
        tail < 0.85 * head,
        "loss did not fall: first steps {head}, last steps {tail}; {totals:?}"
    );
    // Each data-level term falls too.
    for term in ["mim", "mlm"] {
        let series: Vec<f32> = outcome
            .records
            .iter()
            .map(|r| r.terms.iter().find(|(n, _)| *n == term).unwrap().1)
            .collect();
        let (a, b) = (
            series[..5].iter().sum::<f32>(),
            series[35..].iter().sum::<f32>(),
        );
        assert!(b < a, "{term} did not fall: {series:?}");
    }
}

fn checkpoint_bytes(seed: u64) -> Vec<u8> {
    // Two threads: the CI machine's count.
    checkpoint_bytes_on(seed, 2)
}

fn checkpoint_bytes_on(seed: u64, threads: usize) -> Vec<u8> {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 0);
    let outcome = pretrain(
        &dataset,
        &plan,
        &settings(seed, 4),
        &Device::Cpu,
        threads,
        &Silent,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &outcome.store, &outcome.info).unwrap();
    std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap()
}

#[test]
fn one_seed_gives_a_bit_identical_checkpoint() {
    let a = checkpoint_bytes(7);
    let b = checkpoint_bytes(7);
    assert!(a == b, "two runs with seed 7 wrote different checkpoints");
    assert!(
        checkpoint_bytes(8) != a,
        "seed 8 wrote the same checkpoint as seed 7"
    );
}

#[test]
fn the_thread_count_does_not_change_the_checkpoint() {
    // The passes run side by side and their gradients are added in a fixed order; the products
    // and kernels split rows, never a sum (docs/method.md).
    assert!(
        checkpoint_bytes_on(7, 1) == checkpoint_bytes(7),
        "1 and 2 threads wrote different checkpoints"
    );
}

#[test]
fn checkpoint_round_trip_is_exact() {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 0);
    let outcome = pretrain(&dataset, &plan, &settings(3, 2), &Device::Cpu, 1, &Silent).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &outcome.store, &outcome.info).unwrap();
    let (store, model, info) = load_checkpoint(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(info, outcome.info);
    assert_eq!(store.len(), outcome.store.len());
    for (name, param) in outcome.store.iter() {
        let loaded = store
            .param(name)
            .unwrap_or_else(|| panic!("{name} missing after load"));
        let (a, b) = (
            param.var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            loaded.var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} changed in the round trip"
        );
    }
    // The reloaded model computes exactly what the trained one does.
    let batch = build_batch(
        &dataset,
        &plan,
        0,
        &[0, 1, 2, 3],
        NegativeSampling::Random,
        &mut SplitMix64::new(4),
        &Device::Cpu,
    )
    .unwrap();
    let objective = ObjectiveConfig {
        target_network: TargetNetwork::Stopgrad,
        ..ObjectiveConfig::default()
    };
    let before = mr_losses(&outcome.model, None, &batch, &objective)
        .unwrap()
        .total
        .to_scalar::<f32>()
        .unwrap();
    let after = mr_losses(&model, None, &batch, &objective)
        .unwrap()
        .total
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(before.to_bits(), after.to_bits());
}

#[test]
fn a_non_finite_loss_stops_training_naming_the_step() {
    let mut dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 0);
    dataset.images.iter_mut().for_each(|v| *v = f32::NAN);
    let err = match pretrain(&dataset, &plan, &settings(0, 3), &Device::Cpu, 1, &Silent) {
        Err(err) => err,
        Ok(_) => panic!("training on NaN images succeeded"),
    };
    assert!(
        matches!(err, ModelError::NonFinite { step: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("at step 0"), "{err}");
}

#[test]
fn an_exploding_learning_rate_is_caught_at_its_step() {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 0);
    let mut s = settings(0, 20);
    s.optim = OptimConfig {
        lr: 1e30,
        warmup_ratio: 0.0,
        max_grad_norm: 0.0,
        ..OptimConfig::default()
    };
    match pretrain(&dataset, &plan, &s, &Device::Cpu, 1, &Silent) {
        Err(ModelError::NonFinite { step, .. }) => assert!(step >= 1, "step {step}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("lr 1e30 trained 20 finite steps"),
    }
}

/// `norm_pix: false` scores MIM against the encoder's own input pixels instead of per-patch
/// normalised ones; everything else in the step is the same.
#[test]
fn norm_pix_switches_the_mim_target() {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 3);
    let config = model_config_for(&dataset, &plan, "tiny").unwrap();
    let only_mim = ObjectiveConfig {
        mlm: false,
        itm: false,
        feamim: false,
        feamlm: false,
        ..ObjectiveConfig::default()
    };
    let mut store = ParamStore::new(&Device::Cpu, 2);
    let model = UmdModel::new(&mut store, &config, only_mim.feature_dims(&config)).unwrap();
    let batch = common::first_batch(&dataset, &plan, 8);
    let mim = |norm_pix: bool| {
        let objective = ObjectiveConfig {
            norm_pix,
            ..only_mim.clone()
        };
        mr_losses(&model, None, &batch, &objective).unwrap().values[0].1
    };
    // Recompute both targets by hand from the same decoder output.
    let c = &model.config;
    let text = model
        .text
        .forward(&batch.input_ids, &batch.text_mask)
        .unwrap();
    let visible = model
        .vision
        .forward(&batch.patches, Some(&batch.keep))
        .unwrap();
    let fused = model
        .fuse(&text.last, &batch.text_mask, &visible.last, c.mim_layer)
        .unwrap();
    let pixels = model
        .mim_head
        .pixels(
            &model
                .mim_head
                .decode(&fused.image[c.mim_layer], &batch.restore)
                .unwrap(),
        )
        .unwrap();
    let expect = |target: &candle_core::Tensor| {
        umdflow_model::losses::masked_patch_mse(&pixels, target, &batch.removed)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(mim(true), expect(&batch.pixel_targets));
    assert_eq!(mim(false), expect(&batch.patches));
    assert_ne!(mim(true), mim(false));
}

/// `vision_positions: sincos` gives the ViT MAE's fixed table: no parameter, nothing saved, and
/// the positions after training are the table itself.
#[test]
fn sincos_vision_positions_are_fixed_and_not_trained() {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 0);
    let mut s = settings(0, 3);
    s.vision_positions = umdflow_model::config::VisionPositions::Sincos;
    let outcome = pretrain(&dataset, &plan, &s, &Device::Cpu, 1, &Silent).unwrap();
    assert!(
        outcome
            .store
            .param("vision_encoder.positional_embedding")
            .is_none()
    );
    let c = &outcome.info.model;
    assert_eq!(
        c.vision_positions,
        umdflow_model::config::VisionPositions::Sincos
    );
    let table = umdflow_model::model::heads::sincos_2d(c.vision_width, c.grid());
    let used: Vec<f32> = outcome
        .model
        .vision
        .positional_embedding
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(used, table);
    // The learned default keeps its trainable table, which training moves.
    let learned = pretrain(&dataset, &plan, &settings(0, 3), &Device::Cpu, 1, &Silent).unwrap();
    let param = learned
        .store
        .param("vision_encoder.positional_embedding")
        .expect("learned positions are a parameter");
    let mut fresh = ParamStore::new(&Device::Cpu, 0);
    UmdModel::new(&mut fresh, &learned.info.model, learned.info.feature_dims).unwrap();
    let before = fresh
        .param("vision_encoder.positional_embedding")
        .unwrap()
        .var
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let after = param.var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(before, after);
    // A sin-cos checkpoint loads back with the same table.
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &outcome.store, &outcome.info).unwrap();
    let (_, loaded, _) = load_checkpoint(dir.path(), &Device::Cpu).unwrap();
    let reloaded: Vec<f32> = loaded
        .vision
        .positional_embedding
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(reloaded, table);
}

/// The EMA momentum schedule reaches the training loop: from the same start momentum, a rising
/// schedule gives other feature targets from the second step on, so other weights.
#[test]
fn the_ema_schedule_changes_training() {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 0);
    let train = |end: Option<f64>| {
        let mut s = settings(0, 3);
        s.objective.ema_momentum = 0.5;
        s.objective.ema_momentum_end = end;
        let outcome = pretrain(&dataset, &plan, &s, &Device::Cpu, 1, &Silent).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_checkpoint(dir.path(), &outcome.store, &outcome.info).unwrap();
        std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap()
    };
    let constant = train(None);
    assert_eq!(constant, train(None));
    assert_ne!(constant, train(Some(0.999)));
}
