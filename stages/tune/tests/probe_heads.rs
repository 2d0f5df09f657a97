//! The probe's head measures on a tiny SynthRad artifact: the finding-word mask masks finding
//! words only and its counts add up; zero-shot follows an ITM head hand-set to prefer one class;
//! ITM and MLM scores follow hand-set heads; and the measures reach `metrics.json`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use umdflow_data::IngestKind;
use umdflow_data::artifact::{Dataset, tokenizer_path};
use umdflow_data::tokenizer::TextTokenizer;
use umdflow_model::ModelConfig;
use umdflow_model::checkpoint::{CheckpointInfo, save_checkpoint};
use umdflow_model::model::{FeatureDims, UmdModel};
use umdflow_model::store::ParamStore;
use umdflow_tune::ProbeKind;
use umdflow_tune::probe_mlm::masked_positions;
use umdflow_tune::probe_words::{Vocabulary, finding_masks, finding_words, prompt_rows};
use umdflow_tune::task::{PairRows, features};
use umdflow_tune::views::{SplitView, Test};

const MAX_LEN: usize = 48;

/// A SynthRad report corpus (32 px) and a caption ingest reusing its tokenizer.
fn artifacts(root: &Path) -> (PathBuf, PathBuf) {
    let corpus = root.join("corpus");
    common::run_kind(
        &IngestKind,
        &[],
        json!({"source": "synthrad", "preset": "ci", "domain": "source", "count": 120,
               "split": [0.5, 0.1, 0.4], "max_len": MAX_LEN, "preview": 0, "seed": 0}),
        &corpus,
    );
    let downstream = root.join("downstream");
    common::run_kind(
        &IngestKind,
        &[("ingest", &corpus)],
        json!({"source": "synthrad", "preset": "ci", "domain": "source", "count": 120,
               "split": [0.5, 0.1, 0.4], "text": "caption", "max_len": MAX_LEN,
               "text_leak_train": 0.0, "text_leak_test": 0.0, "preview": 0, "seed": 1}),
        &downstream,
    );
    (corpus, downstream)
}

/// A fresh tiny checkpoint for `data`, with `change` applied to its parameters.
fn checkpoint(dir: &Path, data: &Dataset, change: impl FnOnce(&ParamStore, &UmdModel)) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config =
        ModelConfig::preset("tiny", data.size, 1, 8, data.meta.vocab_size, MAX_LEN).unwrap();
    let dims = FeatureDims {
        image: config.fusion_width,
        text: config.fusion_width,
    };
    let mut store = ParamStore::new(&Device::Cpu, 11);
    let model = UmdModel::new(&mut store, &config, dims).unwrap();
    change(&store, &model);
    let info = CheckpointInfo {
        preset: "tiny".into(),
        model: config,
        feature_dims: dims,
    };
    save_checkpoint(dir, &store, &info).unwrap();
    dir.to_path_buf()
}

