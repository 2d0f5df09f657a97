//! Does MR-Pretrain build or destroy image features? A small, fast diagnostic (no stage machinery):
//! trains the `tiny` model on an ingest artifact's training split for a few hundred steps under
//! several objective variants and reports, for each, the last ITM / FeaMIM losses and what the
//! frozen image encoder's features carry: their spread across images (collapse shows as a spread
//! near 0) and a nearest-class-mean accuracy on [CLS ‖ mean patch] features, fitted on half the
//! training images and scored on the other half, next to the random-init encoder.
//!
//!   cargo run -p umdflow-model --example mr_diagnostics -- INGEST_DIR [STEPS] [LR] [VARIANT...]
//!
//! Variants: `stopgrad` (feature targets from the online encoders), `ema` (momentum 0.999),
//! `ema-cosine` (0.99 → 0.9999), `data-only` (no feature terms), `no-itm`, `itm-only`, `pix`
//! (norm_pix off, no feature terms),
//! `sincos` (fixed ViT positions, no feature terms), `m3ae-init` (stopgrad with every weight
//! matrix from M3AE's N(0, 0.02) instead of `pretrain`'s default Xavier-uniform).
//!
//! For each variant it also prints the ITM loss curve (means over 50-step windows) and the ITM
//! accuracy on the test split (training split when there is none): every text against its own
//! image and against the next image of its batch of 32 whose finding signature differs. The batch
//! size is 64, or `MR_BATCH`.

use std::path::PathBuf;

use candle_core::{D, Device, Tensor};
use umdflow_data::artifact::Dataset;
use umdflow_model::batch::patchify;
use umdflow_model::config::{VisionPositions, WeightInit};
use umdflow_model::masking::{MaskPlan, PlanSettings, TokenInfo};
use umdflow_model::model::UmdModel;
use umdflow_model::objective::{ObjectiveConfig, TargetNetwork};
use umdflow_model::optim::OptimConfig;
use umdflow_model::train::{Silent, TrainSettings, pretrain};

fn plan(data: &Dataset, rows: &[u32], epochs: usize) -> MaskPlan {
    let m = &data.meta;
    let settings = PlanSettings {
        epochs,
        image_ratio: 0.75,
        text_ratio: 0.15,
        mask_token_prob: 0.8,
        random_token_prob: 0.1,
        patch_size: 8,
        seed: 0,
    };
    let tokens = TokenInfo {
        vocab_size: m.vocab_size,
        mask_id: m.mask_id,
        special_ids: vec![m.pad_id, m.unk_id, m.cls_id, m.sep_id, m.mask_id],
    };
    MaskPlan::generate(
        &settings,
        rows,
        &data.input_ids,
        &data.attention_mask,
        data.max_len,
        data.size,
        &tokens,
    )
    .expect("masking plan")
}

/// [CLS ‖ mean of patch tokens] of the frozen image encoder, one row per image.
fn image_features(model: &UmdModel, data: &Dataset, rows: &[usize]) -> Vec<Vec<f64>> {
    let c = &model.config;
    let mut out = Vec::new();
    for chunk in rows.chunks(64) {
        let patches = Tensor::from_vec(
            patchify(data, chunk, c.patch_size, 2.0, -1.0).unwrap(),
            (chunk.len(), c.num_patches(), c.patch_dim()),
            &Device::Cpu,
        )
        .unwrap();
        let last = model.vision.forward(&patches, None).unwrap().last;
        let cls = last.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
        let mean = last.narrow(1, 1, c.num_patches()).unwrap().mean(1).unwrap();
        let both = Tensor::cat(&[&cls, &mean], D::Minus1).unwrap();
        out.extend(
            both.to_dtype(candle_core::DType::F64)
                .unwrap()
                .to_vec2::<f64>()
                .unwrap(),
        );
    }
    out
}

