//! The MR-Pretrain objective:
//! `L = L_MIM + L_MLM + L_ITM + alpha · (L_FeaMIM + L_FeaMLM)`, every term switchable.
//!
//! One step runs (as M3AE) separate passes that share what they can: the unmasked encoders once
//! (for ITM, as MLM's image side and MIM's text side, and as stop-gradient feature targets), the
//! image encoder on the visible patches (MIM pass, fusion only up to `mim_layer`), the text encoder
//! on the corrupted text (MLM pass) and the fusion on in-batch ITM pairs.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::losses::{self, FeatureDistance};
use crate::model::encoders::EncoderOutput;
use crate::model::{FeatureDims, UmdModel};
use crate::negatives::NegativeSampling;
use crate::store::ParamStore;

/// Where feature-level targets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetNetwork {
    /// An exponential moving average of the online encoders (updated after every step).
    Ema,
    /// The online encoders themselves on the unmasked input, with gradients stopped.
    Stopgrad,
}

/// The loss switches and the feature-target choices (all pipeline parameters of `pretrain`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    pub mim: bool,
    pub mlm: bool,
    pub itm: bool,
    pub feamim: bool,
    pub feamlm: bool,
    /// Weight of the feature-level terms.
    pub alpha: f64,
    pub target_network: TargetNetwork,
    /// EMA momentum (`target = m · target + (1 − m) · online`); with `ema_momentum_end`, the
    /// momentum at the first step.
    pub ema_momentum: f64,
    /// null: the momentum stays `ema_momentum`. A number: the momentum rises from
    /// `ema_momentum` to this value on a half-cosine over the run (BYOL's schedule).
    pub ema_momentum_end: Option<f64>,
    /// MIM targets: each patch normalised to mean 0 and variance 1 (MAE's and M3AE's
    /// `norm_pix_loss`), or false for the encoder's own input pixels (scaled to [-1, 1]).
    pub norm_pix: bool,
    /// Encoder layer the targets are read from: null = the final encoder output after the
    /// projection into the fusion width; k = the output of encoder block k (before projection).
    pub target_layer: Option<usize>,
    pub distance: FeatureDistance,
    /// Layer-normalise each target token (without parameters).
    pub normalize_targets: bool,
    /// Average the feature losses over masked positions only (else over all real positions).
    pub masked_only: bool,
    /// How ITM's mismatched images are drawn: `signature` (default) never pairs a text with an
    /// image showing the same findings (data without finding signatures: any other image);
    /// `random`: any other image of the batch.
    pub itm_negatives: NegativeSampling,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            mim: true,
            mlm: true,
            itm: true,
            feamim: true,
            feamlm: true,
            alpha: 1.0,
            target_network: TargetNetwork::Ema,
            ema_momentum: 0.999,
            ema_momentum_end: None,
            norm_pix: true,
            target_layer: None,
            distance: FeatureDistance::Mse,
            normalize_targets: true,
            masked_only: true,
            itm_negatives: NegativeSampling::Signature,
        }
    }
}

impl ObjectiveConfig {
    /// Checks the choices against the model sizes; returns a message naming the bad field.
    pub fn validate(&self, model: &ModelConfig) -> std::result::Result<(), (String, String)> {
        self.validate_choices()?;
        self.validate_depths(&[
            ("image encoder", model.vision_layers),
            ("text encoder", model.text_layers),
        ])
    }

