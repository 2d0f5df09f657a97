//! The WordPiece tokenizer of an artifact: trained deterministically on the pre-training
//! corpus, saved as HuggingFace `tokenizer.json` (so Python's `tokenizers` loads it as is), and
//! used to turn texts into fixed-length `[CLS] ... [SEP] [PAD]...` id rows.

use std::path::Path;

use std::collections::{BTreeMap, BTreeSet};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::ModelWrapper;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

use crate::error::DataError;

/// Special tokens in id order: [PAD] = 0, [UNK] = 1, [CLS] = 2, [SEP] = 3, [MASK] = 4.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// RoBERTa's names for the same roles (pad, unk, cls, sep, mask), as in `roberta-base`'s
/// byte-level BPE `tokenizer.json`.
pub const ROBERTA_SPECIAL_TOKENS: [&str; 5] = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"];

/// The ids of the special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// How a tokenizer cuts words into pieces, which decides how its pieces join back into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceScheme {
    /// WordPiece (umdflow's and BERT's): a piece that continues a word starts with `##`.
    WordPiece,
    /// Byte-level BPE (RoBERTa's): a piece that follows a space starts with `Ġ` (the byte-level
    /// alphabet's space); no piece crosses the pre-tokenizer's split between letters, digits and
    /// other characters.
    ByteLevelBpe,
}

#[derive(Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    special: SpecialIds,
}

fn tokenizer_error(context: &str) -> impl FnOnce(tokenizers::Error) -> DataError + '_ {
    move |err| DataError::Invalid(format!("{context}: {err}"))
}

