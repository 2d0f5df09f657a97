//! Words for the probe's head measures: which tokens of a report are *finding words* (the words
//! SynthRad's reports use to name a finding, in both dialects) and the zero-shot prompt that
//! names a class in the style of the reports.
//!
//! A word may span several tokens, and the tokenizer's scheme says how they join
//! ([`PieceScheme`]): WordPiece rows mark continuations (`nod`, `##ules`), byte-level BPE rows
//! (RoBERTa's) mark word starts after a space (`Ġpne`, `umothorax`). Every token of a finding
//! word is a finding token; words are matched in lower case (RoBERTa keeps `Pleural`).

use std::collections::BTreeSet;

use umdflow_data::artifact::Dataset;
use umdflow_data::synthrad::report::finding_noun;
use umdflow_data::synthrad::study::FindingKind;
use umdflow_data::tokenizer::{PieceScheme, TextTokenizer};

use crate::error::{Result, TuneError};

/// WordPiece marks a piece that continues the previous one with this prefix.
const CONTINUATION: &str = "##";

/// Byte-level BPE's stand-in for a space byte: a piece that follows a space starts with it.
const BYTE_LEVEL_SPACE: char = 'Ġ';

/// Every word of every finding noun SynthRad writes (IU-like and MIMIC-like dialects), lower
/// case, plus "nodules" (several nodules are written in the plural).
pub fn finding_words() -> BTreeSet<String> {
    let mut words: BTreeSet<String> = FindingKind::ALL
        .iter()
        .flat_map(|&kind| [finding_noun(kind, false), finding_noun(kind, true)])
        .flat_map(str::split_whitespace)
        .map(str::to_lowercase)
        .collect();
    words.insert("nodules".into());
    words
}

/// Every token id of a tokenizer as stored (`##ules`, `Ġeffusion`, to join pieces into words)
/// and as decoded (to name a token in a report), with the tokenizer's scheme.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    scheme: PieceScheme,
    stored: Vec<String>,
    decoded: Vec<String>,
}

impl Vocabulary {
    /// Reads every id of `tokenizer` (ids `0..vocab_size`). A tokenizer whose pieces umdflow
    /// cannot join into words (neither WordPiece nor byte-level BPE) is an error.
    pub fn of(tokenizer: &TextTokenizer) -> Result<Self> {
        let scheme = tokenizer.piece_scheme().ok_or_else(|| {
            TuneError::invalid(
                "the ingest's tokenizer is neither WordPiece nor byte-level BPE; the probe's MLM \
                 measure cannot tell its finding words",
            )
        })?;
        let ids = 0..tokenizer.vocab_size() as u32;
        let stored = ids
            .clone()
            .map(|id| tokenizer.piece(id).unwrap_or_default())
            .collect();
        let decoded = ids
            .map(|id| tokenizer.decode(&[id]))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Vocabulary {
            scheme,
            stored,
            decoded,
        })
    }

    /// A vocabulary from its stored pieces in id order (tests); they also name the tokens.
    pub fn from_pieces(scheme: PieceScheme, pieces: Vec<String>) -> Self {
        Vocabulary {
            scheme,
            decoded: pieces.clone(),
            stored: pieces,
        }
    }

    /// The token's text as decoded alone (`""` for an id outside the vocabulary).
    pub fn piece(&self, id: u32) -> &str {
        self.decoded.get(id as usize).map_or("", String::as_str)
    }

    fn stored(&self, id: u32) -> &str {
        self.stored.get(id as usize).map_or("", String::as_str)
    }

    /// Whether token `id` continues the word of the token `previous` just before it.
    pub fn continues(&self, previous: u32, id: u32) -> bool {
        let piece = self.stored(id);
        match self.scheme {
            PieceScheme::WordPiece => piece.starts_with(CONTINUATION),
            PieceScheme::ByteLevelBpe => {
                // Not after a space, and of the same class as the end of the previous piece:
                // the pre-tokenizer cuts letters, digits and other characters apart, so `.`
                // after `effusion` or `7` after `x` starts anew.
                let class = |c: char| {
                    if c.is_alphabetic() {
                        1
                    } else if c.is_numeric() {
                        2
                    } else {
                        0
                    }
                };
                let previous = self.stored(previous);
                let body = previous.strip_prefix(BYTE_LEVEL_SPACE).unwrap_or(previous);
                match (piece.chars().next(), body.chars().last()) {
                    (None | Some(BYTE_LEVEL_SPACE), _) => false,
                    // A bare `Ġ` piece: the word that follows the space starts there (`Ġ`,
                    // `r`, `i`, `b`).
                    (Some(start), None) => !previous.is_empty() && class(start) != 0,
                    (Some(start), Some(end)) => class(end) != 0 && class(end) == class(start),
                }
            }
        }
    }

    /// The token's share of its word's text: without `##` or the leading `Ġ`.
    fn word_part(&self, id: u32) -> &str {
        let piece = self.stored(id);
        match self.scheme {
            PieceScheme::WordPiece => piece.strip_prefix(CONTINUATION).unwrap_or(piece),
            PieceScheme::ByteLevelBpe => piece.strip_prefix(BYTE_LEVEL_SPACE).unwrap_or(piece),
        }
    }
}

