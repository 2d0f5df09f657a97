//! VQA-Med 2019 (data-sources.md §3.9): `<split>/QA/<Category>.csv` (or `.txt`) with lines
//! `synpicID|question|answer`, images `<split>/images/<synpicID>.jpg`. The category (Modality,
//! Organ, Plane, Abnormality) is the question type; the label is the answer of the category
//! named by the `label` param (default `modality`).

use std::collections::BTreeMap;
use std::path::Path;

use super::normalize::normalize_answer;
use super::{ImageRef, RawQuestion, RawRecord, RawSource, ReadOptions, read_text, split_code};
use crate::error::DataError;

pub const LICENCE: &str = "VQA-Med 2019 (ImageCLEF 2019, https://github.com/abachaa/VQA-Med-2019): see the release for its terms";

pub fn read(dir: &Path, options: &ReadOptions) -> Result<RawSource, DataError> {
    let label_category = options
        .label
        .as_deref()
        .unwrap_or("modality")
        .to_ascii_lowercase();
    let mut split_dirs: Vec<(u8, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir))? {
        let path = entry.map_err(DataError::io(dir))?.path();
        if let Some(code) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(split_code)
            && path.join("QA").is_dir()
        {
            split_dirs.push((code, path));
        }
    }
    split_dirs.sort();
    if split_dirs.is_empty() {
        return Err(DataError::format(
            dir,
            "no `<split>/QA/` folders (train, val, test): not a VQA-Med 2019 folder",
        ));
    }
    let mut records = Vec::new();
    for (split, split_dir) in split_dirs {
        let qa_dir = split_dir.join("QA");
        let mut files: Vec<_> = std::fs::read_dir(&qa_dir)
            .map_err(DataError::io(&qa_dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "csv" || e == "txt"))
            .collect();
        files.sort();
        let mut grouped: BTreeMap<String, (Option<String>, Vec<RawQuestion>)> = BTreeMap::new();
        for path in files {
            let category = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("other")
                .to_ascii_lowercase();
            for (line_no, line) in read_text(&path)?.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let fields: Vec<&str> = line.split('|').collect();
                if fields.len() != 3 {
                    return Err(DataError::record(
                        &path,
                        format!("line {}", line_no + 1),
                        format!(
                            "expected `id|question|answer`, found {} fields",
                            fields.len()
                        ),
                    ));
                }
                let answer = normalize_answer(fields[2]);
                let closed = answer == "yes" || answer == "no";
                let entry = grouped
                    .entry(fields[0].trim().to_string())
                    .or_insert((None, Vec::new()));
                if category == label_category {
                    entry.0 = Some(answer.clone());
                }
                entry.1.push(RawQuestion {
                    text: fields[1].trim().to_string(),
                    answer,
                    closed,
                    qtype: category.clone(),
                });
            }
        }
        for (id, (label, questions)) in grouped {
            records.push(RawRecord {
                image: ImageRef::File(split_dir.join("images").join(format!("{id}.jpg"))),
                text: "medical image".into(),
                label: label.unwrap_or_else(|| "unknown".into()),
                split: Some(split),
                questions,
                id,
            });
        }
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
