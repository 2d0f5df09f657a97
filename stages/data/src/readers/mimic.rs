//! MIMIC-CXR-JPG (data-sources.md §3.7): `mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz`,
//! images `files/p<subject[:2]>/p<subject>/s<study>/<dicom_id>.jpg`, and the MIMIC-CXR reports
//! `files/p../p<subject>/s<study>.txt` (in the same root or under `reports/`). One record per
//! image; the text is the report's FINDINGS and IMPRESSION, the label the first positive
//! CheXpert column (or "No Finding").

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ImageRef, RawRecord, RawSource, collapse_whitespace, read_text, split_code};
use crate::error::DataError;

pub const LICENCE: &str = "MIMIC-CXR-JPG (Johnson et al. 2019): PhysioNet Credentialed Health Data License 1.5.0; do not share derived data";

const CHEXPERT_COLUMNS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
];

/// Reads a gzip-compressed csv into its header and rows.
fn read_csv_gz(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), DataError> {
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|err| DataError::format(path, format!("not a gzip csv: {err}")))?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|err| DataError::format(path, err.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record
            .map_err(|err| DataError::record(path, format!("row {}", row + 1), err.to_string()))?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    Ok((headers, rows))
}

fn column(path: &Path, headers: &[String], name: &str) -> Result<usize, DataError> {
    headers
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| DataError::format(path, format!("no column `{name}`")))
}

/// FINDINGS and IMPRESSION of a MIMIC-style report, or the whole text when it has neither.
pub fn report_sections(report: &str) -> String {
    let text = collapse_whitespace(report);
    let upper = text.to_ascii_uppercase();
    let findings = upper.find("FINDINGS:");
    let impression = upper.find("IMPRESSION:");
    match (findings, impression) {
        (None, None) => text,
        (Some(f), _) => text[f..].to_string(),
        (None, Some(i)) => text[i..].to_string(),
    }
}

pub fn read(root: &Path) -> Result<RawSource, DataError> {
    let metadata_path = root.join("mimic-cxr-2.0.0-metadata.csv.gz");
    let split_path = root.join("mimic-cxr-2.0.0-split.csv.gz");
    let labels_path = root.join("mimic-cxr-2.0.0-chexpert.csv.gz");
    for path in [&metadata_path, &split_path, &labels_path] {
        if !path.exists() {
            return Err(DataError::format(
                path,
                "missing: a MIMIC-CXR-JPG root holds the metadata, split and chexpert csv.gz files",
            ));
        }
    }
    let (headers, rows) = read_csv_gz(&labels_path)?;
    let (subject, study) = (
        column(&labels_path, &headers, "subject_id")?,
        column(&labels_path, &headers, "study_id")?,
    );
    let finding_columns: Vec<(usize, &str)> = CHEXPERT_COLUMNS
        .iter()
        .filter_map(|name| headers.iter().position(|h| h == name).map(|k| (k, *name)))
        .collect();
    let mut labels: HashMap<(String, String), String> = HashMap::new();
    for row in &rows {
        let positive = finding_columns
            .iter()
            .find(|(k, name)| {
                *name != "No Finding"
                    && row.get(*k).and_then(|v| v.parse::<f32>().ok()) == Some(1.0)
            })
            .map_or("No Finding", |(_, name)| name);
        labels.insert(
            (row[subject].clone(), row[study].clone()),
            positive.to_string(),
        );
    }

    let (headers, rows) = read_csv_gz(&split_path)?;
    let (dicom, split) = (
        column(&split_path, &headers, "dicom_id")?,
        column(&split_path, &headers, "split")?,
    );
    let splits: HashMap<String, String> = rows
        .iter()
        .map(|r| (r[dicom].clone(), r[split].clone()))
        .collect();

    let (headers, rows) = read_csv_gz(&metadata_path)?;
    let (dicom, subject, study) = (
        column(&metadata_path, &headers, "dicom_id")?,
        column(&metadata_path, &headers, "subject_id")?,
        column(&metadata_path, &headers, "study_id")?,
    );
    let mut records = Vec::new();
    for (row_no, row) in rows.iter().enumerate() {
        let (dicom_id, subject_id, study_id) = (&row[dicom], &row[subject], &row[study]);
        let record = || format!("row {} (dicom_id {dicom_id})", row_no + 1);
        if subject_id.len() < 2 {
            return Err(DataError::record(
                &metadata_path,
                record(),
                format!("subject_id `{subject_id}` is too short"),
            ));
        }
        let study_dir = Path::new("files")
            .join(format!("p{}", &subject_id[..2]))
            .join(format!("p{subject_id}"));
        let report_path = [root.join(&study_dir), root.join("reports").join(&study_dir)]
            .into_iter()
            .map(|dir| dir.join(format!("s{study_id}.txt")))
            .find(|p| p.exists())
            .ok_or_else(|| {
                DataError::record(
                    &metadata_path,
                    record(),
                    format!(
                        "no report {}",
                        study_dir.join(format!("s{study_id}.txt")).display()
                    ),
                )
            })?;
        let split_name = splits.get(dicom_id).ok_or_else(|| {
            DataError::record(&split_path, record(), "image is not in the split file")
        })?;
        let image: PathBuf = root
            .join(&study_dir)
            .join(format!("s{study_id}"))
            .join(format!("{dicom_id}.jpg"));
        records.push(RawRecord {
            id: dicom_id.clone(),
            image: ImageRef::File(image),
            text: report_sections(&read_text(&report_path)?),
            label: labels
                .get(&(subject_id.clone(), study_id.clone()))
                .cloned()
                .unwrap_or_else(|| "No Finding".into()),
            split: split_code(split_name),
            questions: Vec::new(),
        });
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