/// For each position of one text row (`ids`, `attention`), whether its token belongs to a word
/// in `words`. Padding and the special tokens (`[CLS]`/`[SEP]`, `<s>`/`</s>`) are never marked
/// and never part of a word.
pub fn finding_token_mask(
    ids: &[u32],
    attention: &[u8],
    vocab: &Vocabulary,
    words: &BTreeSet<String>,
    special: &[u32],
) -> Vec<bool> {
    let real = |k: usize| attention.get(k).is_some_and(|&m| m != 0) && !special.contains(&ids[k]);
    let mut mask = vec![false; ids.len()];
    let mut start = 0;
    while start < ids.len() {
        let mut end = start + 1;
        if real(start) {
            // A word: a start token and the tokens that continue it.
            while end < ids.len() && real(end) && vocab.continues(ids[end - 1], ids[end]) {
                end += 1;
            }
            let word: String = ids[start..end]
                .iter()
                .map(|&id| vocab.word_part(id))
                .collect::<String>()
                .to_lowercase();
            if words.contains(&word) {
                mask[start..end].iter_mut().for_each(|m| *m = true);
            }
        }
        start = end;
    }
    mask
}

/// [`finding_token_mask`] for every row of `data`, with its special ids.
pub fn finding_masks(
    data: &Dataset,
    vocab: &Vocabulary,
    words: &BTreeSet<String>,
) -> Vec<Vec<bool>> {
    let t = data.max_len;
    let special = [data.meta.cls_id, data.meta.sep_id, data.meta.pad_id];
    (0..data.n)
        .map(|i| {
            finding_token_mask(
                data.text_ids(i),
                &data.attention_mask[i * t..(i + 1) * t],
                vocab,
                words,
                &special,
            )
        })
        .collect()
}

/// The zero-shot prompt of a class, written as the IU-like (source-domain) reports write it:
/// the normal class as a normal report's findings and impression, a SynthRad finding with its
/// report noun, any other class name as is.
pub fn zero_shot_prompt(class: &str) -> String {
    if class == "normal" {
        return "FINDINGS: The lungs are clear. IMPRESSION: No acute cardiopulmonary abnormality."
            .into();
    }
    let noun = FindingKind::ALL
        .iter()
        .find(|k| k.name() == class)
        .map_or(class, |&k| finding_noun(k, false));
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    let mut impression = noun.to_string();
    if let Some(first) = impression.get(..1) {
        impression.replace_range(..1, &first.to_uppercase());
    }
    format!("FINDINGS: There is {article} {noun}. IMPRESSION: {impression}.")
}

/// A class prompt as one text row: ids and attention values of the data's row length.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
}

