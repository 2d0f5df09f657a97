//! Tensors for one training step, built from the dataset artifact and the masking plan.

use candle_core::{DType, Device, Tensor};
use umdflow_data::artifact::Dataset;

use crate::error::{ModelError, Result};
use crate::losses::normalized_pixel_targets;
use crate::masking::MaskPlan;
use crate::model::heads::mae_indices;
use crate::negatives::{NegativeSampling, draw_negative};
use crate::rng::SplitMix64;

/// Everything one MR-Pretrain step reads. Shapes: B samples, L patches of P values, T tokens.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Encoder input: patches of the images scaled to [-1, 1], [B, L, P].
    pub patches: Tensor,
    /// MIM targets: per-patch normalised pixels, [B, L, P].
    pub pixel_targets: Tensor,
    /// 1 for removed patches, [B, L] F32.
    pub removed: Tensor,
    /// Visible patch indices U32 [B, K] and the decoder's restore index U32 [B, L].
    pub keep: Tensor,
    pub restore: Tensor,
    /// Original token ids U32 [B, T] and the corrupted ones (80/10/10) U32 [B, T].
    pub input_ids: Tensor,
    pub masked_ids: Tensor,
    /// 1 for real tokens, [B, T] F32.
    pub text_mask: Tensor,
    /// 1 at the MLM targets, [B, T] F32, and their flat positions (into B·T) with labels.
    pub mlm_weights: Tensor,
    pub mlm_positions: Tensor,
    pub mlm_labels: Tensor,
    /// For ITM: the batch row whose image pairs with each text, U32 [B]; labels U32 [B] (1 = match).
    pub itm_image: Tensor,
    pub itm_labels: Tensor,
    pub size: usize,
}

