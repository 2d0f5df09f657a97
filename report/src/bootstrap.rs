//! Paired bootstrap over test items within one seed: how sure is "arm A beats the baseline" on
//! THIS test set, beside the Student-t interval over seeds (which measures training noise).
//!
//! Both arms' per-item outcomes (e.g. 1/0 for a correct answer) are resampled with the same item
//! indices, so the interval is of the mean paired difference. Seeded: the same outcomes give the
//! same interval in every run.

use serde::Serialize;

use crate::stats::CONFIDENCE;

/// Resamples drawn for every interval.
pub const RESAMPLES: usize = 2000;
/// The fixed seed of the resampling (a report must be reproducible).
pub const SEED: u64 = 0x5EED_B007;

/// Mean paired difference (row − baseline) over the items of one seed, with its percentile
/// interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedBootstrap {
    pub seed: String,
    pub items: usize,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    /// The interval lies entirely above or below zero and has width (a zero-width interval means
    /// the arms agree on every item, which is no evidence of a difference).
    pub excludes_zero: bool,
}

/// SplitMix64: the whole randomness of the resampling (a dependency-free generator, so this
/// crate stays independent of the stages).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1), by rejection so that no index is favoured.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }
}

/// The paired bootstrap of `row − baseline` item by item; `None` unless both have the same
/// non-zero number of items.
pub fn paired_bootstrap(
    seed: &str,
    row: &[f64],
    baseline: &[f64],
    resamples: usize,
) -> Option<PairedBootstrap> {
    let n = row.len();
    if n == 0 || baseline.len() != n || resamples == 0 {
        return None;
    }
    let differences: Vec<f64> = row.iter().zip(baseline).map(|(a, b)| a - b).collect();
    let mean = differences.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64(SEED);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| differences[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    let at = |q: f64| means[((q * resamples as f64).floor() as usize).min(resamples - 1)];
    let (low, high) = (at(tail), at(1.0 - tail));
    Some(PairedBootstrap {
        seed: seed.to_string(),
        items: n,
        mean,
        low,
        high,
        excludes_zero: high > low && (low > 0.0 || high < 0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_outcomes_are_never_significant() {
        let a = [1.0, 0.0, 1.0, 1.0];
        let b = paired_bootstrap("0", &a, &a, RESAMPLES).unwrap();
        assert_eq!((b.mean, b.low, b.high), (0.0, 0.0, 0.0));
        assert!(!b.excludes_zero);
        // A constant non-zero difference has a zero-width interval too: no evidence of spread.
        let c = paired_bootstrap("0", &[1.0; 4], &[0.0; 4], RESAMPLES).unwrap();
        assert_eq!((c.low, c.high), (1.0, 1.0));
        assert!(!c.excludes_zero);
    }

    #[test]
    fn a_clear_paired_gain_is_significant_and_a_coin_flip_is_not() {
        // Row right on 180 of 200 items, baseline on 100 (the same 100 plus none): +0.4.
        let row: Vec<f64> = (0..200).map(|i| f64::from(i < 180)).collect();
        let base: Vec<f64> = (0..200).map(|i| f64::from(i < 100)).collect();
        let b = paired_bootstrap("1", &row, &base, RESAMPLES).unwrap();
        assert!((b.mean - 0.4).abs() < 1e-12);
        assert!(b.low > 0.3 && b.high < 0.5 && b.excludes_zero, "{b:?}");
        // Arms that differ on as many items each way: mean 0, the interval straddles it.
        let row: Vec<f64> = (0..200).map(|i| f64::from(i % 2 == 0)).collect();
        let base: Vec<f64> = (0..200).map(|i| f64::from(i % 2 == 1)).collect();
        let b = paired_bootstrap("1", &row, &base, RESAMPLES).unwrap();
        assert!(b.low < 0.0 && b.high > 0.0 && !b.excludes_zero, "{b:?}");
    }

    #[test]
    fn the_interval_is_reproducible_and_needs_paired_items() {
        let row: Vec<f64> = (0..50).map(|i| f64::from(i % 3 == 0)).collect();
        let base: Vec<f64> = (0..50).map(|i| f64::from(i % 5 == 0)).collect();
        assert_eq!(
            paired_bootstrap("s", &row, &base, 500),
            paired_bootstrap("s", &row, &base, 500)
        );
        assert_eq!(paired_bootstrap("s", &row, &base[..49], 500), None);
        assert_eq!(paired_bootstrap("s", &[], &[], 500), None);
    }
}
