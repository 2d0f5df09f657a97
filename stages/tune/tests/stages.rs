//! The three stage kinds end to end on a tiny synthetic artifact and a tiny random checkpoint,
//! including the data-separation guarantees: calibration output does not depend on test rows,
//! evaluation output does not depend on training texts (nor, apart from the probe, on training
//! images).

mod common;

use std::path::{Path, PathBuf};

use common::params;
use serde_json::{Value, json};
use umdflow_data::artifact::{Counts, Dataset, Meta, VqaSet};
use umdflow_model::{ModelConfig, rng::SplitMix64};
use umdflow_stages::{StageDecl, StageKind};
use umdflow_tune::{CalibrateKind, CoordinateTuneKind, EvaluateKind};

const SIZE: usize = 16;
const T: usize = 8;
const VOCAB: usize = 24;

/// 24 images in 3 classes (a bright quadrant per class, plus noise); the text names the class;
/// splits by `i % 6`: 0-3 train, 4 val, 5 test.
fn toy_dataset() -> Dataset {
    let n = 24;
    let mut rng = SplitMix64::new(5);
    let mut images = Vec::new();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for i in 0..n {
        let class = i % 3;
        for y in 0..SIZE {
            for x in 0..SIZE {
                let bright = match class {
                    0 => x < 8 && y < 8,
                    1 => x >= 8 && y < 8,
                    _ => y >= 8,
                };
                images.push(if bright { 0.8 } else { 0.2 } + 0.1 * rng.next_f64() as f32);
            }
        }
        let text = [2, 5 + class as u32, 9 + (i % 4) as u32, 3];
        ids.extend(text);
        ids.extend(std::iter::repeat_n(0, T - text.len()));
        mask.extend([1u8; 4]);
        mask.extend([0u8; T - 4]);
    }
    let split: Vec<u8> = (0..n)
        .map(|i| match i % 6 {
            0..=3 => 0,
            4 => 1,
            _ => 2,
        })
        .collect();
    let q_ids: Vec<u32> = (0..n)
        .flat_map(|i| [2, 14, 15 + (i % 3) as u32, 3, 0, 0, 0, 0])
        .collect();
    let vqa = VqaSet {
        image_index: (0..n as u32).collect(),
        input_ids: q_ids,
        attention_mask: (0..n).flat_map(|_| [1, 1, 1, 1, 0, 0, 0, 0]).collect(),
        answer: (0..n).map(|i| u32::from(i % 3 == 0)).collect(),
        closed: (0..n).map(|i| (i % 2) as u8).collect(),
        qtype: vec![0; n],
    };
    let meta = Meta {
        source: "toy".into(),
        licence: "test data".into(),
        domain: "target".into(),
        image_size: SIZE,
        channels: 1,
        max_len: T,
        counts: Counts {
            train: 16,
            val: 4,
            test: 4,
            questions: n,
        },
        class_counts: vec![8, 8, 8],
        classes: vec!["left".into(), "right".into(), "bottom".into()],
        answers: vec!["no".into(), "yes".into()],
        question_types: vec!["pres".into()],
        findings: vec![],
        seed: 5,
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
        labels: (0..n).map(|i| (i % 3) as u32).collect(),
        split,
        vqa: Some(vqa),
        retrieval: None,
        findings: None,
        signatures: None,
        meta,
    }
}

/// Replaces every row whose split is in `splits`: its image with noise, its text with other tokens.
fn scramble(mut d: Dataset, splits: &[u8], images: bool, texts: bool) -> Dataset {
    let px = SIZE * SIZE;
    let mut rng = SplitMix64::new(99);
    for i in 0..d.n {
        if !splits.contains(&d.split[i]) {
            continue;
        }
        if images {
            for v in &mut d.images[i * px..(i + 1) * px] {
                *v = rng.next_f64() as f32;
            }
        }
        if texts {
            for v in &mut d.input_ids[i * T + 1..i * T + 3] {
                *v = 5 + rng.below(15) as u32;
            }
            if let Some(q) = d.vqa.as_mut() {
                q.input_ids[i * T + 2] = 5 + rng.below(15) as u32;
            }
        }
    }
    d
}

fn save(data: Dataset, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    data.save(dir).unwrap();
}

