//! Split-filtered views of a dataset artifact: the only way this crate reads data.
//!
//! A [`SplitView<S>`] owns a copy of the rows of ONE split (the rest of the artifact is dropped as
//! soon as the view is built), so a stage that is handed a `SplitView<Train>` cannot touch test
//! rows and one handed a `SplitView<Test>` cannot touch training rows: the separation holds by
//! construction, not by care at each call site. `calibrate` and `coordinate-tune` build only
//! training views; `evaluate` builds a test view plus, for the linear probe alone, the training
//! split's images and labels ([`ProbeTrainImages`]: no texts, no questions).

use std::marker::PhantomData;
use std::path::Path;

use umdflow_data::artifact::{
    Counts, Dataset, RetrievalEntry, SPLIT_TEST, SPLIT_TRAIN, SPLIT_VAL, VqaSet,
};

use crate::error::{Result, TuneError};

/// A split, named at the type level.
pub trait SplitTag {
    const CODE: u8;
    const NAME: &'static str;
}

#[derive(Debug, Clone, Copy)]
pub struct Train;
#[derive(Debug, Clone, Copy)]
pub struct Val;
#[derive(Debug, Clone, Copy)]
pub struct Test;

impl SplitTag for Train {
    const CODE: u8 = SPLIT_TRAIN;
    const NAME: &'static str = "train";
}
impl SplitTag for Val {
    const CODE: u8 = SPLIT_VAL;
    const NAME: &'static str = "val";
}
impl SplitTag for Test {
    const CODE: u8 = SPLIT_TEST;
    const NAME: &'static str = "test";
}

/// The rows of one split, re-indexed from 0 (a [`Dataset`] so the model crate's batch builders
/// read it directly). VQA questions keep only those whose image is in the split, with
/// `image_index` pointing into the view; retrieval entries likewise.
#[derive(Debug, Clone)]
pub struct SplitView<S> {
    data: Dataset,
    /// `original_rows[i]`: the artifact row of view row i.
    pub original_rows: Vec<usize>,
    _split: PhantomData<S>,
}

impl<S: SplitTag> SplitView<S> {
    /// Loads an artifact and keeps only split `S`; fails if that split is empty.
    pub fn load(dir: &Path) -> Result<Self> {
        let view = Self::from_dataset(Dataset::load(dir)?);
        if view.data.n == 0 {
            return Err(TuneError::File {
                path: dir.display().to_string(),
                message: format!(
                    "the dataset has no {} rows (split code {})",
                    S::NAME,
                    S::CODE
                ),
            });
        }
        Ok(view)
    }

    /// Keeps the rows of split `S` and drops everything else.
    pub fn from_dataset(full: Dataset) -> Self {
        let rows = full.indices_of_split(S::CODE);
        let mut new_index = vec![u32::MAX; full.n];
        for (k, &r) in rows.iter().enumerate() {
            new_index[r] = k as u32;
        }
        let pixels = full.channels * full.size * full.size;
        let t = full.max_len;
        let pick = |v: &[u32], width: usize| {
            rows.iter()
                .flat_map(|&r| v[r * width..(r + 1) * width].iter().copied())
                .collect::<Vec<_>>()
        };
        let images: Vec<f32> = rows
            .iter()
            .flat_map(|&r| full.image(r).iter().copied())
            .collect();
        let input_ids = pick(&full.input_ids, t);
        let attention_mask: Vec<u8> = rows
            .iter()
            .flat_map(|&r| full.attention_mask[r * t..(r + 1) * t].iter().copied())
            .collect();
        let labels: Vec<u32> = rows.iter().map(|&r| full.labels[r]).collect();
        let vqa = full
            .vqa
            .as_ref()
            .map(|q| filter_questions(q, &new_index, t));
        let retrieval = full.retrieval.as_ref().map(|entries| {
            entries
                .iter()
                .filter_map(|e| {
                    let image = *new_index.get(e.image as usize)?;
                    (image != u32::MAX).then(|| RetrievalEntry {
                        image,
                        hard_negative_texts: e
                            .hard_negative_texts
                            .iter()
                            .filter_map(|&j| {
                                new_index
                                    .get(j as usize)
                                    .copied()
                                    .filter(|&k| k != u32::MAX)
                            })
                            .collect(),
                    })
                })
                .collect()
        });
        let mut meta = full.meta.clone();
        let questions = vqa.as_ref().map_or(0, VqaSet::len);
        let n = rows.len();
        meta.counts = match S::CODE {
            SPLIT_TRAIN => Counts {
                train: n,
                val: 0,
                test: 0,
                questions,
            },
            SPLIT_VAL => Counts {
                train: 0,
                val: n,
                test: 0,
                questions,
            },
            _ => Counts {
                train: 0,
                val: 0,
                test: n,
                questions,
            },
        };
        debug_assert_eq!(images.len(), n * pixels);
        let data = Dataset {
            images,
            n,
            channels: full.channels,
            size: full.size,
            input_ids,
            attention_mask,
            max_len: t,
            labels,
            split: vec![S::CODE; n],
            vqa,
            retrieval,
            findings: full.findings_of_rows(&rows),
            signatures: full.signatures_of_rows(&rows),
            meta,
        };
        SplitView {
            data,
            original_rows: rows,
            _split: PhantomData,
        }
    }

