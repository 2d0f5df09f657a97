//! The dataset artifact: the folder an `ingest` stage writes and every later stage reads.
//!
//! Files (all tensors little-endian safetensors):
//! - `images.safetensors`: `images` F32 [N, C, H, W] in [0, 1];
//! - `texts.safetensors`: `input_ids` U32 [N, L], `attention_mask` U8 [N, L];
//! - `labels.safetensors`: `label` U32 [N], `split` U8 [N] (0 train, 1 val, 2 test), and for
//!   sources with per-study findings `findings` U8 [N, F] (multi-hot over `meta.findings`) and
//!   `signature` U64 [N] (see [`Dataset::signature`]);
//! - `vqa.safetensors` (only with questions): `image_index` U32 [Q], `input_ids` U32 [Q, L],
//!   `attention_mask` U8 [Q, L], `answer` U32 [Q], `closed` U8 [Q], `qtype` U8 [Q];
//! - `retrieval.json` (optional): `[{"image": i, "hard_negative_texts": [j, ...]}]`;
//! - `meta.json`: [`Meta`];
//! - `tokenizer.json` (written by the tokenizer module, see [`tokenizer_path`]);
//! - `preview.png` (written by the ingest stage).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::DataError;

pub const IMAGES_FILE: &str = "images.safetensors";
pub const TEXTS_FILE: &str = "texts.safetensors";
pub const LABELS_FILE: &str = "labels.safetensors";
pub const VQA_FILE: &str = "vqa.safetensors";
pub const RETRIEVAL_FILE: &str = "retrieval.json";
pub const META_FILE: &str = "meta.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const PREVIEW_FILE: &str = "preview.png";

/// Split codes stored in `split`.
pub const SPLIT_TRAIN: u8 = 0;
pub const SPLIT_VAL: u8 = 1;
pub const SPLIT_TEST: u8 = 2;

/// Where an artifact folder keeps its tokenizer.
pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join(TOKENIZER_FILE)
}

/// Number of images per split and of questions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub questions: usize,
}

/// `meta.json`: everything about the artifact that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// `synthrad`, `vqa-rad`, ...
    pub source: String,
    /// A licence note for the data that went in.
    pub licence: String,
    /// `source` (pre-training corpus) or `target` (downstream data).
    pub domain: String,
    pub image_size: usize,
    pub channels: usize,
    pub max_len: usize,
    pub counts: Counts,
    /// Images per class, indexed like `classes`.
    pub class_counts: Vec<usize>,
    pub classes: Vec<String>,
    pub answers: Vec<String>,
    pub question_types: Vec<String>,
    /// The finding kinds of the `findings` tensor's columns, in order; empty for sources
    /// without per-study findings (and in artifacts written before findings were stored).
    #[serde(default)]
    pub findings: Vec<String>,
    pub seed: u64,
    /// The ingest stage's resolved params.
    pub params: serde_json::Value,
    pub vocab_size: usize,
    pub pad_id: u32,
    pub unk_id: u32,
    pub cls_id: u32,
    pub sep_id: u32,
    pub mask_id: u32,
}

/// The questions of a VQA source; all per-question vectors have length `len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaSet {
    pub image_index: Vec<u32>,
    /// [Q, max_len] row-major.
    pub input_ids: Vec<u32>,
    /// [Q, max_len] row-major, 1 = real token.
    pub attention_mask: Vec<u8>,
    pub answer: Vec<u32>,
    pub closed: Vec<u8>,
    pub qtype: Vec<u8>,
}

impl VqaSet {
    pub fn len(&self) -> usize {
        self.image_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_index.is_empty()
    }
}

/// One test image and the images whose texts are hard negatives for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrievalEntry {
    pub image: u32,
    pub hard_negative_texts: Vec<u32>,
}