impl TextTokenizer {
    /// Trains a WordPiece vocabulary of at most `vocab_size` entries (special tokens included)
    /// on `texts`. The same texts give the same vocabulary, ids included (see
    /// [`train_wordpiece_vocab`] for why umdflow trains the vocabulary itself).
    pub fn train(texts: &[String], vocab_size: usize) -> Result<TextTokenizer, DataError> {
        if vocab_size < SPECIAL_TOKENS.len() + 30 {
            return Err(DataError::Invalid(format!(
                "vocab_size must be at least {}, got {vocab_size}",
                SPECIAL_TOKENS.len() + 30
            )));
        }
        let normalizer = bert_normalizer();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for text in texts {
            for word in pre_tokenize(&normalizer, text)? {
                *counts.entry(word).or_insert(0) += 1;
            }
        }
        let tokens = train_wordpiece_vocab(&counts, vocab_size, MIN_FREQUENCY);
        let vocab: ahash::AHashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .map_err(tokenizer_error("building the WordPiece model"))?;
        let mut tokenizer = Tokenizer::new(model);
        // Since tokenizers 0.23 these two return an error when normalising the added tokens fails.
        tokenizer
            .with_normalizer(Some(normalizer))
            .map_err(tokenizer_error("setting the normaliser"))?;
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        tokenizer.with_decoder(Some(WordPieceDecoder::default()));
        tokenizer
            .add_special_tokens(SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)))
            .map_err(tokenizer_error("adding the special tokens"))?;
        let special = special_ids(&tokenizer)
            .ok_or_else(|| DataError::Invalid("trained tokenizer lacks a special token".into()))?;
        tokenizer.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), special.sep),
            ("[CLS]".into(), special.cls),
        )));
        Ok(TextTokenizer {
            inner: tokenizer,
            special,
        })
    }

    /// Loads a `tokenizer.json` (umdflow's WordPiece, BERT's WordPiece or RoBERTa's byte-level
    /// BPE) and checks it has the five special tokens, under BERT's or RoBERTa's names.
    pub fn load(path: &Path) -> Result<TextTokenizer, DataError> {
        if !path.is_file() {
            return Err(DataError::format(
                path,
                "no such tokenizer file (name the tokenizer.json file itself)",
            ));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|err| DataError::format(path, format!("not a tokenizer.json: {err}")))?;
        let special = special_ids(&inner).ok_or_else(|| {
            DataError::format(
                path,
                format!(
                    "the tokenizer must have the special tokens {SPECIAL_TOKENS:?} or \
                     {ROBERTA_SPECIAL_TOKENS:?}"
                ),
            )
        })?;
        Ok(TextTokenizer { inner, special })
    }

    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        self.inner
            .save(path, true)
            .map_err(|err| DataError::format(path, format!("writing the tokenizer: {err}")))
    }

    pub fn special(&self) -> SpecialIds {
        self.special
    }

    /// Every token with its id, special tokens included.
    pub fn vocab(&self) -> std::collections::HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    /// The vocabulary entry of `id` as the tokenizer stores it (`##ules`, `Ġeffusion`), or None
    /// outside the vocabulary.
    pub fn piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// How the pieces join into words: WordPiece, or byte-level BPE (a BPE model with the
    /// byte-level pre-tokenizer). None for any other tokenizer (SentencePiece's `▁`, a plain
    /// BPE, a unigram model), whose words umdflow does not reassemble.
    pub fn piece_scheme(&self) -> Option<PieceScheme> {
        match (self.inner.get_model(), self.inner.get_pre_tokenizer()) {
            (ModelWrapper::WordPiece(_), _) => Some(PieceScheme::WordPiece),
            (ModelWrapper::BPE(_), Some(PreTokenizerWrapper::ByteLevel(_))) => {
                Some(PieceScheme::ByteLevelBpe)
            }
            _ => None,
        }
    }

    /// Size of the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Appends one row of `max_len` ids and mask values for `text`: `[CLS]`, the text's
    /// tokens (cut to fit), `[SEP]`, then `[PAD]` with mask 0.
    pub fn encode_row(
        &self,
        text: &str,
        max_len: usize,
        ids: &mut Vec<u32>,
        mask: &mut Vec<u8>,
    ) -> Result<(), DataError> {
        if max_len < 2 {
            return Err(DataError::Invalid(format!(
                "max_len must be at least 2, got {max_len}"
            )));
        }
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(tokenizer_error("tokenizing a text"))?;
        let body = &encoding.get_ids()[..encoding.get_ids().len().min(max_len - 2)];
        ids.push(self.special.cls);
        ids.extend_from_slice(body);
        ids.push(self.special.sep);
        let used = body.len() + 2;
        ids.extend(std::iter::repeat_n(self.special.pad, max_len - used));
        mask.extend(std::iter::repeat_n(1, used));
        mask.extend(std::iter::repeat_n(0, max_len - used));
        Ok(())
    }

    /// The text of `ids`, special tokens dropped and word pieces joined.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.inner
            .decode(ids, true)
            .map_err(tokenizer_error("decoding token ids"))
    }

    /// The tokens of `text` (no special tokens), for tests and previews.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>, DataError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tokenizer_error("tokenizing a text"))?
            .get_tokens()
            .to_vec())
    }
}

/// Pieces seen fewer times than this are not merged.
const MIN_FREQUENCY: u64 = 2;
const CONTINUATION: &str = "##";

/// BERT's normalizer: clean text, strip accents, lower-case.
fn bert_normalizer() -> BertNormalizer {
    BertNormalizer::new(true, false, Some(true), true)
}

/// The words of `text` as the tokenizer will see them (normalised, split on whitespace and
/// punctuation), so that training and encoding agree.
fn pre_tokenize(normalizer: &BertNormalizer, text: &str) -> Result<Vec<String>, DataError> {
    let mut normalized = NormalizedString::from(text);
    normalizer
        .normalize(&mut normalized)
        .map_err(tokenizer_error("normalising a text"))?;
    let mut pre = PreTokenizedString::from(normalized);
    BertPreTokenizer
        .pre_tokenize(&mut pre)
        .map_err(tokenizer_error("splitting a text into words"))?;
    Ok(pre
        .get_splits(OffsetReferential::Normalized, OffsetType::None)
        .into_iter()
        .map(|(word, _, _)| word.to_string())
        .collect())
}

