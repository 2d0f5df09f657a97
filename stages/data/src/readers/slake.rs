//! SLAKE 1.0 (data-sources.md §3.2): `train.json`, `validate.json` (or `validation.json`),
//! `test.json` and `imgs/<img_name>`; English questions only. The label is `location` (or the
//! field named by the `label` param, e.g. `modality`).

use std::collections::BTreeMap;
use std::path::Path;

use super::normalize::{answer_text, normalize_answer};
use super::{
    ImageRef, RawQuestion, RawRecord, RawSource, ReadOptions, closed_answer_type, field_str,
    json_answer, optional_str, read_json_list,
};
use crate::error::DataError;

pub const LICENCE: &str =
    "SLAKE 1.0 (Liu et al. 2021, https://www.med-vqa.com/slake/): see the release for its terms";

pub fn read(dir: &Path, options: &ReadOptions) -> Result<RawSource, DataError> {
    let label_field = options.label.as_deref().unwrap_or("location");
    let mut files = Vec::new();
    for (names, split) in [
        (&["train.json"][..], 0u8),
        (&["validate.json", "validation.json"][..], 1),
        (&["test.json"][..], 2),
    ] {
        if let Some(name) = names.iter().find(|n| dir.join(n).exists()) {
            files.push((dir.join(name), split));
        }
    }
    if files.is_empty() {
        return Err(DataError::format(
            dir,
            "no `train.json`, `validate.json` or `test.json`: not a SLAKE folder",
        ));
    }
    let mut grouped: BTreeMap<(u8, String), (String, String, Vec<RawQuestion>)> = BTreeMap::new();
    for (path, split) in files {
        for (index, record) in read_json_list(&path)?.iter().enumerate() {
            if optional_str(record, "q_lang", "") != "en" {
                continue;
            }
            let image = field_str(&path, record, index, "img_name")?;
            let question = field_str(&path, record, index, "question")?;
            let answer = json_answer(&path, record, index)?;
            let closed = closed_answer_type(
                &path,
                index,
                field_str(&path, record, index, "answer_type")?,
            )?;
            let qtype = optional_str(record, "content_type", "other")
                .trim()
                .to_ascii_lowercase();
            let label = record
                .get(label_field)
                .and_then(answer_text)
                .unwrap_or_else(|| "unknown".into())
                .trim()
                .to_ascii_lowercase();
            let modality = optional_str(record, "modality", "").trim().to_string();
            let location = optional_str(record, "location", "")
                .trim()
                .to_ascii_lowercase();
            let text = format!("{modality} image of the {location}")
                .trim()
                .to_string();
            let entry = grouped
                .entry((split, image.to_string()))
                .or_insert_with(|| (label, text, Vec::new()));
            entry.2.push(RawQuestion {
                text: question.trim().to_string(),
                answer: normalize_answer(&answer),
                closed,
                qtype,
            });
        }
    }
    let records = grouped
        .into_iter()
        .map(|((split, image), (label, text, questions))| RawRecord {
            id: image.clone(),
            image: ImageRef::File(dir.join("imgs").join(&image)),
            text,
            label,
            split: Some(split),
            questions,
        })
        .collect();
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