fn pretrained(dir: &Path) {
    pretrained_with(dir, |_| {});
}

/// A fresh tiny checkpoint, with `change` applied to its configuration first.
fn pretrained_with(dir: &Path, change: impl FnOnce(&mut ModelConfig)) {
    let mut config = ModelConfig::preset("tiny", SIZE, 1, 8, VOCAB, T).unwrap();
    change(&mut config);
    common::save_fresh_checkpoint(dir, config);
}

/// Runs a kind with the given inputs `(kind, dir)` into a fresh folder and returns it.
fn run(kind: &dyn StageKind, inputs: &[(&str, &Path)], p: Value, out: &Path) -> PathBuf {
    common::run_kind(kind, inputs, p, out);
    out.to_path_buf()
}

fn metrics(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

fn calib_params() -> Value {
    json!({"epochs": 1, "batch_size": 8, "device": "cpu", "loss": {"target_network": "stopgrad"}})
}

#[test]
fn calibration_never_reads_test_rows() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    pretrained(&r.join("pre"));
    save(toy_dataset(), &r.join("data"));
    save(
        scramble(toy_dataset(), &[1, 2], true, true),
        &r.join("data_scrambled"),
    );
    let a = run(
        &CalibrateKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        calib_params(),
        &r.join("a"),
    );
    let b = run(
        &CalibrateKind,
        &[
            ("ingest", &r.join("data_scrambled")),
            ("pretrain", &r.join("pre")),
        ],
        calib_params(),
        &r.join("b"),
    );
    let read = |d: &Path| std::fs::read(d.join("checkpoint.safetensors")).unwrap();
    assert_eq!(
        read(&a),
        read(&b),
        "test/val rows changed the calibrated checkpoint"
    );
    // ...while changing training rows does change it (so the comparison can fail).
    save(
        scramble(toy_dataset(), &[0], true, false),
        &r.join("data_train"),
    );
    let c = run(
        &CalibrateKind,
        &[
            ("ingest", &r.join("data_train")),
            ("pretrain", &r.join("pre")),
        ],
        calib_params(),
        &r.join("c"),
    );
    assert_ne!(read(&a), read(&c));
    assert_ne!(
        read(&a),
        std::fs::read(r.join("pre/checkpoint.safetensors")).unwrap(),
        "calibration did not train"
    );
    assert_eq!(metrics(&a)["train_pairs"], 16);
    // max_steps 0 is the "without TD-Calib" arm: the checkpoint passes through unchanged.
    let mut p = calib_params();
    p["max_steps"] = json!(0);
    let none = run(
        &CalibrateKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        p,
        &r.join("none"),
    );
    assert_eq!(
        read(&none),
        std::fs::read(r.join("pre/checkpoint.safetensors")).unwrap()
    );
    // Question pairs (VQA) calibrate on the 16 training questions, and also ignore test rows.
    let mut p = calib_params();
    p["pair_text"] = json!("question");
    let q1 = run(
        &CalibrateKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        p.clone(),
        &r.join("q1"),
    );
    let q2 = run(
        &CalibrateKind,
        &[
            ("ingest", &r.join("data_scrambled")),
            ("pretrain", &r.join("pre")),
        ],
        p,
        &r.join("q2"),
    );
    assert_eq!(read(&q1), read(&q2));
    assert_ne!(read(&q1), read(&a));
}