/// A whole dataset artifact in memory, as plain vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// [n, channels, size, size] row-major, values in [0, 1].
    pub images: Vec<f32>,
    pub n: usize,
    pub channels: usize,
    pub size: usize,
    /// [n, max_len] row-major.
    pub input_ids: Vec<u32>,
    /// [n, max_len] row-major, 1 = real token.
    pub attention_mask: Vec<u8>,
    pub max_len: usize,
    pub labels: Vec<u32>,
    pub split: Vec<u8>,
    pub vqa: Option<VqaSet>,
    pub retrieval: Option<Vec<RetrievalEntry>>,
    /// [n, meta.findings.len()] row-major multi-hot, 1 = the study shows that finding; `None`
    /// for sources without per-study findings.
    pub findings: Option<Vec<u8>>,
    /// One per image: a hash of the study's sorted (finding kind, side) list over the kinds in
    /// `meta.findings`, equal for two studies exactly when their findings cannot be told apart
    /// from the image; `None` like `findings`.
    pub signatures: Option<Vec<u64>>,
    pub meta: Meta,
}

impl Dataset {
    /// The pixels of image `i` (C*H*W values).
    pub fn image(&self, i: usize) -> &[f32] {
        let len = self.channels * self.size * self.size;
        &self.images[i * len..(i + 1) * len]
    }

    /// The token ids of text `i`.
    pub fn text_ids(&self, i: usize) -> &[u32] {
        &self.input_ids[i * self.max_len..(i + 1) * self.max_len]
    }

    /// The multi-hot findings of image `i`, one value per `meta.findings` entry.
    pub fn findings_of(&self, i: usize) -> Option<&[u8]> {
        let width = self.meta.findings.len();
        self.findings
            .as_ref()
            .map(|rows| &rows[i * width..(i + 1) * width])
    }

    /// The finding signature of image `i` (equal signatures = indistinguishable findings).
    pub fn signature(&self, i: usize) -> Option<u64> {
        self.signatures.as_ref().map(|s| s[i])
    }

    /// The findings rows of images `rows`, in that order (for views that subset a dataset).
    pub fn findings_of_rows(&self, rows: &[usize]) -> Option<Vec<u8>> {
        self.findings.as_ref()?;
        Some(
            rows.iter()
                .flat_map(|&r| self.findings_of(r).unwrap_or_default().iter().copied())
                .collect(),
        )
    }

    /// The signatures of images `rows`, in that order.
    pub fn signatures_of_rows(&self, rows: &[usize]) -> Option<Vec<u64>> {
        let signatures = self.signatures.as_ref()?;
        Some(rows.iter().map(|&r| signatures[r]).collect())
    }

    /// Indices of the images in one split (`SPLIT_TRAIN`, `SPLIT_VAL`, `SPLIT_TEST`).
    pub fn indices_of_split(&self, split: u8) -> Vec<usize> {
        (0..self.n).filter(|&i| self.split[i] == split).collect()
    }

    /// Writes every file of the artifact except `tokenizer.json` and `preview.png`.
    pub fn save(&self, dir: &Path) -> Result<(), DataError> {
        self.check(dir)?;
        let image_len = self.channels * self.size * self.size;
        let mut writer = ImageWriter::create(dir, self.n, self.channels, self.size)?;
        for i in 0..self.n {
            writer.push(&self.images[i * image_len..(i + 1) * image_len])?;
        }
        writer.finish()?;
        write_tensors(
            &dir.join(TEXTS_FILE),
            vec![
                (
                    "input_ids",
                    u32_tensor(&self.input_ids, vec![self.n, self.max_len]),
                ),
                (
                    "attention_mask",
                    u8_tensor(&self.attention_mask, vec![self.n, self.max_len]),
                ),
            ],
        )?;
        let mut label_tensors = vec![
            ("label", u32_tensor(&self.labels, vec![self.n])),
            ("split", u8_tensor(&self.split, vec![self.n])),
        ];
        if let Some(findings) = &self.findings {
            label_tensors.push((
                "findings",
                u8_tensor(findings, vec![self.n, self.meta.findings.len()]),
            ));
        }
        if let Some(signatures) = &self.signatures {
            label_tensors.push(("signature", u64_tensor(signatures, vec![self.n])));
        }
        write_tensors(&dir.join(LABELS_FILE), label_tensors)?;
        if let Some(vqa) = &self.vqa {
            let q = vqa.len();
            write_tensors(
                &dir.join(VQA_FILE),
                vec![
                    ("image_index", u32_tensor(&vqa.image_index, vec![q])),
                    (
                        "input_ids",
                        u32_tensor(&vqa.input_ids, vec![q, self.max_len]),
                    ),
                    (
                        "attention_mask",
                        u8_tensor(&vqa.attention_mask, vec![q, self.max_len]),
                    ),
                    ("answer", u32_tensor(&vqa.answer, vec![q])),
                    ("closed", u8_tensor(&vqa.closed, vec![q])),
                    ("qtype", u8_tensor(&vqa.qtype, vec![q])),
                ],
            )?;
        }
        if let Some(retrieval) = &self.retrieval {
            write_json(&dir.join(RETRIEVAL_FILE), retrieval)?;
        }
        write_json(&dir.join(META_FILE), &self.meta)
    }

