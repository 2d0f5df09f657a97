//! The `ingest` stage's parameters: a serde struct checked by `resolve_typed`, then completed
//! from the preset so that the key holds concrete values.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use umdflow_stages::{Params, Problem, params::resolve_typed};

use crate::synthrad::{Domain, Preset, SynthConfig, TextKind};

/// The sources an ingest can read.
pub const SOURCES: [&str; 11] = [
    "synthrad",
    "vqa-rad",
    "slake",
    "medvqa-2019",
    "roco",
    "melinda",
    "medmnist",
    "mimic-cxr-jpg",
    "iu-xray",
    "dicom-dir",
    "image-folder",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestParams {
    /// One of [`SOURCES`].
    pub source: String,
    /// The dataset folder (or file) of a real source, relative to the pipeline file.
    pub path: Option<String>,
    /// Fills in image_size, count, max_len and vocab_size when they are left out.
    pub preset: Preset,
    pub image_size: Option<usize>,
    /// SynthRad: how many studies to generate.
    pub count: Option<usize>,
    /// Keep at most this many images (real sources: the first ones in reading order).
    pub limit: Option<usize>,
    /// Train / val / test fractions, for sources without their own split.
    pub split: [f64; 3],
    pub seed: u64,
    pub domain: Domain,
    pub max_len: Option<usize>,
    /// Ignored when the tokenizer is reused from an ingest input or given as `tokenizer`.
    pub vocab_size: Option<usize>,
    /// A `tokenizer.json` file to tokenize with instead of training a WordPiece vocabulary (a
    /// pretrained text encoder's: RoBERTa's byte-level BPE, BERT's WordPiece), relative to the
    /// pipeline file. Keyed by content. Left out of the resolved params when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// How many images the preview contact sheet shows.
    pub preview: usize,
    /// Which label column a source with several uses (MELINDA: `p_meth_label`, ...).
    pub label: Option<String>,
    // SynthRad knobs (see docs/data.md).
    pub shift_strength: f64,
    pub appearance_shift: f64,
    pub label_free_text: bool,
    pub min_visible_pixels: f64,
    pub text: Option<TextKind>,
    pub text_leak_train: f64,
    pub text_leak_test: f64,
    pub image_snr: f64,
    pub answer_prior: f64,
    pub text_redundancy: f64,
    pub image_only_attributes: f64,
    pub finding_patches: [f64; 2],
    pub patch: usize,
    pub questions_per_image: usize,
}

/// The f64 a YAML author would write for an f32 default (0.8, not 0.800000011920929), so the
/// key and `umdflow show` print round numbers; SynthRad gets the same f32 back.
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

impl Default for IngestParams {
    fn default() -> Self {
        let synth = SynthConfig::new(0, Domain::Source, 32);
        IngestParams {
            source: "synthrad".into(),
            path: None,
            preset: Preset::Ci,
            image_size: None,
            count: None,
            limit: None,
            split: synth.split.map(decimal),
            seed: 0,
            domain: Domain::Source,
            max_len: None,
            vocab_size: None,
            tokenizer: None,
            preview: 8,
            label: None,
            shift_strength: decimal(synth.shift_strength),
            appearance_shift: decimal(synth.appearance_shift),
            label_free_text: synth.label_free_text,
            min_visible_pixels: decimal(synth.min_visible_pixels),
            text: None,
            text_leak_train: decimal(synth.text_leak_train),
            text_leak_test: decimal(synth.text_leak_test),
            image_snr: decimal(synth.image_snr),
            answer_prior: decimal(synth.answer_prior),
            text_redundancy: decimal(synth.text_redundancy),
            image_only_attributes: decimal(synth.image_only_attributes),
            finding_patches: synth.finding_patches.map(decimal),
            patch: synth.patch,
            questions_per_image: synth.questions_per_image,
        }
    }
}

impl IngestParams {
    /// Fills every `None` that the preset decides.
    pub fn complete(&mut self) {
        let defaults = self.preset.defaults();
        self.image_size.get_or_insert(defaults.image_size);
        self.max_len.get_or_insert(defaults.max_len);
        self.vocab_size.get_or_insert(defaults.vocab_size);
        if self.source == "synthrad" {
            self.count.get_or_insert(match self.domain {
                Domain::Source => defaults.source_count,
                Domain::Target => defaults.target_count,
            });
            self.text.get_or_insert(match self.domain {
                Domain::Source => TextKind::Report,
                Domain::Target => TextKind::Caption,
            });
        }
    }

    pub fn image_size(&self) -> usize {
        self.image_size
            .unwrap_or_else(|| self.preset.defaults().image_size)
    }

    pub fn max_len(&self) -> usize {
        self.max_len
            .unwrap_or_else(|| self.preset.defaults().max_len)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
            .unwrap_or_else(|| self.preset.defaults().vocab_size)
    }

    /// The SynthRad configuration these params describe.
    pub fn synth_config(&self) -> SynthConfig {
        let mut config = SynthConfig::new(self.seed, self.domain, self.image_size());
        config.shift_strength = self.shift_strength as f32;
        config.appearance_shift = self.appearance_shift as f32;
        config.label_free_text = self.label_free_text;
        config.min_visible_pixels = self.min_visible_pixels as f32;
        config.text_leak_train = self.text_leak_train as f32;
        config.text_leak_test = self.text_leak_test as f32;
        config.image_snr = self.image_snr as f32;
        config.answer_prior = self.answer_prior as f32;
        config.text_redundancy = self.text_redundancy as f32;
        config.image_only_attributes = self.image_only_attributes as f32;
        config.finding_patches = self.finding_patches.map(|x| x as f32);
        config.patch = self.patch;
        config.questions_per_image = self.questions_per_image;
        if let Some(text) = self.text {
            config.text = text;
        }
        config.split = self.split.map(|x| x as f32);
        config
    }

    /// Problems a pipeline author can fix, each naming its field.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !SOURCES.contains(&self.source.as_str()) {
            problems.push(Problem::new(
                "params.source",
                format!(
                    "unknown source `{}`; expected one of {}",
                    self.source,
                    SOURCES.join(", ")
                ),
            ));
        }
        if self.source != "synthrad" && self.path.is_none() {
            problems.push(Problem::new(
                "params.path",
                format!(
                    "source `{}` needs `path:` (the dataset folder)",
                    self.source
                ),
            ));
        }
        if self.source == "synthrad" && self.path.is_some() {
            problems.push(Problem::new(
                "params.path",
                "source `synthrad` generates its data and takes no `path:`",
            ));
        }
        let size = self.image_size();
        if !(8..=1024).contains(&size) {
            problems.push(Problem::new(
                "params.image_size",
                format!("must be in 8..=1024, got {size}"),
            ));
        }
        let max_len = self.max_len();
        if !(4..=4096).contains(&max_len) {
            problems.push(Problem::new(
                "params.max_len",
                format!("must be in 4..=4096, got {max_len}"),
            ));
        }
        if self.vocab_size() < 64 {
            problems.push(Problem::new(
                "params.vocab_size",
                format!("must be at least 64, got {}", self.vocab_size()),
            ));
        }
        if self.limit == Some(0) || self.count == Some(0) {
            problems.push(Problem::new(
                if self.limit == Some(0) {
                    "params.limit"
                } else {
                    "params.count"
                },
                "must be at least 1",
            ));
        }
        if let Err(err) = self.synth_config().validate() {
            let message = err.to_string();
            let knob = message
                .split_whitespace()
                .next()
                .unwrap_or("params")
                .to_string();
            problems.push(Problem::new(format!("params.{knob}"), message));
        }
        problems
    }
}

