//! A folder of DICOM files (searched recursively): one record per file, labelled by its
//! Modality; the text names the modality and the series or study description when present.

use std::path::{Path, PathBuf};

use super::{ImageRef, RawRecord, RawSource};
use crate::error::DataError;
use crate::imaging::is_dicom;

pub const LICENCE: &str = "DICOM files supplied by the user: their own terms apply";

/// Every file under `dir` (recursively) that looks like DICOM, sorted by path.
pub fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut pending = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(DataError::io(&folder))? {
            let path = entry.map_err(DataError::io(&folder))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_dicom(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn text_tag(object: &dicom_object::DefaultDicomObject, name: &str) -> Option<String> {
    object
        .element_by_name(name)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn read(dir: &Path) -> Result<RawSource, DataError> {
    let files = dicom_files(dir)?;
    if files.is_empty() {
        return Err(DataError::format(
            dir,
            "no DICOM files found (looked for `.dcm` or the `DICM` marker)",
        ));
    }
    let mut records = Vec::new();
    for path in files {
        let object = dicom_object::open_file(&path)
            .map_err(|err| DataError::format(&path, format!("not a readable DICOM file: {err}")))?;
        let modality = text_tag(&object, "Modality").unwrap_or_else(|| "OT".into());
        let description = text_tag(&object, "SeriesDescription")
            .or_else(|| text_tag(&object, "StudyDescription"));
        let text = match description {
            Some(d) => format!("{modality} image, {}", d.to_lowercase()),
            None => format!("{modality} image"),
        };
        records.push(RawRecord {
            id: path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .display()
                .to_string(),
            image: ImageRef::File(path.clone()),
            text,
            label: modality,
            split: None,
            questions: Vec::new(),
        });
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
