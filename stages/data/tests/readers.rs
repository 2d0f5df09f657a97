//! Every reader on its committed fixture (same format as the real dataset, invented content),
//! plus the errors a broken dataset gives.

mod common;

use std::path::Path;

use common::fixtures;
use umdflow_data::readers::{self, ImageRef, RawSource, ReadOptions};

fn read(source: &str, path: &Path) -> RawSource {
    readers::read(source, path, &ReadOptions::default())
        .unwrap_or_else(|err| panic!("{source}: {err}"))
}

fn answers(source: &RawSource, record: usize) -> Vec<&str> {
    source.records[record]
        .questions
        .iter()
        .map(|q| q.answer.as_str())
        .collect()
}

fn file_name(image: &ImageRef) -> String {
    match image {
        ImageRef::File(path) => path.file_name().unwrap().to_string_lossy().into_owned(),
        ImageRef::Pixels(_) => "<pixels>".into(),
    }
}

/// Copies a fixture folder so a test can break it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target)
        } else {
            std::fs::copy(&path, &target).map(|_| ()).unwrap()
        }
    }
}

#[test]
fn vqa_rad_release_layout() {
    let raw = read("vqa-rad", &fixtures().join("vqa-rad"));
    assert_eq!(raw.records.len(), 2);
    let (train, test) = (&raw.records[0], &raw.records[1]);
    assert_eq!(
        (train.id.as_str(), train.split, train.label.as_str()),
        ("synpic00001.jpg", Some(0), "chest")
    );
    assert_eq!(answers(&raw, 0), ["yes", "2"]);
    assert!(train.questions[0].closed && !train.questions[1].closed);
    assert_eq!(train.questions[1].qtype, "count");
    assert_eq!((test.split, test.label.as_str()), (Some(2), "head"));
    assert_eq!(answers(&raw, 1), ["left frontal lobe", "no"]);
    assert_eq!(
        test.questions[0].qtype, "pres",
        "a combined type counts under its first"
    );
    assert!(
        matches!(&train.image, ImageRef::File(p) if p.ends_with("VQA_RAD Image Folder/synpic00001.jpg"))
    );
}

#[test]
fn vqa_rad_derived_layout_keeps_an_image_once_per_split() {
    let raw = read("vqa-rad", &fixtures().join("vqa-rad-derived"));
    let keys: Vec<(Option<u8>, String)> = raw
        .records
        .iter()
        .map(|r| (r.split, r.id.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (Some(0), "synpic00001.jpg".into()),
            (Some(2), "synpic00001.jpg".into()),
            (Some(2), "synpic00002.jpg".into())
        ]
    );
    assert_eq!(answers(&raw, 1), ["right"]);
}

#[test]
fn slake_keeps_english_and_reads_numeric_answers() {
    let raw = read("slake", &fixtures().join("slake"));
    assert_eq!(raw.records.len(), 4);
    assert_eq!(
        raw.records[0].questions.len(),
        1,
        "the zh question is filtered out"
    );
    assert_eq!(answers(&raw, 1), ["2"]);
    assert_eq!(raw.records[1].label, "abdomen");
    assert_eq!(raw.records[1].text, "CT image of the abdomen");
    let splits: Vec<Option<u8>> = raw.records.iter().map(|r| r.split).collect();
    assert_eq!(splits, [Some(0), Some(0), Some(1), Some(2)]);
    assert!(raw.records[2].questions[0].closed);
    let by_modality = readers::read(
        "slake",
        &fixtures().join("slake"),
        &ReadOptions {
            label: Some("modality".into()),
            limit: None,
        },
    )
    .unwrap();
    assert_eq!(by_modality.records[2].label, "x-ray");

    // The Hugging Face mirror names the validation file validation.json.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("slake"), dir.path());
    std::fs::rename(
        dir.path().join("validate.json"),
        dir.path().join("validation.json"),
    )
    .unwrap();
    assert_eq!(read("slake", dir.path()).records[2].split, Some(1));
}

#[test]
fn medvqa_2019_pipe_files() {
    let raw = read("medvqa-2019", &fixtures().join("medvqa-2019"));
    let ids: Vec<&str> = raw.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["synpic100", "synpic101", "synpic200"]);
    assert_eq!(raw.records[0].label, "ct w contrast iv");
    assert_eq!(raw.records[0].questions.len(), 3);
    let abnormal = raw.records[1]
        .questions
        .iter()
        .find(|q| q.qtype == "abnormality")
        .unwrap();
    assert!(abnormal.closed && abnormal.answer == "yes");
    assert_eq!(
        (raw.records[2].split, raw.records[2].label.as_str()),
        (Some(2), "xr plain film")
    );
}

#[test]
fn roco_captions_follow_m3ae_rules_and_both_image_namings() {
    let raw = read("roco", &fixtures().join("roco"));
    let ids: Vec<&str> = raw.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["ROCO_00001", "ROCO_00002", "ROCO_00010"],
        "3-field and 2-word captions are dropped"
    );
    assert_eq!(
        raw.records[1].text,
        "Chest radiograph with a left apical pneumothorax."
    );
    assert_eq!(file_name(&raw.records[0].image), "ROCO_00001.jpg");
    assert_eq!(file_name(&raw.records[1].image), "PMC0000002_figure-2.jpg");
    assert_eq!(
        (raw.records[2].label.as_str(), raw.records[2].split),
        ("non-radiology", Some(2))
    );
    assert_eq!(raw.records[0].split, Some(1));
}

