//! Evaluation on the TEST split: task metrics and calibration error, the same metrics with the
//! image blanked and with the text blanked (blind baselines: what the model gets without one
//! modality), and optionally a linear probe of the FINE-TUNED image encoder. Test rows come in as
//! a [`SplitView<Test>`]; the only training data that can reach this module is
//! [`ProbeTrainImages`] (training images and labels, no text), which that probe is fitted on.
//!
//! Besides the summary metrics the report keeps per-item outcomes (`items`: 1/0 per test item for
//! every metric that is a mean over items), so a report can pair two arms item by item.

use std::collections::BTreeMap;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use umdflow_data::artifact::Dataset;
use umdflow_model::model::UmdModel;

use crate::error::{Result, TuneError};
use crate::metrics::calibration::expected_calibration_error;
use crate::metrics::classification::{
    OvrAuc, accuracy, balanced_accuracy, confusion_matrix, macro_f1, ovr_auc,
};
use crate::metrics::retrieval::{
    RECALL_KS, Ranks, RetrievalRecall, instance_ranks, semantic_ranks,
};
use crate::metrics::vqa::{VqaAccuracy, same_answer, vqa_accuracy};
use crate::probe::{Findings, ProbeScores, ProbeSettings, ProbeSplit, argmax, score_probe};
use crate::probe_features::encoder_features;
use crate::task::{PairRows, Task, TaskHead, TaskInfo, pooled_features};
use crate::views::{ProbeTrainImages, SplitView, Test};

/// Evaluation settings (`params` of `evaluate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSettings {
    pub batch_size: usize,
    /// Retrieval scores every (image, text) pair of the first `retrieval_cap` test images.
    pub retrieval_cap: usize,
    pub ece_bins: usize,
    /// Also score the blank-image and blank-text passes (VQA and classification).
    pub blind: bool,
    /// Fit and score a linear probe on the fine-tuned model's image encoder.
    pub tuned_probe: bool,
    pub probe: ProbeSettings,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            batch_size: 64,
            retrieval_cap: 100,
            ece_bins: 10,
            blind: true,
            tuned_probe: false,
            probe: ProbeSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationMetrics {
    pub accuracy: Option<f64>,
    pub balanced_accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub auc: OvrAuc,
}

/// The metrics of one pass over the test items (normal, blank image or blank text).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vqa: Option<VqaAccuracy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationMetrics>,
    /// Expected calibration error of the model's own confidence in its answer: the softmax
    /// probability for classification (trained with cross-entropy), the answer's sigmoid for
    /// VQA (trained with one binary cross-entropy per answer).
    pub ece: Option<f64>,
    /// Per-item outcomes, by metric name (see the module documentation).
    #[serde(skip)]
    pub items: BTreeMap<String, Vec<f64>>,
    #[serde(skip)]
    pub confusion: Option<Vec<Vec<u64>>>,
}

/// The blind baselines of a tuned model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlindPasses {
    /// Every image replaced by a constant one (model input 0): what the text alone yields.
    pub blank_image: PassMetrics,
    /// Every text or question replaced by `[CLS] [SEP]` and padding: what the image alone yields.
    pub blank_text: PassMetrics,
}

/// The probe of the fine-tuned image encoder (the `probe` kind measures a pre-trained one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TunedProbe {
    /// What the probe reads, spelled out because it is easily mistaken for a pre-training measure.
    pub reads: &'static str,
    pub train_images: usize,
    pub test_images: usize,
    #[serde(flatten)]
    pub scores: ProbeScores,
}

/// Everything `metrics.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub task: Task,
    pub test_items: usize,
    /// The normal pass.
    #[serde(flatten)]
    pub normal: PassMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalRecall>,
    /// Retrieval where any item with the partner's finding signature counts as a hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic_retrieval: Option<RetrievalRecall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blind: Option<BlindPasses>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuned_probe: Option<TunedProbe>,
    /// Per-item outcomes of the normal and blind passes, by metric name.
    pub items: BTreeMap<String, Vec<f64>>,
}

/// Which modality a pass blanks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blank {
    Image,
    Text,
}

