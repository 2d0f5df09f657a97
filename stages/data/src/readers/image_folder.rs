//! A folder of PNG/JPEG images, one subfolder per class (`<class>/<image>`), optionally inside
//! `train/`, `val/` and `test/` folders. An image's text is the content of a `<image>.txt`
//! beside it, or empty (the class name is never put into the text: that would leak the label).

use std::path::{Path, PathBuf};

use super::{ImageRef, RawRecord, RawSource, read_text, split_code};
use crate::error::DataError;

pub const LICENCE: &str = "images supplied by the user: their own terms apply";

fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(DataError::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn read_classes(
    dir: &Path,
    split: Option<u8>,
    records: &mut Vec<RawRecord>,
    root: &Path,
) -> Result<(), DataError> {
    for class_dir in sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()) {
        let class = class_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        for image in sorted_entries(&class_dir)?
            .into_iter()
            .filter(|p| is_picture(p))
        {
            let caption = image.with_extension("txt");
            let text = if caption.exists() {
                read_text(&caption)?.trim().to_string()
            } else {
                String::new()
            };
            records.push(RawRecord {
                id: image
                    .strip_prefix(root)
                    .unwrap_or(&image)
                    .display()
                    .to_string(),
                image: ImageRef::File(image),
                text,
                label: class.clone(),
                split,
                questions: Vec::new(),
            });
        }
    }
    Ok(())
}

pub fn read(root: &Path) -> Result<RawSource, DataError> {
    let subfolders: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    let split_folders: Vec<(u8, &PathBuf)> = subfolders
        .iter()
        .filter_map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(split_code)
                .map(|code| (code, p))
        })
        .collect();
    let mut records = Vec::new();
    if !split_folders.is_empty() && split_folders.len() == subfolders.len() {
        for (code, folder) in split_folders {
            read_classes(folder, Some(code), &mut records, root)?;
        }
    } else {
        read_classes(root, None, &mut records, root)?;
    }
    if records.is_empty() {
        return Err(DataError::format(
            root,
            "no images in `<class>/` subfolders (png, jpg)",
        ));
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
