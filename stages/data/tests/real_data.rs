//! Tests on real data from pinned registry packages (`scripts/fetch-real-data.sh`). They run
//! when `UMDFLOW_REAL_DATA` (or the repository's `data/real/`) holds the fetched data and print
//! a skip line otherwise. With `UMDFLOW_REQUIRE_REAL_DATA=1` (CI sets it) missing data fails the
//! test instead, so CI never passes by skipping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use umdflow_data::imaging::read_dicom;
use umdflow_data::readers::iu_xray::{parse_report, report_files};
use umdflow_data::readers::mimic::report_sections;

/// The fetched data folder, or `None` after printing why the test is skipped (a panic where
/// `UMDFLOW_REQUIRE_REAL_DATA=1` asks for the data).
fn real_data(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("UMDFLOW_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/real"));
    if dir.join("pydicom/.complete").exists() {
        Some(dir)
    } else if std::env::var("UMDFLOW_REQUIRE_REAL_DATA").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: UMDFLOW_REQUIRE_REAL_DATA=1 but there is no real data in {} (run scripts/fetch-real-data.sh)",
            dir.display()
        );
    } else {
        println!(
            "skip {test}: no real data in {} (run scripts/fetch-real-data.sh)",
            dir.display()
        );
        None
    }
}

fn stats(values: &[f32]) -> (f32, f32, f64) {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    (min, max, mean)
}

/// data-sources.md §2.14: stored values before rescale, computed with pydicom 3.0.2.
/// (file, shape as [frames, rows, columns, samples], min, max, mean)
const REFERENCE: [(&str, [usize; 4], f32, f32, f64); 15] = [
    (
        "pydicom/CT_small.dcm",
        [1, 128, 128, 1],
        128.0,
        2191.0,
        904.926,
    ),
    (
        "pydicom/MR_small.dcm",
        [1, 64, 64, 1],
        127.0,
        2145.0,
        518.881,
    ),
    (
        "pydicom/MR_small_implicit.dcm",
        [1, 64, 64, 1],
        127.0,
        2145.0,
        518.881,
    ),
    (
        "pydicom/MR_small_bigendian.dcm",
        [1, 64, 64, 1],
        127.0,
        2145.0,
        518.881,
    ),
    (
        "pydicom/MR_small_RLE.dcm",
        [1, 64, 64, 1],
        127.0,
        2145.0,
        518.881,
    ),
    (
        "pydicom/examples_overlay.dcm",
        [1, 300, 484, 1],
        0.0,
        1123.0,
        191.688,
    ),
    (
        "pydicom/examples_rgb_color.dcm",
        [1, 240, 320, 3],
        0.0,
        255.0,
        34.267,
    ),
    (
        "pydicom-data/emri_small.dcm",
        [10, 64, 64, 1],
        0.0,
        467.0,
        109.699,
    ),
    (
        "pydicom-data/RG1_UNCR.dcm",
        [1, 1955, 1841, 1],
        874.0,
        26479.0,
        7391.457,
    ),
    (
        "pydicom-data/RG3_UNCR.dcm",
        [1, 1760, 1760, 1],
        0.0,
        1023.0,
        332.715,
    ),
    (
        "pydicom-data/MR2_UNCR.dcm",
        [1, 1024, 1024, 1],
        0.0,
        595.0,
        75.084,
    ),
    (
        "pydicom-data/693_UNCR.dcm",
        [1, 512, 512, 1],
        -2000.0,
        2492.0,
        -11.563,
    ),
    (
        "pydicom-data/US1_UNCR.dcm",
        [1, 480, 640, 3],
        0.0,
        255.0,
        34.529,
    ),
    (
        "pydicom-data/JPEG2000_UNC.dcm",
        [1, 1024, 256, 1],
        -30.0,
        245.0,
        13.458,
    ),
    (
        "pydicom-data/eCT_Supplemental.dcm",
        [2, 512, 512, 1],
        0.0,
        1196.0,
        380.038,
    ),
];

