//! DICOM decoding through dicom-rs against the reference values computed with pydicom 3.0.2
//! (data-sources.md §2.14), on pydicom's own CT_small.dcm and MR_small.dcm.

mod common;

use common::fixtures;
use umdflow_data::imaging::{decode_any, read_dicom};
use umdflow_data::readers::{self, ReadOptions};

fn stats(values: &[f32]) -> (f32, f32, f64) {
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    (min, max, mean)
}

#[test]
fn ct_small_matches_pydicom() {
    let pixels = read_dicom(&fixtures().join("dicom/CT_small.dcm")).unwrap();
    assert_eq!(
        (
            pixels.rows,
            pixels.columns,
            pixels.frames,
            pixels.samples_per_pixel
        ),
        (128, 128, 1, 1)
    );
    assert_eq!(pixels.photometric, "MONOCHROME2");
    assert_eq!(pixels.transfer_syntax, "1.2.840.10008.1.2.1");
    assert_eq!(pixels.modality.as_deref(), Some("CT"));
    let (min, max, mean) = stats(&pixels.values);
    assert_eq!((min, max), (128.0, 2191.0));
    assert!((mean - 904.926).abs() < 5e-4, "{mean}");
}

#[test]
fn mr_small_matches_pydicom() {
    let pixels = read_dicom(&fixtures().join("dicom/MR_small.dcm")).unwrap();
    assert_eq!((pixels.rows, pixels.columns), (64, 64));
    let (min, max, mean) = stats(&pixels.values);
    assert_eq!((min, max), (127.0, 2145.0));
    assert!((mean - 518.881).abs() < 5e-4, "{mean}");
}

#[test]
fn decoding_for_ingest_scales_to_the_unit_range() {
    let image = decode_any(&fixtures().join("dicom/CT_small.dcm")).unwrap();
    assert_eq!((image.width, image.height), (128, 128));
    let (min, max, _) = stats(&image.pixels);
    assert_eq!((min, max), (0.0, 1.0));
}

#[test]
fn a_dicom_folder_is_labelled_by_modality() {
    let raw = readers::read(
        "dicom-dir",
        &fixtures().join("dicom"),
        &ReadOptions::default(),
    )
    .unwrap();
    let labels: Vec<&str> = raw.records.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["CT", "MR"]);
}

/// Rewrites MR_small's transfer syntax UID ("1.2.840.10008.1.2.1", explicit VR little endian)
/// to an unknown one of the same length, which no decoder supports.
#[test]
fn an_unsupported_transfer_syntax_is_a_clear_error() {
    let mut bytes = std::fs::read(fixtures().join("dicom/MR_small.dcm")).unwrap();
    let uid = b"1.2.840.10008.1.2.1\0";
    let at = bytes
        .windows(uid.len())
        .position(|w| w == uid)
        .expect("the meta header has the UID");
    bytes[at..at + uid.len()].copy_from_slice(b"1.2.840.10008.1.2.9\0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd_syntax.dcm");
    std::fs::write(&path, bytes).unwrap();
    let message = read_dicom(&path).unwrap_err().to_string();
    assert!(message.contains("odd_syntax.dcm"), "{message}");
    assert!(
        message.contains("1.2.840.10008.1.2.9")
            || message.to_lowercase().contains("transfer syntax"),
        "{message}"
    );
}

#[test]
fn a_truncated_file_names_itself() {
    let bytes = std::fs::read(fixtures().join("dicom/CT_small.dcm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.dcm");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let message = read_dicom(&path).unwrap_err().to_string();
    assert!(message.contains("cut.dcm"), "{message}");
}