    /// The split's rows as a dataset (every row has split code `S::CODE`).
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.n
    }

    pub fn is_empty(&self) -> bool {
        self.data.n == 0
    }
}

fn filter_questions(q: &VqaSet, new_index: &[u32], t: usize) -> VqaSet {
    let keep: Vec<usize> = (0..q.len())
        .filter(|&k| {
            new_index
                .get(q.image_index[k] as usize)
                .is_some_and(|&i| i != u32::MAX)
        })
        .collect();
    VqaSet {
        image_index: keep
            .iter()
            .map(|&k| new_index[q.image_index[k] as usize])
            .collect(),
        input_ids: keep
            .iter()
            .flat_map(|&k| q.input_ids[k * t..(k + 1) * t].iter().copied())
            .collect(),
        attention_mask: keep
            .iter()
            .flat_map(|&k| q.attention_mask[k * t..(k + 1) * t].iter().copied())
            .collect(),
        answer: keep.iter().map(|&k| q.answer[k]).collect(),
        closed: keep.iter().map(|&k| q.closed[k]).collect(),
        qtype: keep.iter().map(|&k| q.qtype[k]).collect(),
    }
}

/// The training split's images and labels only: what the linear probe may read during
/// evaluation (fitting the probe on training features is its purpose).
#[derive(Debug, Clone)]
pub struct ProbeTrainImages {
    data: Dataset,
}

impl ProbeTrainImages {
    /// Keeps images and labels; texts become empty rows and questions are dropped.
    pub fn from_train(view: SplitView<Train>) -> Self {
        let mut data = view.data;
        data.input_ids = vec![data.meta.pad_id; data.n * data.max_len];
        data.attention_mask = vec![0; data.n * data.max_len];
        data.vqa = None;
        data.retrieval = None;
        ProbeTrainImages { data }
    }