#[test]
fn classification_tunes_and_evaluation_never_reads_training_texts() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    pretrained(&r.join("pre"));
    save(toy_dataset(), &r.join("data"));
    // Joint TD-Calib reading: the calibrate stage passes the checkpoint through.
    let calib = run(
        &CalibrateKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        json!({"mode": "joint", "mr_weight": 0.5, "device": "cpu", "loss": {"target_network": "stopgrad"}}),
        &r.join("calib"),
    );
    let tuned = run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("calibrate", &calib)],
        json!({"task": "classification", "epochs": 2, "batch_size": 8, "device": "cpu", "gmcoord": {"alpha": 0.5}}),
        &r.join("tuned"),
    );
    let csv = std::fs::read_to_string(tuned.join("gmcoord.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    let first: Vec<f64> = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(first[8] > 0.0, "joint mode logs a positive MR loss: {csv}");
    // The logged coefficient is OGM-GE's for the logged scores.
    let (st, si, rho, ct, ci) = (first[2], first[3], first[4], first[5], first[6]);
    assert!((rho - st / si).abs() < 1e-12);
    let expect = umdflow_tune::coord::coefficients(st, si, 0.5);
    assert_eq!((ct, ci), (expect.text, expect.image));
    assert!(std::fs::metadata(tuned.join("gmcoord.png")).unwrap().len() > 1000);

    let eval = |data: &str, out: &str| {
        run(
            &EvaluateKind,
            &[("ingest", &r.join(data)), ("coordinate-tune", &tuned)],
            json!({"device": "cpu", "tuned_probe": true}),
            &r.join(out),
        )
    };
    let base = eval("data", "eval");
    let m = metrics(&base);
    assert_eq!(m["test_items"], 4);
    let acc = m["classification"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(m["ece"].as_f64().is_some() && m["tuned_probe"]["accuracy"].as_f64().is_some());
    assert_eq!(m["tuned_probe"]["train_images"], 16);
    assert!(base.join("confusion.png").exists());

    // Training and validation texts (and validation images) never reach evaluation.
    save(
        scramble(toy_dataset(), &[0, 1], false, true),
        &r.join("texts"),
    );
    save(
        scramble(toy_dataset(), &[1], true, false),
        &r.join("val_images"),
    );
    assert_eq!(metrics(&eval("texts", "e2")), m);
    assert_eq!(metrics(&eval("val_images", "e3")), m);
    // Training images reach the linear probe only.
    save(
        scramble(toy_dataset(), &[0], true, false),
        &r.join("train_images"),
    );
    let mut other = metrics(&eval("train_images", "e4"));
    let mut base_m = m.clone();
    other.as_object_mut().unwrap().remove("tuned_probe");
    base_m.as_object_mut().unwrap().remove("tuned_probe");
    assert_eq!(other, base_m);
}

#[test]
fn vqa_and_retrieval_tune_and_evaluate() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    pretrained(&r.join("pre"));
    save(toy_dataset(), &r.join("data"));
    let vqa = run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        json!({"task": "vqa", "epochs": 1, "batch_size": 8, "device": "cpu", "gmcoord": {"enabled": false}}),
        &r.join("vqa"),
    );
    let csv = std::fs::read_to_string(vqa.join("gmcoord.csv")).unwrap();
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.split(',').nth(5) == Some("1") && l.split(',').nth(6) == Some("1")),
        "{csv}"
    );
    let m = metrics(&run(
        &EvaluateKind,
        &[("ingest", &r.join("data")), ("coordinate-tune", &vqa)],
        json!({"device": "cpu", "tuned_probe": false}),
        &r.join("ev"),
    ));
    assert_eq!(
        m["vqa"]["n_open"].as_u64().unwrap() + m["vqa"]["n_closed"].as_u64().unwrap(),
        4
    );
    assert!(m["tuned_probe"].is_null());

    let ret = run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        json!({"task": "retrieval", "epochs": 1, "batch_size": 8, "negatives": 2, "device": "cpu",
               "gmcoord": {"scores": "aux_heads", "noise": true}}),
        &r.join("ret"),
    );
    let m = metrics(&run(
        &EvaluateKind,
        &[("ingest", &r.join("data")), ("coordinate-tune", &ret)],
        json!({"device": "cpu", "tuned_probe": false}),
        &r.join("er"),
    ));
    assert_eq!(m["retrieval"]["n"], 4);
    // With 4 test pairs every item is within the top 5.
    assert_eq!(m["retrieval"]["i2t_r5"], 1.0);
}

#[test]
fn declarations_are_checked() {
    let decl_inputs = vec![("prep".to_string(), "ingest".to_string())];
    let decl = StageDecl {
        name: "tune",
        run: None,
        inputs: &decl_inputs,
    };
    let problems = CoordinateTuneKind
        .resolve_params(
            &decl,
            json!({"gmcoord": {"alpha": -1.0}, "batch_size": 0})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&"inputs")
            && fields.contains(&"params.gmcoord.alpha")
            && fields.contains(&"params.batch_size"),
        "{problems:?}"
    );
    let problems = EvaluateKind
        .resolve_params(&decl, json!({"task": "vqa"}).as_object().cloned().unwrap())
        .unwrap_err();
    assert!(
        problems[0].message.contains("unknown field `task`"),
        "{problems:?}"
    );
}