fn set(store: &ParamStore, name: &str, values: Vec<f32>, shape: &[usize]) {
    let tensor = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    store
        .param(name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .var
        .set(&tensor)
        .unwrap();
}

fn probe(inputs: &[(&str, &Path)], p: Value, out: &Path) -> Value {
    common::run_kind(&ProbeKind, inputs, p, out);
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

/// The words of a decoded text, lower case, split at anything but letters.
fn words_of(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_finding_word_mask_masks_finding_words_only_and_the_counts_add_up() {
    let root = tempfile::tempdir().unwrap();
    let (corpus, _) = artifacts(root.path());
    let data = SplitView::<Test>::load(&corpus).unwrap().data().clone();
    let tokenizer = TextTokenizer::load(&tokenizer_path(&corpus)).unwrap();
    let vocab = Vocabulary::of(&tokenizer).unwrap();
    let masks = finding_masks(&data, &vocab, &finding_words());
    // What the reports name findings with (`finding_noun` in both dialects, written out here so
    // that the test does not trust the list it checks).
    let words: BTreeSet<String> = [
        "pneumothorax",
        "mass",
        "masslike",
        "lesion",
        "pleural",
        "effusion",
        "fluid",
        "cardiomegaly",
        "enlarged",
        "cardiac",
        "silhouette",
        "pulmonary",
        "edema",
        "vascular",
        "congestion",
        "opacity",
        "airspace",
        "disease",
        "atelectasis",
        "collapse",
        "nodule",
        "nodules",
        "emphysema",
        "hyperinflation",
        "rib",
        "fracture",
        "fractured",
    ]
    .map(String::from)
    .into();
    let t = data.max_len;

    let (mut finding_tokens, mut real_tokens) = (0, 0);
    for (i, mask) in masks.iter().enumerate() {
        let ids = data.text_ids(i);
        // Every marked run of tokens decodes to a finding word.
        let mut k = 0;
        while k < t {
            if mask[k] {
                let start = k;
                while k < t && mask[k] && (k == start || vocab.piece(ids[k]).starts_with("##")) {
                    k += 1;
                }
                let word = tokenizer.decode(&ids[start..k]).unwrap().replace(' ', "");
                assert!(
                    words.contains(&word),
                    "row {i}: `{word}` is not a finding word"
                );
            } else {
                k += 1;
            }
        }
        // Counted another way: the decoded report's finding words, tokenized one by one.
        let expected: usize = words_of(&tokenizer.decode(ids).unwrap())
            .iter()
            .filter(|w| words.contains(*w))
            .map(|w| tokenizer.tokens(w).unwrap().len())
            .sum();
        let marked = mask.iter().filter(|m| **m).count();
        assert_eq!(
            marked,
            expected,
            "row {i}: {}",
            tokenizer.decode(ids).unwrap()
        );
        finding_tokens += marked;
        real_tokens += data.attention_mask[i * t..(i + 1) * t]
            .iter()
            .filter(|m| **m != 0)
            .count()
            - 2;
    }
    assert!(
        finding_tokens > data.n / 2 && finding_tokens < real_tokens,
        "{finding_tokens} finding tokens of {real_tokens}"
    );

    // The two MLM passes: every finding token, then 15 % of the others, never overlapping.
    let (finding, other) = masked_positions(&data, &masks, 0.15, 0);
    let total = |m: &[Vec<usize>]| m.iter().map(Vec::len).sum::<usize>();
    assert_eq!(total(&finding), finding_tokens);
    let others = real_tokens - finding_tokens;
    let drawn = total(&other);
    assert!(
        drawn.abs_diff((others as f64 * 0.15).round() as usize) <= data.n,
        "{drawn} of {others}"
    );
    for (i, positions) in other.iter().enumerate() {
        let ids = data.text_ids(i);
        for &k in positions {
            assert!(!masks[i][k], "row {i}: position {k} is a finding token");
            assert!(![data.meta.cls_id, data.meta.sep_id, data.meta.pad_id].contains(&ids[k]));
        }
    }
    // The draw is seeded.
    assert_eq!(masked_positions(&data, &masks, 0.15, 0).1, other);
    assert_ne!(masked_positions(&data, &masks, 0.15, 1).1, other);
}

/// The text half of the pooled features of each class prompt (the text stream of a model whose
/// text side never attends to the image).
fn prompt_features(model: &UmdModel, data: &Dataset, dir: &Path) -> Vec<Vec<f64>> {
    let tokenizer = TextTokenizer::load(&tokenizer_path(dir)).unwrap();
    let prompts = prompt_rows(&tokenizer, &data.meta.classes, data.max_len).unwrap();
    let f = model.config.fusion_width;
    prompts
        .iter()
        .map(|p| {
            let pairs = PairRows {
                images: vec![0],
                ids: p.ids.clone(),
                mask: p.mask.clone(),
                data,
            };
            let pooled = features(model, &pairs, &Device::Cpu).unwrap().pooled;
            let row: Vec<f32> = pooled.flatten_all().unwrap().to_vec1().unwrap();
            row[..f].iter().map(|&v| f64::from(v)).collect()
        })
        .collect()
}

/// `target` minus its projection onto the span of `others` (Gram-Schmidt): orthogonal to every
/// other prompt's features, positive against the target's.
fn separating_direction(target: &[f64], others: &[&Vec<f64>]) -> Vec<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for o in others {
        let mut v = o.to_vec();
        for b in &basis {
            let c = dot(&v, b);
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
        }
        let norm = dot(&v, &v).sqrt();
        if norm > 1e-9 {
            basis.push(v.iter().map(|x| x / norm).collect());
        }
    }
    let mut w = target.to_vec();
    for b in &basis {
        let c = dot(&w, b);
        w.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
    }
    w
}

#[test]
fn zero_shot_follows_an_itm_head_set_to_prefer_one_class() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (_, downstream) = artifacts(r);
    let data = Dataset::load(&downstream).unwrap();
    let test = SplitView::<Test>::load(&downstream).unwrap().data().clone();
    let classes = data.meta.classes.len();
    assert!(classes >= 3, "{:?}", data.meta.classes);
    let labels: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
    let present = (0..classes).filter(|c| labels.contains(c)).count();

    // "normal" and the most frequent finding class of the test split.
    let count = |c: usize| labels.iter().filter(|&&l| l == c).count();
    let finding_class = (1..classes).max_by_key(|&c| (count(c), c)).unwrap();
    assert!(count(0) > 0 && count(finding_class) > 0);
    for preferred in [0, finding_class] {
        let dir = r.join(format!("prefers_{preferred}"));
        let ckpt = checkpoint(&dir, &data, |store, model| {
            let f = model.config.fusion_width;
            // The text stream ignores the image: its cross-attention outputs zero.
            for k in 0..model.config.fusion_layers {
                let o = format!("multi_modal_language_layers.{k}.cross_attn.o");
                set(store, &format!("{o}.weight"), vec![0.0; f * f], &[f, f]);
                set(store, &format!("{o}.bias"), vec![0.0; f], &[f]);
            }
            let text = prompt_features(model, &test, &downstream);
            let others: Vec<&Vec<f64>> = (0..classes)
                .filter(|&c| c != preferred)
                .map(|c| &text[c])
                .collect();
            let w = separating_direction(&text[preferred], &others);
            // Match logit = 10 · w · text_pool (the image half and the mismatch row are zero).
            let mut weight = vec![0.0f32; 2 * 2 * f];
            for (j, v) in w.iter().enumerate() {
                weight[2 * f + j] = (10.0 * v) as f32;
            }
            set(store, "itm_head.fc.weight", weight, &[2, 2 * f]);
            set(store, "itm_head.fc.bias", vec![0.0; 2], &[2]);
        });
        let m = probe(
            &[("ingest", &downstream), ("pretrain", &ckpt)],
            json!({"device": "cpu", "pixels": false, "mlm": false, "itm": false}),
            &dir.join("probe"),
        );
        let z = &m["zero_shot"];
        let share = labels.iter().filter(|&&l| l == preferred).count() as f64 / labels.len() as f64;
        assert_eq!(z["images"], labels.len(), "{m}");
        let close = |key: &str, expected: f64| {
            let v = z[key].as_f64().unwrap_or_else(|| panic!("{key} in {m}"));
            assert!(
                (v - expected).abs() < 1e-12,
                "{key}: {v} against {expected}"
            );
        };
        // Every image is given the preferred class.
        close("accuracy", share);
        close("balanced_accuracy", 1.0 / present as f64);
        assert!(
            z["prompts"][preferred]
                .as_str()
                .unwrap()
                .contains("FINDINGS")
        );
        assert!(m.get("mlm").is_none() && m.get("itm").is_none(), "{m}");
    }
}

#[test]
fn the_head_measures_reach_metrics_json_and_follow_the_heads() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (corpus, downstream) = artifacts(r);
    let data = Dataset::load(&corpus).unwrap();
    let held_out_rows = SplitView::<Test>::load(&corpus).unwrap().len();
    let random = checkpoint(&r.join("random"), &data, |_, _| {});
    let m = probe(
        &[
            ("ingest", &downstream),
            ("pretrain", &random),
            ("ingest", &corpus),
        ],
        json!({"device": "cpu", "pixels": false}),
        &r.join("p_random"),
    );
    assert_eq!(m["text_source"]["input"], "held_out", "{m}");
    assert_eq!(m["text_source"]["rows"], held_out_rows);
    let mlm = &m["mlm"];
    assert!(mlm["finding_tokens"].as_u64().unwrap() > 0, "{m}");
    assert!(mlm["other_tokens"].as_u64().unwrap() > 0);
    for key in [
        "finding_accuracy",
        "other_accuracy",
        "finding_baseline_accuracy",
    ] {
        let v = mlm[key].as_f64().unwrap_or_else(|| panic!("{key} in {m}"));
        assert!((0.0..=1.0).contains(&v));
    }
    let itm = &m["itm"];
    assert_eq!(itm["positives"], held_out_rows);
    assert!(itm["negatives"].as_u64().unwrap() > 0);
    assert_eq!(itm["clean_negatives"], true);
    assert!(itm["auc"].as_f64().is_some() && itm["accuracy"].as_f64().is_some());
    assert!(m["zero_shot"]["auc"]["macro_auc"].as_f64().is_some(), "{m}");
    assert!(m.get("skipped").is_none());

    // Without the held-out input the text comes from the downstream test split (captions).
    let own = probe(
        &[("ingest", &downstream), ("pretrain", &random)],
        json!({"device": "cpu", "pixels": false, "zero_shot": false}),
        &r.join("p_own"),
    );
    assert_eq!(own["text_source"]["input"], "downstream", "{own}");
    assert!(own.get("zero_shot").is_none());
    // Switched off, nothing is measured.
    let off = probe(
        &[
            ("ingest", &downstream),
            ("pretrain", &random),
            ("ingest", &corpus),
        ],
        json!({"device": "cpu", "pixels": false, "mlm": false, "itm": false, "zero_shot": false}),
        &r.join("p_off"),
    );
    for key in ["text_source", "mlm", "itm", "zero_shot"] {
        assert!(off.get(key).is_none(), "{key} in {off}");
    }

    // An ITM head that always says "match": every positive right, every negative wrong.
    let yes = checkpoint(&r.join("yes"), &data, |store, model| {
        let f = model.config.fusion_width;
        set(store, "itm_head.fc.weight", vec![0.0; 4 * f], &[2, 2 * f]);
        set(store, "itm_head.fc.bias", vec![0.0, 5.0], &[2]);
    });
    // An MLM head that always predicts the most frequent finding token: its finding accuracy is
    // the frequency baseline's.
    let tokenizer = TextTokenizer::load(&tokenizer_path(&corpus)).unwrap();
    let vocab = Vocabulary::of(&tokenizer).unwrap();
    let baseline = mlm["finding_baseline_token"].as_str().unwrap().to_string();
    let id = (0..data.meta.vocab_size)
        .find(|&id| vocab.piece(id as u32) == baseline)
        .unwrap();
    let constant = checkpoint(&r.join("constant"), &data, |store, model| {
        let (f, v) = (model.config.fusion_width, data.meta.vocab_size);
        set(store, "mlm_head.decoder.weight", vec![0.0; v * f], &[v, f]);
        let mut bias = vec![0.0; v];
        bias[id] = 5.0;
        set(store, "mlm_head.decoder.bias", bias, &[v]);
    });
    let inputs = |ckpt: &Path| -> Vec<(&'static str, PathBuf)> {
        vec![
            ("ingest", downstream.clone()),
            ("pretrain", ckpt.to_path_buf()),
            ("ingest", corpus.clone()),
        ]
    };
    let run = |ckpt: &Path, out: &str| {
        let owned = inputs(ckpt);
        let refs: Vec<(&str, &Path)> = owned.iter().map(|(k, p)| (*k, p.as_path())).collect();
        probe(
            &refs,
            json!({"device": "cpu", "pixels": false, "zero_shot": false}),
            &r.join(out),
        )
    };
    let y = run(&yes, "p_yes");
    assert_eq!(y["itm"]["positive_accuracy"], 1.0, "{y}");
    assert_eq!(y["itm"]["negative_accuracy"], 0.0, "{y}");
    let c = run(&constant, "p_constant");
    assert_eq!(
        c["mlm"]["finding_accuracy"], mlm["finding_baseline_accuracy"],
        "{c}"
    );
    assert_eq!(c["mlm"]["finding_tokens"], mlm["finding_tokens"]);
}
