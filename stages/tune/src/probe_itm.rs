//! What the checkpoint's ITM head says about held-out pairs: its accuracy on matched pairs and
//! on clean negatives (an image whose finding signature differs from the text's own image), and
//! zero-shot classification (each image scored against one prompt per class; the class whose
//! prompt the head finds most likely to match wins).
//!
//! Both read the model's own pair path (encoders, [`UmdModel::fuse`], [`UmdModel::pooled`],
//! [`UmdModel::itm_logits`]; for ITM through [`crate::task::pooled_features`]); the match
//! probability is the softmax of the two logits at class 1.

use candle_core::{Device, Tensor};
use serde::Serialize;
use umdflow_data::artifact::Dataset;
use umdflow_model::batch::patchify;
use umdflow_model::model::UmdModel;
use umdflow_model::negatives::{NegativeSampling, draw_negative};
use umdflow_model::rng::SplitMix64;

use crate::error::{Result, TuneError};
use crate::metrics::classification::{OvrAuc, accuracy, balanced_accuracy, binary_auc, ovr_auc};
use crate::probe::argmax;
use crate::probe_words::Prompt;
use crate::task::{PairRows, pooled_features, probabilities};

/// The ITM head's match probability for each pair of `pairs` (image `images[k]`, text row k).
fn match_probabilities(
    model: &UmdModel,
    pairs: &PairRows<'_>,
    device: &Device,
) -> Result<Vec<f64>> {
    let logits = model.itm_logits(&pooled_features(model, pairs, device)?)?;
    Ok(probabilities(&logits)?.iter().map(|p| p[1]).collect())
}

/// ITM on held-out pairs: every row's own image-text pair and, where one exists, a negative.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItmScores {
    pub positives: usize,
    pub negatives: usize,
    /// True when negatives were drawn by finding signature (the data has signatures), so no
    /// negative shows the same findings as the text's own image.
    pub clean_negatives: bool,
    /// Share of matched pairs the head calls a match (match probability > 0.5).
    pub positive_accuracy: Option<f64>,
    /// Share of negatives the head calls a mismatch.
    pub negative_accuracy: Option<f64>,
    /// Over all pairs scored.
    pub accuracy: Option<f64>,
    /// AUC of the match probability, matched pairs against negatives.
    pub auc: Option<f64>,
}

/// Scores every row of `data` with its own image (a positive) and with the image of another row
/// whose finding signature differs (a negative; drawn from `seed`, none when no row qualifies).
pub fn itm_scores(
    model: &UmdModel,
    data: &Dataset,
    seed: u64,
    batch: usize,
    device: &Device,
) -> Result<ItmScores> {
    let n = data.n;
    let mut rng = SplitMix64::derived(seed, "probe-itm-negatives");
    // (image row, text row, is a match)
    let mut pairs: Vec<(usize, usize, bool)> = Vec::with_capacity(2 * n);
    for i in 0..n {
        pairs.push((i, i, true));
        let negative = draw_negative(
            i,
            n,
            NegativeSampling::Signature,
            |k| data.signature(k),
            &mut rng,
        );
        if let Some(j) = negative {
            pairs.push((j, i, false));
        }
    }
    let mut scores = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch.max(1)) {
        let images: Vec<usize> = chunk.iter().map(|p| p.0).collect();
        let texts: Vec<usize> = chunk.iter().map(|p| p.1).collect();
        scores.extend(match_probabilities(
            model,
            &PairRows::with_texts(data, &images, &texts),
            device,
        )?);
    }
    let matched: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    let correct: Vec<bool> = scores
        .iter()
        .zip(&matched)
        .map(|(&s, &m)| (s > 0.5) == m)
        .collect();
    let share = |keep: bool| {
        let (hits, total) = correct
            .iter()
            .zip(&matched)
            .filter(|(_, m)| **m == keep)
            .fold((0usize, 0usize), |(h, t), (c, _)| {
                (h + usize::from(*c), t + 1)
            });
        (total > 0).then(|| hits as f64 / total as f64)
    };
    let positives = matched.iter().filter(|m| **m).count();
    Ok(ItmScores {
        positives,
        negatives: matched.len() - positives,
        clean_negatives: data.signatures.is_some(),
        positive_accuracy: share(true),
        negative_accuracy: share(false),
        accuracy: (!correct.is_empty())
            .then(|| correct.iter().filter(|c| **c).count() as f64 / correct.len() as f64),
        auc: binary_auc(&scores, &matched)?,
    })
}

/// Zero-shot classification through the ITM head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroShotScores {
    pub images: usize,
    /// The prompt of each class, in class order.
    pub prompts: Vec<String>,
    pub accuracy: Option<f64>,
    pub balanced_accuracy: Option<f64>,
    /// One-vs-rest AUC of each class's match probability.
    pub auc: OvrAuc,
}

/// Scores every image of `data` against every class prompt and predicts the class whose prompt
/// has the highest match probability (the first on ties).
pub fn zero_shot_scores(
    model: &UmdModel,
    data: &Dataset,
    prompts: &[Prompt],
    batch: usize,
    device: &Device,
) -> Result<ZeroShotScores> {
    let t = data.max_len;
    if let Some(bad) = prompts
        .iter()
        .find(|p| p.ids.len() != t || p.mask.len() != t)
    {
        return Err(TuneError::invalid(format!(
            "zero-shot prompt \"{}\" has {} tokens; the data's rows have {t}",
            bad.text,
            bad.ids.len()
        )));
    }
    let c = &model.config;
    // Each prompt through the text encoder once, and each image through the vision encoder once
    // per batch: only the fusion and the heads see every (image, prompt) pair.
    let texts = prompts
        .iter()
        .map(|p| {
            let ids = Tensor::from_vec(p.ids.clone(), (1, t), device)?;
            let mask: Vec<f32> = p.mask.iter().map(|&m| f32::from(m != 0)).collect();
            let mask = Tensor::from_vec(mask, (1, t), device)?;
            Ok((model.text.forward(&ids, &mask)?.last, mask))
        })
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<usize> = (0..data.n).collect();
    let mut scores = vec![Vec::with_capacity(prompts.len()); data.n];
    for chunk in rows.chunks(batch.max(1)) {
        let b = chunk.len();
        let patches = Tensor::from_vec(
            patchify(data, chunk, c.patch_size, 2.0, -1.0)?,
            (b, c.num_patches(), c.patch_dim()),
            device,
        )?;
        let image = model.vision.forward(&patches, None)?.last;
        for (text, mask) in &texts {
            let text = text.broadcast_as((b, t, text.dim(2)?))?.contiguous()?;
            let mask = mask.broadcast_as((b, t))?.contiguous()?;
            let fused = model.fuse(&text, &mask, &image, c.fusion_layers)?;
            let logits = model.itm_logits(&model.pooled(&fused)?)?;
            for (&i, p) in chunk.iter().zip(probabilities(&logits)?) {
                scores[i].push(p[1]);
            }
        }
    }
    let labels: Vec<usize> = data.labels.iter().map(|&l| l as usize).collect();
    let predicted: Vec<usize> = scores.iter().map(|s| argmax(s)).collect();
    Ok(ZeroShotScores {
        images: data.n,
        prompts: prompts.iter().map(|p| p.text.clone()).collect(),
        accuracy: accuracy(&predicted, &labels)?,
        balanced_accuracy: balanced_accuracy(&predicted, &labels)?,
        auc: ovr_auc(&scores, &labels, prompts.len())?,
    })
}
