//! Held-out MLM accuracy of a checkpoint's MLM head on finding words, beside its accuracy on the
//! other words and a frequency baseline.
//!
//! Each row is read twice, with the full image: once with *every* finding token replaced by
//! `[MASK]` (so no mention can be copied from another mention of the same report), once with a
//! seeded draw of `other_ratio` of its other real tokens masked. Both passes run the model's own
//! MLM path: text encoder on the masked ids, fusion with the unmasked image, `mlm_head`; the
//! prediction is the top-1 vocabulary entry.

use std::collections::BTreeMap;

use candle_core::{D, Device, Tensor};
use serde::Serialize;
use umdflow_data::artifact::Dataset;
use umdflow_model::batch::patchify;
use umdflow_model::model::UmdModel;
use umdflow_model::rng::SplitMix64;

use crate::error::Result;

/// The masked positions of one pass over a row: flat positions `k` in `0..max_len`.
type Masked = Vec<usize>;

/// MLM accuracy on held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlmScores {
    pub rows: usize,
    /// Finding tokens masked (every finding token of every row) and predicted exactly.
    pub finding_tokens: usize,
    pub finding_correct: usize,
    pub finding_accuracy: Option<f64>,
    /// Other real tokens masked (`other_ratio` of each row's non-finding tokens) and predicted.
    pub other_tokens: usize,
    pub other_correct: usize,
    pub other_accuracy: Option<f64>,
    /// The most frequent finding token among the masked ones, and the accuracy of always
    /// predicting it (no constant prediction does better on these positions).
    pub finding_baseline_token: Option<String>,
    pub finding_baseline_accuracy: Option<f64>,
}

/// The positions each pass masks in each row: all finding tokens, and `other_ratio` of the
/// other real tokens (rounded, at least one when the row has any), drawn from `seed`.
pub fn masked_positions(
    data: &Dataset,
    finding: &[Vec<bool>],
    other_ratio: f64,
    seed: u64,
) -> (Vec<Masked>, Vec<Masked>) {
    let t = data.max_len;
    let special = [data.meta.cls_id, data.meta.sep_id, data.meta.pad_id];
    let mut rng = SplitMix64::derived(seed, "probe-mlm-other");
    let mut findings = Vec::with_capacity(data.n);
    let mut others = Vec::with_capacity(data.n);
    for (i, is_finding) in finding.iter().enumerate().take(data.n) {
        let ids = data.text_ids(i);
        let attention = &data.attention_mask[i * t..(i + 1) * t];
        findings.push((0..t).filter(|&k| is_finding[k]).collect());
        let mut candidates: Vec<usize> = (0..t)
            .filter(|&k| attention[k] != 0 && !special.contains(&ids[k]) && !is_finding[k])
            .collect();
        let take = if candidates.is_empty() {
            0
        } else {
            ((candidates.len() as f64 * other_ratio).round() as usize).clamp(1, candidates.len())
        };
        rng.shuffle(&mut candidates);
        let mut chosen = candidates[..take].to_vec();
        chosen.sort_unstable();
        others.push(chosen);
    }
    (findings, others)
}

