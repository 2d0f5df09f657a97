//! Evaluation on the TEST split: task metrics, expected calibration error and the image-only
//! linear probe. Test rows come in as a [`SplitView<Test>`]; the only training data that can
//! reach this module is [`ProbeTrainImages`] (training images and labels, no text), which the
//! linear probe is fitted on.

use candle_core::Device;
use serde::{Deserialize, Serialize};
use umdflow_model::model::UmdModel;

use crate::error::{Result, TuneError};
use crate::metrics::calibration::expected_calibration_error;
use crate::metrics::classification::{OvrAuc, accuracy, confusion_matrix, macro_f1, ovr_auc};
use crate::metrics::retrieval::{RetrievalRecall, retrieval_recall};
use crate::metrics::vqa::{VqaAccuracy, vqa_accuracy};
use crate::probe::{Features, LinearProbe, ProbeSettings, argmax};
use crate::task::{
    PairRows, Task, TaskHead, TaskInfo, image_features, pooled_features, probabilities,
};
use crate::views::{ProbeTrainImages, SplitView, Test};

/// Evaluation settings (`params` of `evaluate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSettings {
    pub batch_size: usize,
    /// Retrieval scores every (image, text) pair of the first `retrieval_cap` test images.
    pub retrieval_cap: usize,
    pub ece_bins: usize,
    /// Fit and score the image-only linear probe.
    pub linear_probe: bool,
    pub probe: ProbeSettings,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            batch_size: 64,
            retrieval_cap: 100,
            ece_bins: 10,
            linear_probe: true,
            probe: ProbeSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationMetrics {
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub auc: OvrAuc,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeMetrics {
    pub train_images: usize,
    pub test_images: usize,
    pub feature_dim: usize,
    pub accuracy: Option<f64>,
}

/// Everything `metrics.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub task: Task,
    pub test_items: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vqa: Option<VqaAccuracy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalRecall>,
    /// Of the max-softmax confidence (VQA and classification).
    pub ece: Option<f64>,
    pub linear_probe: Option<ProbeMetrics>,
    #[serde(skip)]
    pub confusion: Option<Vec<Vec<u64>>>,
}

/// Softmax rows of the head over `items` test items, in batches.
fn class_probabilities(
    model: &UmdModel,
    head: &TaskHead,
    test: &SplitView<Test>,
    task: Task,
    items: usize,
    batch: usize,
    device: &Device,
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(items);
    let all: Vec<usize> = (0..items).collect();
    for chunk in all.chunks(batch.max(1)) {
        let pairs = match task {
            Task::Vqa => PairRows::questions(test.data(), chunk)?,
            _ => PairRows::own_texts(test.data(), chunk),
        };
        out.extend(probabilities(
            &head.forward(&pooled_features(model, &pairs, device)?)?,
        )?);
    }
    Ok(out)
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
        vqa: None,
        classification: None,
        retrieval: None,
        ece: None,
        linear_probe: None,
        confusion: None,
    };
    match info.task {
        Task::Classification | Task::Vqa => {
            let (truth, items): (Vec<usize>, usize) = match info.task {
                Task::Vqa => {
                    let vqa = data.vqa.as_ref().ok_or_else(|| {
                        TuneError::invalid("task `vqa`: the test split has no questions")
                    })?;
                    (vqa.answer.iter().map(|&a| a as usize).collect(), vqa.len())
                }
                _ => (data.labels.iter().map(|&l| l as usize).collect(), data.n),
            };
            let probs = class_probabilities(
                model,
                head,
                test,
                info.task,
                items,
                settings.batch_size,
                device,
            )?;
            let predicted: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
            let confidence: Vec<f64> = probs
                .iter()
                .zip(&predicted)
                .map(|(p, &k)| p[k].clamp(0.0, 1.0))
                .collect();
            let correct: Vec<bool> = predicted.iter().zip(&truth).map(|(p, t)| p == t).collect();
            report.ece = expected_calibration_error(&confidence, &correct, settings.ece_bins)?;
            report.test_items = items;
            if info.task == Task::Vqa {
                let vqa = data
                    .vqa
                    .as_ref()
                    .ok_or_else(|| TuneError::invalid("no questions"))?;
                let name = |k: usize| data.meta.answers.get(k).cloned().unwrap_or_default();
                let closed: Vec<bool> = vqa.closed.iter().map(|&c| c == 1).collect();
                let predicted: Vec<String> = predicted.iter().map(|&k| name(k)).collect();
                let truth: Vec<String> = truth.iter().map(|&k| name(k)).collect();
                report.vqa = Some(vqa_accuracy(&predicted, &truth, &closed)?);
            } else {
                let matrix = confusion_matrix(&predicted, &truth, info.outputs)?;
                report.classification = Some(ClassificationMetrics {
                    accuracy: accuracy(&predicted, &truth)?,
                    macro_f1: macro_f1(&matrix),
                    auc: ovr_auc(&probs, &truth, info.outputs)?,
                });
                report.confusion = Some(matrix);
            }
        }
        Task::Retrieval => {
            let n = data.n.min(settings.retrieval_cap);
            let mut scores = vec![vec![0.0; n]; n];
            let pairs_all: Vec<(usize, usize)> =
                (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).collect();
            for chunk in pairs_all.chunks(settings.batch_size.max(1)) {
                let images: Vec<usize> = chunk.iter().map(|p| p.0).collect();
                let texts: Vec<usize> = chunk.iter().map(|p| p.1).collect();
                let pairs = PairRows::with_texts(data, &images, &texts);
                let s = head
                    .forward(&pooled_features(model, &pairs, device)?)?
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1::<f64>()?;
                for (&(i, j), v) in chunk.iter().zip(s) {
                    scores[i][j] = v;
                }
            }
            report.test_items = n;
            report.retrieval = Some(retrieval_recall(&scores)?);
        }
    }
    if let (true, Some(train)) = (settings.linear_probe, probe_train) {
        report.linear_probe = Some(linear_probe(model, train, test, settings, device)?);
    }
    Ok(report)
}

fn features_of(
    model: &UmdModel,
    data: &umdflow_data::artifact::Dataset,
    batch: usize,
    device: &Device,
) -> Result<Features> {
    let rows: Vec<usize> = (0..data.n).collect();
    let mut values = Vec::new();
    let mut dim = 0;
    for chunk in rows.chunks(batch.max(1)) {
        let f = image_features(model, data, chunk, device)?.to_dtype(candle_core::DType::F64)?;
        dim = f.dim(1)?;
        values.extend(f.flatten_all()?.to_vec1::<f64>()?);
    }
    Features::new(values, data.n, dim)
}

/// Fits the probe on training image features and scores it on the test images.
fn linear_probe(
    model: &UmdModel,
    train: &ProbeTrainImages,
    test: &SplitView<Test>,
    settings: &EvalSettings,
    device: &Device,
) -> Result<ProbeMetrics> {
    let classes = test.data().meta.classes.len().max(1);
    let train_features = features_of(model, train.data(), settings.batch_size, device)?;
    let test_features = features_of(model, test.data(), settings.batch_size, device)?;
    let train_labels: Vec<usize> = train.data().labels.iter().map(|&l| l as usize).collect();
    let test_labels: Vec<usize> = test.data().labels.iter().map(|&l| l as usize).collect();
    let probe = LinearProbe::fit(&train_features, &train_labels, classes, settings.probe)?;
    Ok(ProbeMetrics {
        train_images: train_features.rows,
        test_images: test_features.rows,
        feature_dim: train_features.dim,
        accuracy: probe.accuracy(&test_features, &test_labels)?,
    })
}
