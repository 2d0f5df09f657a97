//! The measurements that expose shortcuts measure what they claim: the frozen-feature `probe`
//! reads the checkpoint it is given (a destroyed encoder probes at the majority class, one with
//! a planted feature probes perfectly, raw pixels do not care), and `evaluate`'s blank-image pass
//! equals the normal pass for a model that cannot see images, while its blank-text pass does not.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use umdflow_data::artifact::{Counts, Dataset, Meta};
use umdflow_model::checkpoint::{CheckpointInfo, save_checkpoint};
use umdflow_model::model::{FeatureDims, UmdModel};
use umdflow_model::store::ParamStore;
use umdflow_model::{ModelConfig, rng::SplitMix64};
use umdflow_stages::StageKind;
use umdflow_tune::{CoordinateTuneKind, EvaluateKind, ProbeKind};

const SIZE: usize = 16;
const T: usize = 8;
const VOCAB: usize = 24;
const PATCH_EMBED: &str = "vision_encoder.patch_embed.weight";

/// 60 images of uniform noise whose label pixels carry the label (0.1 → class 0, 0.9 →
/// class 1): the top-left pixel of every 8 × 8 patch; findings: `spot` = the label, `coin` = an unrelated random bit. The caption names
/// the class. Splits by `i % 3`: 0-1 train, 2 test.
fn planted_dataset() -> Dataset {
    let n = 60;
    let mut rng = SplitMix64::new(3);
    let (mut images, mut ids, mut mask, mut labels, mut findings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let class = (i / 3) % 2;
        let coin = rng.below(2);
        for k in 0..SIZE * SIZE {
            images.push(
                if (k / SIZE).is_multiple_of(8) && (k % SIZE).is_multiple_of(8) {
                    [0.1, 0.9][class]
                } else {
                    rng.next_f64() as f32
                },
            );
        }
        let text = [2, 5 + class as u32, 9 + (i % 4) as u32, 3];
        ids.extend(text);
        ids.extend(std::iter::repeat_n(0, T - text.len()));
        mask.extend([1u8; 4]);
        mask.extend([0u8; T - 4]);
        labels.push(class as u32);
        findings.extend([class as u8, coin as u8]);
    }
    let signatures: Vec<u64> = findings
        .chunks(2)
        .map(|f| u64::from(f[0]) * 2 + u64::from(f[1]))
        .collect();
    let split: Vec<u8> = (0..n).map(|i| if i % 3 == 2 { 2 } else { 0 }).collect();
    let meta = Meta {
        source: "planted".into(),
        licence: "test data".into(),
        domain: "target".into(),
        image_size: SIZE,
        channels: 1,
        max_len: T,
        counts: Counts {
            train: 40,
            val: 0,
            test: 20,
            questions: 0,
        },
        class_counts: vec![30, 30],
        classes: vec!["clear".into(), "spot".into()],
        answers: vec![],
        question_types: vec![],
        findings: vec!["spot".into(), "coin".into()],
        seed: 3,
        params: Value::Null,
        vocab_size: VOCAB,
        pad_id: 0,
        unk_id: 1,
        cls_id: 2,
        sep_id: 3,
        mask_id: 4,
    };
    Dataset {
        images,
        n,
        channels: 1,
        size: SIZE,
        input_ids: ids,
        attention_mask: mask,
        max_len: T,
        labels,
        split,
        vqa: None,
        retrieval: None,
        findings: Some(findings),
        signatures: Some(signatures),
        meta,
    }
}

/// A fresh tiny checkpoint (patch 8) with its patch embedding replaced by `patch_embed`
/// ([vision_width, 64]) when given.
fn checkpoint(dir: &Path, patch_embed: Option<&dyn Fn(usize, usize) -> f32>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = ModelConfig::preset("tiny", SIZE, 1, 8, VOCAB, T).unwrap();
    let dims = FeatureDims {
        image: config.fusion_width,
        text: config.fusion_width,
    };
    let mut store = ParamStore::new(&Device::Cpu, 11);
    UmdModel::new(&mut store, &config, dims).unwrap();
    if let Some(value) = patch_embed {
        let (w, p) = (config.vision_width, config.patch_dim());
        let values: Vec<f32> = (0..w * p).map(|k| value(k / p, k % p)).collect();
        let tensor = Tensor::from_vec(values, (w, p), &Device::Cpu).unwrap();
        store.param(PATCH_EMBED).unwrap().var.set(&tensor).unwrap();
    }
    let info = CheckpointInfo {
        preset: "tiny".into(),
        model: config,
        feature_dims: dims,
    };
    save_checkpoint(dir, &store, &info).unwrap();
    dir.to_path_buf()
}