/// WordPiece vocabulary training, done here rather than with `tokenizers`' trainer because that
/// trainer iterates hash maps with random state: two runs on the same corpus gave different
/// vocabularies and ids. This is the same algorithm (BPE merges over words split into a first
/// character and `##`-continued characters, most frequent pair first) with ties broken by the
/// merged string, over ordered maps. Returns the tokens in id order: the special tokens, the
/// alphabet (sorted), then merges in the order they were made.
pub fn train_wordpiece_vocab(
    counts: &BTreeMap<String, u64>,
    vocab_size: usize,
    min_frequency: u64,
) -> Vec<String> {
    let mut words: Vec<(Vec<String>, u64)> = counts
        .iter()
        .map(|(word, &count)| {
            let symbols = word
                .chars()
                .enumerate()
                .map(|(k, c)| {
                    if k == 0 {
                        c.to_string()
                    } else {
                        format!("{CONTINUATION}{c}")
                    }
                })
                .collect();
            (symbols, count)
        })
        .collect();
    let alphabet: BTreeSet<String> = words
        .iter()
        .flat_map(|(symbols, _)| symbols.iter().cloned())
        .collect();
    let mut tokens: Vec<String> = SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect();
    tokens.extend(
        alphabet
            .into_iter()
            .filter(|t| !SPECIAL_TOKENS.contains(&t.as_str())),
    );
    let mut known: BTreeSet<String> = tokens.iter().cloned().collect();
    while tokens.len() < vocab_size {
        let mut pairs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (symbols, count) in &words {
            for pair in symbols.windows(2) {
                *pairs
                    .entry((pair[0].as_str(), pair[1].as_str()))
                    .or_insert(0) += count;
            }
        }
        let merged = |a: &str, b: &str| format!("{a}{}", b.trim_start_matches(CONTINUATION));
        let best = pairs
            .iter()
            .filter(|(_, count)| **count >= min_frequency)
            .max_by(|(pa, ca), (pb, cb)| {
                ca.cmp(cb)
                    .then_with(|| merged(pb.0, pb.1).cmp(&merged(pa.0, pa.1)))
            })
            .map(|((a, b), _)| (a.to_string(), b.to_string()));
        let Some((a, b)) = best else { break };
        let new = merged(&a, &b);
        for (symbols, _) in &mut words {
            let mut k = 0;
            while k + 1 < symbols.len() {
                if symbols[k] == a && symbols[k + 1] == b {
                    symbols[k] = new.clone();
                    symbols.remove(k + 1);
                }
                k += 1;
            }
        }
        if known.insert(new.clone()) {
            tokens.push(new);
        }
    }
    tokens
}

