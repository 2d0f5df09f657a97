//! The probe's secondary measures of a pre-trained checkpoint's own heads (issue 10, P2): MLM
//! accuracy on finding words ([`crate::probe_mlm`]), ITM accuracy with clean negatives and
//! zero-shot classification through the ITM head ([`crate::probe_itm`]).
//!
//! MLM and ITM read *report* text: the test split of the held-out text ingest (the probe's second
//! `ingest` input, typically the pre-training corpus, whose test rows `pretrain` never trains on),
//! or the downstream ingest's test split when there is none. Zero-shot reads the downstream test
//! images and labels, with prompts built by the downstream ingest's tokenizer.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use serde::Serialize;
use umdflow_data::artifact::{Dataset, tokenizer_path};
use umdflow_data::tokenizer::TextTokenizer;
use umdflow_model::model::UmdModel;

use crate::error::Result;
use crate::probe_itm::{ItmScores, ZeroShotScores, itm_scores, zero_shot_scores};
use crate::probe_mlm::{MlmScores, MlmSettings, mlm_scores};
use crate::probe_words::{Vocabulary, finding_masks, finding_words, prompt_rows};

/// Which head measures run (the `probe` kind's parameters of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadSettings {
    pub mlm: bool,
    pub itm: bool,
    pub zero_shot: bool,
    pub mlm_other_ratio: f64,
    pub seed: u64,
    pub batch: usize,
}

/// One ingest's test split with the folder it came from (for its tokenizer).
#[derive(Debug, Clone, Copy)]
pub struct TestRows<'a> {
    pub data: &'a Dataset,
    pub dir: &'a Path,
}

/// Where the MLM and ITM measures read their text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextSource {
    /// `held_out` (the second `ingest` input) or `downstream` (the first).
    pub input: &'static str,
    pub split: &'static str,
    pub rows: usize,
}

/// The head measures that ran, and why any that was switched on did not.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HeadReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_source: Option<TextSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlm: Option<MlmScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub itm: Option<ItmScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_shot: Option<ZeroShotScores>,
    /// Measure name → reason, for measures switched on that could not run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<&'static str, String>,
}

/// The artifact's tokenizer, or `None` when the folder has none (hand-built test artifacts).
fn tokenizer_of(dir: &Path) -> Result<Option<TextTokenizer>> {
    let path = tokenizer_path(dir);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(TextTokenizer::load(&path)?))
}

const NO_TOKENIZER: &str = "the ingest has no tokenizer.json";

/// Runs the measures `settings` switches on. `text` is the held-out text ingest's test split
/// (`held_out` true) or the downstream one's.
pub fn head_measures(
    model: &UmdModel,
    downstream: TestRows<'_>,
    text: TestRows<'_>,
    held_out: bool,
    settings: HeadSettings,
    device: &Device,
) -> Result<HeadReport> {
    let mut report = HeadReport::default();
    if settings.mlm || settings.itm {
        report.text_source = Some(TextSource {
            input: if held_out { "held_out" } else { "downstream" },
            split: "test",
            rows: text.data.n,
        });
    }
    if settings.mlm {
        match tokenizer_of(text.dir)? {
            Some(tokenizer) => {
                let vocab = Vocabulary::of(&tokenizer)?;
                let finding = finding_masks(text.data, &vocab, &finding_words());
                let mlm = MlmSettings {
                    other_ratio: settings.mlm_other_ratio,
                    seed: settings.seed,
                    batch: settings.batch,
                };
                report.mlm = Some(mlm_scores(model, text.data, &finding, mlm, device, |id| {
                    vocab.piece(id).to_string()
                })?);
            }
            None => {
                report.skipped.insert("mlm", NO_TOKENIZER.into());
            }
        }
    }
    if settings.itm {
        report.itm = Some(itm_scores(
            model,
            text.data,
            settings.seed,
            settings.batch,
            device,
        )?);
    }
    if settings.zero_shot {
        match tokenizer_of(downstream.dir)? {
            Some(tokenizer) => {
                let prompts = prompt_rows(
                    &tokenizer,
                    &downstream.data.meta.classes,
                    downstream.data.max_len,
                )?;
                report.zero_shot = Some(zero_shot_scores(
                    model,
                    downstream.data,
                    &prompts,
                    settings.batch,
                    device,
                )?);
            }
            None => {
                report.skipped.insert("zero_shot", NO_TOKENIZER.into());
            }
        }
    }
    Ok(report)
}