/// Mean over feature dimensions of the standard deviation across images.
fn spread(features: &[Vec<f64>]) -> f64 {
    let n = features.len() as f64;
    let d = features[0].len();
    (0..d)
        .map(|j| {
            let mean = features.iter().map(|f| f[j]).sum::<f64>() / n;
            (features.iter().map(|f| (f[j] - mean).powi(2)).sum::<f64>() / n).sqrt()
        })
        .sum::<f64>()
        / d as f64
}

/// Balanced accuracy (mean recall over classes) of the nearest class mean on standardised
/// features: fitted on the first half, scored on the rest. Chance is 1 / classes.
fn nearest_mean_accuracy(features: &[Vec<f64>], labels: &[u32]) -> f64 {
    let n = features.len();
    let d = features[0].len();
    let half = n / 2;
    let mut mean = vec![0.0; d];
    let mut sd = vec![0.0; d];
    for j in 0..d {
        mean[j] = features[..half].iter().map(|f| f[j]).sum::<f64>() / half as f64;
        sd[j] = (features[..half]
            .iter()
            .map(|f| (f[j] - mean[j]).powi(2))
            .sum::<f64>()
            / half as f64)
            .sqrt()
            + 1e-8;
    }
    let z = |f: &Vec<f64>| -> Vec<f64> { (0..d).map(|j| (f[j] - mean[j]) / sd[j]).collect() };
    let classes = *labels.iter().max().unwrap() as usize + 1;
    let mut centroid = vec![vec![0.0; d]; classes];
    let mut count = vec![0usize; classes];
    for (f, &y) in features[..half].iter().zip(labels) {
        for (c, v) in centroid[y as usize].iter_mut().zip(z(f)) {
            *c += v;
        }
        count[y as usize] += 1;
    }
    for (c, &k) in centroid.iter_mut().zip(&count) {
        c.iter_mut().for_each(|v| *v /= k.max(1) as f64);
    }
    let mut hits = vec![0usize; classes];
    let mut seen = vec![0usize; classes];
    for (f, y) in features[half..].iter().zip(&labels[half..]) {
        seen[*y as usize] += 1;
        let predicted = {
            let zf = z(f);
            (0..classes)
                .filter(|&c| count[c] > 0)
                .min_by(|&a, &b| {
                    let dist = |c: usize| {
                        centroid[c]
                            .iter()
                            .zip(&zf)
                            .map(|(m, v)| (m - v).powi(2))
                            .sum::<f64>()
                    };
                    dist(a).total_cmp(&dist(b))
                })
                .unwrap_or(0)
        };
        if predicted == *y as usize {
            hits[predicted] += 1;
        }
    }
    let present: Vec<usize> = (0..classes)
        .filter(|&c| seen[c] > 0 && count[c] > 0)
        .collect();
    present
        .iter()
        .map(|&c| hits[c] as f64 / seen[c] as f64)
        .sum::<f64>()
        / present.len() as f64
}