    /// Checks `target_layer` against the depths of the encoders it reads (`(name, blocks)`; an
    /// encoder left out is not checked, as when its depth comes from a pretrained folder only
    /// read at run time). The message names every depth given.
    pub fn validate_depths(
        &self,
        encoders: &[(&str, usize)],
    ) -> std::result::Result<(), (String, String)> {
        let Some(k) = self.target_layer else {
            return Ok(());
        };
        let Some(max) = encoders.iter().map(|&(_, blocks)| blocks).min() else {
            return Ok(());
        };
        if (1..=max).contains(&k) {
            return Ok(());
        }
        let depths = encoders
            .iter()
            .map(|(name, blocks)| {
                let plural = if *blocks == 1 { "" } else { "s" };
                format!("the {name} has {blocks} block{plural}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err((
            "target_layer".into(),
            format!(
                "must be null (projected output) or an encoder block in 1..={max}, got {k} \
                 ({depths})"
            ),
        ))
    }

    /// The checks that need no model sizes (a stage that reads its model from a checkpoint can
    /// run them before anything runs; `target_layer`'s range waits for the checkpoint).
    pub fn validate_choices(&self) -> std::result::Result<(), (String, String)> {
        if !(self.mim || self.mlm || self.itm || self.feamim || self.feamlm) {
            return Err((
                "mim".into(),
                "every loss term is switched off; nothing to train".into(),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err((
                "alpha".into(),
                format!("must be a finite number >= 0, got {}", self.alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.ema_momentum) {
            return Err((
                "ema_momentum".into(),
                format!("must lie in [0, 1), got {}", self.ema_momentum),
            ));
        }
        if let Some(end) = self.ema_momentum_end
            && !(0.0..1.0).contains(&end)
        {
            return Err((
                "ema_momentum_end".into(),
                format!("must be null or lie in [0, 1), got {end}"),
            ));
        }
        if self.target_layer == Some(0) {
            return Err((
                "target_layer".into(),
                "must be null (projected output) or an encoder block numbered from 1, got 0".into(),
            ));
        }
        Ok(())
    }

    /// Whether the objective reads an EMA target network.
    pub fn needs_ema(&self) -> bool {
        (self.feamim || self.feamlm) && self.target_network == TargetNetwork::Ema
    }

    /// The EMA momentum for the update after step `step` (0-based) of `total`: constant, or
    /// `end − (end − start) · (cos(π·step/total) + 1) / 2`, which starts at `ema_momentum` and
    /// reaches `ema_momentum_end` at the end of the run.
    pub fn ema_momentum_at(&self, step: u64, total: u64) -> f64 {
        match self.ema_momentum_end {
            None => self.ema_momentum,
            Some(end) => {
                let progress = (step as f64 / total.max(1) as f64).min(1.0);
                let start = self.ema_momentum;
                end - (end - start) * ((std::f64::consts::PI * progress).cos() + 1.0) / 2.0
            }
        }
    }

    /// Output widths of the feature heads for this target choice.
    pub fn feature_dims(&self, model: &ModelConfig) -> FeatureDims {
        match self.target_layer {
            None => FeatureDims {
                image: model.fusion_width,
                text: model.fusion_width,
            },
            Some(_) => FeatureDims {
                image: model.vision_width,
                text: model.text_width,
            },
        }
    }
}

/// The terms of one step: the total (to back-propagate) and each enabled term's value.
#[derive(Debug, Clone)]
pub struct LossTerms {
    pub total: Tensor,
    /// `(name, value)` for each enabled term, in the order mim, mlm, itm, feamim, feamlm.
    pub values: Vec<(&'static str, f32)>,
}

/// The EMA copy of the model used as the feature-target network (only its encoders and
/// projections are read and updated).
#[derive(Debug, Clone)]
pub struct EmaTarget {
    pub store: ParamStore,
    pub model: UmdModel,
}

/// Parameter-name prefixes of the target network.
const TARGET_PREFIXES: [&str; 4] = [
    "vision_encoder.",
    "language_encoder.",
    "multi_modal_vision_proj.",
    "multi_modal_language_proj.",
];

impl EmaTarget {
    /// A copy of `online` (same values).
    pub fn new(online_store: &ParamStore, online: &UmdModel) -> Result<Self> {
        let mut store = ParamStore::new(online_store.device(), 0);
        let model = UmdModel::new(&mut store, &online.config, online.feature_dims)?;
        for (name, param) in store.iter() {
            if let Some(source) = online_store.param(name) {
                param.var.set(&source.var.as_tensor().copy()?)?;
            }
        }
        Ok(EmaTarget { store, model })
    }

    /// `target ← m · target + (1 − m) · online` for the encoder and projection parameters.
    pub fn update(&self, online: &ParamStore, momentum: f64) -> Result<()> {
        for (name, param) in self.store.iter() {
            if !TARGET_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            if let Some(source) = online.param(name) {
                let mixed = ((param.var.as_tensor() * momentum)?
                    + (source.var.as_tensor() * (1.0 - momentum))?)?;
                param.var.set(&mixed)?;
            }
        }
        Ok(())
    }
}

/// Feature targets [B, L, Dimg] (patch tokens) and [B, T, Dtxt].
pub(crate) fn feature_targets(
    net: &UmdModel,
    vision: &EncoderOutput,
    text: &EncoderOutput,
    layer: Option<usize>,
    normalize: bool,
) -> Result<(Tensor, Tensor)> {
    let (image, text) = match layer {
        None => (
            net.vision_proj.forward(&vision.last)?,
            net.text_proj.forward(&text.last)?,
        ),
        Some(k) => (vision.blocks[k - 1].clone(), text.blocks[k - 1].clone()),
    };
    let patches = image.dim(1)? - 1;
    let image = image.narrow(1, 1, patches)?;
    let (image, text) = if normalize {
        (
            losses::normalize_features(&image)?,
            losses::normalize_features(&text)?,
        )
    } else {
        (image, text)
    };
    Ok((image.detach(), text.detach()))
}

fn flatten_rows(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    Ok(x.reshape((x.elem_count() / d, d))?)
}

/// Which passes and encoder outputs an objective needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Passes {
    pub mim: bool,
    pub mlm: bool,
    pub itm: bool,
    pub full_vision: bool,
    pub full_text: bool,
    pub features: bool,
    pub stopgrad: bool,
}

impl Passes {
    pub fn of(obj: &ObjectiveConfig) -> Self {
        let stopgrad = obj.target_network == TargetNetwork::Stopgrad;
        let features = obj.feamim || obj.feamlm;
        let mim = obj.mim || obj.feamim;
        let mlm = obj.mlm || obj.feamlm;
        Passes {
            mim,
            mlm,
            itm: obj.itm,
            full_vision: obj.itm || mlm || (features && stopgrad),
            full_text: obj.itm || mim || (features && stopgrad),
            features,
            stopgrad,
        }
    }
}

/// One loss term of a pass: its name, its scalar value and whether it is a feature-level term
/// (weighted by `alpha` in the total).
pub(crate) struct Term {
    pub name: &'static str,
    pub loss: Tensor,
    pub feature: bool,
}

pub(crate) fn no_ema() -> ModelError {
    ModelError::Config("target_network `ema` needs the EMA target model".into())
}

pub(crate) fn missing() -> ModelError {
    ModelError::Config("internal: a pass needs an encoder output that was not computed".into())
}

/// The EMA network's feature targets (image, text), or an error when the objective reads an EMA
/// target and none was given.
pub(crate) fn ema_targets(
    ema: Option<&EmaTarget>,
    batch: &Batch,
    obj: &ObjectiveConfig,
) -> Result<(Tensor, Tensor)> {
    let ema = ema.ok_or_else(no_ema)?;
    let v = ema.model.vision.forward(&batch.patches, None)?;
    let t = ema.model.text.forward(&batch.input_ids, &batch.text_mask)?;
    feature_targets(&ema.model, &v, &t, obj.target_layer, obj.normalize_targets)
}

/// The stop-gradient feature targets read from the online encoders' unmasked outputs.
pub(crate) fn stopgrad_targets(
    model: &UmdModel,
    vision: Option<&EncoderOutput>,
    text: Option<&EncoderOutput>,
    obj: &ObjectiveConfig,
) -> Result<(Tensor, Tensor)> {
    feature_targets(
        model,
        vision.ok_or_else(missing)?,
        text.ok_or_else(missing)?,
        obj.target_layer,
        obj.normalize_targets,
    )
}

/// The MIM pass: the image encoder on the visible patches, the fusion up to `mim_layer` with the
/// unmasked text (`text`: its encoder output), the decoder; MIM and FeaMIM terms.
pub(crate) fn mim_pass(
    model: &UmdModel,
    batch: &Batch,
    obj: &ObjectiveConfig,
    text: &Tensor,
    targets: Option<&(Tensor, Tensor)>,
) -> Result<Vec<Term>> {
    let c = &model.config;
    let mut terms = Vec::new();
    let visible = model.vision.forward(&batch.patches, Some(&batch.keep))?;
    let fused = model.fuse(text, &batch.text_mask, &visible.last, c.mim_layer)?;
    let decoded = model
        .mim_head
        .decode(&fused.image[c.mim_layer], &batch.restore)?;
    if obj.mim {
        let pixels = model.mim_head.pixels(&decoded)?;
        let targets = if obj.norm_pix {
            &batch.pixel_targets
        } else {
            &batch.patches
        };
        terms.push(Term {
            name: "mim",
            loss: losses::masked_patch_mse(&pixels, targets, &batch.removed)?,
            feature: false,
        });
    }
    if obj.feamim {
        let (image_targets, _) = targets.ok_or_else(missing)?;
        let pred = flatten_rows(&model.feamim_head.forward(&decoded)?)?;
        let weights = if obj.masked_only {
            batch.removed.flatten_all()?
        } else {
            batch.removed.ones_like()?.flatten_all()?
        };
        terms.push(Term {
            name: "feamim",
            loss: losses::feature_loss(
                &pred,
                &flatten_rows(image_targets)?,
                &weights,
                obj.distance,
            )?,
            feature: true,
        });
    }
    Ok(terms)
}

/// The MLM pass: the text encoder on the corrupted text, the fusion with the unmasked image
/// (`vision`: its encoder output); MLM and FeaMLM terms.
pub(crate) fn mlm_pass(
    model: &UmdModel,
    batch: &Batch,
    obj: &ObjectiveConfig,
    vision: &Tensor,
    targets: Option<&(Tensor, Tensor)>,
) -> Result<Vec<Term>> {
    let c = &model.config;
    let mut terms = Vec::new();
    let corrupted = model.text.forward(&batch.masked_ids, &batch.text_mask)?;
    let fused = model.fuse(&corrupted.last, &batch.text_mask, vision, c.fusion_layers)?;
    let text_rows = flatten_rows(fused.text.last().ok_or_else(missing)?)?;
    if obj.mlm && batch.mlm_positions.elem_count() > 0 {
        let logits = model
            .mlm_head
            .forward(&text_rows.index_select(&batch.mlm_positions, 0)?)?;
        terms.push(Term {
            name: "mlm",
            loss: losses::cross_entropy(&logits, &batch.mlm_labels)?,
            feature: false,
        });
    }
    if obj.feamlm {
        let (_, text_targets) = targets.ok_or_else(missing)?;
        let pred = model.feamlm_head.forward(&text_rows)?;
        let weights = if obj.masked_only {
            batch.mlm_weights.flatten_all()?
        } else {
            batch.text_mask.flatten_all()?
        };
        terms.push(Term {
            name: "feamlm",
            loss: losses::feature_loss(
                &pred,
                &flatten_rows(text_targets)?,
                &weights,
                obj.distance,
            )?,
            feature: true,
        });
    }
    Ok(terms)
}

/// The ITM pass: the fusion on the in-batch image-text pairs (`vision`, `text`: the unmasked
/// encoder outputs); the ITM term.
pub(crate) fn itm_pass(
    model: &UmdModel,
    batch: &Batch,
    vision: &Tensor,
    text: &Tensor,
) -> Result<Vec<Term>> {
    let c = &model.config;
    let images = vision.index_select(&batch.itm_image, 0)?;
    let fused = model.fuse(text, &batch.text_mask, &images, c.fusion_layers)?;
    let logits = model.itm_logits(&model.pooled(&fused)?)?;
    Ok(vec![Term {
        name: "itm",
        loss: losses::cross_entropy(&logits, &batch.itm_labels)?,
        feature: false,
    }])
}

/// `Σ data terms + alpha · Σ feature terms`, each sum in the order of `terms`; None without terms.
pub(crate) fn weighted_sum(terms: &[Term], alpha: f64) -> Result<Option<Tensor>> {
    let mut total: Option<Tensor> = None;
    for term in terms.iter().filter(|t| !t.feature) {
        total = Some(match total {
            Some(t) => (t + &term.loss)?,
            None => term.loss.clone(),
        });
    }
    for term in terms.iter().filter(|t| t.feature) {
        let weighted = (&term.loss * alpha)?;
        total = Some(match total {
            Some(t) => (t + weighted)?,
            None => weighted,
        });
    }
    Ok(total)
}

/// The terms' values in [`TERM_ORDER`] and their total (`Σ data + alpha · Σ features`, data terms
/// in the order mim, mlm, itm).
pub(crate) fn loss_terms(terms: &[Term], alpha: f64) -> Result<LossTerms> {
    let mut values = Vec::with_capacity(terms.len());
    for term in terms {
        values.push((
            term.name,
            term.loss
                .to_dtype(candle_core::DType::F32)?
                .to_scalar::<f32>()?,
        ));
    }
    values.sort_by_key(|(name, _)| TERM_ORDER.iter().position(|n| n == name));
    let total = weighted_sum(terms, alpha)?
        .ok_or_else(|| ModelError::Config("no loss term produced a value for this batch".into()))?;
    Ok(LossTerms { total, values })
}

/// Computes every enabled loss for one batch, as one graph (the caller back-propagates
/// `total`). [`crate::gradients::mr_gradients`] computes the same losses with the independent
/// passes on separate threads and returns their gradients.
pub fn mr_losses(
    model: &UmdModel,
    ema: Option<&EmaTarget>,
    batch: &Batch,
    obj: &ObjectiveConfig,
) -> Result<LossTerms> {
    let needs = Passes::of(obj);
    let full_vision = if needs.full_vision {
        Some(model.vision.forward(&batch.patches, None)?)
    } else {
        None
    };
    let full_text = if needs.full_text {
        Some(model.text.forward(&batch.input_ids, &batch.text_mask)?)
    } else {
        None
    };
    let targets = match (needs.features, needs.stopgrad) {
        (false, _) => None,
        (true, false) => Some(ema_targets(ema, batch, obj)?),
        (true, true) => Some(stopgrad_targets(
            model,
            full_vision.as_ref(),
            full_text.as_ref(),
            obj,
        )?),
    };
    let last =
        |out: &Option<EncoderOutput>| out.as_ref().map(|o| o.last.clone()).ok_or_else(missing);
    let mut terms = Vec::new();
    if needs.mim {
        terms.extend(mim_pass(
            model,
            batch,
            obj,
            &last(&full_text)?,
            targets.as_ref(),
        )?);
    }
    if needs.mlm {
        terms.extend(mlm_pass(
            model,
            batch,
            obj,
            &last(&full_vision)?,
            targets.as_ref(),
        )?);
    }
    if needs.itm {
        terms.extend(itm_pass(
            model,
            batch,
            &last(&full_vision)?,
            &last(&full_text)?,
        )?);
    }
    loss_terms(&terms, obj.alpha)
}

/// The order of the loss terms in curves and metrics.
pub const TERM_ORDER: [&str; 5] = ["mim", "mlm", "itm", "feamim", "feamlm"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ema_schedule_yields_the_stated_momenta() {
        let constant = ObjectiveConfig::default();
        assert_eq!(constant.ema_momentum_at(0, 100), 0.999);
        assert_eq!(constant.ema_momentum_at(99, 100), 0.999);
        let cosine = ObjectiveConfig {
            ema_momentum: 0.99,
            ema_momentum_end: Some(0.999),
            ..ObjectiveConfig::default()
        };
        assert!((cosine.ema_momentum_at(0, 100) - 0.99).abs() < 1e-15);
        assert!((cosine.ema_momentum_at(50, 100) - 0.9945).abs() < 1e-12);
        assert!((cosine.ema_momentum_at(100, 100) - 0.999).abs() < 1e-15);
        // A quarter of the way: end − (end − start)(cos(π/4) + 1)/2.
        let k = cosine.ema_momentum_at(25, 100);
        let expect = 0.999 - 0.009 * ((std::f64::consts::PI / 4.0).cos() + 1.0) / 2.0;
        assert!((k - expect).abs() < 1e-15, "{k}");
        // Monotone rise.
        let series: Vec<f64> = (0..=100).map(|s| cosine.ema_momentum_at(s, 100)).collect();
        assert!(series.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn choices_are_checked_without_a_model() {
        let bad = ObjectiveConfig {
            ema_momentum_end: Some(1.0),
            ..ObjectiveConfig::default()
        };
        assert_eq!(bad.validate_choices().unwrap_err().0, "ema_momentum_end");
        let bad = ObjectiveConfig {
            target_layer: Some(0),
            ..ObjectiveConfig::default()
        };
        assert_eq!(bad.validate_choices().unwrap_err().0, "target_layer");
        assert!(ObjectiveConfig::default().validate_choices().is_ok());
    }
}