#[test]
fn disabled_gmcoord_keeps_only_what_changes_the_result() {
    let inputs = vec![
        ("prep".to_string(), "ingest".to_string()),
        ("pre".to_string(), "pretrain".to_string()),
    ];
    let resolve = |p: Value| params(&CoordinateTuneKind, &inputs, p);
    // Disabled: alpha, noise and the window cannot matter, so they leave the key.
    let off_a = resolve(json!({"gmcoord": {"enabled": false, "alpha": 0.1}}));
    let off_b = resolve(json!({"gmcoord": {"enabled": false, "alpha": 0.9, "noise": true}}));
    assert_eq!(off_a, off_b);
    assert_eq!(
        off_a["gmcoord"],
        json!({"enabled": false, "scores": "masked_concat"})
    );
    // Auxiliary heads are trained even when disabled, so the score source stays.
    let aux = resolve(json!({"gmcoord": {"enabled": false, "scores": "aux_heads"}}));
    assert_ne!(aux, off_a);
    // Resolving again changes nothing (the key is stable).
    assert_eq!(resolve(Value::Object(off_a.clone())), off_a);
    // Enabled: alpha is part of the key.
    let on_a = resolve(json!({"gmcoord": {"alpha": 0.1}}));
    let on_b = resolve(json!({"gmcoord": {"alpha": 0.9}}));
    assert_ne!(on_a, on_b);
    assert_eq!(on_a["gmcoord"]["alpha"], 0.1);
}

/// `scores: encoder_heads` trains heads on the unimodal encoders' class tokens, whose widths need
/// not be the fusion width; the tuned checkpoint must load back with those widths.
#[test]
fn encoder_heads_tune_save_and_evaluate_with_their_own_widths() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    pretrained_with(&r.join("pre"), |c| c.text_width = 16);
    save(toy_dataset(), &r.join("data"));
    let tuned = run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        json!({"task": "classification", "epochs": 2, "batch_size": 4, "device": "cpu",
               "gmcoord": {"scores": "encoder_heads"}}),
        &r.join("tuned"),
    );
    let task: Value =
        serde_json::from_str(&std::fs::read_to_string(tuned.join("task.json")).unwrap()).unwrap();
    assert_eq!(
        task["aux"],
        json!({"text_inputs": 16, "image_inputs": 32, "outputs": 3}),
        "{task}"
    );
    let csv = std::fs::read_to_string(tuned.join("gmcoord.csv")).unwrap();
    // Modulation happened: on every step one branch's coefficient is below 1.
    assert!(
        csv.lines().skip(1).all(|l| {
            let c: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            c[5].min(c[6]) < 1.0
        }),
        "{csv}"
    );
    let m = metrics(&run(
        &EvaluateKind,
        &[("ingest", &r.join("data")), ("coordinate-tune", &tuned)],
        json!({"device": "cpu", "tuned_probe": false}),
        &r.join("ev"),
    ));
    assert!(m["classification"]["accuracy"].is_number(), "{m}");
}

/// Joint TD-Calib with every loss setting at its default (EMA feature targets) tunes: the joint
/// path builds the EMA target network the default objective reads.
#[test]
fn joint_calibration_with_the_default_loss_tunes() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    pretrained(&r.join("pre"));
    save(toy_dataset(), &r.join("data"));
    let calib = run(
        &CalibrateKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        json!({"mode": "joint", "device": "cpu"}),
        &r.join("calib"),
    );
    let tuned = run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("calibrate", &calib)],
        json!({"task": "classification", "epochs": 1, "batch_size": 8, "device": "cpu"}),
        &r.join("tuned"),
    );
    let csv = std::fs::read_to_string(tuned.join("gmcoord.csv")).unwrap();
    let mr_losses: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(8).unwrap().parse().unwrap())
        .collect();
    assert!(
        !mr_losses.is_empty() && mr_losses.iter().all(|v| v.is_finite() && *v > 0.0),
        "{csv}"
    );
}

