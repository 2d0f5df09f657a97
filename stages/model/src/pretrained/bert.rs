//! BERT and RoBERTa (`BertModel`, `RobertaModel`, or the encoder inside `BertForPreTraining` /
//! `RobertaForMaskedLM`, such as `roberta-base`) onto umdflow's text encoder
//! (`language_encoder.*`). Both are post-LN encoders with GELU; they differ only in where
//! positions start.
//!
//! The name table, Hugging Face → umdflow (`{P}` is `roberta.` / `bert.` in a checkpoint with a
//! head and empty in a bare model; `L` is the data's `max_len`):
//!
//! | `{P}embeddings.word_embeddings.weight` [V, w] | `word_embeddings.weight` |
//! | `{P}embeddings.position_embeddings.weight` [N, w] and `{P}embeddings.token_type_embeddings.weight` [T, w] | `position_embeddings.weight` [L, w] = rows `o .. o + L` of the positions plus token type 0's row |
//! | `{P}embeddings.LayerNorm.*` | `ln_embed.*` |
//! | `{P}encoder.layer.{k}.attention.self.{query,key,value}.*` | `blocks.{k}.attn.{q,k,v}.*` |
//! | `{P}encoder.layer.{k}.attention.output.dense.*` / `.LayerNorm.*` | `blocks.{k}.attn.o.*` / `ln1.*` |
//! | `{P}encoder.layer.{k}.intermediate.dense.*` | `blocks.{k}.mlp.fc1.*` |
//! | `{P}encoder.layer.{k}.output.dense.*` / `.LayerNorm.*` | `blocks.{k}.mlp.fc2.*` / `ln2.*` |
//!
//! (`LayerNorm.gamma`/`beta`, the spelling of older BERT checkpoints, are read as `weight`/`bias`.)
//!
//! Positions: BERT's position ids are `0, 1, 2, …` (o = 0). RoBERTa numbers real tokens from
//! `padding_idx + 1` (o = `pad_token_id + 1`, 2 in `roberta-base`) and gives padding the row
//! `padding_idx`; umdflow pads on the right and masks padding as keys, so real tokens see exactly
//! RoBERTa's positions and only the (never read) outputs at padding differ. Token types: umdflow
//! always feeds one segment, type 0, so its row is added into every position row, which gives the
//! same sums as the separate table.
//!
//! Known and not used: `{P}pooler.*` (M3AE pools through its own fusion poolers), the buffers
//! `{P}embeddings.position_ids` / `token_type_ids`, and beside `{P}` the pre-training heads
//! (`lm_head.*`, `cls.*`; umdflow's MLM head is its own).

use std::path::Path;

use candle_core::Device;

use super::hf_config::HfConfig;
use super::tensors::{BlockNames, CheckpointTensors, Mapped};
use super::{CONFIG_FILE, EncoderInit, EncoderSizes, EncoderSlot, WEIGHTS_FILE};
use crate::error::{ModelError, Result};

/// The encoder families read, with transformers' config defaults and their checkpoint prefix.
struct Family {
    prefix: &'static str,
    layout: &'static str,
    vocab_size: usize,
    max_positions: usize,
    type_vocab_size: usize,
    pad_token_id: usize,
    /// Whether position ids start after the padding index (RoBERTa) or at 0 (BERT).
    positions_after_padding: bool,
}

const BERT: Family = Family {
    prefix: "bert.",
    layout: "BERT",
    vocab_size: 30522,
    max_positions: 512,
    type_vocab_size: 2,
    pad_token_id: 0,
    positions_after_padding: false,
};

const ROBERTA: Family = Family {
    prefix: "roberta.",
    layout: "RoBERTa",
    vocab_size: 50265,
    max_positions: 514,
    type_vocab_size: 1,
    pad_token_id: 1,
    positions_after_padding: true,
};

/// `BertLayer`'s parts (post-LN: `attention.output.LayerNorm` after the attention's residual).
const BERT_BLOCK: BlockNames = BlockNames {
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    o: "attention.output.dense",
    fc1: "intermediate.dense",
    fc2: "output.dense",
    ln1: "attention.output.LayerNorm",
    ln2: "output.LayerNorm",
};

