//! The masking plan of MR-Pretrain: for every epoch and training sample, which image patches are
//! removed and which text tokens are masked (with BERT's 80/10/10 policy), drawn from the seed.
//!
//! Stored in `mask_plan.safetensors` (bit-packed, least significant bit first, bit index
//! `((epoch · S + sample) · width + position)`) beside `mask_plan.json` ([`PlanMeta`]):
//! - `image_removed` U8: one bit per patch, 1 = removed (exactly `num_patches − keep` per sample);
//! - `text_selected` U8: one bit per token position, 1 = an MLM target;
//! - `text_to_mask` U8 / `text_to_random` U8: the replacement of a selected token
//!   ([MASK] / a random token; selected with neither bit = kept unchanged);
//! - `random_ids` U32: the random tokens, in (epoch, sample, position) order;
//! - `random_offsets` U32 [E·S + 1]: where each (epoch, sample) starts in `random_ids`;
//! - `samples` U32 [S]: the dataset indices (training split) the plan covers, in plan order.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::rng::{SplitMix64, fnv1a};

pub const PLAN_FILE: &str = "mask_plan.safetensors";
pub const PLAN_META_FILE: &str = "mask_plan.json";

/// How the plan was made (`mask_plan.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanMeta {
    pub epochs: usize,
    pub num_samples: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_patches: usize,
    /// Patches each sample keeps visible (`floor(num_patches · (1 − image_ratio))`, as M3AE).
    pub keep_patches: usize,
    pub max_len: usize,
    pub image_ratio: f64,
    pub text_ratio: f64,
    /// Of the selected tokens: probability of [MASK], of a random token (rest: unchanged).
    pub mask_token_prob: f64,
    pub random_token_prob: f64,
    pub mask_id: u32,
    pub seed: u64,
    /// Fraction of all candidate tokens that ended up selected (a check on `text_ratio`).
    pub selected_fraction: f64,
}

/// What the plan needs to know about the tokens.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub vocab_size: usize,
    pub mask_id: u32,
    /// Ids never selected for MLM and never drawn as random replacements ([PAD] [CLS] [SEP] ...).
    pub special_ids: Vec<u32>,
}

/// Settings of one plan.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub epochs: usize,
    pub image_ratio: f64,
    pub text_ratio: f64,
    pub mask_token_prob: f64,
    pub random_token_prob: f64,
    pub patch_size: usize,
    pub seed: u64,
}

/// A materialised masking plan.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskPlan {
    pub meta: PlanMeta,
    pub samples: Vec<u32>,
    image_removed: Vec<u8>,
    text_selected: Vec<u8>,
    text_to_mask: Vec<u8>,
    text_to_random: Vec<u8>,
    random_ids: Vec<u32>,
    random_offsets: Vec<u32>,
}

/// The masks of one (epoch, sample).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleMask {
    /// One flag per patch.
    pub removed: Vec<bool>,
    /// The corrupted input ids (with [MASK] / random / unchanged tokens).
    pub masked_ids: Vec<u32>,
    /// One flag per token position: is it an MLM target?
    pub selected: Vec<bool>,
}

