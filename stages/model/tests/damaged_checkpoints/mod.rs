//! Unusable copies of a real training checkpoint, for the resume tests of every training kind
//! (`stages/tune/tests/resume.rs` includes this file by its path).

/// One unusable checkpoint: what it is, its bytes, the key to resume with, and what the stage's
/// log must say about it.
pub struct Damaged {
    pub what: &'static str,
    pub bytes: Vec<u8>,
    pub key: &'static str,
    pub why: String,
}

/// Truncated, one bit flipped, not a checkpoint, and another key's, from `good`, a checkpoint
/// written under `key`.
pub fn damaged_copies(good: &[u8], key: &'static str) -> Vec<Damaged> {
    let mut flipped = good.to_vec();
    flipped[good.len() / 2] ^= 1;
    let hash = || "hash does not match".to_string();
    vec![
        Damaged {
            what: "truncated",
            bytes: good[..good.len() / 3].to_vec(),
            key,
            why: hash(),
        },
        Damaged {
            what: "one bit flipped",
            bytes: flipped,
            key,
            why: hash(),
        },
        Damaged {
            what: "not a checkpoint",
            bytes: b"hello".to_vec(),
            key,
            why: "not an umdflow training checkpoint".to_string(),
        },
        Damaged {
            what: "another key's",
            bytes: good.to_vec(),
            key: "k-other",
            why: format!("written with key {key}"),
        },
    ]
}
