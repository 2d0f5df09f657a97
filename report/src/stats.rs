//! Mean and Student-t confidence interval of a small sample.

use serde::Serialize;

use crate::student_t::t_quantile;

/// Confidence level of every interval in a report.
pub const CONFIDENCE: f64 = 0.95;

/// A sample's mean with its two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Number of values the estimate is computed from.
    pub n: usize,
    pub mean: f64,
    /// `None` when `n == 1`: one value has no spread to estimate.
    pub interval: Option<Interval>,
}

/// `mean ± half_width`, with `low = mean - half_width` and `high = mean + half_width`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub half_width: f64,
}

impl Estimate {
    /// Mean and t interval of `values` (sample standard deviation, `n - 1` degrees of freedom);
    /// `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Estimate> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let interval = (n >= 2).then(|| {
            let df = (n - 1) as f64;
            let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / df;
            let standard_error = (variance / n as f64).sqrt();
            let half_width = t_quantile(0.5 + CONFIDENCE / 2.0, df) * standard_error;
            Interval {
                low: mean - half_width,
                high: mean + half_width,
                half_width,
            }
        });
        Some(Estimate { n, mean, interval })
    }

    /// True when the interval has width and lies entirely above or below zero (never for
    /// `n == 1`, and never for identical values: a zero-width interval is no evidence of spread).
    pub fn excludes_zero(&self) -> bool {
        self.interval.is_some_and(|interval| {
            interval.half_width > 0.0 && (interval.low > 0.0 || interval.high < 0.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-4,
            "expected {expected}, got {actual}"
        );
    }

    #[test]
    fn three_values_by_hand() {
        // mean 2, s = 1, se = 1/sqrt(3), t(0.975, 2) = 4.302653 -> half-width 2.484138.
        let estimate = Estimate::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(estimate.n, 3);
        close(estimate.mean, 2.0);
        let interval = estimate.interval.unwrap();
        close(interval.half_width, 2.484138);
        close(interval.low, 2.0 - 2.484138);
        close(interval.high, 2.0 + 2.484138);
        assert!(!estimate.excludes_zero());
    }

    #[test]
    fn five_values_by_hand() {
        // mean 0.8, s^2 = 0.001/4 = 0.00025, se = sqrt(0.00005) = 0.0070711,
        // t(0.975, 4) = 2.776445 -> half-width 0.019632.
        let estimate = Estimate::of(&[0.79, 0.80, 0.81, 0.78, 0.82]).unwrap();
        close(estimate.mean, 0.8);
        close(estimate.interval.unwrap().half_width, 0.019632);
        assert!(estimate.excludes_zero());
    }

    #[test]
    fn one_value_has_no_interval_and_none_has_no_estimate() {
        let estimate = Estimate::of(&[0.5]).unwrap();
        assert_eq!(estimate.n, 1);
        assert_eq!(estimate.mean, 0.5);
        assert_eq!(estimate.interval, None);
        assert!(!estimate.excludes_zero());
        assert_eq!(Estimate::of(&[]), None);
    }

    #[test]
    fn equal_values_give_a_zero_width_interval_that_is_never_significant() {
        let estimate = Estimate::of(&[-0.25, -0.25]).unwrap();
        assert_eq!(estimate.interval.unwrap().half_width, 0.0);
        assert!(!estimate.excludes_zero());
        // The smallest spread makes it an ordinary interval again.
        assert!(Estimate::of(&[-0.25, -0.2500001]).unwrap().excludes_zero());
    }
}