/// Settings that could only fail once a training kind runs are refused at plan time, naming the
/// field.
#[test]
fn run_time_failures_are_refused_at_plan_time() {
    let inputs = vec![
        ("prep".to_string(), "ingest".to_string()),
        ("pre".to_string(), "pretrain".to_string()),
    ];
    let decl = StageDecl {
        name: "s",
        run: None,
        inputs: &inputs,
    };
    let fields = |kind: &dyn StageKind, p: Value| -> Vec<String> {
        kind.resolve_params(&decl, p.as_object().cloned().unwrap())
            .map(|_| Vec::new())
            .unwrap_or_else(|problems| problems.into_iter().map(|p| p.field).collect())
    };
    // calibrate validates its loss like pretrain does.
    assert_eq!(
        fields(&CalibrateKind, json!({"loss": {"ema_momentum": 1.5}})),
        ["params.loss.ema_momentum"]
    );
    assert_eq!(
        fields(&CalibrateKind, json!({"loss": {"ema_momentum_end": 1.0}})),
        ["params.loss.ema_momentum_end"]
    );
    assert_eq!(
        fields(
            &CalibrateKind,
            json!({"loss": {"mim": false, "mlm": false, "itm": false, "feamim": false, "feamlm": false}})
        ),
        ["params.loss.mim"]
    );
    assert_eq!(
        fields(
            &CalibrateKind,
            json!({"text_ratio": 0.0, "loss": {"mim": false, "itm": false, "feamim": false, "feamlm": false}})
        ),
        ["params.text_ratio"]
    );
    assert_eq!(
        fields(&CalibrateKind, json!({"device": "cuda"})),
        ["params.device"]
    );
    // The defaults, including joint mode with the default loss, pass.
    assert!(fields(&CalibrateKind, json!({})).is_empty());
    assert!(fields(&CalibrateKind, json!({"mode": "joint"})).is_empty());
    // OGM's split scores need a linear head (retrieval's always is).
    assert_eq!(
        fields(
            &CoordinateTuneKind,
            json!({"gmcoord": {"scores": "linear_split"}})
        ),
        ["params.gmcoord.scores"]
    );
    assert!(
        fields(
            &CoordinateTuneKind,
            json!({"head": "linear", "gmcoord": {"scores": "linear_split"}})
        )
        .is_empty()
    );
    assert!(
        fields(
            &CoordinateTuneKind,
            json!({"task": "retrieval", "gmcoord": {"scores": "linear_split"}})
        )
        .is_empty()
    );
    assert_eq!(
        fields(
            &CoordinateTuneKind,
            json!({"optim": {"algorithm": "sgd", "momentum": 1.0}})
        ),
        ["params.optim.momentum"]
    );
}

/// OGM-GE's own setting: a linear fusion head, its split scores, SGD with momentum and GE noise;
/// the tuned model (head `cls_head.fc`) loads back and evaluates.
#[test]
fn ogm_ge_setting_tunes_and_evaluates() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    pretrained(&r.join("pre"));
    save(toy_dataset(), &r.join("data"));
    let tuned = run(
        &CoordinateTuneKind,
        &[("ingest", &r.join("data")), ("pretrain", &r.join("pre"))],
        json!({"task": "classification", "head": "linear", "epochs": 2, "batch_size": 4,
               "device": "cpu", "optim": {"algorithm": "sgd", "lr": 0.01, "max_grad_norm": 0.0},
               "gmcoord": {"scores": "linear_split", "noise": true, "alpha": 0.8}}),
        &r.join("tuned"),
    );
    let csv = std::fs::read_to_string(tuned.join("gmcoord.csv")).unwrap();
    let coefficients: Vec<(f64, f64)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            (v[5], v[6])
        })
        .collect();
    // OGM's rule: at each step exactly one branch is slowed.
    assert!(
        coefficients
            .iter()
            .all(|&(t, i)| (t == 1.0) != (i == 1.0) && t <= 1.0 && i <= 1.0),
        "{csv}"
    );
    let task: Value =
        serde_json::from_str(&std::fs::read_to_string(tuned.join("task.json")).unwrap()).unwrap();
    assert_eq!(task["task"]["head"], "linear");
    let evaluated = run(
        &EvaluateKind,
        &[("ingest", &r.join("data")), ("coordinate-tune", &tuned)],
        json!({"device": "cpu", "tuned_probe": false}),
        &r.join("eval"),
    );
    assert!(metrics(&evaluated).is_object());
}
