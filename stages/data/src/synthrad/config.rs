//! SynthRad's knobs and presets.

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Which population a study comes from: the pre-training corpus or the downstream data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    Source,
    Target,
}

/// What text is paired with each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    /// A sectioned radiology report (pre-training pairs, retrieval).
    Report,
    /// A short MELINDA-like caption that reveals the label only with probability `text_leak`.
    Caption,
}

/// Named sizes: `ci` (32x32), `demo` (64x64), `full` (128x128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Ci,
    Demo,
    Full,
}

/// What a preset fills in when a pipeline leaves it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetDefaults {
    pub image_size: usize,
    /// Studies in a `source` (pre-training) ingest.
    pub source_count: usize,
    /// Studies in a `target` (downstream) ingest.
    pub target_count: usize,
    pub max_len: usize,
    pub vocab_size: usize,
}

impl Preset {
    pub fn defaults(self) -> PresetDefaults {
        match self {
            Preset::Ci => PresetDefaults {
                image_size: 32,
                source_count: 1500,
                target_count: 600,
                max_len: 64,
                vocab_size: 400,
            },
            Preset::Demo => PresetDefaults {
                image_size: 64,
                source_count: 5000,
                target_count: 2000,
                max_len: 96,
                vocab_size: 1000,
            },
            Preset::Full => PresetDefaults {
                image_size: 128,
                source_count: 20000,
                target_count: 5000,
                max_len: 128,
                vocab_size: 2000,
            },
        }
    }
}

/// Everything that decides what SynthRad generates; study `i` depends on this and `i` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub seed: u64,
    pub domain: Domain,
    pub image_size: usize,
    /// 0 = the target looks like the source; 1 = full shift in appearance, label priors
    /// (NIH-like to CheXpert-like), views, devices and report dialect. Ignored for `source`.
    pub shift_strength: f32,
    /// Appearance only (gamma, contrast, offset, noise, blur, rotation, scanner texture): the
    /// studies, their labels and texts stay those of `shift_strength`. The image's appearance
    /// follows the larger of the two. Ignored for `source`.
    pub appearance_shift: f32,
    /// Texts are written without reading the findings: captions never name (or rule out) a
    /// finding whatever `text_leak_*` say, reports stop before FINDINGS, and questions are drawn
    /// from a fixed menu (answers still follow the study). For image-only experiments.
    pub label_free_text: bool,
    /// The label rule: a finding kind stays in the class list (and the findings columns) only if
    /// one such finding changes at least this many pixels by more than the noise sigma, on
    /// average, at this image size (see `visibility`). 0 keeps every kind.
    pub min_visible_pixels: f32,
    /// Chance that a caption or question carries a label-revealing phrase, in train.
    pub text_leak_train: f32,
    /// The same in val and test.
    pub text_leak_test: f32,
    /// Lesion contrast in units of the source domain's noise sigma (0.03).
    pub image_snr: f32,
    /// Share of the majority answer ("no") of presence questions in train; val/test are 50/50.
    pub answer_prior: f32,
    /// Chance the IMPRESSION repeats each finding stated in FINDINGS.
    pub text_redundancy: f32,
    /// Chance each side/size attribute is left out of the text (so only the image has it).
    pub image_only_attributes: f32,
    /// Smallest and largest finding diameter, in patches.
    pub finding_patches: [f32; 2],
    /// Patch size in pixels, the unit of `finding_patches`.
    pub patch: usize,
    pub questions_per_image: usize,
    pub text: TextKind,
    /// Fractions of studies in train / val / test (they must sum to 1).
    pub split: [f32; 3],
}

impl SynthConfig {
    /// The defaults of the SynthRad design for one domain and size.
    pub fn new(seed: u64, domain: Domain, image_size: usize) -> SynthConfig {
        SynthConfig {
            seed,
            domain,
            image_size,
            shift_strength: 0.0,
            appearance_shift: 0.0,
            label_free_text: false,
            min_visible_pixels: 16.0,
            text_leak_train: 0.9,
            text_leak_test: 0.2,
            image_snr: 8.0,
            answer_prior: 0.85,
            text_redundancy: 0.3,
            image_only_attributes: 0.5,
            finding_patches: [1.0, 2.5],
            patch: 8,
            questions_per_image: 3,
            text: match domain {
                Domain::Source => TextKind::Report,
                Domain::Target => TextKind::Caption,
            },
            split: [0.8, 0.1, 0.1],
        }
    }

    /// The population shift actually applied (priors, views, devices, dialect): none for the
    /// source domain.
    pub fn effective_shift(&self) -> f32 {
        match self.domain {
            Domain::Source => 0.0,
            Domain::Target => self.shift_strength,
        }
    }

    /// The appearance shift actually applied: the larger of the two knobs, none for `source`.
    pub fn effective_appearance(&self) -> f32 {
        match self.domain {
            Domain::Source => 0.0,
            Domain::Target => self.shift_strength.max(self.appearance_shift),
        }
    }

    /// Rejects values the generator cannot honour, naming the knob.
    pub fn validate(&self) -> Result<(), DataError> {
        let unit = [
            ("shift_strength", self.shift_strength),
            ("appearance_shift", self.appearance_shift),
            ("text_leak_train", self.text_leak_train),
            ("text_leak_test", self.text_leak_test),
            ("answer_prior", self.answer_prior),
            ("text_redundancy", self.text_redundancy),
            ("image_only_attributes", self.image_only_attributes),
        ];
        for (name, value) in unit {
            if !(0.0..=1.0).contains(&value) {
                return Err(DataError::Invalid(format!(
                    "{name} must be in [0, 1], got {value}"
                )));
            }
        }
        if !(8..=1024).contains(&self.image_size) {
            return Err(DataError::Invalid(format!(
                "image_size must be in 8..=1024, got {}",
                self.image_size
            )));
        }
        if !(self.image_snr >= 0.0 && self.image_snr <= 30.0) {
            return Err(DataError::Invalid(format!(
                "image_snr must be in [0, 30], got {}",
                self.image_snr
            )));
        }
        if !(self.min_visible_pixels >= 0.0 && self.min_visible_pixels.is_finite()) {
            return Err(DataError::Invalid(format!(
                "min_visible_pixels must be a number >= 0, got {}",
                self.min_visible_pixels
            )));
        }
        let [lo, hi] = self.finding_patches;
        if !(lo > 0.0 && lo <= hi && hi <= 16.0) {
            return Err(DataError::Invalid(format!(
                "finding_patches must be [min, max] with 0 < min <= max <= 16, got [{lo}, {hi}]"
            )));
        }
        if self.patch == 0 || self.patch > self.image_size {
            return Err(DataError::Invalid(format!(
                "patch must be in 1..=image_size, got {}",
                self.patch
            )));
        }
        let total: f32 = self.split.iter().sum();
        if self.split.iter().any(|f| !(0.0..=1.0).contains(f)) || (total - 1.0).abs() > 1e-4 {
            return Err(DataError::Invalid(format!(
                "split fractions must be in [0, 1] and sum to 1, got {:?}",
                self.split
            )));
        }
        if self.questions_per_image > 8 {
            return Err(DataError::Invalid(format!(
                "questions_per_image must be at most 8, got {}",
                self.questions_per_image
            )));
        }
        Ok(())
    }
}
