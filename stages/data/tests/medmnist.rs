//! The MedMNIST reader on npz files written here in MedMNIST's exact layout (the arrays of
//! `np.savez`: `<split>_images` uint8, `<split>_labels` integer).

use std::io::Write;
use std::path::Path;

use umdflow_data::readers::{self, ImageRef, ReadOptions};

/// A `.npy` (format 1.0) of `values` with `descr` and `shape`.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in arrays {
        zip.start_file(
            format!("{name}.npy"),
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn images(n: usize, size: usize, channels: usize) -> Vec<u8> {
    (0..n * size * size * channels)
        .map(|k| (k % 251) as u8)
        .collect()
}

#[test]
fn pneumoniamnist_multiclass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pneumoniamnist.npz");
    let labels: Vec<u8> = [0i64, 1, 1, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_npz(
        &path,
        &[
            ("train_images", npy("|u1", &[4, 28, 28], &images(4, 28, 1))),
            ("train_labels", npy("<i8", &[4, 1], &labels)),
            ("test_images", npy("|u1", &[2, 28, 28], &images(2, 28, 1))),
            ("test_labels", npy("|u1", &[2, 1], &[1, 0])),
        ],
    );
    let raw = readers::read("medmnist", &path, &ReadOptions::default()).unwrap();
    let rows: Vec<(&str, Option<u8>)> = raw
        .records
        .iter()
        .map(|r| (r.label.as_str(), r.split))
        .collect();
    assert_eq!(
        rows,
        [
            ("normal", Some(0)),
            ("pneumonia", Some(0)),
            ("pneumonia", Some(0)),
            ("normal", Some(0)),
            ("pneumonia", Some(2)),
            ("normal", Some(2))
        ]
    );
    let ImageRef::Pixels(first) = &raw.records[0].image else {
        panic!("npz pixels")
    };
    assert_eq!((first.width, first.height), (28, 28));
    assert_eq!(first.pixels[3], 3.0 / 255.0);
    assert_eq!(raw.records[4].id, "test_images[0]");
}

#[test]
fn chestmnist_multilabel_and_rgb_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chestmnist_64.npz");
    let mut labels = vec![0u8; 3 * 14];
    labels[2] = 1; // image 0: effusion
    labels[14 + 1] = 1; // image 1: cardiomegaly
    labels[14 + 5] = 1; // and nodule
    write_npz(
        &path,
        &[
            ("val_images", npy("|u1", &[3, 8, 8, 3], &images(3, 8, 3))),
            ("val_labels", npy("|u1", &[3, 14], &labels)),
        ],
    );
    let raw = readers::read("medmnist", &path, &ReadOptions::default()).unwrap();
    let labels: Vec<&str> = raw.records.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["effusion", "cardiomegaly", "normal"]);
    let ImageRef::Pixels(first) = &raw.records[0].image else {
        panic!("npz pixels")
    };
    assert_eq!(
        first.pixels[0],
        (0.0 + 1.0 + 2.0) / 3.0 / 255.0,
        "RGB is averaged to grey"
    );
}

#[test]
fn malformed_npz_contents_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pathmnist.npz");
    write_npz(
        &path,
        &[
            ("train_images", npy("|u1", &[2, 4, 4], &images(2, 4, 1))),
            ("train_labels", npy("|u1", &[3, 1], &[0, 1, 2])),
        ],
    );
    let message = readers::read("medmnist", &path, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("pathmnist.npz") && message.contains("train_labels"),
        "{message}"
    );
    std::fs::write(&path, b"not a zip").unwrap();
    let message = readers::read("medmnist", &path, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("pathmnist.npz") && message.contains("zip"),
        "{message}"
    );
}

/// Headers a hostile or broken file may carry: an empty dtype and a shape whose element count
/// overflows are errors naming the file, never panics.
#[test]
fn malformed_npy_headers_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pathmnist.npz");
    let huge = usize::MAX / 2;
    for (descr, shape, expected) in [
        ("", vec![2, 4, 4], "bad dtype"),
        ("é", vec![2, 4, 4], "bad dtype"),
        ("|u1", vec![huge, 4, 4], "more elements than fit"),
        ("<u8", vec![huge / 2], "more bytes than fit"),
    ] {
        write_npz(
            &path,
            &[
                ("train_images", npy(descr, &shape, &images(2, 4, 1))),
                ("train_labels", npy("|u1", &[2, 1], &[0, 1])),
            ],
        );
        let result =
            std::panic::catch_unwind(|| readers::read("medmnist", &path, &ReadOptions::default()));
        let message = result
            .unwrap_or_else(|_| panic!("`{descr}` {shape:?} panicked"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("pathmnist.npz") && message.contains(expected),
            "`{descr}` {shape:?}: {message}"
        );
    }
}