    /// Reads an artifact folder and checks that its files agree with each other and `meta.json`.
    pub fn load(dir: &Path) -> Result<Dataset, DataError> {
        let meta: Meta = read_json(&dir.join(META_FILE))?;
        let (n, channels, size, max_len) = (
            meta.counts.train + meta.counts.val + meta.counts.test,
            meta.channels,
            meta.image_size,
            meta.max_len,
        );

        let path = dir.join(IMAGES_FILE);
        let bytes = read_file(&path)?;
        let file = parse(&path, &bytes)?;
        let images = read_f32(&path, &file, "images", &[n, channels, size, size])?;

        let path = dir.join(TEXTS_FILE);
        let bytes = read_file(&path)?;
        let file = parse(&path, &bytes)?;
        let input_ids = read_u32(&path, &file, "input_ids", &[n, max_len])?;
        let attention_mask = read_u8(&path, &file, "attention_mask", &[n, max_len])?;

        let path = dir.join(LABELS_FILE);
        let bytes = read_file(&path)?;
        let file = parse(&path, &bytes)?;
        let labels = read_u32(&path, &file, "label", &[n])?;
        let split = read_u8(&path, &file, "split", &[n])?;
        let findings = if file.names().contains(&"findings") {
            Some(read_u8(
                &path,
                &file,
                "findings",
                &[n, meta.findings.len()],
            )?)
        } else {
            None
        };
        let signatures = if file.names().contains(&"signature") {
            Some(read_u64(&path, &file, "signature", &[n])?)
        } else {
            None
        };

        let path = dir.join(VQA_FILE);
        let vqa = if path.exists() {
            let q = meta.counts.questions;
            let bytes = read_file(&path)?;
            let file = parse(&path, &bytes)?;
            Some(VqaSet {
                image_index: read_u32(&path, &file, "image_index", &[q])?,
                input_ids: read_u32(&path, &file, "input_ids", &[q, max_len])?,
                attention_mask: read_u8(&path, &file, "attention_mask", &[q, max_len])?,
                answer: read_u32(&path, &file, "answer", &[q])?,
                closed: read_u8(&path, &file, "closed", &[q])?,
                qtype: read_u8(&path, &file, "qtype", &[q])?,
            })
        } else {
            None
        };

        let path = dir.join(RETRIEVAL_FILE);
        let retrieval = if path.exists() {
            Some(read_json(&path)?)
        } else {
            None
        };

        let dataset = Dataset {
            images,
            n,
            channels,
            size,
            input_ids,
            attention_mask,
            max_len,
            labels,
            split,
            vqa,
            retrieval,
            findings,
            signatures,
            meta,
        };
        dataset.check(dir)?;
        Ok(dataset)
    }

