//! What the MR loop (`pretrain`, `calibrate`) carries from one step to the next, and its saved
//! form in a checkpoint ([`crate::resume`]).

use serde::{Deserialize, Serialize};

use crate::objective::TERM_ORDER;
use crate::resume::LoopState;
use crate::rng::SplitMix64;
use crate::train::StepRecord;

/// The MR loop's state besides its tensors and step.
#[derive(Debug, Clone)]
pub struct MrProgress {
    pub samples_seen: u64,
    /// The ITM-negative stream.
    pub itm_rng: SplitMix64,
    /// The loss curve so far.
    pub records: Vec<StepRecord>,
}

#[derive(Serialize, Deserialize)]
pub struct SavedMrProgress {
    samples_seen: u64,
    itm_rng: u64,
    records: Vec<SavedRecord>,
}

/// A [`StepRecord`], floats as their bits so they come back exactly.
#[derive(Serialize, Deserialize)]
struct SavedRecord {
    step: u64,
    epoch: usize,
    lr: u64,
    grad_norm: u64,
    total: u32,
    terms: Vec<(String, u32)>,
}

impl LoopState for MrProgress {
    type Saved = SavedMrProgress;

    fn save(&self) -> SavedMrProgress {
        SavedMrProgress {
            samples_seen: self.samples_seen,
            itm_rng: self.itm_rng.state(),
            records: self.records.iter().map(save_record).collect(),
        }
    }

    fn restore(saved: SavedMrProgress, step: u64) -> Result<Self, String> {
        if saved.records.len() as u64 != step {
            return Err(format!(
                "it claims {step} steps with {} records",
                saved.records.len()
            ));
        }
        Ok(MrProgress {
            samples_seen: saved.samples_seen,
            itm_rng: SplitMix64::new(saved.itm_rng),
            records: saved
                .records
                .iter()
                .map(load_record)
                .collect::<Result<Vec<_>, String>>()?,
        })
    }
}

fn save_record(r: &StepRecord) -> SavedRecord {
    SavedRecord {
        step: r.step,
        epoch: r.epoch,
        lr: r.lr.to_bits(),
        grad_norm: r.grad_norm.to_bits(),
        total: r.total.to_bits(),
        terms: r
            .terms
            .iter()
            .map(|(name, v)| (name.to_string(), v.to_bits()))
            .collect(),
    }
}

fn load_record(r: &SavedRecord) -> std::result::Result<StepRecord, String> {
    let terms = r
        .terms
        .iter()
        .map(|(name, bits)| {
            TERM_ORDER
                .iter()
                .find(|known| *known == name)
                .map(|known| (*known, f32::from_bits(*bits)))
                .ok_or_else(|| format!("step {} records an unknown loss term `{name}`", r.step))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    Ok(StepRecord {
        step: r.step,
        epoch: r.epoch,
        lr: f64::from_bits(r.lr),
        grad_norm: f64::from_bits(r.grad_norm),
        total: f32::from_bits(r.total),
        terms,
    })
}
