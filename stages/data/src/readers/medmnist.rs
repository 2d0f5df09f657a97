//! MedMNIST v2 / MedMNIST+ (data-sources.md §3.6): one `<flag>[_<size>].npz` with
//! `{train,val,test}_{images,labels}`. Images are (N,H,W) grey or (N,H,W,3) RGB uint8; labels
//! (N,1) class indices or (N,K) 0/1 multi-label (the label is then the first positive, or
//! "normal"). Class names come from MedMNIST's `info.py` (Apache-2.0) for the flags we know.

use std::io::Read;
use std::path::Path;

use super::{ImageRef, RawRecord, RawSource, ReadOptions};
use crate::error::DataError;
use crate::imaging::GrayImage;

pub const LICENCE: &str =
    "MedMNIST v2 (Yang et al. 2023): CC BY 4.0 for most subsets (see medmnist.com)";

/// Label names from medmnist/info.py (Apache-2.0, MedMNIST authors), for the flags we name.
fn class_names(flag: &str) -> Option<&'static [&'static str]> {
    match flag {
        "pneumoniamnist" => Some(&["normal", "pneumonia"]),
        "breastmnist" => Some(&["malignant", "normal, benign"]),
        "chestmnist" => Some(&[
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ]),
        "pathmnist" => Some(&[
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ]),
        _ => None,
    }
}

/// A decoded `.npy` array: shape and values as f64 (every integer dtype MedMNIST uses fits).
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// Parses a `.npy` file (format versions 1-3, C order, little-endian or byte dtypes).
pub fn parse_npy(bytes: &[u8], name: &str, path: &Path) -> Result<NpyArray, DataError> {
    let bad = |message: String| DataError::record(path, name.to_string(), message);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy array (bad magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text".into()))?;
    let value_of = |key: &str| header.split(&format!("'{key}':")).nth(1).map(str::trim);
    let descr = value_of("descr")
        .and_then(|v| v.split('\'').nth(1))
        .ok_or_else(|| bad("no `descr` in the header".into()))?;
    if value_of("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran-order arrays are not supported".into()));
    }
    let shape_text = value_of("shape")
        .and_then(|v| v.split(')').next())
        .map(|v| v.trim_start_matches('('))
        .ok_or_else(|| bad("no `shape` in the header".into()))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("bad shape `{shape_text}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // An empty or non-ASCII `descr` and a shape whose product overflows are malformed files,
    // not panics.
    let dtype = descr
        .get(1..)
        .filter(|dtype| !dtype.is_empty())
        .ok_or_else(|| bad(format!("bad dtype `{descr}` in the header")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |total, &dim| total.checked_mul(dim))
        .ok_or_else(|| {
            bad(format!(
                "shape {shape:?} has more elements than fit in memory"
            ))
        })?;
    let data = &bytes[start + header_len..];
    let width = match dtype {
        "u1" | "i1" | "b1" => 1,
        "u2" | "i2" => 2,
        "u4" | "i4" | "f4" => 4,
        "u8" | "i8" | "f8" => 8,
        other => return Err(bad(format!("unsupported dtype `{other}`"))),
    };
    if descr.starts_with('>') && width > 1 {
        return Err(bad(format!("big-endian dtype `{descr}` is not supported")));
    }
    let byte_count = count
        .checked_mul(width)
        .ok_or_else(|| bad(format!("shape {shape:?} has more bytes than fit in memory")))?;
    if data.len() < byte_count {
        return Err(bad(format!(
            "expected {byte_count} bytes of data for shape {shape:?}, found {}",
            data.len()
        )));
    }
    let values = data[..byte_count]
        .chunks_exact(width)
        .map(|b| match dtype {
            "u1" | "b1" => b[0] as f64,
            "i1" => b[0] as i8 as f64,
            "u2" => u16::from_le_bytes([b[0], b[1]]) as f64,
            "i2" => i16::from_le_bytes([b[0], b[1]]) as f64,
            "u4" => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "i4" => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "f4" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "u8" => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64,
            "i8" => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64,
            _ => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
        })
        .collect();
    Ok(NpyArray { shape, values })
}

/// Reads one array (`<key>.npy`) from an `.npz` archive; `None` if the key is absent.
pub fn read_npz_array(path: &Path, key: &str) -> Result<Option<NpyArray>, DataError> {
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|err| DataError::format(path, format!("not an .npz (zip) file: {err}")))?;
    let name = format!("{key}.npy");
    let mut entry = match archive.by_name(&name) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(err) => return Err(DataError::record(path, name, err.to_string())),
    };
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|err| DataError::record(path, name.clone(), err.to_string()))?;
    parse_npy(&bytes, &name, path).map(Some)
}

pub fn read(path: &Path, options: &ReadOptions) -> Result<RawSource, DataError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let flag = stem.split('_').next().unwrap_or(stem).to_ascii_lowercase();
    let names = class_names(&flag);
    let mut records = Vec::new();
    for (split_name, split) in [("train", 0u8), ("val", 1), ("test", 2)] {
        let Some(images) = read_npz_array(path, &format!("{split_name}_images"))? else {
            continue;
        };
        let labels = read_npz_array(path, &format!("{split_name}_labels"))?.ok_or_else(|| {
            DataError::format(
                path,
                format!("has `{split_name}_images` but no `{split_name}_labels`"),
            )
        })?;
        let (n, h, w, channels) = match images.shape[..] {
            [n, h, w] => (n, h, w, 1),
            [n, h, w, c] if c == 3 || c == 1 => (n, h, w, c),
            _ => {
                return Err(DataError::record(
                    path,
                    format!("{split_name}_images"),
                    format!(
                        "shape {:?} is not (N,H,W) or (N,H,W,3); 3-D subsets are not supported",
                        images.shape
                    ),
                ));
            }
        };
        if labels.shape.first() != Some(&n) {
            return Err(DataError::record(
                path,
                format!("{split_name}_labels"),
                format!(
                    "shape {:?} does not start with the {n} images",
                    labels.shape
                ),
            ));
        }
        let per_label = labels.shape.get(1).copied().unwrap_or(1);
        let take = options
            .limit
            .map_or(n, |limit| n.min(limit.saturating_sub(records.len())));
        for i in 0..take {
            let pixels = images.values[i * h * w * channels..(i + 1) * h * w * channels]
                .chunks_exact(channels)
                .map(|p| (p.iter().sum::<f64>() / channels as f64 / 255.0) as f32)
                .collect();
            let row = &labels.values[i * per_label..(i + 1) * per_label];
            let index = if per_label == 1 {
                Some(row[0] as usize)
            } else {
                row.iter().position(|&v| v > 0.5)
            };
            let label = match (index, names) {
                (None, _) => "normal".to_string(),
                (Some(k), Some(names)) => names
                    .get(k)
                    .map_or_else(|| k.to_string(), |s| s.to_string()),
                (Some(k), None) => k.to_string(),
            };
            records.push(RawRecord {
                id: format!("{split_name}_images[{i}]"),
                image: ImageRef::Pixels(GrayImage {
                    width: w,
                    height: h,
                    pixels,
                }),
                text: format!("{flag} image"),
                label,
                split: Some(split),
                questions: Vec::new(),
            });
        }
    }
    if records.is_empty() {
        return Err(DataError::format(
            path,
            "no `train_images`/`val_images`/`test_images` arrays: not a MedMNIST npz",
        ));
    }
    Ok(RawSource {
        licence: LICENCE.into(),
        records,
    })
}
