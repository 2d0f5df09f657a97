//! What fine-tuning ([`crate::finetune`]) carries from one step to the next besides its tensors
//! (parameters with the task and auxiliary heads, the optimiser's moments and step count, the EMA
//! target of joint TD-Calib), and its saved form in a checkpoint ([`umdflow_model::resume`]).
//!
//! GM-Coord keeps no running statistics: its scores and coefficients come from each batch alone,
//! so the only modulation state is the GE-noise stream. Batch order is drawn per epoch from the
//! seed and needs none.

use serde::{Deserialize, Serialize};
use umdflow_model::resume::LoopState;
use umdflow_model::rng::SplitMix64;

use crate::finetune::CoordStep;

/// The fine-tuning loop's seeded streams and its step log.
#[derive(Debug, Clone)]
pub struct TuneState {
    /// Retrieval's negative texts.
    pub neg_rng: SplitMix64,
    /// OGM-GE's generalisation-enhancement noise.
    pub noise_rng: SplitMix64,
    /// Joint TD-Calib's ITM negatives.
    pub itm_rng: SplitMix64,
    /// One record per step so far (`gmcoord.csv`).
    pub log: Vec<CoordStep>,
}

impl TuneState {
    /// The streams of a run with `seed`, before its first step.
    pub fn new(seed: u64, steps: u64) -> Self {
        TuneState {
            neg_rng: SplitMix64::derived(seed, "retrieval-negatives"),
            noise_rng: SplitMix64::derived(seed, "ogm-ge-noise"),
            itm_rng: SplitMix64::derived(seed, "joint-mr-itm"),
            log: Vec::with_capacity(steps as usize),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct SavedTuneState {
    neg_rng: u64,
    noise_rng: u64,
    itm_rng: u64,
    log: Vec<SavedStep>,
}

/// A [`CoordStep`], floats as their bits so they come back exactly (and `rho` may be infinite).
#[derive(Serialize, Deserialize)]
struct SavedStep {
    step: u64,
    epoch: usize,
    /// s_text, s_image, rho, coeff_text, coeff_image, task_loss, mr_loss.
    values: [u64; 7],
}

impl LoopState for TuneState {
    type Saved = SavedTuneState;

    fn save(&self) -> SavedTuneState {
        SavedTuneState {
            neg_rng: self.neg_rng.state(),
            noise_rng: self.noise_rng.state(),
            itm_rng: self.itm_rng.state(),
            log: self
                .log
                .iter()
                .map(|s| SavedStep {
                    step: s.step,
                    epoch: s.epoch,
                    values: [
                        s.s_text,
                        s.s_image,
                        s.rho,
                        s.coeff_text,
                        s.coeff_image,
                        s.task_loss,
                        s.mr_loss,
                    ]
                    .map(f64::to_bits),
                })
                .collect(),
        }
    }

    fn restore(saved: SavedTuneState, step: u64) -> Result<Self, String> {
        if saved.log.len() as u64 != step {
            return Err(format!(
                "it claims {step} steps with {} records",
                saved.log.len()
            ));
        }
        let log = saved
            .log
            .iter()
            .map(|s| {
                let [
                    s_text,
                    s_image,
                    rho,
                    coeff_text,
                    coeff_image,
                    task_loss,
                    mr_loss,
                ] = s.values.map(f64::from_bits);
                CoordStep {
                    step: s.step,
                    epoch: s.epoch,
                    s_text,
                    s_image,
                    rho,
                    coeff_text,
                    coeff_image,
                    task_loss,
                    mr_loss,
                }
            })
            .collect();
        Ok(TuneState {
            neg_rng: SplitMix64::new(saved.neg_rng),
            noise_rng: SplitMix64::new(saved.noise_rng),
            itm_rng: SplitMix64::new(saved.itm_rng),
            log,
        })
    }
}