/// Each class's prompt as one row of `max_len` ids and attention values. A prompt that does not
/// fit is an error naming the class (a cut prompt would no longer name it).
pub fn prompt_rows(
    tokenizer: &TextTokenizer,
    classes: &[String],
    max_len: usize,
) -> Result<Vec<Prompt>> {
    classes
        .iter()
        .map(|class| {
            let prompt = zero_shot_prompt(class);
            let tokens = tokenizer.tokens(&prompt)?.len();
            if tokens + 2 > max_len {
                return Err(TuneError::invalid(format!(
                    "the zero-shot prompt of class `{class}` (\"{prompt}\") has {tokens} tokens; \
                     rows of the downstream ingest hold {} (max_len {max_len})",
                    max_len.saturating_sub(2)
                )));
            }
            let (mut ids, mut mask) = (Vec::new(), Vec::new());
            tokenizer.encode_row(&prompt, max_len, &mut ids, &mut mask)?;
            Ok(Prompt {
                text: prompt,
                ids,
                mask,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_words_are_the_report_nouns() {
        let words = finding_words();
        for w in [
            "pneumothorax",
            "pleural",
            "effusion",
            "fluid",
            "nodules",
            "rib",
        ] {
            assert!(words.contains(w), "{w}");
        }
        for w in ["no", "heart", "lungs", "clear", "right", "small"] {
            assert!(!words.contains(w), "{w}");
        }
    }

    #[test]
    fn word_pieces_are_joined_before_matching() {
        // ids: 0 [PAD], 1 [CLS], 2 [SEP], 3 "no", 4 "nod", 5 "##ules", 6 "pleural", 7 "##ly",
        // 8 "effusion".
        let vocab = Vocabulary::from_pieces(
            PieceScheme::WordPiece,
            [
                "[PAD]", "[CLS]", "[SEP]", "no", "nod", "##ules", "pleural", "##ly", "effusion",
            ]
            .map(String::from)
            .to_vec(),
        );
        let words = finding_words();
        // [CLS] no nod##ules pleural##ly effusion [SEP] [PAD]
        let ids = [1, 3, 4, 5, 6, 7, 8, 2, 0];
        let attention = [1, 1, 1, 1, 1, 1, 1, 1, 0];
        let mask = finding_token_mask(&ids, &attention, &vocab, &words, &[1, 2, 0]);
        // "nodules" is a finding word (both pieces); "pleurally" is not; "effusion" is.
        assert_eq!(
            mask,
            [false, false, true, true, false, false, true, false, false]
        );
    }

    #[test]
    fn byte_level_bpe_pieces_are_joined_at_their_word_starts() {
        // The RoBERTa fixture's byte-level BPE (400 tokens, trained on a few report sentences)
        // cuts most words: `P` `leural`, `Ġno` `du` `le` `s`, `Ġ` `r` `i` `b`.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../model/tests/fixtures/hf/roberta/tokenizer.json");
        let tokenizer = TextTokenizer::load(&path).unwrap();
        assert_eq!(tokenizer.piece_scheme(), Some(PieceScheme::ByteLevelBpe));
        let vocab = Vocabulary::of(&tokenizer).unwrap();
        let text = "Pleural effusion and pneumothorax; no pneumonia. Multiple pulmonary nodules, \
                    a rib fracture.";
        let (mut ids, mut attention) = (Vec::new(), Vec::new());
        tokenizer
            .encode_row(text, 48, &mut ids, &mut attention)
            .unwrap();
        let sp = tokenizer.special();
        let mask = finding_token_mask(
            &ids,
            &attention,
            &vocab,
            &finding_words(),
            &[sp.cls, sp.sep, sp.pad],
        );
        let pick = |marked: bool| -> Vec<u32> {
            ids.iter()
                .zip(&mask)
                .zip(&attention)
                .filter(|((_, m), a)| **m == marked && **a != 0)
                .map(|((&id, _), _)| id)
                .collect()
        };
        assert_eq!(
            tokenizer.decode(&pick(true)).unwrap(),
            "Pleural effusion pneumothorax pulmonary nodules rib fracture"
        );
        // `no` is a piece of `nodules` but not a finding word; `pneumonia` is not one either.
        assert_eq!(
            tokenizer.decode(&pick(false)).unwrap(),
            " and; no pneumonia. Multiple, a."
        );
    }

    #[test]
    fn prompts_name_the_class_in_report_words() {
        assert_eq!(
            zero_shot_prompt("effusion"),
            "FINDINGS: There is a pleural effusion. IMPRESSION: Pleural effusion."
        );
        assert_eq!(
            zero_shot_prompt("opacity"),
            "FINDINGS: There is an opacity. IMPRESSION: Opacity."
        );
        assert!(zero_shot_prompt("normal").contains("clear"));
        assert_eq!(
            zero_shot_prompt("left"),
            "FINDINGS: There is a left. IMPRESSION: Left."
        );
    }
}