/// The special ids under BERT's names, else under RoBERTa's.
fn special_ids(tokenizer: &Tokenizer) -> Option<SpecialIds> {
    let ids = |[pad, unk, cls, sep, mask]: [&str; 5]| {
        let id = |token: &str| tokenizer.token_to_id(token);
        Some(SpecialIds {
            pad: id(pad)?,
            unk: id(unk)?,
            cls: id(cls)?,
            sep: id(sep)?,
            mask: id(mask)?,
        })
    };
    ids(SPECIAL_TOKENS).or_else(|| ids(ROBERTA_SPECIAL_TOKENS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let lines = [
            "The heart is normal in size. The lungs are clear.",
            "There is a small right pleural effusion. No pneumothorax.",
            "Moderate left pleural effusion with adjacent atelectasis.",
            "Heart size is normal. No pleural effusion or pneumothorax is seen.",
            "There is a large right pneumothorax. Right chest tube in place.",
        ];
        lines
            .iter()
            .cycle()
            .take(60)
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn training_is_deterministic_and_has_the_special_ids() {
        let a = TextTokenizer::train(&corpus(), 120).unwrap();
        let b = TextTokenizer::train(&corpus(), 120).unwrap();
        assert_eq!(
            a.special(),
            SpecialIds {
                pad: 0,
                unk: 1,
                cls: 2,
                sep: 3,
                mask: 4
            }
        );
        let dir = tempfile::tempdir().unwrap();
        a.save(&dir.path().join("a.json")).unwrap();
        b.save(&dir.path().join("b.json")).unwrap();
        let (ja, jb) = (
            std::fs::read(dir.path().join("a.json")).unwrap(),
            std::fs::read(dir.path().join("b.json")).unwrap(),
        );
        assert_eq!(ja, jb);
        assert!(
            a.vocab_size() <= 120 && a.vocab_size() > 40,
            "{}",
            a.vocab_size()
        );
    }

    #[test]
    fn rows_are_framed_padded_and_cut() {
        let tokenizer = TextTokenizer::train(&corpus(), 150).unwrap();
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        tokenizer
            .encode_row("The lungs are clear.", 12, &mut ids, &mut mask)
            .unwrap();
        let tokens = tokenizer.tokens("The lungs are clear.").unwrap();
        assert_eq!(tokens.first().map(String::as_str), Some("the"));
        let used = tokens.len() + 2;
        assert_eq!(ids.len(), 12);
        assert_eq!((ids[0], ids[used - 1], ids[11]), (2, 3, 0));
        assert_eq!(mask.iter().map(|&m| m as usize).sum::<usize>(), used);
        ids.clear();
        mask.clear();
        tokenizer
            .encode_row(&corpus()[1].repeat(5), 8, &mut ids, &mut mask)
            .unwrap();
        assert_eq!((ids[0], ids[7]), (2, 3));
        assert!(mask.iter().all(|&m| m == 1));
    }

    /// `tokenizer.json` files written by Python's `tokenizers` (RoBERTa's byte-level BPE, BERT's
    /// WordPiece) give the ids Python gave for the same sentences
    /// (`scripts/make-hf-fixtures.py`).
    #[test]
    fn hugging_face_tokenizers_give_the_python_ids() {
        for (name, cls) in [("roberta", 0), ("bert", 2)] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../model/tests/fixtures/hf")
                .join(name);
            let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json")).unwrap();
            assert_eq!(tokenizer.special().cls, cls, "{name}");
            let expected: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("tokenization.json")).unwrap())
                    .unwrap();
            let sentences = expected["sentences"].as_array().unwrap();
            for (sentence, python) in sentences.iter().zip(expected["ids"].as_array().unwrap()) {
                let python: Vec<u32> = python
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| id.as_u64().unwrap() as u32)
                    .collect();
                let (mut ids, mut mask) = (Vec::new(), Vec::new());
                let max_len = python.len() + 3;
                tokenizer
                    .encode_row(sentence.as_str().unwrap(), max_len, &mut ids, &mut mask)
                    .unwrap();
                assert_eq!(ids[..python.len()], python[..], "{name}: {sentence}");
                assert!(
                    ids[python.len()..]
                        .iter()
                        .all(|&id| id == tokenizer.special().pad)
                );
                assert_eq!(mask.iter().filter(|&&m| m == 1).count(), python.len());
            }
        }
    }

    #[test]
    fn a_saved_tokenizer_loads_back_identically() {
        let tokenizer = TextTokenizer::train(&corpus(), 150).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tokenizer.save(&path).unwrap();
        let back = TextTokenizer::load(&path).unwrap();
        let (mut a, mut b, mut m) = (Vec::new(), Vec::new(), Vec::new());
        tokenizer
            .encode_row("moderate left pneumothorax", 10, &mut a, &mut m)
            .unwrap();
        back.encode_row("moderate left pneumothorax", 10, &mut b, &mut m)
            .unwrap();
        assert_eq!(a, b);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["model"]["type"], "WordPiece");
        assert_eq!(json["post_processor"]["type"], "BertProcessing");
        std::fs::write(&path, "{}").unwrap();
        assert!(
            TextTokenizer::load(&path)
                .unwrap_err()
                .to_string()
                .contains("tokenizer.json")
        );
    }
}