    /// Checks that sizes, value ranges and indices agree; `dir` names the artifact in errors.
    pub fn check(&self, dir: &Path) -> Result<(), DataError> {
        let bad = |file: &str, message: String| Err(DataError::format(dir.join(file), message));
        let meta = &self.meta;
        let counted = meta.counts.train + meta.counts.val + meta.counts.test;
        if counted != self.n
            || meta.channels != self.channels
            || meta.image_size != self.size
            || meta.max_len != self.max_len
        {
            return bad(
                META_FILE,
                format!(
                    "meta says {counted} images of {}x{}x{} with max_len {}, the data has {} of {}x{}x{} with max_len {}",
                    meta.channels,
                    meta.image_size,
                    meta.image_size,
                    meta.max_len,
                    self.n,
                    self.channels,
                    self.size,
                    self.size,
                    self.max_len
                ),
            );
        }
        if self.images.len() != self.n * self.channels * self.size * self.size {
            return bad(
                IMAGES_FILE,
                format!(
                    "expected {} values, found {}",
                    self.n * self.channels * self.size * self.size,
                    self.images.len()
                ),
            );
        }
        if let Some(position) = self.images.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return bad(
                IMAGES_FILE,
                format!(
                    "value {} at index {position} is outside [0, 1]",
                    self.images[position]
                ),
            );
        }
        check_text(
            dir,
            TEXTS_FILE,
            &self.input_ids,
            &self.attention_mask,
            self.n,
            self.max_len,
            meta.vocab_size,
        )?;
        if self.labels.len() != self.n || self.split.len() != self.n {
            return bad(
                LABELS_FILE,
                format!(
                    "expected {} labels and splits, found {} and {}",
                    self.n,
                    self.labels.len(),
                    self.split.len()
                ),
            );
        }
        if let Some(i) = self
            .labels
            .iter()
            .position(|&l| l as usize >= meta.classes.len())
        {
            return bad(
                LABELS_FILE,
                format!(
                    "label {} of image {i} is not below the {} classes",
                    self.labels[i],
                    meta.classes.len()
                ),
            );
        }
        if let Some(i) = self.split.iter().position(|&s| s > SPLIT_TEST) {
            return bad(
                LABELS_FILE,
                format!("split {} of image {i} is not 0, 1 or 2", self.split[i]),
            );
        }
        let per_split = |code: u8| self.split.iter().filter(|&&s| s == code).count();
        let found = (
            per_split(SPLIT_TRAIN),
            per_split(SPLIT_VAL),
            per_split(SPLIT_TEST),
        );
        if found != (meta.counts.train, meta.counts.val, meta.counts.test) {
            return bad(
                META_FILE,
                format!(
                    "counts say train/val/test {}/{}/{}, the splits have {}/{}/{}",
                    meta.counts.train, meta.counts.val, meta.counts.test, found.0, found.1, found.2
                ),
            );
        }
        check_findings(dir, self)?;
        let mut class_counts = vec![0usize; meta.classes.len()];
        for &label in &self.labels {
            class_counts[label as usize] += 1;
        }
        if class_counts != meta.class_counts {
            return bad(
                META_FILE,
                format!(
                    "class_counts {:?} do not match the labels {:?}",
                    meta.class_counts, class_counts
                ),
            );
        }
        match &self.vqa {
            Some(vqa) => check_vqa(dir, vqa, self, meta)?,
            None if meta.counts.questions != 0 => {
                return bad(
                    VQA_FILE,
                    format!(
                        "meta counts {} questions but there is no vqa file",
                        meta.counts.questions
                    ),
                );
            }
            None => {}
        }
        if let Some(retrieval) = &self.retrieval {
            for entry in retrieval {
                if entry.image as usize >= self.n
                    || entry
                        .hard_negative_texts
                        .iter()
                        .any(|&j| j as usize >= self.n)
                {
                    return bad(
                        RETRIEVAL_FILE,
                        format!(
                            "entry for image {} points past the {} images",
                            entry.image, self.n
                        ),
                    );
                }
            }
        }
        for (name, id) in [
            ("pad_id", meta.pad_id),
            ("unk_id", meta.unk_id),
            ("cls_id", meta.cls_id),
            ("sep_id", meta.sep_id),
            ("mask_id", meta.mask_id),
        ] {
            if id as usize >= meta.vocab_size {
                return bad(
                    META_FILE,
                    format!("{name} {id} is not below vocab_size {}", meta.vocab_size),
                );
            }
        }
        Ok(())
    }
}

