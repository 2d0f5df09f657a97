//! ROCO (data-sources.md §3.4): `data/{train,validation,test}/{radiology,non-radiology}/` with
//! `captions.txt` (`ROCO_ID<TAB> caption`) and `images/`. Lines that do not have exactly two
//! fields and captions under three words are dropped, as M3AE does. Images are
//! `images/<ROCO_ID>.jpg`, or the older `images/<PMC id>_<figure file>` named via `dlinks.txt`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{ImageRef, RawRecord, RawSource, collapse_whitespace, read_text, split_code};
use crate::error::DataError;

pub const LICENCE: &str = "ROCO (Pelka et al. 2018): images and captions from PMC Open Access, each under its own licence (licences.txt)";

pub fn read(path: &Path) -> Result<RawSource, DataError> {
    let data = if path.join("data").is_dir() {
        path.join("data")
    } else {
        path.to_path_buf()
    };
    let mut records = Vec::new();
    for split_name in ["train", "validation", "val", "test"] {
        for category in ["radiology", "non-radiology"] {
            let folder = data.join(split_name).join(category);
            let captions = folder.join("captions.txt");
            if !captions.exists() {
                continue;
            }
            let old_names = read_dlinks(&folder.join("dlinks.txt"))?;
            for line in read_text(&captions)?.lines() {
                let fields: Vec<&str> = line.split('\t').collect();
                if fields.len() != 2 {
                    continue;
                }
                let (id, caption) = (fields[0].trim(), collapse_whitespace(fields[1]));
                if caption.split(' ').count() < 3 {
                    continue;
                }
                records.push(RawRecord {
                    id: id.to_string(),
                    image: ImageRef::File(image_path(&folder, id, &old_names)),
                    text: caption,
                    label: category.to_string(),
                    split: split_code(split_name),
                    questions: Vec::new(),
                });
            }
        }
    }
    if records.is_empty() {
        return Err(DataError::format(
            &data,
            "no `<split>/<radiology|non-radiology>/captions.txt` with usable captions: not a ROCO folder",
        ));
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}

/// `images/ROCO_ID.jpg` when it exists, else the old `PMCid_figure` name from `dlinks.txt`.
fn image_path(folder: &Path, id: &str, old_names: &HashMap<String, String>) -> PathBuf {
    let new = folder.join("images").join(format!("{id}.jpg"));
    match old_names.get(id) {
        Some(old) if !new.exists() => folder.join("images").join(old),
        _ => new,
    }
}

/// `ROCO_ID<TAB>wget ... /PMC3970251.tar.gz -P /path<TAB>figure.jpg` -> `PMC3970251_figure.jpg`.
fn read_dlinks(path: &Path) -> Result<HashMap<String, String>, DataError> {
    let mut names = HashMap::new();
    if !path.exists() {
        return Ok(names);
    }
    for (line_no, line) in read_text(path)?.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 3 {
            continue;
        }
        let archive = fields[1]
            .split_whitespace()
            .find(|w| w.ends_with(".tar.gz"))
            .and_then(|url| url.rsplit('/').next())
            .map(|name| name.trim_end_matches(".tar.gz"))
            .ok_or_else(|| {
                DataError::record(
                    path,
                    format!("line {}", line_no + 1),
                    "no `.tar.gz` archive in the download command",
                )
            })?;
        names.insert(
            fields[0].trim().to_string(),
            format!("{archive}_{}", fields[2].trim()),
        );
    }
    Ok(names)
}