/// Runs a kind with the given inputs `(kind, dir)` into `out` and returns its metrics.json.
fn run(kind: &dyn StageKind, inputs: &[(&str, &Path)], p: Value, out: &Path) -> Value {
    common::run_kind(kind, inputs, p, out);
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

fn probe(r: &Path, checkpoint: &Path, out: &str) -> Value {
    run(
        &ProbeKind,
        &[("ingest", &r.join("data")), ("pretrain", checkpoint)],
        json!({"device": "cpu", "pixel_side": 16}),
        &r.join(out),
    )
}

#[test]
fn the_probe_reads_the_checkpoint_it_is_given() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("data")).unwrap();
    planted_dataset().save(&r.join("data")).unwrap();

    let random = probe(r, &checkpoint(&r.join("random"), None), "p_random");
    // No patch embedding: every image gives the same features, so the probe can only answer the
    // training majority, and each finding's scores tie (AUC 0.5).
    let blind = probe(
        r,
        &checkpoint(&r.join("blind"), Some(&|_, _| 0.0)),
        "p_blind",
    );
    // A planted feature: every channel reads the label pixel of its patch (patch value 0), with
    // alternating signs so that the layer norms keep it.
    let plant = |row: usize, col: usize| match col {
        0 => [10.0, -10.0][row % 2],
        _ => 0.0,
    };
    let planted = probe(
        r,
        &checkpoint(&r.join("planted"), Some(&plant)),
        "p_planted",
    );

    assert_eq!(planted["checkpoint"], "pretrain");
    assert_eq!(
        (
            planted["train_images"].as_u64(),
            planted["test_images"].as_u64()
        ),
        (Some(40), Some(20))
    );
    let enc = &planted["encoder"];
    assert_eq!(
        enc["feature_dim"],
        2 * 32,
        "[CLS | mean patch] of the tiny ViT"
    );
    assert_eq!(enc["accuracy"], 1.0, "{planted}");
    assert_eq!(enc["balanced_accuracy"], 1.0);
    assert_eq!(enc["auc"]["macro_auc"], 1.0);
    assert_eq!(enc["findings"]["per_finding"]["spot"], 1.0);

    let enc = &blind["encoder"];
    assert_eq!(enc["accuracy"], blind["majority_accuracy"], "{blind}");
    assert_eq!(enc["balanced_accuracy"], 0.5);
    assert_eq!(enc["findings"]["per_finding"]["spot"], 0.5);
    assert_eq!(enc["findings"]["per_finding"]["coin"], 0.5);

    // The random encoder differs from both: the features come from the weights.
    assert_ne!(random["encoder"], planted["encoder"]);
    assert_ne!(random["encoder"], blind["encoder"]);
    // The raw-pixel baseline reads no checkpoint: the same in all three, and it sees the label
    // pixels (16 px images are not pooled at `pixel_side: 16`).
    assert_eq!(random["pixels"], planted["pixels"]);
    assert_eq!(random["pixels"], blind["pixels"]);
    assert_eq!(planted["pixel_grid"], 16);
    assert!(
        planted["pixels"]["auc"]["macro_auc"].as_f64().unwrap() > 0.9,
        "{planted}"
    );
}

#[test]
fn the_blank_image_pass_equals_the_normal_pass_for_a_model_that_cannot_see() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("data")).unwrap();
    planted_dataset().save(&r.join("data")).unwrap();
    let pre = checkpoint(&r.join("pre"), None);
    run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("pretrain", &pre)],
        json!({"task": "classification", "epochs": 3, "batch_size": 8, "device": "cpu",
               "gmcoord": {"enabled": false}}),
        &r.join("tuned"),
    );
    // Blind the tuned model: without a patch embedding no pixel reaches any feature.
    let file = r.join("tuned").join("checkpoint.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let zero = tensors[PATCH_EMBED].zeros_like().unwrap();
    tensors.insert(PATCH_EMBED.into(), zero);
    candle_core::safetensors::save(&tensors, &file).unwrap();

    let m = run(
        &EvaluateKind,
        &[
            ("ingest", &r.join("data")),
            ("coordinate-tune", &r.join("tuned")),
        ],
        json!({"device": "cpu"}),
        &r.join("eval"),
    );
    let blind = &m["blind"];
    assert_eq!(
        blind["blank_image"]["classification"], m["classification"],
        "{m}"
    );
    assert_eq!(blind["blank_image"]["ece"], m["ece"]);
    assert_eq!(
        m["items"]["blind.blank_image.classification.accuracy"],
        m["items"]["classification.accuracy"]
    );
    // The caption names the class, so taking the text away changes the answers.
    assert_ne!(
        blind["blank_text"]["classification"], m["classification"],
        "{m}"
    );
    let items = m["items"]["classification.accuracy"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    let mean = items.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 20.0;
    assert_eq!(Some(mean), m["classification"]["accuracy"].as_f64());
}

#[test]
fn retrieval_reports_semantic_recall_beside_instance_recall() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("data")).unwrap();
    planted_dataset().save(&r.join("data")).unwrap();
    let pre = checkpoint(&r.join("pre"), None);
    run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("pretrain", &pre)],
        json!({"task": "retrieval", "epochs": 1, "batch_size": 8, "negatives": 2, "device": "cpu",
               "gmcoord": {"enabled": false}}),
        &r.join("tuned"),
    );
    let m = run(
        &EvaluateKind,
        &[
            ("ingest", &r.join("data")),
            ("coordinate-tune", &r.join("tuned")),
        ],
        json!({"device": "cpu"}),
        &r.join("eval"),
    );
    assert_eq!(m["test_items"], 20);
    assert!(m["blind"].is_null(), "no blind passes for retrieval: {m}");
    // Four signatures among 20 test items: semantic recall is never below instance recall, and
    // every test item has its per-item hits for the report's bootstrap.
    for key in ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"] {
        let semantic = m["semantic_retrieval"][key].as_f64().unwrap();
        let instance = m["retrieval"][key].as_f64().unwrap();
        assert!(semantic >= instance, "{key}: {semantic} < {instance}");
        let items = m["items"][format!("semantic_retrieval.{key}")]
            .as_array()
            .unwrap();
        assert_eq!(items.len(), 20);
    }
}
