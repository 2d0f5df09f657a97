//! The step's gradients with the independent passes on separate threads (`mr_gradients`): the
//! same terms as one graph (`mr_losses`), the same gradient up to the order of the sums, and the
//! same bits whatever the thread count.

mod common;

use candle_core::Device;
use candle_core::backprop::GradStore;
use umdflow_model::batch::Batch;
use umdflow_model::gradients::mr_gradients;
use umdflow_model::losses::FeatureDistance;
use umdflow_model::model::UmdModel;
use umdflow_model::objective::{EmaTarget, ObjectiveConfig, TargetNetwork, mr_losses};
use umdflow_model::store::ParamStore;
use umdflow_model::train::model_config_for;

struct Setup {
    store: ParamStore,
    model: UmdModel,
    ema: EmaTarget,
    batch: Batch,
}

fn setup(objective: &ObjectiveConfig) -> Setup {
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 3);
    let config = model_config_for(&dataset, &plan, "tiny").unwrap();
    let mut store = ParamStore::new(&Device::Cpu, 5);
    let model = UmdModel::new(&mut store, &config, objective.feature_dims(&config)).unwrap();
    // A target network that differs from the online one, as after a few steps.
    let mut other = ParamStore::new(&Device::Cpu, 6);
    let other_model = UmdModel::new(&mut other, &config, objective.feature_dims(&config)).unwrap();
    let ema = EmaTarget::new(&other, &other_model).unwrap();
    let batch = common::first_batch(&dataset, &plan, 16);
    Setup {
        store,
        model,
        ema,
        batch,
    }
}

/// Every parameter's gradient as f32 values, in the store's order (empty when it has none).
fn flat(store: &ParamStore, grads: &GradStore) -> Vec<(String, Vec<f32>)> {
    store
        .iter()
        .map(|(name, param)| {
            let values = grads
                .get(param.var.as_tensor())
                .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .unwrap_or_default();
            (name.clone(), values)
        })
        .collect()
}

fn objectives() -> Vec<(&'static str, ObjectiveConfig)> {
    vec![
        ("every term, EMA targets", ObjectiveConfig::default()),
        (
            "stop-gradient block targets, cosine",
            ObjectiveConfig {
                target_network: TargetNetwork::Stopgrad,
                target_layer: Some(1),
                distance: FeatureDistance::Cosine,
                ..ObjectiveConfig::default()
            },
        ),
        (
            "MLM and ITM only",
            ObjectiveConfig {
                mim: false,
                feamim: false,
                feamlm: false,
                ..ObjectiveConfig::default()
            },
        ),
        (
            "MIM only",
            ObjectiveConfig {
                mlm: false,
                itm: false,
                feamim: false,
                feamlm: false,
                ..ObjectiveConfig::default()
            },
        ),
    ]
}

#[test]
fn the_split_step_has_the_terms_and_gradient_of_one_graph() {
    for (what, objective) in objectives() {
        let s = setup(&objective);
        let one = mr_losses(&s.model, Some(&s.ema), &s.batch, &objective).unwrap();
        let reference = flat(&s.store, &one.total.backward().unwrap());
        let (terms, grads) = mr_gradients(&s.model, Some(&s.ema), &s.batch, &objective).unwrap();
        // The forward passes are the same operations: the same values, bit for bit.
        assert_eq!(terms.values, one.values, "{what}");
        assert_eq!(
            terms.total.to_scalar::<f32>().unwrap(),
            one.total.to_scalar::<f32>().unwrap(),
            "{what}"
        );
        // The gradient is the same sum in another order: equal up to rounding, on every
        // parameter, and present exactly where one backward pass puts it.
        let split = flat(&s.store, &grads);
        let mut with_gradient = 0;
        for ((name, expect), (_, got)) in reference.iter().zip(&split) {
            assert_eq!(
                expect.len(),
                got.len(),
                "{what}: {name} has a gradient in one only"
            );
            with_gradient += usize::from(!expect.is_empty());
            let scale = expect.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (e, g) in expect.iter().zip(got) {
                assert!(
                    (e - g).abs() <= 1e-4 * scale,
                    "{what}: {name}: {g} against {e} (largest entry {scale})"
                );
            }
        }
        assert!(
            with_gradient > 10,
            "{what}: only {with_gradient} parameters"
        );
    }
}

#[test]
fn the_thread_count_does_not_change_the_gradient() {
    let objective = ObjectiveConfig::default();
    let s = setup(&objective);
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (terms, grads) = pool
            .install(|| mr_gradients(&s.model, Some(&s.ema), &s.batch, &objective))
            .unwrap();
        (terms.values, flat(&s.store, &grads))
    };
    let one = on(1);
    assert!(one.1.iter().any(|(_, g)| !g.is_empty()));
    for threads in [2, 3] {
        assert!(
            on(threads) == one,
            "{threads} threads gave other gradients than 1"
        );
    }
}
