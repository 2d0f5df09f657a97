//! The `ingest` kind on SynthRad, end to end: the artifact it writes, determinism, and the
//! tokenizer shared from a pre-training ingest.

mod common;

use common::{ingest_input, run_ingest};
use serde_json::json;
use umdflow_data::artifact::{Dataset, PREVIEW_FILE, SPLIT_TEST, tokenizer_path};
use umdflow_data::tokenizer::TextTokenizer;

#[test]
fn a_ci_ingest_writes_a_complete_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let resolved = run_ingest(
        json!({"preset": "ci", "count": 300, "seed": 3}),
        &[],
        dir.path(),
        &out,
        2,
    )
    .unwrap();
    assert_eq!(resolved["image_size"], 32);
    let data = Dataset::load(&out).unwrap();
    assert_eq!(
        (data.n, data.channels, data.size, data.max_len),
        (300, 1, 32, 64)
    );
    assert_eq!(data.meta.source, "synthrad");
    assert_eq!(data.meta.classes[0], "normal");
    assert!(
        data.meta.counts.train > 200 && data.meta.counts.test > 10,
        "{:?}",
        data.meta.counts
    );
    let vqa = data.vqa.as_ref().unwrap();
    assert_eq!(vqa.len(), 900);
    assert!(vqa.closed.contains(&1) && vqa.closed.contains(&0));
    assert_eq!(data.meta.question_types.len(), 6);
    // Every text row is [CLS] ... [SEP] [PAD]*.
    for i in 0..data.n {
        let ids = data.text_ids(i);
        let used = data.attention_mask[i * data.max_len..(i + 1) * data.max_len]
            .iter()
            .filter(|&&m| m == 1)
            .count();
        assert_eq!(ids[0], data.meta.cls_id);
        assert_eq!(ids[used - 1], data.meta.sep_id);
        assert!(ids[used..].iter().all(|&id| id == data.meta.pad_id));
    }
    let retrieval = data.retrieval.as_ref().unwrap();
    assert!(!retrieval.is_empty());
    assert!(
        retrieval.iter().all(
            |e| data.split[e.image as usize] == SPLIT_TEST && !e.hard_negative_texts.is_empty()
        )
    );
    assert!(out.join(PREVIEW_FILE).exists());
    check_findings_agree_with_labels(&data);
    let tokenizer = TextTokenizer::load(&tokenizer_path(&out)).unwrap();
    assert_eq!(tokenizer.vocab_size(), data.meta.vocab_size);
    // Reports are tokenized mostly into known pieces.
    let unknown = data
        .input_ids
        .iter()
        .filter(|&&id| id == data.meta.unk_id)
        .count();
    assert!(
        unknown * 100 < data.input_ids.len(),
        "{unknown} unknown tokens"
    );
}

/// Every study's findings row and signature are stored, and agree with its class label: a study
/// with no visible finding is `normal` and all such share one signature, others' label is their
/// first finding column.
fn check_findings_agree_with_labels(data: &Dataset) {
    assert!(!data.meta.findings.is_empty());
    assert_eq!(data.meta.findings[..], data.meta.classes[1..]);
    let (mut normal_signatures, mut abnormal) = (std::collections::BTreeSet::new(), 0);
    for i in 0..data.n {
        let row = data.findings_of(i).unwrap();
        let signature = data.signature(i).unwrap();
        match row.iter().position(|&v| v == 1) {
            None => {
                assert_eq!(data.labels[i], 0, "image {i}");
                normal_signatures.insert(signature);
            }
            Some(first) => {
                assert_eq!(data.labels[i] as usize, first + 1, "image {i}");
                abnormal += 1;
            }
        }
        // Equal signatures mean equal findings.
        for j in 0..i {
            if data.signature(j) == Some(signature) {
                assert_eq!(data.findings_of(j), Some(row), "images {j} and {i}");
            }
        }
    }
    assert_eq!(normal_signatures.len(), 1);
    assert!(abnormal > 0);
}

