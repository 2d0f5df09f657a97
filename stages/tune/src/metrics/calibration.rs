//! Expected calibration error with equal-width confidence bins.

use crate::error::{Result, TuneError};
use crate::metrics::same_lengths;

/// ECE = Σ_b (|b| / n) · |accuracy(b) − mean confidence(b)| over `bins` equal-width bins of
/// [0, 1]; bin b holds confidences in [b/B, (b+1)/B), the last bin also holds 1.0.
/// `None` for no samples.
pub fn expected_calibration_error(
    confidence: &[f64],
    correct: &[bool],
    bins: usize,
) -> Result<Option<f64>> {
    same_lengths("ece", &[confidence.len(), correct.len()])?;
    if bins == 0 {
        return Err(TuneError::invalid(
            "ece: the number of bins must be positive",
        ));
    }
    if let Some(c) = confidence.iter().find(|c| !(0.0..=1.0).contains(*c)) {
        return Err(TuneError::invalid(format!(
            "ece: confidence {c} is outside [0, 1]"
        )));
    }
    if confidence.is_empty() {
        return Ok(None);
    }
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0.0; bins];
    let mut hits = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf_sum[b] += c;
        hits[b] += usize::from(ok);
    }
    let n = confidence.len() as f64;
    let ece = (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let m = count[b] as f64;
            (m / n) * (hits[b] as f64 / m - conf_sum[b] / m).abs()
        })
        .sum();
    Ok(Some(ece))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_by_hand() {
        // 2 bins. Bin [0, 0.5): 0.2 (wrong), 0.4 (right): acc 0.5, conf 0.3 -> |0.2|.
        // Bin [0.5, 1]: 0.6 (right), 1.0 (right): acc 1, conf 0.8 -> |0.2|.
        // ECE = 0.5·0.2 + 0.5·0.2 = 0.2.
        let ece = expected_calibration_error(&[0.2, 0.4, 0.6, 1.0], &[false, true, true, true], 2)
            .unwrap();
        assert!((ece.unwrap() - 0.2).abs() < 1e-12);
        // Perfect calibration in one bin.
        let ece = expected_calibration_error(&[0.75; 4], &[true, true, true, false], 10).unwrap();
        assert!(ece.unwrap().abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(expected_calibration_error(&[1.5], &[true], 10).is_err());
        assert!(expected_calibration_error(&[0.5], &[true], 0).is_err());
        assert_eq!(expected_calibration_error(&[], &[], 10).unwrap(), None);
    }
}
