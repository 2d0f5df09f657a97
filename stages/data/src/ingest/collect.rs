//! What every source produces before tokenization: images at the output size, texts, labels,
//! splits and questions with their vocabularies resolved to indices.

use std::collections::BTreeSet;

use crate::artifact::RetrievalEntry;

#[derive(Debug, Clone, PartialEq)]
pub struct CollectedQuestion {
    pub image: u32,
    pub text: String,
    pub answer: u32,
    pub closed: bool,
    pub qtype: u8,
}

/// A source's data at the output resolution, not yet tokenized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub licence: String,
    /// [n, channels, size, size].
    pub images: Vec<f32>,
    pub channels: usize,
    pub size: usize,
    pub texts: Vec<String>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    pub split: Vec<u8>,
    pub questions: Vec<CollectedQuestion>,
    pub answers: Vec<String>,
    pub question_types: Vec<String>,
    pub retrieval: Option<Vec<RetrievalEntry>>,
    /// The finding kinds of `findings`' columns; empty when the source has no per-study findings.
    pub finding_names: Vec<String>,
    /// [n, finding_names.len()] multi-hot, for sources that know each study's findings.
    pub findings: Option<Vec<u8>>,
    /// One finding-signature hash per image, alongside `findings`.
    pub signatures: Option<Vec<u64>>,
}

impl Collected {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Maps strings to indices in sorted order (how M3AE maps label strings).
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    names: BTreeSet<String>,
}

impl Vocabulary {
    pub fn insert(&mut self, name: &str) {
        if !self.names.contains(name) {
            self.names.insert(name.to_string());
        }
    }

    /// The sorted names; `index_of` refers to positions in this list.
    pub fn names(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.names.iter().position(|n| n == name).map(|p| p as u32)
    }
}