#[test]
fn dicom_decoding_matches_pydicom_reference_values() {
    let Some(root) = real_data("dicom_decoding_matches_pydicom_reference_values") else {
        return;
    };
    let mut failures = Vec::new();
    for (file, shape, min, max, mean) in REFERENCE {
        let path = root.join(file);
        match read_dicom(&path) {
            Err(err) => failures.push(format!("{file}: {err}")),
            Ok(pixels) => {
                let found_shape = [
                    pixels.frames,
                    pixels.rows,
                    pixels.columns,
                    pixels.samples_per_pixel,
                ];
                let (lo, hi, avg) = stats(&pixels.values);
                if found_shape != shape || lo != min || hi != max || (avg - mean).abs() > 1e-3 {
                    failures.push(format!("{file}: got {found_shape:?} {lo}/{hi}/{avg:.3}, expected {shape:?} {min}/{max}/{mean}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn undecodable_transfer_syntaxes_are_named_with_the_file() {
    let Some(root) = real_data("undecodable_transfer_syntaxes_are_named_with_the_file") else {
        return;
    };
    // 12-bit JPEG Extended (pydicom + Pillow cannot decode it either), JPEG 2000 and JPEG-LS
    // (umdflow builds dicom-rs without the C/openjp2 codecs).
    for (file, syntax) in [
        ("JPEG-lossy.dcm", "1.2.840.10008.1.2.4.51"),
        ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
        ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
    ] {
        let message = read_dicom(&root.join("pydicom").join(file))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(file) && message.contains(syntax),
            "{message}"
        );
    }
}

#[test]
fn iu_xray_reports_match_the_published_counts() {
    let Some(root) = real_data("iu_xray_reports_match_the_published_counts") else {
        return;
    };
    let dir = root.join("iu-xray");
    let files = report_files(&dir).unwrap();
    let reports: Vec<_> = files.iter().map(|f| parse_report(f).unwrap()).collect();
    assert_eq!(reports.len(), 3955);
    assert_eq!(
        reports.iter().filter(|r| !r.impression.is_empty()).count(),
        3921
    );
    assert_eq!(
        reports.iter().filter(|r| !r.indication.is_empty()).count(),
        3865
    );
    assert_eq!(
        reports.iter().filter(|r| !r.findings.is_empty()).count(),
        3425
    );
    assert_eq!(
        reports.iter().filter(|r| !r.comparison.is_empty()).count(),
        3333
    );
    assert_eq!(
        reports.iter().filter(|r| r.major == ["normal"]).count(),
        1391
    );
    assert_eq!(reports.iter().map(|r| r.images.len()).sum::<usize>(), 7470);
    let mut per_count = BTreeMap::new();
    for r in &reports {
        *per_count.entry(r.images.len()).or_insert(0) += 1;
    }
    assert_eq!(
        per_count.into_iter().collect::<Vec<_>>(),
        [(0, 104), (1, 446), (2, 3208), (3, 181), (4, 15), (5, 1)]
    );
}

#[test]
fn radlabels_reports_have_mimic_sections() {
    let Some(root) = real_data("radlabels_reports_have_mimic_sections") else {
        return;
    };
    let dir = root.join("radlabels/synthetic_reports");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 1000);
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    // Section headers start a line ("FINDINGS/IMPRESSION:" mid-line is not one).
    let sections = |name: &str| {
        let header = format!("{name}:");
        texts
            .iter()
            .filter(|t| t.lines().any(|l| l.trim_start().starts_with(&header)))
            .count()
    };
    assert_eq!((sections("FINDINGS"), sections("IMPRESSION")), (505, 389));
    assert!(texts.iter().all(|t| !report_sections(t).is_empty()));
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("radlabels/synthetic_labels.json")).unwrap(),
    )
    .unwrap();
    let mut keys = std::collections::BTreeSet::new();
    let mut values: BTreeMap<String, usize> = BTreeMap::new();
    for report in labels.as_object().unwrap().values() {
        for (key, value) in report.as_object().unwrap() {
            keys.insert(key.clone());
            *values
                .entry(value.as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(keys.len(), 48);
    assert_eq!(values["definitely present"], 4442);
    assert_eq!(values["definitely absent"], 461);
    assert_eq!(values["uncertain"], 146);
}