#[test]
fn the_label_set_keeps_the_findings_visible_at_the_image_size() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = |name: &str, params: serde_json::Value| {
        let out = dir.path().join(name);
        run_ingest(params, &[], dir.path(), &out, 2).unwrap();
        Dataset::load(&out).unwrap()
    };
    // A rib-fracture callus changes about 13 pixels at 32 px and 23 at 64 px (docs/data.md 3.6).
    let small = ingest("small", json!({"count": 400, "seed": 4, "image_size": 32}));
    let large = ingest("large", json!({"count": 400, "seed": 4, "image_size": 64}));
    let every = ingest(
        "every",
        json!({"count": 400, "seed": 4, "image_size": 32, "min_visible_pixels": 0}),
    );
    assert!(!small.meta.classes.contains(&"fracture".to_string()));
    assert_eq!(small.meta.classes.len(), 10);
    assert!(large.meta.classes.contains(&"fracture".to_string()));
    assert_eq!(large.meta.classes.len(), 11);
    assert_eq!(every.meta.classes, large.meta.classes);
    // Folding moves studies whose first finding is a fracture to their next visible finding,
    // and a fracture alone to normal; the studies themselves are the same.
    let fracture = every
        .meta
        .classes
        .iter()
        .position(|c| c == "fracture")
        .unwrap() as u32;
    let folded: Vec<usize> = (0..every.n)
        .filter(|&i| every.labels[i] == fracture)
        .collect();
    assert!(!folded.is_empty());
    for i in 0..every.n {
        if every.labels[i] != fracture {
            assert_eq!(small.labels[i], every.labels[i], "image {i}");
        }
    }
    check_findings_agree_with_labels(&small);
    check_findings_agree_with_labels(&every);
    assert_eq!(small.images, every.images);
    assert_eq!(small.input_ids, every.input_ids);
}

#[test]
fn when_no_finding_is_visible_every_study_is_normal_and_there_are_no_finding_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let params = json!({"count": 50, "seed": 2, "min_visible_pixels": 100000});
    run_ingest(params, &[], dir.path(), &out, 1).unwrap();
    let data = Dataset::load(&out).unwrap();
    assert_eq!(data.meta.classes, ["normal"]);
    assert!(data.labels.iter().all(|&l| l == 0));
    assert!(data.findings.is_none() && data.signatures.is_none());
}

#[test]
fn appearance_shift_changes_pixels_and_keeps_labels_and_texts() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = |name: &str, appearance: f64| {
        let out = dir.path().join(name);
        let params = json!({"count": 300, "seed": 8, "domain": "target", "shift_strength": 0.25, "appearance_shift": appearance, "image_size": 32});
        run_ingest(params, &[], dir.path(), &out, 2).unwrap();
        Dataset::load(&out).unwrap()
    };
    let (plain, shifted) = (ingest("plain", 0.0), ingest("shifted", 1.0));
    assert_eq!(shifted.labels, plain.labels);
    assert_eq!(shifted.meta.class_counts, plain.meta.class_counts);
    assert_eq!(shifted.findings, plain.findings);
    assert_eq!(shifted.split, plain.split);
    assert_eq!(shifted.input_ids, plain.input_ids);
    assert_eq!(shifted.vqa, plain.vqa);
    let mean = |d: &Dataset| d.images.iter().sum::<f32>() / d.images.len() as f32;
    let changed = (0..plain.n)
        .filter(|&i| plain.image(i) != shifted.image(i))
        .count();
    assert_eq!(changed, plain.n);
    assert!(
        (mean(&plain) - mean(&shifted)).abs() > 0.02,
        "{} {}",
        mean(&plain),
        mean(&shifted)
    );
}

#[test]
fn output_is_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let params =
        json!({"preset": "ci", "count": 120, "seed": 9, "domain": "target", "shift_strength": 0.7});
    run_ingest(params.clone(), &[], dir.path(), &a, 1).unwrap();
    run_ingest(params, &[], dir.path(), &b, 2).unwrap();
    for file in [
        "images.safetensors",
        "texts.safetensors",
        "labels.safetensors",
        "vqa.safetensors",
        "meta.json",
        "tokenizer.json",
        "preview.png",
    ] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file} differs"
        );
    }
}