    /// Images (and labels) in a dataset whose texts are all padding.
    pub fn data(&self) -> &Dataset {
        &self.data
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use umdflow_data::artifact::Meta;

    /// A 6-row dataset whose every value encodes its row: pixels = row/10, token ids = 10 + row,
    /// label = row % 2; splits [train, test, val, train, test, train]; one question per image.
    pub fn marked_dataset() -> Dataset {
        let n = 6;
        let (c, size, t) = (1, 2, 3);
        let split = vec![0, 2, 1, 0, 2, 0];
        let meta = Meta {
            source: "test".into(),
            licence: "none".into(),
            domain: "target".into(),
            image_size: size,
            channels: c,
            max_len: t,
            counts: Counts {
                train: 3,
                val: 1,
                test: 2,
                questions: n,
            },
            class_counts: vec![3, 3],
            classes: vec!["a".into(), "b".into()],
            answers: vec!["yes".into(), "no".into()],
            question_types: vec!["pres".into()],
            findings: vec!["spot".into()],
            seed: 0,
            params: serde_json::Value::Null,
            vocab_size: 20,
            pad_id: 0,
            unk_id: 1,
            cls_id: 2,
            sep_id: 3,
            mask_id: 4,
        };
        Dataset {
            images: (0..n)
                .flat_map(|r| vec![r as f32 / 10.0; c * size * size])
                .collect(),
            n,
            channels: c,
            size,
            input_ids: (0..n).flat_map(|r| vec![10 + r as u32; t]).collect(),
            attention_mask: vec![1; n * t],
            max_len: t,
            labels: (0..n).map(|r| (r % 2) as u32).collect(),
            split,
            vqa: Some(VqaSet {
                image_index: (0..n as u32).rev().collect(),
                input_ids: (0..n).rev().flat_map(|r| vec![10 + r as u32; t]).collect(),
                attention_mask: vec![1; n * t],
                answer: (0..n).rev().map(|r| (r % 2) as u32).collect(),
                closed: vec![1; n],
                qtype: vec![0; n],
            }),
            retrieval: Some(vec![
                RetrievalEntry {
                    image: 1,
                    hard_negative_texts: vec![4, 0],
                },
                RetrievalEntry {
                    image: 4,
                    hard_negative_texts: vec![1],
                },
            ]),
            findings: Some((0..n).map(|r| (r % 2) as u8).collect()),
            signatures: Some((0..n as u64).map(|r| 100 + r).collect()),
            meta,
        }
    }

    #[test]
    fn a_train_view_holds_only_training_rows() {
        let view = SplitView::<Train>::from_dataset(marked_dataset());
        assert_eq!(view.original_rows, vec![0, 3, 5]);
        let d = view.data();
        assert_eq!(
            d.images,
            vec![0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3, 0.5, 0.5, 0.5, 0.5]
        );
        assert_eq!(d.input_ids, vec![10, 10, 10, 13, 13, 13, 15, 15, 15]);
        assert_eq!(d.labels, vec![0, 1, 1]);
        assert!(d.split.iter().all(|&s| s == SPLIT_TRAIN));
        let q = d.vqa.as_ref().unwrap();
        // Questions were stored for images 5, 4, ..., 0: the train ones are 5, 3, 0.
        assert_eq!(q.image_index, vec![2, 1, 0]);
        assert_eq!(q.input_ids, vec![15, 15, 15, 13, 13, 13, 10, 10, 10]);
        assert_eq!(d.retrieval.as_ref().unwrap().len(), 0);
        assert_eq!(
            d.meta.counts,
            Counts {
                train: 3,
                val: 0,
                test: 0,
                questions: 3
            }
        );
    }

    #[test]
    fn a_test_view_holds_only_test_rows_and_remaps_retrieval() {
        let view = SplitView::<Test>::from_dataset(marked_dataset());
        assert_eq!(view.original_rows, vec![1, 4]);
        let d = view.data();
        assert_eq!(d.input_ids, vec![11, 11, 11, 14, 14, 14]);
        assert_eq!(d.findings, Some(vec![1, 0]));
        assert_eq!(d.signatures, Some(vec![101, 104]));
        assert_eq!(d.vqa.as_ref().unwrap().image_index, vec![1, 0]);
        let r = d.retrieval.as_ref().unwrap();
        // Image 1 -> 0 with negatives [4 -> 1] (0 is a training row and is dropped).
        assert_eq!(
            r[0],
            RetrievalEntry {
                image: 0,
                hard_negative_texts: vec![1]
            }
        );
        assert_eq!(
            r[1],
            RetrievalEntry {
                image: 1,
                hard_negative_texts: vec![0]
            }
        );
    }

    #[test]
    fn probe_images_carry_no_text() {
        let probe =
            ProbeTrainImages::from_train(SplitView::<Train>::from_dataset(marked_dataset()));
        let d = probe.data();
        assert!(d.input_ids.iter().all(|&id| id == 0) && d.attention_mask.iter().all(|&m| m == 0));
        assert!(d.vqa.is_none());
        assert_eq!(d.labels, vec![0, 1, 1]);
    }
}
