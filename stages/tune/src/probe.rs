//! The image-only linear probe: multinomial logistic regression on frozen image features,
//! fitted on the training split and scored on the test split ("what do these features carry?").
//! [`score_probe`] reports accuracy, balanced accuracy and AUC over the label and, when the data
//! has multi-hot findings, one binary probe per finding with its AUC.
//!
//! Deterministic by construction: features are standardised with the training mean and standard
//! deviation, weights start at zero and full-batch gradient descent runs a fixed number of
//! iterations in f64, so the same features give the same probe bit for bit.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TuneError};
use crate::metrics::classification::{
    FindingAuc, OvrAuc, accuracy, balanced_accuracy, finding_auc, ovr_auc,
};

/// Settings of the probe's optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeSettings {
    pub iterations: usize,
    pub learning_rate: f64,
    /// L2 penalty on the weights (not the biases).
    pub l2: f64,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            iterations: 300,
            learning_rate: 0.5,
            l2: 1e-3,
        }
    }
}

/// Row-major features: `rows` samples of `dim` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub values: Vec<f64>,
    pub rows: usize,
    pub dim: usize,
}

impl Features {
    pub fn new(values: Vec<f64>, rows: usize, dim: usize) -> Result<Self> {
        if values.len() != rows * dim {
            return Err(TuneError::invalid(format!(
                "features: {} values do not make {rows} rows of {dim}",
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(TuneError::invalid("features: a value is not finite"));
        }
        Ok(Features { values, rows, dim })
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

/// A fitted probe.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbe {
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// [classes, dim] row-major.
    weights: Vec<f64>,
    bias: Vec<f64>,
    classes: usize,
    dim: usize,
}

/// Softmax of a row of logits, in place.
pub fn softmax_in_place(logits: &mut [f64]) {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for l in logits.iter_mut() {
        *l = (*l - max).exp();
        sum += *l;
    }
    for l in logits.iter_mut() {
        *l /= sum;
    }
}

impl LinearProbe {
    /// Fits the probe on training features and labels in `0..classes`.
    pub fn fit(
        train: &Features,
        labels: &[usize],
        classes: usize,
        settings: ProbeSettings,
    ) -> Result<Self> {
        if train.rows == 0 || labels.len() != train.rows {
            return Err(TuneError::invalid(format!(
                "linear probe: {} training rows and {} labels (need the same, and at least one)",
                train.rows,
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(TuneError::invalid(format!(
                "linear probe: label {bad} is outside 0..{classes}"
            )));
        }
        let (n, d) = (train.rows, train.dim);
        let mut mean = vec![0.0; d];
        for i in 0..n {
            for (m, v) in mean.iter_mut().zip(train.row(i)) {
                *m += v / n as f64;
            }
        }
        let mut scale = vec![0.0; d];
        for i in 0..n {
            for ((s, v), m) in scale.iter_mut().zip(train.row(i)).zip(&mean) {
                *s += (v - m).powi(2) / n as f64;
            }
        }
        // A constant feature is centred but not scaled.
        let scale: Vec<f64> = scale
            .iter()
            .map(|v| if *v > 1e-12 { 1.0 / v.sqrt() } else { 1.0 })
            .collect();
        let mut probe = LinearProbe {
            mean,
            scale,
            weights: vec![0.0; classes * d],
            bias: vec![0.0; classes],
            classes,
            dim: d,
        };
        let x: Vec<Vec<f64>> = (0..n).map(|i| probe.standardise(train.row(i))).collect();
        for _ in 0..settings.iterations {
            let mut grad_w = vec![0.0; classes * d];
            let mut grad_b = vec![0.0; classes];
            for (xi, &yi) in x.iter().zip(labels) {
                let mut p = probe.logits_standardised(xi);
                softmax_in_place(&mut p);
                p[yi] -= 1.0;
                for c in 0..classes {
                    grad_b[c] += p[c] / n as f64;
                    for (g, v) in grad_w[c * d..(c + 1) * d].iter_mut().zip(xi) {
                        *g += p[c] * v / n as f64;
                    }
                }
            }
            for (w, g) in probe.weights.iter_mut().zip(&grad_w) {
                *w -= settings.learning_rate * (g + settings.l2 * *w);
            }
            for (b, g) in probe.bias.iter_mut().zip(&grad_b) {
                *b -= settings.learning_rate * g;
            }
        }
        Ok(probe)
    }

    fn standardise(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .map(|((v, m), s)| (v - m) * s)
            .collect()
    }

    fn logits_standardised(&self, x: &[f64]) -> Vec<f64> {
        (0..self.classes)
            .map(|c| {
                self.bias[c]
                    + self.weights[c * self.dim..(c + 1) * self.dim]
                        .iter()
                        .zip(x)
                        .map(|(w, v)| w * v)
                        .sum::<f64>()
            })
            .collect()
    }

    /// Class probabilities for every row of `features`.
    pub fn predict_proba(&self, features: &Features) -> Result<Vec<Vec<f64>>> {
        if features.dim != self.dim {
            return Err(TuneError::invalid(format!(
                "linear probe: features have {} dimensions, the probe was fitted on {}",
                features.dim, self.dim
            )));
        }
        Ok((0..features.rows)
            .map(|i| {
                let mut p = self.logits_standardised(&self.standardise(features.row(i)));
                softmax_in_place(&mut p);
                p
            })
            .collect())
    }

    /// Test accuracy of the fitted probe.
    pub fn accuracy(&self, test: &Features, labels: &[usize]) -> Result<Option<f64>> {
        let predicted: Vec<usize> = self
            .predict_proba(test)?
            .iter()
            .map(|p| argmax(p))
            .collect();
        crate::metrics::classification::accuracy(&predicted, labels)
    }
}

/// Multi-hot findings of a set of items: `values[i · names.len() + f]` is 1 when item i shows
/// finding f.
#[derive(Debug, Clone, Copy)]
pub struct Findings<'a> {
    pub values: &'a [u8],
    pub names: &'a [String],
}

impl<'a> Findings<'a> {
    /// The dataset's multi-hot findings; `None` for data without per-study findings.
    pub fn of(data: &'a umdflow_data::artifact::Dataset) -> Option<Self> {
        data.findings.as_deref().map(|values| Findings {
            values,
            names: &data.meta.findings,
        })
    }

    fn column(&self, f: usize) -> Vec<usize> {
        let k = self.names.len();
        (0..self.values.len() / k.max(1))
            .map(|i| usize::from(self.values[i * k + f] != 0))
            .collect()
    }
}

/// One split's probe inputs: features, single labels and (optionally) multi-hot findings.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSplit<'a> {
    pub features: &'a Features,
    pub labels: &'a [usize],
    pub findings: Option<Findings<'a>>,
}

/// What a probe fitted on the training split scores on the test split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeScores {
    pub feature_dim: usize,
    pub accuracy: Option<f64>,
    pub balanced_accuracy: Option<f64>,
    /// One-vs-rest AUC over the label's classes.
    pub auc: OvrAuc,
    /// One binary probe per finding; `None` when the data has no multi-hot findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingAuc>,
}

/// Fits the probe (and one binary probe per finding) on `train` and scores it on `test`.
pub fn score_probe(
    train: ProbeSplit<'_>,
    test: ProbeSplit<'_>,
    classes: usize,
    settings: ProbeSettings,
) -> Result<ProbeScores> {
    let probe = LinearProbe::fit(train.features, train.labels, classes, settings)?;
    let probs = probe.predict_proba(test.features)?;
    let predicted: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
    let findings = match (train.findings, test.findings) {
        (Some(tr), Some(te)) if !tr.names.is_empty() => {
            if tr.names != te.names {
                return Err(TuneError::invalid(
                    "linear probe: the training and test splits name different findings",
                ));
            }
            let mut scores = vec![Vec::with_capacity(tr.names.len()); test.features.rows];
            for f in 0..tr.names.len() {
                let binary = LinearProbe::fit(train.features, &tr.column(f), 2, settings)?;
                for (row, p) in scores.iter_mut().zip(binary.predict_proba(test.features)?) {
                    row.push(p[1]);
                }
            }
            Some(finding_auc(&scores, te.values, te.names)?)
        }
        _ => None,
    };
    Ok(ProbeScores {
        feature_dim: train.features.dim,
        accuracy: accuracy(&predicted, test.labels)?,
        balanced_accuracy: balanced_accuracy(&predicted, test.labels)?,
        auc: ovr_auc(&probs, test.labels, classes)?,
        findings,
    })
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_matches_a_hand_computation() {
        // Two samples, one feature: x = [1, 3] -> standardised [-1, 1]; labels [0, 1].
        // At zero weights p = [0.5, 0.5] for both. grad_w[0] = ((0.5-1)(-1) + 0.5·1)/2 = 0.5,
        // grad_w[1] = (0.5·(-1) + (0.5-1)·1)/2 = -0.5; biases' gradients are 0.
        // After one step with lr 1 and no L2: w = [-0.5, 0.5], b = [0, 0].
        let train = Features::new(vec![1.0, 3.0], 2, 1).unwrap();
        let probe = LinearProbe::fit(
            &train,
            &[0, 1],
            2,
            ProbeSettings {
                iterations: 1,
                learning_rate: 1.0,
                l2: 0.0,
            },
        )
        .unwrap();
        assert_eq!(probe.weights, vec![-0.5, 0.5]);
        assert_eq!(probe.bias, vec![0.0, 0.0]);
        // At x = 3 (standardised 1): logits [-0.5, 0.5] -> p1 = 1 / (1 + e^-1).
        let p = probe
            .predict_proba(&Features::new(vec![3.0], 1, 1).unwrap())
            .unwrap();
        assert!((p[0][1] - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn separable_data_is_learned_and_repeats_exactly() {
        // Three classes along a line, with a noise feature.
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for i in 0..30 {
            let class = i % 3;
            values.push(class as f64 * 2.0 + (i as f64 * 0.37).sin() * 0.3);
            values.push((i as f64 * 1.3).cos());
            labels.push(class);
        }
        let train = Features::new(values, 30, 2).unwrap();
        let a = LinearProbe::fit(&train, &labels, 3, ProbeSettings::default()).unwrap();
        let b = LinearProbe::fit(&train, &labels, 3, ProbeSettings::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.accuracy(&train, &labels).unwrap(), Some(1.0));
    }

    #[test]
    fn per_finding_probes_read_the_finding_columns() {
        // Feature 0 carries finding "a", feature 1 carries finding "b"; the label is "a or b".
        let mut values = Vec::new();
        let mut findings = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let (a, b) = (i % 2, (i / 2) % 2);
            values.extend([
                a as f64 + 0.1 * (i as f64).sin(),
                b as f64 + 0.1 * (i as f64).cos(),
            ]);
            findings.extend([a as u8, b as u8]);
            labels.push(usize::from(a + b > 0));
        }
        let names = vec!["a".to_string(), "b".to_string()];
        let features = Features::new(values, 40, 2).unwrap();
        let split = ProbeSplit {
            features: &features,
            labels: &labels,
            findings: Some(Findings {
                values: &findings,
                names: &names,
            }),
        };
        let scores = score_probe(split, split, 2, ProbeSettings::default()).unwrap();
        let f = scores.findings.unwrap();
        assert_eq!(f.per_finding["a"], Some(1.0));
        assert_eq!(f.per_finding["b"], Some(1.0));
        // Each finding has its own probe: with feature 1 replaced by noise, "b" falls towards
        // chance while "a" stays perfect.
        let noisy: Vec<f64> = features
            .values
            .chunks(2)
            .enumerate()
            .flat_map(|(i, r)| [r[0], ((i * 7919) % 13) as f64])
            .collect();
        let noisy = Features::new(noisy, 40, 2).unwrap();
        let split = ProbeSplit {
            features: &noisy,
            ..split
        };
        let f = score_probe(split, split, 2, ProbeSettings::default())
            .unwrap()
            .findings
            .unwrap();
        assert_eq!(f.per_finding["a"], Some(1.0));
        assert!(f.per_finding["b"].unwrap() < 0.9, "{f:?}");
        let no_findings = ProbeSplit {
            findings: None,
            ..split
        };
        assert!(
            score_probe(no_findings, no_findings, 2, ProbeSettings::default())
                .unwrap()
                .findings
                .is_none()
        );
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let train = Features::new(vec![1.0, 2.0], 2, 1).unwrap();
        assert!(LinearProbe::fit(&train, &[0], 2, ProbeSettings::default()).is_err());
        assert!(LinearProbe::fit(&train, &[0, 5], 2, ProbeSettings::default()).is_err());
        assert!(Features::new(vec![1.0], 2, 1).is_err());
        assert!(Features::new(vec![f64::NAN], 1, 1).is_err());
        let probe = LinearProbe::fit(&train, &[0, 1], 2, ProbeSettings::default()).unwrap();
        assert!(
            probe
                .predict_proba(&Features::new(vec![1.0, 2.0], 1, 2).unwrap())
                .is_err()
        );
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