/// Findings and signatures come together with `meta.findings` and have one row per image.
fn check_findings(dir: &Path, data: &Dataset) -> Result<(), DataError> {
    let bad = |file: &str, message: String| Err(DataError::format(dir.join(file), message));
    let width = data.meta.findings.len();
    match &data.findings {
        None if width > 0 => {
            return bad(
                LABELS_FILE,
                format!("meta names {width} findings but there is no `findings` tensor"),
            );
        }
        Some(_) if width == 0 => {
            return bad(
                META_FILE,
                "there is a `findings` tensor but meta names no findings".into(),
            );
        }
        Some(rows) if rows.len() != data.n * width => {
            return bad(
                LABELS_FILE,
                format!(
                    "expected {}x{width} findings values, found {}",
                    data.n,
                    rows.len()
                ),
            );
        }
        Some(rows) => {
            if let Some(k) = rows.iter().position(|&v| v > 1) {
                return bad(
                    LABELS_FILE,
                    format!(
                        "findings value {} of image {} is not 0 or 1",
                        rows[k],
                        k / width
                    ),
                );
            }
        }
        None => {}
    }
    match &data.signatures {
        Some(s) if s.len() != data.n => bad(
            LABELS_FILE,
            format!("expected {} signatures, found {}", data.n, s.len()),
        ),
        Some(_) if data.findings.is_none() => bad(
            LABELS_FILE,
            "there is a `signature` tensor but no `findings` tensor".into(),
        ),
        None if data.findings.is_some() => bad(
            LABELS_FILE,
            "there is a `findings` tensor but no `signature` tensor".into(),
        ),
        _ => Ok(()),
    }
}

fn check_vqa(dir: &Path, vqa: &VqaSet, data: &Dataset, meta: &Meta) -> Result<(), DataError> {
    let q = vqa.len();
    let bad = |message: String| Err(DataError::format(dir.join(VQA_FILE), message));
    if meta.counts.questions != q {
        return bad(format!(
            "meta counts {} questions, the file has {q}",
            meta.counts.questions
        ));
    }
    if [vqa.answer.len(), vqa.closed.len(), vqa.qtype.len()]
        .iter()
        .any(|&len| len != q)
    {
        return bad(format!(
            "per-question vectors differ in length from the {q} image indices"
        ));
    }
    check_text(
        dir,
        VQA_FILE,
        &vqa.input_ids,
        &vqa.attention_mask,
        q,
        data.max_len,
        meta.vocab_size,
    )?;
    for k in 0..q {
        if vqa.image_index[k] as usize >= data.n {
            return bad(format!(
                "question {k} points at image {} of {}",
                vqa.image_index[k], data.n
            ));
        }
        if vqa.answer[k] as usize >= meta.answers.len() {
            return bad(format!(
                "question {k} has answer {} but there are {} answers",
                vqa.answer[k],
                meta.answers.len()
            ));
        }
        if vqa.closed[k] > 1 {
            return bad(format!(
                "question {k} has closed = {}, expected 0 or 1",
                vqa.closed[k]
            ));
        }
        if vqa.qtype[k] as usize >= meta.question_types.len() {
            return bad(format!(
                "question {k} has qtype {} but there are {} question types",
                vqa.qtype[k],
                meta.question_types.len()
            ));
        }
    }
    Ok(())
}

fn check_text(
    dir: &Path,
    file: &str,
    ids: &[u32],
    mask: &[u8],
    rows: usize,
    max_len: usize,
    vocab_size: usize,
) -> Result<(), DataError> {
    let bad = |message: String| Err(DataError::format(dir.join(file), message));
    if ids.len() != rows * max_len || mask.len() != rows * max_len {
        return bad(format!(
            "expected {rows}x{max_len} ids and mask values, found {} and {}",
            ids.len(),
            mask.len()
        ));
    }
    if let Some(k) = ids.iter().position(|&id| id as usize >= vocab_size) {
        return bad(format!(
            "row {} has token id {} outside the vocabulary of {vocab_size}",
            k / max_len.max(1),
            ids[k]
        ));
    }
    if let Some(k) = mask.iter().position(|&m| m > 1) {
        return bad(format!(
            "row {} has attention_mask value {}, expected 0 or 1",
            k / max_len.max(1),
            mask[k]
        ));
    }
    Ok(())
}

