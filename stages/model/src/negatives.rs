//! Drawing negatives (ITM's mismatched images, retrieval's wrong texts) without false negatives:
//! with `signature` sampling a negative never shows the same findings as the positive (equal
//! finding signatures), so a "mismatch" label is never attached to a pair a reader could not tell
//! from a match. Data without signatures (real sources) falls back to any other item.

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// How negatives are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSampling {
    /// Among the items whose finding signature differs from the positive's (any other item when
    /// the data has no signatures).
    #[default]
    Signature,
    /// Among all other items.
    Random,
}

/// Draws are tried this many times before the eligible candidates are listed (both ways draw
/// uniformly among them).
const TRIES: usize = 32;

/// A negative for the item at position `i` among positions `0..n` (never `i`). `signature(k)`
/// gives position k's finding signature (`None`: unknown, so any other position qualifies).
/// Returns `None` when no position qualifies.
pub fn draw_negative(
    i: usize,
    n: usize,
    sampling: NegativeSampling,
    signature: impl Fn(usize) -> Option<u64>,
    rng: &mut SplitMix64,
) -> Option<usize> {
    if n < 2 {
        return None;
    }
    let own = match sampling {
        NegativeSampling::Random => None,
        NegativeSampling::Signature => signature(i),
    };
    let eligible = |k: usize| k != i && (own.is_none() || signature(k) != own);
    for _ in 0..TRIES {
        let k = (i + 1 + rng.below(n - 1)) % n;
        if eligible(k) {
            return Some(k);
        }
    }
    let candidates: Vec<usize> = (0..n).filter(|&k| eligible(k)).collect();
    (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_negative_shares_the_positive_signature() {
        // Nine of ten items share signature 7; only item 9 differs.
        let sig = |k: usize| Some(if k == 9 { 1 } else { 7 });
        let mut rng = SplitMix64::new(3);
        for i in 0..9 {
            for _ in 0..20 {
                assert_eq!(
                    draw_negative(i, 10, NegativeSampling::Signature, sig, &mut rng),
                    Some(9)
                );
            }
        }
        // Random sampling does draw same-signature items (the false negatives avoided above).
        let random: Vec<_> = (0..50)
            .map(|_| draw_negative(0, 10, NegativeSampling::Random, sig, &mut rng).unwrap())
            .collect();
        assert!(random.iter().any(|&k| k != 9) && random.iter().all(|&k| k != 0));
        // Nothing qualifies when every item has the same signature.
        let same = |_| Some(7);
        assert_eq!(
            draw_negative(0, 10, NegativeSampling::Signature, same, &mut rng),
            None
        );
        assert_eq!(
            draw_negative(0, 1, NegativeSampling::Random, same, &mut rng),
            None
        );
    }

    #[test]
    fn without_signatures_any_other_item_qualifies_and_draws_repeat() {
        let none = |_| None;
        let draw = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..30)
                .map(|i| draw_negative(i % 5, 5, NegativeSampling::Signature, none, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(4), draw(4));
        assert!(
            draw(4)
                .iter()
                .enumerate()
                .all(|(i, k)| k.is_some_and(|k| k != i % 5))
        );
        // Random sampling draws exactly what the in-batch rule drew before signatures existed.
        let mut a = SplitMix64::new(9);
        let mut b = SplitMix64::new(9);
        for i in 0..20 {
            let expected = (i % 7 + 1 + b.below(6)) % 7;
            assert_eq!(
                draw_negative(i % 7, 7, NegativeSampling::Random, none, &mut a),
                Some(expected)
            );
        }
    }
}
