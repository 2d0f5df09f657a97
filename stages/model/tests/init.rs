//! The weight initialisation decides whether the image reaches the encoder's output when training
//! starts (docs/results.md, the P1 amendment of 2026-12-02): under N(0, 0.02) at width 32 the patch
//! projection's output is drowned by the sin-cos position table, so every image gives nearly the
//! same features; Xavier (MAE's) keeps the image visible.

mod common;

use candle_core::{Device, Tensor};
use umdflow_model::batch::patchify;
use umdflow_model::config::{VisionPositions, WeightInit};
use umdflow_model::model::UmdModel;
use umdflow_model::objective::ObjectiveConfig;
use umdflow_model::store::ParamStore;
use umdflow_model::train::model_config_for;

/// The share of the initial vision encoder's mean patch token that depends on the image: the
/// spread across images (std per feature, averaged) over the features' root mean square.
fn image_share(init: WeightInit) -> f64 {
    let data = common::ci_dataset();
    let plan = common::plan_for(&data, 1, 0);
    let mut config = model_config_for(&data, &plan, "tiny").expect("config");
    config.vision_positions = VisionPositions::Sincos;
    config.weight_init = init;
    let mut store = ParamStore::new(&Device::Cpu, 0).with_weight_init(init);
    let dims = ObjectiveConfig::default().feature_dims(&config);
    let model = UmdModel::new(&mut store, &config, dims).expect("model");
    let rows: Vec<usize> = (0..64.min(data.n)).collect();
    let patches = Tensor::from_vec(
        patchify(&data, &rows, config.patch_size, 2.0, -1.0).expect("patches"),
        (rows.len(), config.num_patches(), config.patch_dim()),
        &Device::Cpu,
    )
    .expect("tensor");
    let last = model.vision.forward(&patches, None).expect("forward").last;
    let tokens = last.dim(1).expect("dims");
    let features: Vec<Vec<f32>> = last
        .narrow(1, 1, tokens - 1)
        .and_then(|t| t.mean(1))
        .and_then(|t| t.to_vec2())
        .expect("features");
    let (n, width) = (features.len() as f64, features[0].len());
    let mut spread = 0.0;
    let mut square = 0.0;
    for j in 0..width {
        let column: Vec<f64> = features.iter().map(|row| row[j] as f64).collect();
        let mean = column.iter().sum::<f64>() / n;
        spread += (column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        square += column.iter().map(|v| v * v).sum::<f64>() / n;
    }
    (spread / width as f64) / (square / width as f64).sqrt()
}

#[test]
fn xavier_lets_the_image_reach_the_initial_features_and_normal_002_does_not() {
    let normal = image_share(WeightInit::Normal);
    let xavier = image_share(WeightInit::Xavier);
    eprintln!("image share of the initial features: normal {normal:.4}, xavier {xavier:.4}");
    assert!(
        xavier > 3.0 * normal,
        "xavier {xavier} should carry several times more of the image than normal {normal}"
    );
}

#[test]
fn the_store_draws_weight_matrices_by_its_init() {
    let draw = |init| {
        let mut store = ParamStore::new(&Device::Cpu, 7).with_weight_init(init);
        let w = store
            .get(
                "layer.weight",
                &[32, 64],
                umdflow_model::store::ParamRole::Weight,
                umdflow_model::store::Init::Matrix {
                    fan_in: 64,
                    fan_out: 32,
                },
            )
            .expect("weight");
        w.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values")
    };
    let bound = (6.0f64 / 96.0).sqrt() as f32;
    let xavier = draw(WeightInit::Xavier);
    assert!(xavier.iter().all(|v| v.abs() <= bound));
    // Uniform on [-b, b] has std b / sqrt(3); 2,048 draws land within 10 % of it.
    let std = (xavier.iter().map(|v| v * v).sum::<f32>() / xavier.len() as f32).sqrt();
    assert!((std / (bound / 3f32.sqrt()) - 1.0).abs() < 0.1, "std {std}");
    let normal = draw(WeightInit::Normal);
    let std = (normal.iter().map(|v| v * v).sum::<f32>() / normal.len() as f32).sqrt();
    assert!((std / 0.02 - 1.0).abs() < 0.1, "std {std}");
}