/// Top-1 MLM predictions at the `masked` positions of the rows `rows` of `data` (each row's
/// masked positions replaced by `[MASK]`), in row then position order.
fn predict_masked(
    model: &UmdModel,
    data: &Dataset,
    rows: &[usize],
    masked: &[&Masked],
    image: &Tensor,
    device: &Device,
) -> Result<Vec<u32>> {
    let t = data.max_len;
    let b = rows.len();
    let mut ids = Vec::with_capacity(b * t);
    let mut text_mask = Vec::with_capacity(b * t);
    let mut positions = Vec::new();
    for (row, (&i, masked)) in rows.iter().zip(masked).enumerate() {
        let mut row_ids = data.text_ids(i).to_vec();
        for &k in masked.iter() {
            row_ids[k] = data.meta.mask_id;
            positions.push((row * t + k) as u32);
        }
        ids.extend(row_ids);
        text_mask.extend(
            data.attention_mask[i * t..(i + 1) * t]
                .iter()
                .map(|&m| f32::from(m != 0)),
        );
    }
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let ids = Tensor::from_vec(ids, (b, t), device)?;
    let text_mask = Tensor::from_vec(text_mask, (b, t), device)?;
    let text = model.text.forward(&ids, &text_mask)?;
    let fused = model.fuse(&text.last, &text_mask, image, model.config.fusion_layers)?;
    let Some(last) = fused.text.last() else {
        return Ok(Vec::new());
    };
    let width = last.dim(D::Minus1)?;
    let flat = last.reshape((b * t, width))?;
    let count = positions.len();
    let selected = flat.index_select(&Tensor::from_vec(positions, count, device)?, 0)?;
    Ok(model
        .mlm_head
        .forward(&selected)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?)
}

/// How the MLM measure masks and batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlmSettings {
    /// Share of each row's other (non-finding) real tokens masked in the second pass.
    pub other_ratio: f64,
    /// Seed of the other-token draw.
    pub seed: u64,
    pub batch: usize,
}

/// MLM accuracy on every row of `data`: finding tokens (`finding[i][k]`) against other tokens.
/// `piece` names a token id (for the baseline's token).
pub fn mlm_scores(
    model: &UmdModel,
    data: &Dataset,
    finding: &[Vec<bool>],
    settings: MlmSettings,
    device: &Device,
    piece: impl Fn(u32) -> String,
) -> Result<MlmScores> {
    let c = &model.config;
    let (finding_masked, other_masked) =
        masked_positions(data, finding, settings.other_ratio, settings.seed);
    let rows: Vec<usize> = (0..data.n).collect();
    let (mut finding_hits, mut other_hits) = (0usize, 0usize);
    let mut finding_counts: BTreeMap<u32, usize> = BTreeMap::new();
    for chunk in rows.chunks(settings.batch.max(1)) {
        let patches = Tensor::from_vec(
            patchify(data, chunk, c.patch_size, 2.0, -1.0)?,
            (chunk.len(), c.num_patches(), c.patch_dim()),
            device,
        )?;
        let image = model.vision.forward(&patches, None)?.last;
        for (masked, hits, count_truth) in [
            (&finding_masked, &mut finding_hits, true),
            (&other_masked, &mut other_hits, false),
        ] {
            let masks: Vec<&Masked> = chunk.iter().map(|&i| &masked[i]).collect();
            let predicted = predict_masked(model, data, chunk, &masks, &image, device)?;
            let truth = chunk
                .iter()
                .flat_map(|&i| masked[i].iter().map(move |&k| data.text_ids(i)[k]));
            for (p, truth) in predicted.iter().zip(truth) {
                *hits += usize::from(*p == truth);
                if count_truth {
                    *finding_counts.entry(truth).or_insert(0) += 1;
                }
            }
        }
    }
    let total = |m: &[Masked]| m.iter().map(Vec::len).sum::<usize>();
    let (finding_tokens, other_tokens) = (total(&finding_masked), total(&other_masked));
    let share = |hits: usize, n: usize| (n > 0).then(|| hits as f64 / n as f64);
    // The most frequent finding token (the smallest id on ties).
    let baseline = finding_counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(&id, &count)| (id, count));
    Ok(MlmScores {
        rows: data.n,
        finding_tokens,
        finding_correct: finding_hits,
        finding_accuracy: share(finding_hits, finding_tokens),
        other_tokens,
        other_correct: other_hits,
        other_accuracy: share(other_hits, other_tokens),
        finding_baseline_token: baseline.map(|(id, _)| piece(id)),
        finding_baseline_accuracy: baseline.and_then(|(_, n)| share(n, finding_tokens)),
    })
}
