//! VQA-RAD (data-sources.md §3.1): either the release (`VQA_RAD Dataset Public.json` and
//! `VQA_RAD Image Folder/`) or the MEVF/M3AE layout (`trainset.json`, `valset.json`,
//! `testset.json` and `images/`). One record per (image, split); the label is the organ.

use std::collections::BTreeMap;
use std::path::Path;

use super::normalize::normalize_answer;
use super::{
    ImageRef, RawQuestion, RawRecord, RawSource, closed_answer_type, field_str, json_answer,
    optional_str, read_json_list,
};
use crate::error::DataError;

const RELEASE_JSON: &str = "VQA_RAD Dataset Public.json";
const RELEASE_IMAGES: &str = "VQA_RAD Image Folder";
pub const LICENCE: &str =
    "VQA-RAD (Lau et al. 2018, https://osf.io/89kps/): see the release for its terms";

pub fn read(dir: &Path) -> Result<RawSource, DataError> {
    let mut files: Vec<(std::path::PathBuf, Option<u8>)> = Vec::new();
    let images = if dir.join(RELEASE_JSON).exists() {
        files.push((dir.join(RELEASE_JSON), None));
        dir.join(RELEASE_IMAGES)
    } else {
        for (name, split) in [
            ("trainset.json", 0),
            ("valset.json", 1),
            ("testset.json", 2),
        ] {
            if dir.join(name).exists() {
                files.push((dir.join(name), Some(split)));
            }
        }
        dir.join("images")
    };
    if files.is_empty() {
        return Err(DataError::format(
            dir,
            format!(
                "no `{RELEASE_JSON}` and no `trainset.json`/`testset.json`: not a VQA-RAD folder"
            ),
        ));
    }
    // (image, split) -> (organ, questions), ordered for a stable reading order.
    let mut grouped: BTreeMap<(u8, String), (String, Vec<RawQuestion>)> = BTreeMap::new();
    for (path, file_split) in files {
        for (index, record) in read_json_list(&path)?.iter().enumerate() {
            let image = field_str(&path, record, index, "image_name")?;
            let question = field_str(&path, record, index, "question")?;
            let answer = json_answer(&path, record, index)?;
            let answer_type = optional_str(record, "answer_type", "OPEN");
            let closed = closed_answer_type(&path, index, answer_type)?;
            let qtype = optional_str(record, "question_type", "OTHER");
            // Combined types ("PRES, POS") count under their first type.
            let qtype = qtype
                .split(',')
                .next()
                .unwrap_or("OTHER")
                .trim()
                .to_ascii_lowercase();
            let organ = optional_str(record, "image_organ", "unknown")
                .trim()
                .to_ascii_lowercase();
            let split = file_split.unwrap_or_else(|| {
                let phrase = optional_str(record, "phrase_type", "");
                if phrase.starts_with("test") { 2 } else { 0 }
            });
            let entry = grouped
                .entry((split, image.to_string()))
                .or_insert_with(|| (organ, Vec::new()));
            entry.1.push(RawQuestion {
                text: question.trim().to_string(),
                answer: normalize_answer(&answer),
                closed,
                qtype,
            });
        }
    }
    let records = grouped
        .into_iter()
        .map(|((split, image), (organ, questions))| RawRecord {
            id: image.clone(),
            image: ImageRef::File(images.join(&image)),
            text: format!("radiology image of the {organ}"),
            label: organ,
            split: Some(split),
            questions,
        })
        .collect();
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