#[test]
fn studies_do_not_depend_on_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small"), dir.path().join("large"));
    run_ingest(json!({"count": 40, "seed": 5}), &[], dir.path(), &small, 1).unwrap();
    run_ingest(json!({"count": 90, "seed": 5}), &[], dir.path(), &large, 2).unwrap();
    let (small, large) = (
        Dataset::load(&small).unwrap(),
        Dataset::load(&large).unwrap(),
    );
    assert_eq!(small.images[..], large.images[..small.images.len()]);
    assert_eq!(small.split[..], large.split[..40]);
    assert_eq!(small.labels[..], large.labels[..40]);
}

#[test]
fn a_downstream_ingest_reuses_the_pretraining_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("source"), dir.path().join("target"));
    run_ingest(
        json!({"count": 150, "seed": 1}),
        &[],
        dir.path(),
        &source,
        2,
    )
    .unwrap();
    run_ingest(json!({"count": 60, "seed": 1, "domain": "target", "shift_strength": 1.0, "vocab_size": 99}), &[ingest_input(&source)], dir.path(), &target, 2).unwrap();
    assert_eq!(
        std::fs::read(tokenizer_path(&source)).unwrap(),
        std::fs::read(tokenizer_path(&target)).unwrap()
    );
    let (s, t) = (
        Dataset::load(&source).unwrap(),
        Dataset::load(&target).unwrap(),
    );
    assert_eq!(s.meta.vocab_size, t.meta.vocab_size);
    assert_eq!(t.meta.domain, "target");
    // Target captions are not reports, so there is no retrieval file; the answers agree.
    assert!(t.retrieval.is_none());
    assert_eq!(s.meta.answers, t.meta.answers);
}

#[test]
fn bad_params_are_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_ingest(
        json!({"source": "vqa-rad"}),
        &[],
        dir.path(),
        &dir.path().join("o"),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("params.path"), "{err}");
    let err = run_ingest(
        json!({"text_leak_train": 1.5}),
        &[],
        dir.path(),
        &dir.path().join("o"),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("params.text_leak_train"), "{err}");
}

#[test]
fn an_interrupted_ingest_reports_cancelled() {
    use std::sync::atomic::AtomicBool;
    use umdflow_data::IngestKind;
    use umdflow_stages::{NoProgress, StageContext, StageDecl, StageError, StageKind};

    let dir = tempfile::tempdir().unwrap();
    let params = json!({"count": 50}).as_object().cloned().unwrap();
    let decl = StageDecl {
        name: "data",
        run: None,
        inputs: &[],
    };
    let resolved = IngestKind.resolve_params(&decl, params).unwrap();
    let (log, cancel) = (dir.path().join("log"), AtomicBool::new(true));
    let ctx = StageContext {
        id: "data",
        name: "data",
        params: &resolved,
        run: None,
        inputs: &[],
        out_dir: dir.path(),
        work_dir: dir.path(),
        log_path: &log,
        threads: 1,
        gpus: None,
        progress: &NoProgress,
        cancel: &cancel,
        resume: None,
    };
    assert!(matches!(IngestKind.run(&ctx), Err(StageError::Cancelled)));
    assert!(!dir.path().join("meta.json").exists());
}

#[test]
fn a_given_tokenizer_is_read_by_content_and_not_together_with_an_ingest_input() {
    use umdflow_data::IngestKind;
    use umdflow_stages::{StageDecl, StageKind};

    let params = json!({"tokenizer": "weights/roberta/tokenizer.json"})
        .as_object()
        .cloned()
        .unwrap();
    let alone = StageDecl {
        name: "data",
        run: None,
        inputs: &[],
    };
    let resolved = IngestKind.resolve_params(&alone, params.clone()).unwrap();
    let reads = IngestKind.reads(&resolved);
    assert_eq!(reads.len(), 1);
    assert_eq!(
        (reads[0].param.as_str(), reads[0].path.as_str()),
        ("tokenizer", "weights/roberta/tokenizer.json")
    );
    // Without it, the resolved params do not mention it (keys of existing pipelines stay).
    let plain = IngestKind
        .resolve_params(&alone, serde_json::Map::new())
        .unwrap();
    assert!(!plain.contains_key("tokenizer"));

    let inputs = [("corpus".to_string(), "ingest".to_string())];
    let downstream = StageDecl {
        name: "data",
        run: None,
        inputs: &inputs,
    };
    let problems = IngestKind.resolve_params(&downstream, params).unwrap_err();
    assert_eq!(problems[0].field, "params.tokenizer", "{problems:?}");
}
