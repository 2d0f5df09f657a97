//! The gradients of one MR-Pretrain step with the independent passes on separate threads.
//!
//! [`crate::objective::mr_losses`] builds one graph and back-propagates it op by op: every matrix
//! product and fused kernel splits its own work over the stage's threads, which makes thousands
//! of small parallel regions per step that all wait for their slowest half (docs/benchmarks.md,
//! issue 13). Here the step is cut into a few large independent pieces that run side by side
//! with `rayon::join` on the CPU (nested ops still split when a thread is free):
//!
//! 1. the unmasked image encoder (with the EMA image encoder) ‖ the unmasked text encoder (with
//!    the EMA text encoder);
//! 2. the MLM pass ‖ the MIM pass ‖ the ITM pass, each forward and backward, reading the
//!    encoders' outputs as leaves of their own graphs (copies that record a gradient);
//! 3. the image encoder's backward ‖ the text encoder's, seeded with the sum of the gradients
//!    the passes left on its output.
//!
//! The gradient is the same sum as one backward pass of the total, added in a different order.
//! The order is fixed (pass by pass, in the order above), never by which thread finishes first,
//! so the result is bit-identical whatever the thread count, 1 included.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::batch::Batch;
use crate::error::Result;
use crate::model::UmdModel;
use crate::model::encoders::EncoderOutput;
use crate::objective::{
    EmaTarget, LossTerms, ObjectiveConfig, Passes, Term, feature_targets, itm_pass, loss_terms,
    mim_pass, missing, mlm_pass, no_ema, stopgrad_targets, weighted_sum,
};

/// One step's loss terms (as [`crate::objective::mr_losses`] reports them) and the gradient of
/// their total with respect to every parameter of `model`.
pub fn mr_gradients(
    model: &UmdModel,
    ema: Option<&EmaTarget>,
    batch: &Batch,
    obj: &ObjectiveConfig,
) -> Result<(LossTerms, GradStore)> {
    let needs = Passes::of(obj);
    let ema_needed = needs.features && !needs.stopgrad;
    let join = Join {
        parallel: batch.patches.device().is_cpu(),
    };

    // 1. The unmasked encoders, each with its EMA twin.
    let (vision_side, text_side) = join.run(
        || -> Result<_> {
            let online = needs
                .full_vision
                .then(|| model.vision.forward(&batch.patches, None))
                .transpose()?;
            let target = ema_needed.then(|| ema_vision(ema, batch)).transpose()?;
            Ok((online, target))
        },
        || -> Result<_> {
            let online = needs
                .full_text
                .then(|| model.text.forward(&batch.input_ids, &batch.text_mask))
                .transpose()?;
            let target = ema_needed.then(|| ema_text(ema, batch)).transpose()?;
            Ok((online, target))
        },
    );
    let (full_vision, ema_vision_out) = vision_side?;
    let (full_text, ema_text_out) = text_side?;
    let targets = match (needs.features, needs.stopgrad) {
        (false, _) => None,
        (true, false) => Some(ema_targets_from(
            ema,
            obj,
            ema_vision_out.as_ref(),
            ema_text_out.as_ref(),
        )?),
        (true, true) => Some(stopgrad_targets(
            model,
            full_vision.as_ref(),
            full_text.as_ref(),
            obj,
        )?),
    };

    // 2. The passes, each on its own graph whose leaves are copies of the encoder outputs.
    let vision_leaf = leaf(full_vision.as_ref())?;
    let text_leaf = leaf(full_text.as_ref())?;
    let targets = targets.as_ref();
    let input = |leaf: &Option<Var>| {
        leaf.as_ref()
            .map(|v| v.as_tensor().clone())
            .ok_or_else(missing)
    };
    let (mlm, (mim, itm)) = join.run(
        || -> Result<Option<Pass>> {
            needs
                .mlm
                .then(|| {
                    Pass::run(
                        mlm_pass(model, batch, obj, &input(&vision_leaf)?, targets)?,
                        obj,
                    )
                })
                .transpose()
        },
        || {
            join.run(
                || -> Result<Option<Pass>> {
                    needs
                        .mim
                        .then(|| {
                            Pass::run(
                                mim_pass(model, batch, obj, &input(&text_leaf)?, targets)?,
                                obj,
                            )
                        })
                        .transpose()
                },
                || -> Result<Option<Pass>> {
                    needs
                        .itm
                        .then(|| {
                            Pass::run(
                                itm_pass(model, batch, &input(&vision_leaf)?, &input(&text_leaf)?)?,
                                obj,
                            )
                        })
                        .transpose()
                },
            )
        },
    );
    // Pass order mim, mlm, itm: the order `mr_losses` adds the terms in.
    let passes: Vec<Pass> = [mim?, mlm?, itm?].into_iter().flatten().collect();

    // 3. The encoders' backward passes, seeded with what the passes left on their outputs.
    let (vision_grads, text_grads) = join.run(
        || encoder_backward(full_vision.as_ref(), vision_leaf.as_ref(), &passes),
        || encoder_backward(full_text.as_ref(), text_leaf.as_ref(), &passes),
    );

    let mut terms = Vec::new();
    let mut grads: Option<GradStore> = None;
    for pass in passes {
        terms.extend(pass.terms);
        add(&mut grads, pass.grads)?;
    }
    for encoder in [vision_grads?, text_grads?].into_iter().flatten() {
        add(&mut grads, encoder)?;
    }
    let mut grads = grads.unwrap_or_default();
    for leaf in [&vision_leaf, &text_leaf].into_iter().flatten() {
        grads.remove(leaf.as_tensor());
    }
    Ok((loss_terms(&terms, obj.alpha)?, grads))
}

