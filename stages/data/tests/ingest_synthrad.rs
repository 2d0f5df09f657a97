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

/// Every study's findings row and signature are stored, and agree with its class label: normal
/// studies show nothing and share one signature, others' label is their first finding column.
fn check_findings_agree_with_labels(data: &Dataset) {
    assert_eq!(data.meta.findings.len(), 10);
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
        progress: &NoProgress,
        cancel: &cancel,
    };
    assert!(matches!(IngestKind.run(&ctx), Err(StageError::Cancelled)));
    assert!(!dir.path().join("meta.json").exists());
}
