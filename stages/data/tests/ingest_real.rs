//! The `ingest` kind on every committed fixture: a loadable artifact, and errors that leave
//! nothing behind the engine would cache.

mod common;

use common::{fixtures, ingest_input, run_ingest};
use serde_json::json;
use umdflow_data::artifact::Dataset;

#[test]
fn every_fixture_source_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("vqa-rad", "vqa-rad", 2, true),
        ("vqa-rad", "vqa-rad-derived", 3, true),
        ("slake", "slake", 4, true),
        ("medvqa-2019", "medvqa-2019", 3, true),
        ("roco", "roco", 3, false),
        ("melinda", "melinda", 4, false),
        ("mimic-cxr-jpg", "mimic-cxr-jpg", 5, false),
        ("iu-xray", "iu-xray", 2, false),
        ("dicom-dir", "dicom", 2, false),
        ("image-folder", "image-folder", 4, false),
    ];
    for (source, folder, n, has_questions) in cases {
        let out = dir.path().join(folder);
        let params = json!({"source": source, "path": fixtures().join(folder), "image_size": 16, "max_len": 24, "vocab_size": 80});
        run_ingest(params, &[], dir.path(), &out, 2)
            .unwrap_or_else(|err| panic!("{source}: {err}"));
        let data = Dataset::load(&out).unwrap_or_else(|err| panic!("{source}: {err}"));
        assert_eq!(data.n, n, "{source}");
        assert_eq!(data.vqa.is_some(), has_questions, "{source}");
        assert_eq!(data.meta.source, source);
        assert!(!data.meta.licence.is_empty());
        assert!(
            data.findings.is_none() && data.signatures.is_none() && data.meta.findings.is_empty(),
            "{source} has no per-study findings"
        );
        assert!(out.join("preview.png").exists() && out.join("tokenizer.json").exists());
    }
}

#[test]
fn vqa_answers_and_types_become_vocabularies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_ingest(
        json!({"source": "vqa-rad", "path": fixtures().join("vqa-rad"), "image_size": 16}),
        &[],
        dir.path(),
        &out,
        1,
    )
    .unwrap();
    let data = Dataset::load(&out).unwrap();
    assert_eq!(data.meta.answers, ["2", "left frontal lobe", "no", "yes"]);
    assert_eq!(data.meta.question_types, ["count", "modality", "pres"]);
    assert_eq!(data.meta.classes, ["chest", "head"]);
    let vqa = data.vqa.unwrap();
    assert_eq!(vqa.answer, [3, 0, 1, 2]);
    assert_eq!(vqa.closed, [1, 0, 0, 1]);
    assert_eq!(data.split, [0, 2]);
}

#[test]
fn a_relative_path_resolves_against_the_pipeline_folder_and_reuses_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("synth");
    run_ingest(json!({"count": 80}), &[], dir.path(), &source, 2).unwrap();
    let out = dir.path().join("slake");
    run_ingest(
        json!({"source": "slake", "path": "slake", "image_size": 16}),
        &[ingest_input(&source)],
        &fixtures(),
        &out,
        1,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(source.join("tokenizer.json")).unwrap(),
        std::fs::read(out.join("tokenizer.json")).unwrap()
    );
}

#[test]
fn a_missing_image_names_the_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::write(data.join("trainset.json"), r#"[{"image_name": "gone.jpg", "question": "q?", "answer": "yes", "answer_type": "CLOSED"}]"#).unwrap();
    let out = dir.path().join("out");
    let message = run_ingest(
        json!({"source": "vqa-rad", "path": data}),
        &[],
        dir.path(),
        &out,
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("gone.jpg") && message.contains("missing"),
        "{message}"
    );
    assert!(
        !out.join("meta.json").exists(),
        "nothing is written before the data is complete"
    );
}

#[test]
fn an_unreadable_image_names_the_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::write(data.join("images/bad.jpg"), b"garbage").unwrap();
    std::fs::write(
        data.join("testset.json"),
        r#"[{"image_name": "bad.jpg", "question": "q?", "answer": "no", "answer_type": "CLOSED"}]"#,
    )
    .unwrap();
    let message = run_ingest(
        json!({"source": "vqa-rad", "path": data}),
        &[],
        dir.path(),
        &dir.path().join("out"),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("bad.jpg")
            && message.contains("record bad.jpg")
            && message.contains("decode"),
        "{message}"
    );
}