/// Writes `images.safetensors` one image at a time, so an ingest never holds all images as
/// f32 at once. The header is known up front because the count and shape are.
pub struct ImageWriter {
    path: PathBuf,
    out: BufWriter<File>,
    expected: usize,
    written: usize,
    image_len: usize,
}

impl ImageWriter {
    pub fn create(
        dir: &Path,
        n: usize,
        channels: usize,
        size: usize,
    ) -> Result<ImageWriter, DataError> {
        let path = dir.join(IMAGES_FILE);
        let image_len = channels * size * size;
        let bytes = n * image_len * 4;
        let mut header = format!(r#"{{"images":{{"dtype":"F32","shape":[{n},{channels},{size},{size}],"data_offsets":[0,{bytes}]}}}}"#).into_bytes();
        // safetensors pads the header with spaces so the data starts 8-byte aligned.
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let file = File::create(&path).map_err(DataError::io(&path))?;
        let mut out = BufWriter::new(file);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(DataError::io(&path))?;
        out.write_all(&header).map_err(DataError::io(&path))?;
        Ok(ImageWriter {
            path,
            out,
            expected: n,
            written: 0,
            image_len,
        })
    }

    /// Appends one image of C*H*W values in [0, 1].
    pub fn push(&mut self, image: &[f32]) -> Result<(), DataError> {
        if image.len() != self.image_len || self.written == self.expected {
            return Err(DataError::format(
                &self.path,
                format!(
                    "image {} has {} values (expected {}, {} images in all)",
                    self.written,
                    image.len(),
                    self.image_len,
                    self.expected
                ),
            ));
        }
        for value in image {
            self.out
                .write_all(&value.to_le_bytes())
                .map_err(DataError::io(&self.path))?;
        }
        self.written += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), DataError> {
        if self.written != self.expected {
            return Err(DataError::format(
                &self.path,
                format!(
                    "{} images written, {} announced",
                    self.written, self.expected
                ),
            ));
        }
        self.out.flush().map_err(DataError::io(&self.path))
    }
}

/// Little-endian bytes of a tensor plus its dtype and shape.
struct OwnedTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn u32_tensor(values: &[u32], shape: Vec<usize>) -> OwnedTensor {
    OwnedTensor {
        dtype: Dtype::U32,
        shape,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn u64_tensor(values: &[u64], shape: Vec<usize>) -> OwnedTensor {
    OwnedTensor {
        dtype: Dtype::U64,
        shape,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn u8_tensor(values: &[u8], shape: Vec<usize>) -> OwnedTensor {
    OwnedTensor {
        dtype: Dtype::U8,
        shape,
        bytes: values.to_vec(),
    }
}

fn write_tensors(path: &Path, tensors: Vec<(&str, OwnedTensor)>) -> Result<(), DataError> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, tensor) in &tensors {
        let view = TensorView::new(tensor.dtype, tensor.shape.clone(), &tensor.bytes)
            .map_err(|err| DataError::format(path, format!("tensor `{name}`: {err}")))?;
        views.push((name.to_string(), view));
    }
    let metadata: Option<HashMap<String, String>> = None;
    safetensors::tensor::serialize_to_file(views, metadata, path)
        .map_err(|err| DataError::format(path, err.to_string()))
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(DataError::io(path))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, DataError> {
    SafeTensors::deserialize(bytes)
        .map_err(|err| DataError::format(path, format!("not a safetensors file: {err}")))
}

fn tensor<'a>(
    path: &Path,
    file: &SafeTensors<'a>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<TensorView<'a>, DataError> {
    let view = file
        .tensor(name)
        .map_err(|_| DataError::format(path, format!("has no tensor `{name}`")))?;
    if view.dtype() != dtype || view.shape() != shape {
        return Err(DataError::format(
            path,
            format!(
                "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                view.dtype(),
                view.shape()
            ),
        ));
    }
    Ok(view)
}

/// A tensor of 4-byte little-endian values (`F32` or `U32`) decoded with `decode`.
fn read_words<T>(
    path: &Path,
    file: &SafeTensors<'_>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    decode: fn([u8; 4]) -> T,
) -> Result<Vec<T>, DataError> {
    let view = tensor(path, file, name, dtype, shape)?;
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| decode([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn read_f32(
    path: &Path,
    file: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, DataError> {
    read_words(path, file, name, Dtype::F32, shape, f32::from_le_bytes)
}

fn read_u32(
    path: &Path,
    file: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<u32>, DataError> {
    read_words(path, file, name, Dtype::U32, shape, u32::from_le_bytes)
}

fn read_u64(
    path: &Path,
    file: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<u64>, DataError> {
    let view = tensor(path, file, name, Dtype::U64, shape)?;
    Ok(view
        .data()
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

fn read_u8(
    path: &Path,
    file: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<u8>, DataError> {
    Ok(tensor(path, file, name, Dtype::U8, shape)?.data().to_vec())
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DataError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| DataError::format(path, err.to_string()))?;
    std::fs::write(path, text + "\n").map_err(DataError::io(path))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
    serde_json::from_str(&text)
        .map_err(|err| DataError::format(path, format!("malformed JSON: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dataset {
        let (n, channels, size, max_len) = (5, 1, 4, 6);
        let images = (0..n * channels * size * size)
            .map(|k| (k % 17) as f32 / 16.0)
            .collect();
        let mut input_ids = Vec::new();
        let mut attention_mask = Vec::new();
        for i in 0..n {
            let real = 3 + i % 3;
            for t in 0..max_len {
                input_ids.push(if t < real { (2 + i + t) as u32 } else { 0 });
                attention_mask.push(u8::from(t < real));
            }
        }
        let meta = Meta {
            source: "synthrad".into(),
            licence: "generated".into(),
            domain: "source".into(),
            image_size: size,
            channels,
            max_len,
            counts: Counts {
                train: 3,
                val: 1,
                test: 1,
                questions: 2,
            },
            class_counts: vec![2, 3],
            classes: vec!["normal".into(), "effusion".into()],
            answers: vec!["yes".into(), "no".into(), "left".into()],
            question_types: vec!["presence".into(), "position".into()],
            findings: vec!["effusion".into(), "mass".into(), "nodule".into()],
            seed: 7,
            params: serde_json::json!({"preset": "ci"}),
            vocab_size: 20,
            pad_id: 0,
            unk_id: 1,
            cls_id: 2,
            sep_id: 3,
            mask_id: 4,
        };
        Dataset {
            images,
            n,
            channels,
            size,
            input_ids,
            attention_mask,
            max_len,
            labels: vec![0, 1, 1, 0, 1],
            split: vec![0, 0, 1, 2, 0],
            vqa: Some(VqaSet {
                image_index: vec![0, 4],
                input_ids: (0..2 * max_len as u32).map(|k| k % 20).collect(),
                attention_mask: vec![1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0],
                answer: vec![2, 0],
                closed: vec![0, 1],
                qtype: vec![1, 0],
            }),
            retrieval: Some(vec![RetrievalEntry {
                image: 3,
                hard_negative_texts: vec![1, 4],
            }]),
            findings: Some(vec![0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1]),
            signatures: Some(vec![11, 22, 33, 11, u64::MAX]),
            meta,
        }
    }

    /// `sample()` as a real source writes it: no per-study findings.
    fn sample_without_findings() -> Dataset {
        let mut data = sample();
        data.findings = None;
        data.signatures = None;
        data.meta.findings.clear();
        data
    }

    #[test]
    fn save_then_load_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample();
        data.save(dir.path()).unwrap();
        let back = Dataset::load(dir.path()).unwrap();
        assert_eq!(back, data);
        assert_eq!(back.image(1), data.image(1));
        assert_eq!(back.indices_of_split(SPLIT_TRAIN), vec![0, 1, 4]);
    }

    #[test]
    fn findings_and_signatures_survive_the_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample();
        data.save(dir.path()).unwrap();
        let back = Dataset::load(dir.path()).unwrap();
        assert_eq!(back.findings_of(2), Some(&[1u8, 1, 0][..]));
        assert_eq!(back.signature(4), Some(u64::MAX));
        assert_eq!(back.findings_of_rows(&[4, 0]), Some(vec![1, 0, 1, 0, 0, 0]));
        assert_eq!(back.signatures_of_rows(&[3, 1]), Some(vec![11, 22]));
        assert_eq!(back.meta.findings, data.meta.findings);
    }

    #[test]
    fn a_source_without_findings_loads_them_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_without_findings();
        data.save(dir.path()).unwrap();
        let back = Dataset::load(dir.path()).unwrap();
        assert_eq!(back, data);
        assert_eq!((back.findings_of(0), back.signature(0)), (None, None));
        assert_eq!(back.findings_of_rows(&[0]), None);
    }

    #[test]
    fn a_meta_written_before_findings_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        sample_without_findings().save(dir.path()).unwrap();
        let path = dir.path().join(META_FILE);
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("findings").unwrap();
        std::fs::write(&path, meta.to_string()).unwrap();
        let back = Dataset::load(dir.path()).unwrap();
        assert!(back.meta.findings.is_empty() && back.findings.is_none());
    }

    #[test]
    fn findings_that_disagree_with_meta_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = sample();
        data.findings.as_mut().unwrap()[4] = 2;
        let message = data.save(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("labels.safetensors") && message.contains("of image 1 is not 0 or 1"),
            "{message}"
        );

        let mut data = sample();
        data.signatures = None;
        let message = data.save(dir.path()).unwrap_err().to_string();
        assert!(message.contains("no `signature` tensor"), "{message}");

        let mut data = sample();
        data.meta.findings.pop();
        let message = data.save(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("expected 5x2 findings values"),
            "{message}"
        );

        // meta names findings, the tensor file lacks them.
        sample_without_findings().save(dir.path()).unwrap();
        let path = dir.path().join(META_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"findings\": []", "\"findings\": [\"mass\"]");
        std::fs::write(&path, text).unwrap();
        let message = Dataset::load(dir.path()).unwrap_err().to_string();
        assert!(message.contains("no `findings` tensor"), "{message}");
    }

    #[test]
    fn without_questions_there_is_no_vqa_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = sample();
        data.vqa = None;
        data.retrieval = None;
        data.meta.counts.questions = 0;
        data.save(dir.path()).unwrap();
        assert!(!dir.path().join(VQA_FILE).exists());
        assert!(!dir.path().join(RETRIEVAL_FILE).exists());
        assert_eq!(Dataset::load(dir.path()).unwrap(), data);
    }

    #[test]
    fn files_are_readable_by_the_safetensors_crate_with_the_contract_shapes() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join(IMAGES_FILE)).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let images = file.tensor("images").unwrap();
        assert_eq!(
            (images.dtype(), images.shape()),
            (Dtype::F32, &[5usize, 1, 4, 4][..])
        );
        let bytes = std::fs::read(dir.path().join(VQA_FILE)).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("input_ids").unwrap().shape(), &[2, 6]);
        assert_eq!(file.tensor("closed").unwrap().dtype(), Dtype::U8);
    }

    #[test]
    fn inconsistent_data_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = sample();
        data.labels[2] = 9;
        let message = data.save(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("labels.safetensors") && message.contains("label 9 of image 2"),
            "{message}"
        );

        let mut data = sample();
        data.images[3] = 1.5;
        let message = data.save(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("images.safetensors") && message.contains("outside [0, 1]"),
            "{message}"
        );
    }

    #[test]
    fn a_meta_that_disagrees_with_the_tensors_is_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        let path = dir.path().join(META_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"image_size\": 4", "\"image_size\": 8");
        std::fs::write(&path, text).unwrap();
        let message = Dataset::load(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("images.safetensors") && message.contains("expected F32 [5, 1, 8, 8]"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let message = Dataset::load(dir.path()).unwrap_err().to_string();
        assert!(message.contains("meta.json"), "{message}");
    }
}
