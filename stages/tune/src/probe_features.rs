//! What a frozen-feature probe reads: the image encoder's [CLS ‖ mean of patch tokens], or the
//! raw pixels (average-pooled) as a baseline that needs no model at all. Neither reads text.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use umdflow_data::artifact::Dataset;
use umdflow_model::batch::patchify;
use umdflow_model::model::UmdModel;

use crate::error::{Result, TuneError};
use crate::probe::Features;

/// The frozen ViT's features of `rows` [len, 2·vision_width]: the class token and the mean of
/// the patch tokens, both after `ln_post`, concatenated. Images are scaled to [-1, 1] as in
/// pre-training; every patch is visible.
pub fn encoder_features_of(
    model: &UmdModel,
    data: &Dataset,
    rows: &[usize],
    device: &Device,
) -> Result<Tensor> {
    let c = &model.config;
    let patches = Tensor::from_vec(
        patchify(data, rows, c.patch_size, 2.0, -1.0)?,
        (rows.len(), c.num_patches(), c.patch_dim()),
        device,
    )?;
    let last = model.vision.forward(&patches, None)?.last;
    let tokens = last.dim(1)?;
    let cls = last.narrow(1, 0, 1)?.squeeze(1)?;
    let patch_mean = last.narrow(1, 1, tokens - 1)?.mean(1)?;
    Ok(Tensor::cat(&[&cls, &patch_mean], 1)?.detach())
}

/// [`encoder_features_of`] for every image of `data`, in batches, as f64 rows.
pub fn encoder_features(
    model: &UmdModel,
    data: &Dataset,
    batch: usize,
    device: &Device,
) -> Result<Features> {
    let rows: Vec<usize> = (0..data.n).collect();
    let mut values = Vec::new();
    let mut dim = 0;
    for chunk in rows.chunks(batch.max(1)) {
        let f = encoder_features_of(model, data, chunk, device)?.to_dtype(DType::F64)?;
        dim = f.dim(1)?;
        values.extend(f.flatten_all()?.to_vec1::<f64>()?);
    }
    Features::new(values, data.n, dim)
}

/// Raw pixels, each `pool × pool` block averaged (`pool = 1` keeps every pixel): a linear
/// probe on these is the "no model at all" baseline. Pooling keeps the probe cheap at 64 px.
pub fn pixel_features(data: &Dataset, pool: usize) -> Result<Features> {
    let (c, size) = (data.channels, data.size);
    if pool == 0 || size % pool != 0 {
        return Err(TuneError::invalid(format!(
            "pixel features: pooling {pool} does not divide the image size {size}"
        )));
    }
    let grid = size / pool;
    let dim = c * grid * grid;
    let mut values = Vec::with_capacity(data.n * dim);
    for i in 0..data.n {
        let image = data.image(i);
        for ch in 0..c {
            for gy in 0..grid {
                for gx in 0..grid {
                    let mut sum = 0.0f64;
                    for y in gy * pool..(gy + 1) * pool {
                        let row = (ch * size + y) * size;
                        sum += image[row + gx * pool..row + (gx + 1) * pool]
                            .iter()
                            .map(|&v| f64::from(v))
                            .sum::<f64>();
                    }
                    values.push(sum / (pool * pool) as f64);
                }
            }
        }
    }
    Features::new(values, data.n, dim)
}

/// The pooling that brings an image side down to at most `max_side` (the smallest divisor of
/// `size` that does so; 1 when the image is already small enough).
pub fn pool_for(size: usize, max_side: usize) -> usize {
    (1..=size)
        .find(|&p| size.is_multiple_of(p) && size / p <= max_side.max(1))
        .unwrap_or(size)
}

/// Which features a probe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    /// [CLS ‖ mean of patch tokens] of the input checkpoint's image encoder.
    Encoder,
    /// Average-pooled raw pixels (no model).
    Pixels,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use umdflow_data::artifact::{Counts, Meta};

    fn two_images() -> Dataset {
        // 4×4, one channel: image 0 is 0..16, image 1 is all 1.
        let mut images: Vec<f32> = (0..16).map(|v| v as f32).collect();
        images.extend([1.0; 16]);
        Dataset {
            images,
            n: 2,
            channels: 1,
            size: 4,
            input_ids: vec![0; 2],
            attention_mask: vec![0; 2],
            max_len: 1,
            labels: vec![0, 1],
            split: vec![0, 0],
            vqa: None,
            retrieval: None,
            findings: None,
            signatures: None,
            meta: Meta {
                source: "t".into(),
                licence: "t".into(),
                domain: "t".into(),
                image_size: 4,
                channels: 1,
                max_len: 1,
                counts: Counts::default(),
                class_counts: vec![1, 1],
                classes: vec!["a".into(), "b".into()],
                answers: vec![],
                question_types: vec![],
                findings: vec![],
                seed: 0,
                params: Value::Null,
                vocab_size: 5,
                pad_id: 0,
                unk_id: 1,
                cls_id: 2,
                sep_id: 3,
                mask_id: 4,
            },
        }
    }

    #[test]
    fn pixels_are_block_averages() {
        let f = pixel_features(&two_images(), 2).unwrap();
        assert_eq!((f.rows, f.dim), (2, 4));
        // Top-left block of image 0: (0 + 1 + 4 + 5) / 4.
        assert_eq!(f.row(0), &[2.5, 4.5, 10.5, 12.5]);
        assert_eq!(f.row(1), &[1.0; 4]);
        assert_eq!(pixel_features(&two_images(), 1).unwrap().dim, 16);
        assert!(pixel_features(&two_images(), 3).is_err());
        assert_eq!(
            (pool_for(64, 16), pool_for(16, 16), pool_for(12, 5)),
            (4, 1, 3)
        );
    }
}