/// ITM accuracy on `rows`: each text against its own image (a match) and against the next image
/// of its chunk of 32 with a different finding signature (a mismatch; skipped when none differs).
fn itm_accuracy(model: &UmdModel, data: &Dataset, rows: &[usize]) -> f64 {
    let c = &model.config;
    let (mut hits, mut total) = (0usize, 0usize);
    for chunk in rows.chunks(32) {
        let n = chunk.len();
        let patches = Tensor::from_vec(
            patchify(data, chunk, c.patch_size, 2.0, -1.0).unwrap(),
            (n, c.num_patches(), c.patch_dim()),
            &Device::Cpu,
        )
        .unwrap();
        let ids: Vec<u32> = chunk
            .iter()
            .flat_map(|&i| data.text_ids(i).to_vec())
            .collect();
        let mask: Vec<f32> = chunk
            .iter()
            .flat_map(|&i| {
                data.attention_mask[i * data.max_len..(i + 1) * data.max_len]
                    .iter()
                    .map(|&m| f32::from(m != 0))
            })
            .collect();
        let ids = Tensor::from_vec(ids, (n, data.max_len), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (n, data.max_len), &Device::Cpu).unwrap();
        let images = model.vision.forward(&patches, None).unwrap().last;
        let texts = model.text.forward(&ids, &mask).unwrap().last;
        let mismatched: Vec<Option<usize>> = (0..n)
            .map(|t| {
                (1..n)
                    .map(|k| (t + k) % n)
                    .find(|&k| data.signature(chunk[k]) != data.signature(chunk[t]))
            })
            .collect();
        let own: Vec<u32> = (0..n as u32).collect();
        let other: Vec<u32> = mismatched
            .iter()
            .enumerate()
            .map(|(t, k)| k.unwrap_or(t) as u32)
            .collect();
        for (pairing, label) in [(own, 1usize), (other, 0usize)] {
            let index = Tensor::from_vec(pairing, n, &Device::Cpu).unwrap();
            let paired = images.index_select(&index, 0).unwrap();
            let fused = model.fuse(&texts, &mask, &paired, c.fusion_layers).unwrap();
            let logits = model
                .itm_logits(&model.pooled(&fused).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (t, l) in logits.iter().enumerate() {
                if label == 0 && mismatched[t].is_none() {
                    continue;
                }
                let predicted = usize::from(l[1] > l[0]);
                hits += usize::from(predicted == label);
                total += 1;
            }
        }
    }
    hits as f64 / total.max(1) as f64
}

/// Raw pixels, 4×4 average-pooled: the baseline any image encoder should reach.
fn pooled_pixels(data: &Dataset, rows: &[usize]) -> Vec<Vec<f64>> {
    let s = data.size;
    let cells = s / 4;
    rows.iter()
        .map(|&i| {
            let image = data.image(i);
            let mut out = vec![0.0; cells * cells];
            for y in 0..s {
                for x in 0..s {
                    out[(y / 4) * cells + x / 4] += image[y * s + x] as f64 / 16.0;
                }
            }
            out
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .expect("usage: mr_diagnostics INGEST_DIR [STEPS] [LR] [VARIANT...]"),
    );
    let steps: u64 = args.get(1).map_or(300, |s| s.parse().expect("STEPS"));
    let lr: f64 = args.get(2).map_or(1e-3, |s| s.parse().expect("LR"));
    let variants: Vec<String> = if args.len() > 3 {
        args[3..].to_vec()
    } else {
        vec!["stopgrad".into(), "data-only".into()]
    };
    let mut data = Dataset::load(&dir).expect("ingest artifact");
    if std::env::var_os("EASY_IMAGES").is_some() {
        // A sanity setting for ITM: every image becomes a flat grey whose level says normal (0.2)
        // or abnormal (0.8), so a matching report is trivial to verify.
        let normal = data
            .meta
            .classes
            .iter()
            .position(|c| c == "normal")
            .unwrap_or(0) as u32;
        let pixels = data.channels * data.size * data.size;
        for i in 0..data.n {
            let level = if data.labels[i] == normal { 0.2 } else { 0.8 };
            data.images[i * pixels..(i + 1) * pixels].fill(level);
        }
    }
    let train: Vec<u32> = data
        .indices_of_split(0)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let rows: Vec<usize> = train.iter().map(|&i| i as usize).collect();
    let labels: Vec<u32> = rows.iter().map(|&i| data.labels[i]).collect();
    let majority = {
        let mut counts = std::collections::HashMap::new();
        labels[labels.len() / 2..]
            .iter()
            .for_each(|y| *counts.entry(y).or_insert(0usize) += 1);
        *counts.values().max().unwrap() as f64 / (labels.len() - labels.len() / 2) as f64
    };
    let batch_size: usize = std::env::var("MR_BATCH").map_or(64, |s| s.parse().expect("MR_BATCH"));
    let epochs = (steps as usize * batch_size).div_ceil(train.len()) + 1;
    let the_plan = plan(&data, &train, epochs);
    println!(
        "{} training images, {}px, majority class {:.3}, {steps} steps at lr {lr}",
        train.len(),
        data.size,
        majority
    );
    let held_out = {
        let test = data.indices_of_split(2);
        if test.is_empty() { rows.clone() } else { test }
    };
    println!("variant\tsteps\titm\tfeamim\tmim\tspread\tnearest_mean_balanced_acc\titm_accuracy");
    let pixels = pooled_pixels(&data, &rows);
    println!(
        "raw-pixels\t-\t-\t-\t-\t{:.4}\t{:.3}",
        spread(&pixels),
        nearest_mean_accuracy(&pixels, &labels)
    );
    for variant in std::iter::once("random-init".to_string()).chain(variants) {
        let mut objective = ObjectiveConfig {
            target_network: TargetNetwork::Stopgrad,
            ..ObjectiveConfig::default()
        };
        let mut positions = VisionPositions::Learned;
        let mut weight_init = WeightInit::Xavier;
        match variant.as_str() {
            "random-init" | "stopgrad" => {}
            "m3ae-init" => weight_init = WeightInit::Normal,
            "ema" => objective.target_network = TargetNetwork::Ema,
            "ema-cosine" => {
                objective.target_network = TargetNetwork::Ema;
                objective.ema_momentum = 0.99;
                objective.ema_momentum_end = Some(0.9999);
            }
            "data-only" => {
                objective.feamim = false;
                objective.feamlm = false;
            }
            "no-itm" => objective.itm = false,
            "itm-only" => {
                objective.mim = false;
                objective.mlm = false;
                objective.feamim = false;
                objective.feamlm = false;
            }
            "pix" => {
                objective.norm_pix = false;
                objective.feamim = false;
                objective.feamlm = false;
            }
            "sincos" => {
                positions = VisionPositions::Sincos;
                objective.feamim = false;
                objective.feamlm = false;
            }
            other => panic!("unknown variant {other}"),
        }
        let settings = TrainSettings {
            preset: "tiny".into(),
            batch_size,
            seed: 0,
            objective,
            optim: OptimConfig {
                lr,
                lr_multiplier_head: 1.0,
                lr_multiplier_fusion: 1.0,
                weight_decay: 0.05,
                warmup_ratio: 0.05,
                ..OptimConfig::default()
            },
            max_steps: Some(if variant == "random-init" { 0 } else { steps }),
            vision_positions: positions,
            weight_init,
        };
        let outcome =
            pretrain(&data, &the_plan, &settings, &Device::Cpu, 2, &Silent).expect("train");
        let tail = |term: &str| {
            let values: Vec<f32> = outcome
                .records
                .iter()
                .rev()
                .take(20)
                .filter_map(|r| r.terms.iter().find(|(n, _)| *n == term).map(|(_, v)| *v))
                .collect();
            if values.is_empty() {
                f32::NAN
            } else {
                values.iter().sum::<f32>() / values.len() as f32
            }
        };
        let features = image_features(&outcome.model, &data, &rows);
        println!(
            "{variant}\t{}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.3}\t{:.3}",
            outcome.records.len(),
            tail("itm"),
            tail("feamim"),
            tail("mim"),
            spread(&features),
            nearest_mean_accuracy(&features, &labels),
            itm_accuracy(&outcome.model, &data, &held_out)
        );
        let itm: Vec<f32> = outcome
            .records
            .iter()
            .filter_map(|r| r.terms.iter().find(|(n, _)| *n == "itm").map(|(_, v)| *v))
            .collect();
        if !itm.is_empty() {
            let windows: Vec<String> = itm
                .chunks(50)
                .map(|w| format!("{:.3}", w.iter().sum::<f32>() / w.len() as f32))
                .collect();
            println!("  itm loss per 50 steps: {}", windows.join(" "));
        }
    }
}