impl MaskPlan {
    /// Draws the plan. `input_ids`/`attention_mask` are the dataset's [N, max_len] arrays and
    /// `samples` the dataset indices to cover.
    pub fn generate(
        settings: &PlanSettings,
        samples: &[u32],
        input_ids: &[u32],
        attention_mask: &[u8],
        max_len: usize,
        image_size: usize,
        tokens: &TokenInfo,
    ) -> Result<MaskPlan> {
        if settings.patch_size == 0 || !image_size.is_multiple_of(settings.patch_size) {
            return Err(ModelError::Config(format!(
                "patch_size {} must divide the image size {image_size}",
                settings.patch_size
            )));
        }
        let grid = image_size / settings.patch_size;
        let l = grid * grid;
        let keep = ((l as f64) * (1.0 - settings.image_ratio)).floor() as usize;
        if keep == 0 {
            return Err(ModelError::Config(format!(
                "image_ratio {} leaves no visible patch of {l}; lower it",
                settings.image_ratio
            )));
        }
        let s = samples.len();
        let e = settings.epochs;
        let mut image_removed = vec![0u8; (e * s * l).div_ceil(8)];
        let text_bits = (e * s * max_len).div_ceil(8);
        let (mut selected, mut to_mask, mut to_random) = (
            vec![0u8; text_bits],
            vec![0u8; text_bits],
            vec![0u8; text_bits],
        );
        let mut random_ids = Vec::new();
        let mut random_offsets = Vec::with_capacity(e * s + 1);
        let (mut candidates_total, mut selected_total) = (0usize, 0usize);
        let replacement_pool: Vec<u32> = (0..tokens.vocab_size as u32)
            .filter(|id| !tokens.special_ids.contains(id))
            .collect();
        if replacement_pool.is_empty() {
            return Err(ModelError::Data(
                "the vocabulary has no non-special token to draw".into(),
            ));
        }
        for epoch in 0..e {
            for (position, &sample) in samples.iter().enumerate() {
                random_offsets.push(random_ids.len() as u32);
                let row = (epoch * s + position) as u64;
                let mut rng = SplitMix64::new(
                    settings.seed ^ fnv1a(&row.to_le_bytes()).wrapping_mul(0x2545_F491_4F6C_DD1D),
                );
                // Image: a uniformly random subset of `l - keep` patches (partial Fisher-Yates).
                let mut order: Vec<usize> = (0..l).collect();
                for i in 0..(l - keep) {
                    let j = i + rng.below(l - i);
                    order.swap(i, j);
                    set_bit(&mut image_removed, row as usize * l + order[i]);
                }
                // Text: each candidate token independently with probability `text_ratio`.
                let base = sample as usize * max_len;
                let ids = input_ids.get(base..base + max_len).ok_or_else(|| {
                    ModelError::Data(format!("sample {sample} is outside the text arrays"))
                })?;
                for t in 0..max_len {
                    let real =
                        attention_mask[base + t] != 0 && !tokens.special_ids.contains(&ids[t]);
                    if !real {
                        continue;
                    }
                    candidates_total += 1;
                    if rng.next_f64() >= settings.text_ratio {
                        continue;
                    }
                    selected_total += 1;
                    let bit = row as usize * max_len + t;
                    set_bit(&mut selected, bit);
                    let roll = rng.next_f64();
                    if roll < settings.mask_token_prob {
                        set_bit(&mut to_mask, bit);
                    } else if roll < settings.mask_token_prob + settings.random_token_prob {
                        set_bit(&mut to_random, bit);
                        random_ids.push(replacement_pool[rng.below(replacement_pool.len())]);
                    }
                }
            }
        }
        random_offsets.push(random_ids.len() as u32);
        let meta = PlanMeta {
            epochs: e,
            num_samples: s,
            image_size,
            patch_size: settings.patch_size,
            num_patches: l,
            keep_patches: keep,
            max_len,
            image_ratio: settings.image_ratio,
            text_ratio: settings.text_ratio,
            mask_token_prob: settings.mask_token_prob,
            random_token_prob: settings.random_token_prob,
            mask_id: tokens.mask_id,
            seed: settings.seed,
            selected_fraction: selected_total as f64 / candidates_total.max(1) as f64,
        };
        Ok(MaskPlan {
            meta,
            samples: samples.to_vec(),
            image_removed,
            text_selected: selected,
            text_to_mask: to_mask,
            text_to_random: to_random,
            random_ids,
            random_offsets,
        })
    }

    /// The masks of the sample at plan position `position` in `epoch`, applied to its `ids`.
    pub fn sample(&self, epoch: usize, position: usize, ids: &[u32]) -> Result<SampleMask> {
        let m = &self.meta;
        if epoch >= m.epochs || position >= m.num_samples || ids.len() != m.max_len {
            return Err(ModelError::Data(format!(
                "mask plan has {} epochs × {} samples of length {}; asked for epoch {epoch}, sample {position}, length {}",
                m.epochs,
                m.num_samples,
                m.max_len,
                ids.len()
            )));
        }
        let row = epoch * m.num_samples + position;
        let removed = (0..m.num_patches)
            .map(|p| get_bit(&self.image_removed, row * m.num_patches + p))
            .collect();
        let mut masked_ids = ids.to_vec();
        let mut selected = vec![false; m.max_len];
        let mut next_random = self.random_offsets[row] as usize;
        for t in 0..m.max_len {
            let bit = row * m.max_len + t;
            if !get_bit(&self.text_selected, bit) {
                continue;
            }
            selected[t] = true;
            if get_bit(&self.text_to_mask, bit) {
                masked_ids[t] = m.mask_id;
            } else if get_bit(&self.text_to_random, bit) {
                masked_ids[t] = self.random_ids[next_random];
                next_random += 1;
            }
        }
        Ok(SampleMask {
            removed,
            masked_ids,
            selected,
        })
    }

