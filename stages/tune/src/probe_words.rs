//! Words for the probe's head measures: which tokens of a report are *finding words* (the words
//! SynthRad's reports use to name a finding, in both dialects) and the zero-shot prompt that
//! names a class in the style of the reports.
//!
//! Reports are WordPiece rows, so a word may span several tokens (`nod`, `##ules`). A word is a
//! start token followed by its `##` continuations; every token of a finding word is a finding
//! token.

use std::collections::BTreeSet;

use umdflow_data::artifact::Dataset;
use umdflow_data::synthrad::report::finding_noun;
use umdflow_data::synthrad::study::FindingKind;
use umdflow_data::tokenizer::TextTokenizer;

use crate::error::{Result, TuneError};

/// WordPiece marks a piece that continues the previous one with this prefix.
const CONTINUATION: &str = "##";

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

/// The text of every token id of a tokenizer (`pieces[id]`), to tell word starts from `##`
/// continuations and to join pieces back into words.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pieces: Vec<String>,
}

impl Vocabulary {
    /// Reads every id of `tokenizer` (ids `0..vocab_size`).
    pub fn of(tokenizer: &TextTokenizer) -> Result<Self> {
        let pieces = (0..tokenizer.vocab_size() as u32)
            .map(|id| tokenizer.decode(&[id]))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Vocabulary { pieces })
    }

    /// A vocabulary from its pieces in id order (tests).
    pub fn from_pieces(pieces: Vec<String>) -> Self {
        Vocabulary { pieces }
    }

    /// The token's text (`""` for an id outside the vocabulary).
    pub fn piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", String::as_str)
    }

    fn continues(&self, id: u32) -> bool {
        self.piece(id).starts_with(CONTINUATION)
    }
}

/// For each position of one text row (`ids`, `attention`), whether its token belongs to a word
/// in `words`. Padding and the special tokens `[CLS]`/`[SEP]` are never marked.
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
        // A word: a start token and the continuations that follow it.
        let mut end = start + 1;
        while end < ids.len() && real(end) && vocab.continues(ids[end]) {
            end += 1;
        }
        if real(start) {
            let word: String = ids[start..end]
                .iter()
                .map(|&id| {
                    let piece = vocab.piece(id);
                    piece.strip_prefix(CONTINUATION).unwrap_or(piece)
                })
                .collect();
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