/// A copy of `data` with one modality blanked: images set to 0.5 (the model input 0 after the
/// [-1, 1] scaling), or every text and question set to `[CLS] [SEP]` followed by padding.
pub fn blanked(data: &Dataset, blank: Blank) -> Dataset {
    let mut out = data.clone();
    match blank {
        Blank::Image => out.images.iter_mut().for_each(|v| *v = 0.5),
        Blank::Text => {
            let t = data.max_len;
            let m = &data.meta;
            let empty: Vec<u32> = (0..t)
                .map(|k| match k {
                    0 => m.cls_id,
                    1 => m.sep_id,
                    _ => m.pad_id,
                })
                .collect();
            let mask: Vec<u8> = (0..t).map(|k| u8::from(k < 2)).collect();
            let fill = |ids: &mut Vec<u32>, att: &mut Vec<u8>| {
                let rows = ids.len() / t.max(1);
                *ids = empty.repeat(rows);
                *att = mask.repeat(rows);
            };
            fill(&mut out.input_ids, &mut out.attention_mask);
            if let Some(q) = out.vqa.as_mut() {
                fill(&mut q.input_ids, &mut q.attention_mask);
            }
        }
    }
    out
}

/// Head logits [items, outputs] as f64 rows, in batches.
fn class_logits(
    model: &UmdModel,
    head: &TaskHead,
    data: &Dataset,
    task: Task,
    items: usize,
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(items);
    let all: Vec<usize> = (0..items).collect();
    for chunk in all.chunks(batch.max(1)) {
        let pairs = match task {
            Task::Vqa => PairRows::questions(data, chunk)?,
            _ => PairRows::own_texts(data, chunk),
        };
        let logits = head.forward(&pooled_features(model, &pairs, device)?)?;
        out.extend(logits.to_dtype(DType::F64)?.to_vec2::<f64>()?);
    }
    Ok(out)
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let mut p = logits.to_vec();
    crate::probe::softmax_in_place(&mut p);
    p
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The model's own confidence in its answer `k` from one row of head logits: σ(logit) for VQA
/// (one binary cross-entropy per answer), the softmax probability for classification.
pub fn answer_confidence(task: Task, logits: &[f64], k: usize) -> f64 {
    match task {
        Task::Vqa => sigmoid(logits[k]),
        _ => softmax(logits)[k].clamp(0.0, 1.0),
    }
}

fn as_outcomes(hits: &[bool]) -> Vec<f64> {
    hits.iter().map(|&h| f64::from(h)).collect()
}

/// One pass of a VQA or classification head over the test items of `data`.
fn answer_pass(
    model: &UmdModel,
    head: &TaskHead,
    info: &TaskInfo,
    data: &Dataset,
    settings: &EvalSettings,
    device: &Device,
) -> Result<PassMetrics> {
    let (truth, items): (Vec<usize>, usize) = match info.task {
        Task::Vqa => {
            let vqa = data
                .vqa
                .as_ref()
                .ok_or_else(|| TuneError::invalid("task `vqa`: the test split has no questions"))?;
            (vqa.answer.iter().map(|&a| a as usize).collect(), vqa.len())
        }
        _ => (data.labels.iter().map(|&l| l as usize).collect(), data.n),
    };
    let logits = class_logits(
        model,
        head,
        data,
        info.task,
        items,
        settings.batch_size,
        device,
    )?;
    let predicted: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
    let correct: Vec<bool> = predicted.iter().zip(&truth).map(|(p, t)| p == t).collect();
    let mut pass = PassMetrics {
        vqa: None,
        classification: None,
        ece: None,
        items: BTreeMap::new(),
        confusion: None,
    };
    let confidence: Vec<f64> = logits
        .iter()
        .zip(&predicted)
        .map(|(l, &k)| answer_confidence(info.task, l, k))
        .collect();
    pass.ece = expected_calibration_error(&confidence, &correct, settings.ece_bins)?;
    if info.task == Task::Vqa {
        let vqa = data
            .vqa
            .as_ref()
            .ok_or_else(|| TuneError::invalid("no questions"))?;
        let name = |k: usize| data.meta.answers.get(k).cloned().unwrap_or_default();
        let closed: Vec<bool> = vqa.closed.iter().map(|&c| c == 1).collect();
        let predicted: Vec<String> = predicted.iter().map(|&k| name(k)).collect();
        let truth: Vec<String> = truth.iter().map(|&k| name(k)).collect();
        let hits: Vec<bool> = predicted
            .iter()
            .zip(&truth)
            .map(|(p, t)| same_answer(p, t))
            .collect();
        pass.items.insert("vqa.overall".into(), as_outcomes(&hits));
        pass.vqa = Some(vqa_accuracy(&predicted, &truth, &closed)?);
    } else {
        let probs: Vec<Vec<f64>> = logits.iter().map(|l| softmax(l)).collect();
        let matrix = confusion_matrix(&predicted, &truth, info.outputs)?;
        pass.classification = Some(ClassificationMetrics {
            accuracy: accuracy(&predicted, &truth)?,
            balanced_accuracy: balanced_accuracy(&predicted, &truth)?,
            macro_f1: macro_f1(&matrix),
            auc: ovr_auc(&probs, &truth, info.outputs)?,
        });
        pass.items
            .insert("classification.accuracy".into(), as_outcomes(&correct));
        pass.confusion = Some(matrix);
    }
    Ok(pass)
}

/// Per-item recall@k hits of `ranks`, named `<prefix>.i2t_r1` … `<prefix>.t2i_r10`.
fn recall_items(prefix: &str, ranks: &Ranks, out: &mut BTreeMap<String, Vec<f64>>) {
    for (direction, r) in [("i2t", &ranks.i2t), ("t2i", &ranks.t2i)] {
        for k in RECALL_KS {
            out.insert(
                format!("{prefix}.{direction}_r{k}"),
                r.iter().map(|&rank| f64::from(rank <= k)).collect(),
            );
        }
    }
}

/// Runs every metric of the task on the test view.
pub fn evaluate(
    model: &UmdModel,
    head: &TaskHead,
    info: &TaskInfo,
    test: &SplitView<Test>,
    probe_train: Option<&ProbeTrainImages>,
    settings: &EvalSettings,
    device: &Device,
) -> Result<EvalReport> {
    let data = test.data();
    let mut report = EvalReport {
        task: info.task,
        test_items: 0,
        normal: PassMetrics {
            vqa: None,
            classification: None,
            ece: None,
            items: BTreeMap::new(),
            confusion: None,
        },
        retrieval: None,
        semantic_retrieval: None,
        blind: None,
        tuned_probe: None,
        items: BTreeMap::new(),
    };
    match info.task {
        Task::Classification | Task::Vqa => {
            report.normal = answer_pass(model, head, info, data, settings, device)?;
            report.test_items = match info.task {
                Task::Vqa => data.vqa.as_ref().map_or(0, |q| q.len()),
                _ => data.n,
            };
            report
                .items
                .extend(std::mem::take(&mut report.normal.items));
            if settings.blind {
                let mut pass = |blank: Blank, name: &str| -> Result<PassMetrics> {
                    let mut p =
                        answer_pass(model, head, info, &blanked(data, blank), settings, device)?;
                    for (metric, outcomes) in std::mem::take(&mut p.items) {
                        report
                            .items
                            .insert(format!("blind.{name}.{metric}"), outcomes);
                    }
                    Ok(p)
                };
                let blank_image = pass(Blank::Image, "blank_image")?;
                let blank_text = pass(Blank::Text, "blank_text")?;
                report.blind = Some(BlindPasses {
                    blank_image,
                    blank_text,
                });
            }
        }
        // Blind passes are left out: with one modality blank every candidate looks the same, so
        // every rank ties and pessimistic recall is 0 by construction.
        Task::Retrieval => {
            let n = data.n.min(settings.retrieval_cap);
            let scores = retrieval_scores(model, head, data, n, settings.batch_size, device)?;
            let ranks = instance_ranks(&scores)?;
            report.test_items = n;
            report.retrieval = Some(ranks.recall());
            recall_items("retrieval", &ranks, &mut report.items);
            if let Some(signatures) = &data.signatures {
                let semantic = semantic_ranks(&scores, &signatures[..n])?;
                report.semantic_retrieval = Some(semantic.recall());
                recall_items("semantic_retrieval", &semantic, &mut report.items);
            }
        }
    }
    if let (true, Some(train)) = (settings.tuned_probe, probe_train) {
        report.tuned_probe = Some(tuned_probe(model, train, test, settings, device)?);
    }
    Ok(report)
}

/// Pair scores `[image i][text j]` of the first `n` test items, every pair scored.
fn retrieval_scores(
    model: &UmdModel,
    head: &TaskHead,
    data: &Dataset,
    n: usize,
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<f64>>> {
    let mut scores = vec![vec![0.0; n]; n];
    let pairs_all: Vec<(usize, usize)> = (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).collect();
    for chunk in pairs_all.chunks(batch.max(1)) {
        let images: Vec<usize> = chunk.iter().map(|p| p.0).collect();
        let texts: Vec<usize> = chunk.iter().map(|p| p.1).collect();
        let pairs = PairRows::with_texts(data, &images, &texts);
        let s = head
            .forward(&pooled_features(model, &pairs, device)?)?
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        for (&(i, j), v) in chunk.iter().zip(s) {
            scores[i][j] = v;
        }
    }
    Ok(scores)
}

/// Fits the probe on the fine-tuned encoder's training image features and scores it on test.
fn tuned_probe(
    model: &UmdModel,
    train: &ProbeTrainImages,
    test: &SplitView<Test>,
    settings: &EvalSettings,
    device: &Device,
) -> Result<TunedProbe> {
    let (tr, te) = (train.data(), test.data());
    let train_features = encoder_features(model, tr, settings.batch_size, device)?;
    let test_features = encoder_features(model, te, settings.batch_size, device)?;
    let train_labels: Vec<usize> = tr.labels.iter().map(|&l| l as usize).collect();
    let test_labels: Vec<usize> = te.labels.iter().map(|&l| l as usize).collect();
    let scores = score_probe(
        ProbeSplit {
            features: &train_features,
            labels: &train_labels,
            findings: Findings::of(tr),
        },
        ProbeSplit {
            features: &test_features,
            labels: &test_labels,
            findings: Findings::of(te),
        },
        te.meta.classes.len().max(1),
        settings.probe,
    )?;
    Ok(TunedProbe {
        reads: "the fine-tuned image encoder (coordinate-tune checkpoint), [CLS | mean of patch tokens]",
        train_images: tr.n,
        test_images: te.n,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vqa_confidence_is_the_answer_sigmoid_not_a_softmax() {
        // Three answers with equal logits 2: each answer's own sigmoid is 0.88, while a softmax
        // over answers would say 1/3 whatever the logits' level.
        let logits = [2.0, 2.0, 2.0];
        let s = 1.0 / (1.0 + (-2.0f64).exp());
        assert_eq!(answer_confidence(Task::Vqa, &logits, 0), s);
        assert!((answer_confidence(Task::Classification, &logits, 0) - 1.0 / 3.0).abs() < 1e-12);
        // A VQA model sure of no answer (all logits very negative) has low confidence.
        assert!(answer_confidence(Task::Vqa, &[-6.0, -5.0], 1) < 0.01);
    }

    #[test]
    fn blanking_replaces_exactly_one_modality() {
        let data = crate::views::tests::marked_dataset();
        let image = blanked(&data, Blank::Image);
        assert!(image.images.iter().all(|&v| v == 0.5));
        assert_eq!((&image.input_ids, &image.vqa), (&data.input_ids, &data.vqa));
        let text = blanked(&data, Blank::Text);
        assert_eq!(text.images, data.images);
        let t = data.max_len;
        let m = &data.meta;
        let mut empty = vec![m.pad_id; t];
        empty[0] = m.cls_id;
        empty[1] = m.sep_id;
        assert_eq!(text.input_ids, empty.repeat(data.n));
        assert_eq!(&text.attention_mask[..t], &[1, 1, 0][..t.min(3)]);
        let q = text.vqa.as_ref().unwrap();
        assert_eq!(q.input_ids, empty.repeat(q.len()));
        assert_eq!(q.answer, data.vqa.as_ref().unwrap().answer);
    }
}