#[test]
fn melinda_csv_with_label_choice() {
    let raw = read("melinda", &fixtures().join("melinda"));
    let labels: Vec<&str> = raw.records.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["antibody", "tag", "antibody", "tag"]);
    assert_eq!(
        raw.records[0].text,
        "Western blot of the invented complex, lanes 1-4."
    );
    let coarse = readers::read(
        "melinda",
        &fixtures().join("melinda"),
        &ReadOptions {
            label: Some("i_meth_label".into()),
            limit: None,
        },
    )
    .unwrap();
    assert_eq!(coarse.records[1].label, "two hybrid");
    let err = readers::read(
        "melinda",
        &fixtures().join("melinda"),
        &ReadOptions {
            label: Some("colour".into()),
            limit: None,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn mimic_joins_metadata_splits_labels_and_reports() {
    let raw = read("mimic-cxr-jpg", &fixtures().join("mimic-cxr-jpg"));
    assert_eq!(raw.records.len(), 5);
    let splits: Vec<Option<u8>> = raw.records.iter().map(|r| r.split).collect();
    assert_eq!(splits, [Some(0), Some(0), Some(1), Some(2), Some(2)]);
    let labels: Vec<&str> = raw.records.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "No Finding",
            "No Finding",
            "Pleural Effusion",
            "Lung Opacity",
            "Lung Opacity"
        ]
    );
    assert!(
        raw.records[0]
            .text
            .starts_with("FINDINGS: The lungs are clear."),
        "{}",
        raw.records[0].text
    );
    assert_eq!(
        raw.records[3].text,
        "IMPRESSION: Left lower lobe opacity, possibly pneumonia."
    );
    assert!(
        matches!(&raw.records[2].image, ImageRef::File(p) if p.ends_with("files/p19/p19999901/s59999902/0a000001-00000001-00000001-00000001-00000003.jpg"))
    );
}

#[test]
fn iu_xray_reports_and_images() {
    let report =
        readers::iu_xray::parse_report(&fixtures().join("iu-xray/ecgen-radiology/2.xml")).unwrap();
    assert_eq!(report.id, "CXR2");
    assert_eq!(
        report.findings,
        "Mildly enlarged cardiac silhouette. No effusion."
    );
    assert_eq!(report.major, ["Cardiomegaly/mild", "Lung/hypoinflation"]);
    assert_eq!(report.primary_label(), "cardiomegaly");
    let raw = read("iu-xray", &fixtures().join("iu-xray"));
    let ids: Vec<&str> = raw.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["CXR1", "CXR2"], "a report without images is skipped");
    assert_eq!(
        raw.records[0].text,
        "FINDINGS: The heart is normal in size. The lungs are clear. IMPRESSION: Normal chest."
    );
}

#[test]
fn image_folder_classes_splits_and_captions() {
    let raw = read("image-folder", &fixtures().join("image-folder"));
    let rows: Vec<(String, Option<u8>, &str)> = raw
        .records
        .iter()
        .map(|r| (file_name(&r.image), r.split, r.label.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("d.png".into(), Some(2), "normal"),
            ("b.png".into(), Some(0), "effusion"),
            ("c.jpg".into(), Some(0), "effusion"),
            ("a.png".into(), Some(0), "normal")
        ]
    );
    assert_eq!(raw.records[1].text, "Small right pleural effusion.");
    assert_eq!(raw.records[0].text, "");
}

#[test]
fn limit_keeps_the_first_records() {
    let raw = readers::read(
        "mimic-cxr-jpg",
        &fixtures().join("mimic-cxr-jpg"),
        &ReadOptions {
            label: None,
            limit: Some(2),
        },
    )
    .unwrap();
    assert_eq!(raw.records.len(), 2);
}

#[test]
fn broken_datasets_name_the_file_and_record() {
    let missing = readers::read(
        "slake",
        Path::new("/no/such/slake"),
        &ReadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("/no/such/slake") && missing.contains("does not exist"),
        "{missing}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trainset.json");
    std::fs::write(&path, r#"[{"image_name": "a.jpg", "question": "q?", "answer": "yes"}, {"image_name": "b.jpg", "answer": "no"}]"#).unwrap();
    let message = readers::read("vqa-rad", dir.path(), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("trainset.json")
            && message.contains("record 1")
            && message.contains("`question`"),
        "{message}"
    );

    std::fs::write(&path, "[{\"image_name\": ").unwrap();
    let message = readers::read("vqa-rad", dir.path(), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("trainset.json") && message.contains("malformed JSON"),
        "{message}"
    );

    let qa = dir.path().join("train/QA");
    std::fs::create_dir_all(&qa).unwrap();
    std::fs::write(
        qa.join("Plane.csv"),
        "synpic1|which plane?|axial\nsynpic2|no answer here\n",
    )
    .unwrap();
    let message = readers::read("medvqa-2019", dir.path(), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("Plane.csv") && message.contains("line 2"),
        "{message}"
    );
}
