//! Readers for the real dataset formats (data-sources.md §3). Each turns a dataset folder into
//! [`RawRecord`]s without decoding images; the ingest decodes them one at a time.

pub mod dicom_dir;
pub mod image_folder;
pub mod iu_xray;
pub mod medmnist;
pub mod medvqa2019;
pub mod melinda;
pub mod mimic;
pub mod normalize;
pub mod roco;
pub mod slake;
pub mod vqa_rad;

use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::imaging::GrayImage;

/// Where a record's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// A PNG, JPEG or DICOM file, decoded when the ingest reaches it.
    File(PathBuf),
    /// Pixels that came inside the dataset file itself (MedMNIST's npz).
    Pixels(GrayImage),
}

/// One question about a record's image, with its answer already normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct RawQuestion {
    pub text: String,
    pub answer: String,
    pub closed: bool,
    pub qtype: String,
}

/// One image with its paired text, label and questions.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// How errors name the record (an image name, a study id, a line number).
    pub id: String,
    pub image: ImageRef,
    pub text: String,
    pub label: String,
    /// 0 train, 1 val, 2 test when the dataset defines it.
    pub split: Option<u8>,
    pub questions: Vec<RawQuestion>,
}

/// A dataset read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSource {
    pub licence: String,
    pub records: Vec<RawRecord>,
}

/// Options that change what a reader keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOptions {
    /// Which label column or field to use where a dataset has several.
    pub label: Option<String>,
    /// Keep at most this many records (the first in reading order).
    pub limit: Option<usize>,
}

/// Reads dataset `source` (a name from the ingest's source list) at `path`.
pub fn read(source: &str, path: &Path, options: &ReadOptions) -> Result<RawSource, DataError> {
    if !path.exists() {
        return Err(DataError::format(
            path,
            format!("the `{source}` dataset path does not exist"),
        ));
    }
    let mut raw = match source {
        "vqa-rad" => vqa_rad::read(path)?,
        "slake" => slake::read(path, options)?,
        "medvqa-2019" => medvqa2019::read(path, options)?,
        "roco" => roco::read(path)?,
        "melinda" => melinda::read(path, options)?,
        "medmnist" => medmnist::read(path, options)?,
        "mimic-cxr-jpg" => mimic::read(path)?,
        "iu-xray" => iu_xray::read(path)?,
        "dicom-dir" => dicom_dir::read(path)?,
        "image-folder" => image_folder::read(path)?,
        other => return Err(DataError::Invalid(format!("unknown source `{other}`"))),
    };
    if let Some(limit) = options.limit {
        raw.records.truncate(limit);
    }
    Ok(raw)
}

/// Maps a split name as datasets write it to its code.
pub fn split_code(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "train" | "training" => Some(0),
        "val" | "valid" | "validate" | "validation" | "dev" => Some(1),
        "test" => Some(2),
        _ => None,
    }
}

/// Reads a text file, naming it on failure.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(DataError::io(path))
}

/// Reads a JSON file that holds a list of records.
pub fn read_json_list(path: &Path) -> Result<Vec<serde_json::Value>, DataError> {
    let text = read_text(path)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| DataError::format(path, format!("malformed JSON: {err}")))?;
    match value {
        serde_json::Value::Array(items) => Ok(items),
        _ => Err(DataError::format(path, "expected a JSON list of records")),
    }
}

/// A required string field of a JSON record.
pub fn field_str<'a>(
    path: &Path,
    record: &'a serde_json::Value,
    index: usize,
    name: &str,
) -> Result<&'a str, DataError> {
    record.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
        DataError::record(
            path,
            index.to_string(),
            format!("field `{name}` is missing or not a string"),
        )
    })
}

/// An optional string field of a JSON record, or `default` when it is absent or not a string.
pub fn optional_str<'a>(record: &'a serde_json::Value, name: &str, default: &'a str) -> &'a str {
    record.get(name).and_then(|v| v.as_str()).unwrap_or(default)
}

/// The `answer` of a JSON record as text (numbers cast like Python's `str()`).
pub fn json_answer(
    path: &Path,
    record: &serde_json::Value,
    index: usize,
) -> Result<String, DataError> {
    record
        .get("answer")
        .and_then(normalize::answer_text)
        .ok_or_else(|| {
            DataError::record(
                path,
                index.to_string(),
                "field `answer` is missing or not a string/number",
            )
        })
}

/// `CLOSED` -> true, `OPEN` -> false (any case, surrounding spaces ignored).
pub fn closed_answer_type(path: &Path, index: usize, answer_type: &str) -> Result<bool, DataError> {
    match answer_type.trim().to_ascii_uppercase().as_str() {
        "CLOSED" => Ok(true),
        "OPEN" => Ok(false),
        other => Err(DataError::record(
            path,
            index.to_string(),
            format!("answer_type `{other}` is not OPEN or CLOSED"),
        )),
    }
}

/// Collapses runs of whitespace to single spaces and trims.
pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