/// Cuts images [N, C, H, W] into patch vectors [len(indices), L, C·p·p] (channel-major inside a
/// patch, the layout of a stride-p convolution's weight), scaled to `x · scale + shift`.
pub fn patchify(
    dataset: &Dataset,
    indices: &[usize],
    patch: usize,
    scale: f32,
    shift: f32,
) -> Result<Vec<f32>> {
    let (c, size) = (dataset.channels, dataset.size);
    if patch == 0 || size % patch != 0 {
        return Err(ModelError::Config(format!(
            "patch size {patch} does not divide the image size {size}"
        )));
    }
    let grid = size / patch;
    let mut out = Vec::with_capacity(indices.len() * c * size * size);
    for &i in indices {
        if i >= dataset.n {
            return Err(ModelError::Data(format!(
                "image index {i} is outside the dataset of {} images",
                dataset.n
            )));
        }
        let image = dataset.image(i);
        for gy in 0..grid {
            for gx in 0..grid {
                for ch in 0..c {
                    for py in 0..patch {
                        let row = (ch * size + gy * patch + py) * size + gx * patch;
                        out.extend(image[row..row + patch].iter().map(|v| v * scale + shift));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Builds the batch of plan positions `positions` in `epoch`. `itm_rng` draws the in-batch ITM
/// negatives: half of the rows (rounded down) get the image of another row, label 0, drawn as
/// `negatives` says (see [`itm_pairs`]).
pub fn build_batch(
    dataset: &Dataset,
    plan: &MaskPlan,
    epoch: usize,
    positions: &[usize],
    negatives: NegativeSampling,
    itm_rng: &mut SplitMix64,
    device: &Device,
) -> Result<Batch> {
    let b = positions.len();
    let t = dataset.max_len;
    let meta = &plan.meta;
    let (l, p) = (
        meta.num_patches,
        meta.patch_size * meta.patch_size * dataset.channels,
    );
    let indices: Vec<usize> = positions
        .iter()
        .map(|&pos| {
            plan.samples.get(pos).map(|&s| s as usize).ok_or_else(|| {
                ModelError::Data(format!(
                    "plan position {pos} is outside the plan's {} samples",
                    plan.samples.len()
                ))
            })
        })
        .collect::<Result<_>>()?;
    let raw = Tensor::from_vec(
        patchify(dataset, &indices, meta.patch_size, 1.0, 0.0)?,
        (b, l, p),
        device,
    )?;
    let patches = raw.affine(2.0, -1.0)?;
    let pixel_targets = normalized_pixel_targets(&raw)?;

    let mut removed = Vec::with_capacity(b * l);
    let (mut ids, mut masked, mut text_mask, mut weights) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut mlm_positions, mut mlm_labels) = (Vec::new(), Vec::new());
    for (row, (&pos, &index)) in positions.iter().zip(&indices).enumerate() {
        let sample_ids = dataset.text_ids(index);
        let m = plan.sample(epoch, pos, sample_ids)?;
        removed.extend(m.removed.iter().copied());
        ids.extend_from_slice(sample_ids);
        masked.extend_from_slice(&m.masked_ids);
        text_mask.extend(
            dataset.attention_mask[index * t..(index + 1) * t]
                .iter()
                .map(|&v| f32::from(v != 0)),
        );
        for (k, &sel) in m.selected.iter().enumerate() {
            weights.push(f32::from(sel));
            if sel {
                mlm_positions.push((row * t + k) as u32);
                mlm_labels.push(sample_ids[k]);
            }
        }
    }
    let (keep, restore) = mae_indices(&removed, b, device)?;
    let removed_f: Vec<f32> = removed.iter().map(|&r| f32::from(r)).collect();

    let (itm_image, itm_labels) =
        itm_pairs(b, negatives, |row| dataset.signature(indices[row]), itm_rng);
    let m = mlm_positions.len();
    Ok(Batch {
        patches,
        pixel_targets,
        removed: Tensor::from_vec(removed_f, (b, l), device)?,
        keep,
        restore,
        input_ids: Tensor::from_vec(ids, (b, t), device)?,
        masked_ids: Tensor::from_vec(masked, (b, t), device)?,
        text_mask: Tensor::from_vec(text_mask, (b, t), device)?,
        mlm_weights: Tensor::from_vec(weights, (b, t), device)?,
        mlm_positions: Tensor::from_vec(mlm_positions, m, device)?,
        mlm_labels: Tensor::from_vec(mlm_labels, m, device)?.to_dtype(DType::U32)?,
        itm_image: Tensor::from_vec(itm_image, b, device)?,
        itm_labels: Tensor::from_vec(itm_labels, b, device)?,
        size: b,
    })
}

/// ITM pairs of a batch of `b` rows: for each text row, the row whose image it is paired with and
/// the label (1 = match). Half of the rows (rounded down), chosen at random, get another row's
/// image, label 0. With `signature` sampling that image never shows the same findings as the
/// row's own; a chosen row with no such partner in the batch stays a match.
pub fn itm_pairs(
    b: usize,
    negatives: NegativeSampling,
    signature: impl Fn(usize) -> Option<u64>,
    rng: &mut SplitMix64,
) -> (Vec<u32>, Vec<u32>) {
    let mut image: Vec<u32> = (0..b as u32).collect();
    let mut labels = vec![1u32; b];
    if b > 1 {
        let mut rows: Vec<usize> = (0..b).collect();
        rng.shuffle(&mut rows);
        for &row in &rows[..b / 2] {
            if let Some(other) = draw_negative(row, b, negatives, &signature, rng) {
                image[row] = other as u32;
                labels[row] = 0;
            }
        }
    }
    (image, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itm_negatives_never_share_the_positive_signature() {
        // 64 rows, half of them "normal" (signature 0), the rest in 4 finding groups.
        let sig = |row: usize| {
            Some(if row.is_multiple_of(2) {
                0
            } else {
                1 + (row % 8) as u64 / 2
            })
        };
        let mut rng = SplitMix64::new(1);
        let mut negatives = 0;
        for _ in 0..50 {
            let (image, labels) = itm_pairs(64, NegativeSampling::Signature, sig, &mut rng);
            for (row, (&img, &label)) in image.iter().zip(&labels).enumerate() {
                if label == 0 {
                    negatives += 1;
                    assert_ne!(sig(img as usize), sig(row), "row {row} paired with {img}");
                } else {
                    assert_eq!(img as usize, row);
                }
            }
        }
        assert_eq!(negatives, 50 * 32);
        // Random sampling pairs some rows with same-signature images: the false negatives.
        let (image, labels) = itm_pairs(64, NegativeSampling::Random, sig, &mut rng);
        assert!(
            (0..64).any(|row| labels[row] == 0 && sig(image[row] as usize) == sig(row)),
            "expected a false negative among {image:?}"
        );
        // A batch with one signature has no valid negative: every row stays a match.
        let (image, labels) = itm_pairs(8, NegativeSampling::Signature, |_| Some(5), &mut rng);
        assert_eq!((image, labels), ((0..8).collect(), vec![1; 8]));
    }
}