/// `rayon::join` on the CPU; one after the other elsewhere (a GPU already runs each op in
/// parallel, and candle's CUDA path is not used from several threads at once here). The result
/// is the same either way.
#[derive(Clone, Copy)]
struct Join {
    parallel: bool,
}

impl Join {
    fn run<A: Send, B: Send>(
        self,
        a: impl FnOnce() -> A + Send,
        b: impl FnOnce() -> B + Send,
    ) -> (A, B) {
        if self.parallel {
            rayon::join(a, b)
        } else {
            (a(), b())
        }
    }
}

/// A pass's terms and the gradient of their weighted sum.
struct Pass {
    terms: Vec<Term>,
    grads: GradStore,
}

impl Pass {
    fn run(terms: Vec<Term>, obj: &ObjectiveConfig) -> Result<Self> {
        let grads = match weighted_sum(&terms, obj.alpha)? {
            Some(loss) => loss.backward()?,
            None => GradStore::default(),
        };
        Ok(Pass { terms, grads })
    }
}

fn ema_vision(ema: Option<&EmaTarget>, batch: &Batch) -> Result<EncoderOutput> {
    let ema = ema.ok_or_else(no_ema)?;
    ema.model.vision.forward(&batch.patches, None)
}

fn ema_text(ema: Option<&EmaTarget>, batch: &Batch) -> Result<EncoderOutput> {
    let ema = ema.ok_or_else(no_ema)?;
    ema.model.text.forward(&batch.input_ids, &batch.text_mask)
}

/// The EMA network's feature targets from its encoder outputs (computed in step 1).
fn ema_targets_from(
    ema: Option<&EmaTarget>,
    obj: &ObjectiveConfig,
    vision: Option<&EncoderOutput>,
    text: Option<&EncoderOutput>,
) -> Result<(Tensor, Tensor)> {
    let ema = ema.ok_or_else(no_ema)?;
    feature_targets(
        &ema.model,
        vision.ok_or_else(missing)?,
        text.ok_or_else(missing)?,
        obj.target_layer,
        obj.normalize_targets,
    )
}

/// A copy of an encoder's output that records its own gradient: the cut between the encoder's
/// graph and the passes that read it.
fn leaf(output: Option<&EncoderOutput>) -> Result<Option<Var>> {
    output
        .map(|o| Var::from_tensor(&o.last.detach()))
        .transpose()
        .map_err(Into::into)
}

/// The encoder's parameter gradients: its graph back-propagated from `Σ output · g`, where `g`
/// (a constant) is the sum, pass by pass, of the gradients the passes left on `leaf`. None when
/// no pass read the output.
fn encoder_backward(
    output: Option<&EncoderOutput>,
    leaf: Option<&Var>,
    passes: &[Pass],
) -> Result<Option<GradStore>> {
    let (Some(output), Some(leaf)) = (output, leaf) else {
        return Ok(None);
    };
    let mut seed: Option<Tensor> = None;
    for pass in passes {
        if let Some(g) = pass.grads.get(leaf.as_tensor()) {
            seed = Some(match seed {
                Some(s) => (s + g)?,
                None => g.clone(),
            });
        }
    }
    let Some(seed) = seed else {
        return Ok(None);
    };
    // d(Σ output · seed)/d output = seed exactly (1 · seed), so the encoder's backward starts from
    // the passes' gradient unchanged.
    Ok(Some((&output.last * seed.detach())?.sum_all()?.backward()?))
}

/// Adds `more` into `total` (gradients of the same tensor are summed, `total`'s first).
fn add(total: &mut Option<GradStore>, more: GradStore) -> Result<()> {
    match total {
        Some(t) => t.extend(more)?,
        None => *total = Some(more),
    }
    Ok(())
}