/// `resolve_params` of the ingest kind: typed check, preset completion, semantic checks.
pub fn resolve(params: Params) -> Result<Params, Vec<Problem>> {
    let checked = resolve_typed::<IngestParams>(params)?;
    let mut typed: IngestParams = serde_json::from_value(Value::Object(checked))
        .map_err(|err| vec![Problem::new("params", err.to_string())])?;
    typed.complete();
    let problems = typed.problems();
    if !problems.is_empty() {
        return Err(problems);
    }
    match serde_json::to_value(&typed) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(vec![Problem::new(
            "params",
            "internal: ingest params did not serialise to a map",
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: Value) -> Params {
        json.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_preset_fills_in_concrete_values() {
        let resolved = resolve(params(
            serde_json::json!({"preset": "demo", "domain": "target"}),
        ))
        .unwrap();
        assert_eq!(resolved["image_size"], 64);
        assert_eq!(resolved["count"], 2000);
        assert_eq!(resolved["text"], "caption");
        let explicit = resolve(params(
            serde_json::json!({"preset": "demo", "image_size": 48}),
        ))
        .unwrap();
        assert_eq!(explicit["image_size"], 48);
        // Resolving a resolved map changes nothing (the key is stable).
        assert_eq!(resolve(explicit.clone()).unwrap(), explicit);
    }

    #[test]
    fn bad_values_name_their_field() {
        let problems = resolve(params(serde_json::json!({"source": "nope"}))).unwrap_err();
        assert_eq!(problems[0].field, "params.source");
        let problems = resolve(params(serde_json::json!({"source": "slake"}))).unwrap_err();
        assert_eq!(problems[0].field, "params.path");
        let problems = resolve(params(serde_json::json!({"shift_strength": 2.0}))).unwrap_err();
        assert_eq!(problems[0].field, "params.shift_strength");
        let problems = resolve(params(serde_json::json!({"appearance_shift": 1.5}))).unwrap_err();
        assert_eq!(problems[0].field, "params.appearance_shift");
        let problems =
            resolve(params(serde_json::json!({"min_visible_pixels": -1.0}))).unwrap_err();
        assert_eq!(problems[0].field, "params.min_visible_pixels");
        let problems = resolve(params(serde_json::json!({"image_snr": "high"}))).unwrap_err();
        assert_eq!(problems[0].field, "params.image_snr");
        let problems = resolve(params(serde_json::json!({"shift": 0.5}))).unwrap_err();
        assert!(problems[0].message.contains("unknown field `shift`"));
    }
}