    /// Writes `mask_plan.safetensors` and `mask_plan.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let dev = Device::Cpu;
        let u8t = |v: &Vec<u8>| Tensor::from_vec(v.clone(), v.len(), &dev);
        let u32t = |v: &Vec<u32>| Tensor::from_vec(v.clone(), v.len(), &dev);
        let tensors: HashMap<String, Tensor> = [
            ("image_removed", u8t(&self.image_removed)?),
            ("text_selected", u8t(&self.text_selected)?),
            ("text_to_mask", u8t(&self.text_to_mask)?),
            ("text_to_random", u8t(&self.text_to_random)?),
            ("random_ids", u32t(&self.random_ids)?),
            ("random_offsets", u32t(&self.random_offsets)?),
            ("samples", u32t(&self.samples)?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let path = dir.join(PLAN_FILE);
        candle_core::safetensors::save(&tensors, &path).map_err(|e| ModelError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let meta_path = dir.join(PLAN_META_FILE);
        let text = serde_json::to_string_pretty(&self.meta)
            .map_err(|e| ModelError::Data(e.to_string()))?;
        std::fs::write(&meta_path, text).map_err(|e| ModelError::File {
            path: meta_path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Reads a plan written by [`MaskPlan::save`], checking every array's length.
    pub fn load(dir: &Path) -> Result<MaskPlan> {
        let meta_path = dir.join(PLAN_META_FILE);
        let file_err = |path: &Path, message: String| ModelError::File {
            path: path.display().to_string(),
            message,
        };
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| file_err(&meta_path, e.to_string()))?;
        let meta: PlanMeta =
            serde_json::from_str(&text).map_err(|e| file_err(&meta_path, e.to_string()))?;
        let path = dir.join(PLAN_FILE);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| file_err(&path, e.to_string()))?;
        let rows = meta.epochs * meta.num_samples;
        let get = |name: &str, expected: Option<usize>| -> Result<&Tensor> {
            let t = tensors
                .get(name)
                .ok_or_else(|| file_err(&path, format!("missing tensor `{name}`")))?;
            if let Some(n) = expected
                && t.elem_count() != n
            {
                return Err(file_err(
                    &path,
                    format!(
                        "tensor `{name}` has {} elements, expected {n}",
                        t.elem_count()
                    ),
                ));
            }
            Ok(t)
        };
        let bytes = |name: &str, bits: usize| -> Result<Vec<u8>> {
            Ok(get(name, Some(bits.div_ceil(8)))?.to_vec1::<u8>()?)
        };
        let plan = MaskPlan {
            image_removed: bytes("image_removed", rows * meta.num_patches)?,
            text_selected: bytes("text_selected", rows * meta.max_len)?,
            text_to_mask: bytes("text_to_mask", rows * meta.max_len)?,
            text_to_random: bytes("text_to_random", rows * meta.max_len)?,
            random_ids: get("random_ids", None)?.to_vec1::<u32>()?,
            random_offsets: get("random_offsets", Some(rows + 1))?.to_vec1::<u32>()?,
            samples: get("samples", Some(meta.num_samples))?.to_vec1::<u32>()?,
            meta,
        };
        if plan.random_offsets.last().copied().unwrap_or(0) as usize != plan.random_ids.len() {
            return Err(file_err(
                &path,
                "`random_offsets` does not end at the length of `random_ids`".into(),
            ));
        }
        Ok(plan)
    }
}

fn set_bit(bits: &mut [u8], index: usize) {
    bits[index / 8] |= 1 << (index % 8);
}

fn get_bit(bits: &[u8], index: usize) -> bool {
    bits[index / 8] & (1 << (index % 8)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> TokenInfo {
        TokenInfo {
            vocab_size: 50,
            mask_id: 4,
            special_ids: vec![0, 1, 2, 3, 4],
        }
    }

    fn texts(n: usize, len: usize) -> (Vec<u32>, Vec<u8>) {
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0u8; n * len];
        for i in 0..n {
            let real = len - (i % 3);
            for t in 0..real {
                ids[i * len + t] = if t == 0 {
                    2
                } else if t == real - 1 {
                    3
                } else {
                    5 + ((i + t) % 40) as u32
                };
                mask[i * len + t] = 1;
            }
        }
        (ids, mask)
    }

    fn settings(seed: u64) -> PlanSettings {
        PlanSettings {
            epochs: 3,
            image_ratio: 0.75,
            text_ratio: 0.15,
            mask_token_prob: 0.8,
            random_token_prob: 0.1,
            patch_size: 8,
            seed,
        }
    }

    #[test]
    fn plan_is_deterministic_exact_in_patch_count_and_round_trips() {
        let (ids, mask) = texts(40, 32);
        let samples: Vec<u32> = (0..40).collect();
        let a = MaskPlan::generate(&settings(9), &samples, &ids, &mask, 32, 32, &tokens()).unwrap();
        let b = MaskPlan::generate(&settings(9), &samples, &ids, &mask, 32, 32, &tokens()).unwrap();
        assert_eq!(a, b);
        let c =
            MaskPlan::generate(&settings(10), &samples, &ids, &mask, 32, 32, &tokens()).unwrap();
        assert_ne!(a, c);
        for epoch in 0..3 {
            for s in 0..40 {
                let m = a.sample(epoch, s, &ids[s * 32..(s + 1) * 32]).unwrap();
                assert_eq!(m.removed.iter().filter(|r| **r).count(), 16 - 4);
                for t in 0..32 {
                    let special = [0u32, 2, 3].contains(&ids[s * 32 + t]) || mask[s * 32 + t] == 0;
                    assert!(!(special && m.selected[t]), "special token selected");
                    if !m.selected[t] {
                        assert_eq!(m.masked_ids[t], ids[s * 32 + t]);
                    }
                }
            }
        }
        // Epochs differ from each other.
        assert_ne!(
            a.sample(0, 0, &ids[..32]).unwrap(),
            a.sample(1, 0, &ids[..32]).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        a.save(dir.path()).unwrap();
        assert_eq!(MaskPlan::load(dir.path()).unwrap(), a);
    }

    #[test]
    fn ratios_and_the_80_10_10_policy_hold_on_average() {
        let (ids, mask) = texts(400, 64);
        let samples: Vec<u32> = (0..400).collect();
        let plan =
            MaskPlan::generate(&settings(1), &samples, &ids, &mask, 64, 32, &tokens()).unwrap();
        assert!(
            (plan.meta.selected_fraction - 0.15).abs() < 0.01,
            "{}",
            plan.meta.selected_fraction
        );
        let (mut masked, mut random, mut kept) = (0, 0, 0);
        for s in 0..400 {
            let row = &ids[s * 64..(s + 1) * 64];
            let m = plan.sample(2, s, row).unwrap();
            for (t, &original) in row.iter().enumerate() {
                if m.selected[t] {
                    if m.masked_ids[t] == 4 {
                        masked += 1;
                    } else if m.masked_ids[t] != original {
                        random += 1;
                    } else {
                        kept += 1;
                    }
                }
            }
        }
        let total = (masked + random + kept) as f64;
        assert!(
            (masked as f64 / total - 0.8).abs() < 0.03,
            "{masked} {random} {kept}"
        );
        // A random token can equal the original, so "random" runs slightly under 10 %.
        assert!(
            (random as f64 / total - 0.1).abs() < 0.03 && (kept as f64 / total - 0.1).abs() < 0.03
        );
    }

    #[test]
    fn a_ratio_leaving_nothing_visible_is_rejected() {
        let (ids, mask) = texts(2, 8);
        let mut s = settings(1);
        s.image_ratio = 0.99;
        let err = MaskPlan::generate(&s, &[0, 1], &ids, &mask, 8, 32, &tokens())
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves no visible patch"), "{err}");
    }
}