/// Reads a BERT or RoBERTa encoder from `dir` for texts of `max_len` tokens.
pub fn load_text_encoder(dir: &Path, max_len: usize, device: &Device) -> Result<EncoderInit> {
    let config = HfConfig::read(&dir.join(CONFIG_FILE))?;
    let model_type = config.text("model_type", "")?;
    let family = match model_type.as_str() {
        "bert" => &BERT,
        "roberta" => &ROBERTA,
        other => {
            return Err(ModelError::File {
                path: config.path().display().to_string(),
                message: format!(
                    "model_type `{other}`: the text encoder reads `bert` or `roberta`"
                ),
            });
        }
    };
    // BertConfig's defaults (RobertaConfig's differ in vocabulary, positions, types and padding).
    let width = config.count("hidden_size", 768)?;
    let heads = config.count("num_attention_heads", 12)?;
    let mlp = config.count("intermediate_size", 3072)?;
    let layers = config.count("num_hidden_layers", 12)?;
    let vocab = config.count("vocab_size", family.vocab_size)?;
    let max_positions = config.count("max_position_embeddings", family.max_positions)?;
    let types = config.count("type_vocab_size", family.type_vocab_size)?;
    let pad = config.index("pad_token_id", family.pad_token_id)?;
    let norm_eps = config.positive("layer_norm_eps", 1e-12)?;
    config.require("hidden_act", "gelu", &["gelu"])?;
    config.require("position_embedding_type", "absolute", &["absolute"])?;
    if !width.is_multiple_of(heads) {
        return Err(config.error("num_attention_heads", "a divisor of hidden_size"));
    }
    let first_position = if family.positions_after_padding {
        pad + 1
    } else {
        0
    };
    if first_position + max_len > max_positions {
        return Err(ModelError::Config(format!(
            "texts of {max_len} tokens need {} position rows; {} has max_position_embeddings \
             {max_positions}{}",
            first_position + max_len,
            config.path().display(),
            if first_position > 0 {
                format!(" (RoBERTa's positions start at {first_position})")
            } else {
                String::new()
            }
        )));
    }

    let mut file = CheckpointTensors::read(&dir.join(WEIGHTS_FILE), device)?;
    // A checkpoint with a head nests the encoder under the family's prefix.
    let p = if file.contains(&format!(
        "{}embeddings.word_embeddings.weight",
        family.prefix
    )) {
        family.prefix
    } else {
        ""
    };
    let mut out = Mapped::new("language_encoder.");
    let emb = format!("{p}embeddings");
    out.put(
        "word_embeddings.weight",
        file.take(
            &format!("{emb}.word_embeddings.weight"),
            &[],
            &[vocab, width],
        ),
    );
    let positions = file.take(
        &format!("{emb}.position_embeddings.weight"),
        &[],
        &[max_positions, width],
    );
    let token_types = file.take(
        &format!("{emb}.token_type_embeddings.weight"),
        &[],
        &[types, width],
    );
    if let (Some(positions), Some(token_types)) = (positions, token_types) {
        let rows = positions
            .narrow(0, first_position, max_len)?
            .broadcast_add(&token_types.get(0)?)?;
        out.put("position_embeddings.weight", Some(rows));
    }
    out.norm(&mut file, &format!("{emb}.LayerNorm"), "ln_embed", width);
    for k in 0..layers {
        let hf = format!("{p}encoder.layer.{k}");
        out.block(
            &mut file,
            (&hf, &format!("blocks.{k}")),
            &BERT_BLOCK,
            width,
            mlp,
        );
    }
    file.ignore(|name| {
        name == format!("{emb}.position_ids")
            || name == format!("{emb}.token_type_ids")
            || name.starts_with(&format!("{p}pooler."))
            || (!p.is_empty() && (name.starts_with("lm_head.") || name.starts_with("cls.")))
    });
    file.finish(family.layout)?;
    Ok(EncoderInit {
        source: dir.display().to_string(),
        slot: EncoderSlot::Text { vocab_size: vocab },
        sizes: EncoderSizes {
            width,
            layers,
            heads,
            mlp,
            norm_eps,
        },
        tensors: out.tensors,
    })
}
