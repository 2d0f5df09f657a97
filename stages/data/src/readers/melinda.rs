//! MELINDA (data-sources.md §3.5): `train.csv`, `dev.csv`, `test.csv` with columns
//! `figure_file, caption, i_meth, p_meth, i_meth_label, p_meth_label` (others ignored) and
//! `melinda_images/<figure_file>`. The label column is `p_meth_label` unless the `label` param
//! names another; classes are the sorted label strings.

use std::path::Path;

use super::{ImageRef, RawRecord, RawSource, ReadOptions, collapse_whitespace};
use crate::error::DataError;

pub const LICENCE: &str =
    "MELINDA (Wu et al. 2021): figures from PMC Open Access, each under its own licence";

const LABEL_COLUMNS: [&str; 4] = ["i_meth", "p_meth", "i_meth_label", "p_meth_label"];

pub fn read(dir: &Path, options: &ReadOptions) -> Result<RawSource, DataError> {
    let label_column = options.label.as_deref().unwrap_or("p_meth_label");
    if !LABEL_COLUMNS.contains(&label_column) {
        return Err(DataError::Invalid(format!(
            "MELINDA label `{label_column}` is not one of {LABEL_COLUMNS:?}"
        )));
    }
    let mut records = Vec::new();
    let mut found = false;
    for (name, split) in [("train.csv", 0u8), ("dev.csv", 1), ("test.csv", 2)] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        found = true;
        let mut reader = csv::Reader::from_path(&path)
            .map_err(|err| DataError::format(&path, err.to_string()))?;
        let headers = reader
            .headers()
            .map_err(|err| DataError::format(&path, err.to_string()))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| DataError::format(&path, format!("no column `{name}`")))
        };
        let (figure, caption, label) = (
            column("figure_file")?,
            column("caption")?,
            column(label_column)?,
        );
        for (row, result) in reader.records().enumerate() {
            let record = result.map_err(|err| {
                DataError::record(&path, format!("row {}", row + 1), err.to_string())
            })?;
            let get = |k: usize| record.get(k).map(str::trim).unwrap_or("");
            if get(figure).is_empty() {
                return Err(DataError::record(
                    &path,
                    format!("row {}", row + 1),
                    "empty `figure_file`",
                ));
            }
            records.push(RawRecord {
                id: get(figure).to_string(),
                image: ImageRef::File(dir.join("melinda_images").join(get(figure))),
                text: collapse_whitespace(get(caption)),
                label: get(label).to_string(),
                split: Some(split),
                questions: Vec::new(),
            });
        }
    }
    if !found {
        return Err(DataError::format(
            dir,
            "no `train.csv`, `dev.csv` or `test.csv`: not a MELINDA folder",
        ));
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
