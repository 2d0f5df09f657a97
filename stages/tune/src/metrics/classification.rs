//! Classification metrics: accuracy, balanced accuracy, the confusion matrix, macro-F1,
//! one-vs-rest AUC and per-finding (multi-label) AUC.

use serde::Serialize;

use crate::error::{Result, TuneError};
use crate::metrics::same_lengths;

/// Fraction of predictions equal to the truth; `None` for no samples.
pub fn accuracy(predicted: &[usize], truth: &[usize]) -> Result<Option<f64>> {
    same_lengths("accuracy", &[predicted.len(), truth.len()])?;
    let hits = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    Ok((!truth.is_empty()).then(|| hits as f64 / truth.len() as f64))
}

/// Balanced accuracy: the mean over the classes present in the truth of each class's recall
/// (sklearn's `balanced_accuracy_score`). A constant predictor scores 1 / (classes present),
/// whatever the class prior, so it exposes "always say the majority class". `None` for no samples.
pub fn balanced_accuracy(predicted: &[usize], truth: &[usize]) -> Result<Option<f64>> {
    same_lengths("balanced accuracy", &[predicted.len(), truth.len()])?;
    let mut per_class: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for (p, t) in predicted.iter().zip(truth) {
        let entry = per_class.entry(*t).or_default();
        entry.0 += usize::from(p == t);
        entry.1 += 1;
    }
    Ok((!per_class.is_empty()).then(|| {
        per_class
            .values()
            .map(|&(hits, n)| hits as f64 / n as f64)
            .sum::<f64>()
            / per_class.len() as f64
    }))
}

/// `matrix[true][predicted]` counts over `classes` classes.
pub fn confusion_matrix(
    predicted: &[usize],
    truth: &[usize],
    classes: usize,
) -> Result<Vec<Vec<u64>>> {
    same_lengths("confusion matrix", &[predicted.len(), truth.len()])?;
    let mut matrix = vec![vec![0u64; classes]; classes];
    for (&p, &t) in predicted.iter().zip(truth) {
        if p >= classes || t >= classes {
            return Err(TuneError::invalid(format!(
                "confusion matrix: class {} is outside 0..{classes}",
                p.max(t)
            )));
        }
        matrix[t][p] += 1;
    }
    Ok(matrix)
}

/// Macro-F1 from a confusion matrix: the mean of `2·TP / (2·TP + FP + FN)` over the classes that
/// occur in the truth or the predictions (a class absent from both has no defined F1 and is left
/// out, rather than counted as 0 or 1). `None` when no class occurs.
pub fn macro_f1(matrix: &[Vec<u64>]) -> Option<f64> {
    let k = matrix.len();
    let mut sum = 0.0;
    let mut counted = 0usize;
    for (c, row) in matrix.iter().enumerate() {
        let tp = row[c];
        let support: u64 = row.iter().sum();
        let predicted: u64 = (0..k).map(|r| matrix[r][c]).sum();
        let (fn_, fp) = (support - tp, predicted - tp);
        if support + predicted == 0 {
            continue;
        }
        sum += 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
        counted += 1;
    }
    (counted > 0).then(|| sum / counted as f64)
}

/// Ranks 1..=n of `values` with tied values sharing the average of their ranks.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold equal values: ranks start+1 ..= end, averaged.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Area under the ROC curve of `scores` for the `positive` flags, by the Mann-Whitney statistic
/// with average ranks (a tied positive-negative pair counts one half). `None` unless both
/// positives and negatives are present.
pub fn binary_auc(scores: &[f64], positive: &[bool]) -> Result<Option<f64>> {
    same_lengths("auc", &[scores.len(), positive.len()])?;
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    let ranks = average_ranks(scores);
    let rank_sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Ok(Some(u / (n_pos * n_neg) as f64))
}

/// One-vs-rest AUC per class and their unweighted mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OvrAuc {
    /// `None` for a class without positives or without negatives in the truth.
    pub per_class: Vec<Option<f64>>,
    /// Mean over the classes that have a defined AUC.
    pub macro_auc: Option<f64>,
}

/// One-vs-rest AUC from per-sample class scores (`scores[i][c]`, e.g. probabilities).
pub fn ovr_auc(scores: &[Vec<f64>], truth: &[usize], classes: usize) -> Result<OvrAuc> {
    same_lengths("auc", &[scores.len(), truth.len()])?;
    if let Some(row) = scores.iter().find(|row| row.len() != classes) {
        return Err(TuneError::invalid(format!(
            "auc: a score row has {} entries, expected {classes}",
            row.len()
        )));
    }
    let mut per_class = Vec::with_capacity(classes);
    for c in 0..classes {
        let column: Vec<f64> = scores.iter().map(|row| row[c]).collect();
        let positive: Vec<bool> = truth.iter().map(|&t| t == c).collect();
        per_class.push(binary_auc(&column, &positive)?);
    }
    let defined: Vec<f64> = per_class.iter().flatten().copied().collect();
    let macro_auc =
        (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    Ok(OvrAuc {
        per_class,
        macro_auc,
    })
}

/// AUC of each finding of a multi-label problem and their unweighted mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingAuc {
    /// Finding name → AUC; `None` for a finding that every test item shows or none does.
    pub per_finding: std::collections::BTreeMap<String, Option<f64>>,
    /// Mean over the findings with a defined AUC.
    pub macro_auc: Option<f64>,
}

/// Per-finding AUC: `scores[i][f]` scores item i for finding f, `findings` is the row-major
/// multi-hot truth `[items, names.len()]` (1 = the item shows finding f).
pub fn finding_auc(scores: &[Vec<f64>], findings: &[u8], names: &[String]) -> Result<FindingAuc> {
    let k = names.len();
    same_lengths("finding auc", &[scores.len() * k, findings.len()])?;
    if let Some(row) = scores.iter().find(|row| row.len() != k) {
        return Err(TuneError::invalid(format!(
            "finding auc: a score row has {} entries, expected {k}",
            row.len()
        )));
    }
    let mut per_finding = std::collections::BTreeMap::new();
    let mut defined = Vec::new();
    for (f, name) in names.iter().enumerate() {
        let column: Vec<f64> = scores.iter().map(|row| row[f]).collect();
        let positive: Vec<bool> = (0..scores.len())
            .map(|i| findings[i * k + f] != 0)
            .collect();
        let auc = binary_auc(&column, &positive)?;
        defined.extend(auc);
        per_finding.insert(name.clone(), auc);
    }
    let macro_auc =
        (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    Ok(FindingAuc {
        per_finding,
        macro_auc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_confusion_by_hand() {
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 1, 1, 1, 0, 2];
        assert_eq!(accuracy(&pred, &truth).unwrap(), Some(4.0 / 6.0));
        let m = confusion_matrix(&pred, &truth, 3).unwrap();
        assert_eq!(m, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        // F1: class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 1 fp 0
        // fn 1 -> 2/3.
        let f1 = macro_f1(&m).unwrap();
        assert!((f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{f1}");
        assert_eq!(accuracy(&[], &[]).unwrap(), None);
        assert!(confusion_matrix(&[3], &[0], 3).is_err());
        assert!(accuracy(&[1], &[]).is_err());
    }

    #[test]
    fn macro_f1_leaves_out_classes_that_never_occur() {
        // Class 2 occurs in neither truth nor predictions.
        let m = confusion_matrix(&[0, 1], &[0, 0], 3).unwrap();
        // class 0: tp 1 fn 1 -> 2/3; class 1: fp 1 -> 0.
        assert!((macro_f1(&m).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(macro_f1(&[vec![0]]), None);
    }

    #[test]
    fn balanced_accuracy_by_hand_and_against_the_majority_shortcut() {
        // Class 0 recall 1/2, class 1 recall 2/2, class 2 recall 1/2 -> 2/3.
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 1, 1, 1, 0, 2];
        let b = balanced_accuracy(&pred, &truth).unwrap().unwrap();
        assert!((b - 2.0 / 3.0).abs() < 1e-12, "{b}");
        // 9 of 10 items are class 0: "always 0" has accuracy 0.9 but balanced accuracy 0.5.
        let truth = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let pred = [0; 10];
        assert_eq!(accuracy(&pred, &truth).unwrap(), Some(0.9));
        assert_eq!(balanced_accuracy(&pred, &truth).unwrap(), Some(0.5));
        assert_eq!(balanced_accuracy(&[], &[]).unwrap(), None);
        assert!(balanced_accuracy(&[0], &[]).is_err());
    }

    #[test]
    fn finding_auc_by_hand() {
        // Two findings over four items. Finding a: truth [1,0,1,0], scores [0.9,0.2,0.4,0.5]:
        // pairs (0.9>0.2, 0.9>0.5, 0.4>0.2, 0.4<0.5) -> 3/4. Finding b: every item shows it -> None.
        let names = vec!["a".to_string(), "b".to_string()];
        let findings = [1, 1, 0, 1, 1, 1, 0, 1];
        let scores = vec![
            vec![0.9, 0.1],
            vec![0.2, 0.3],
            vec![0.4, 0.5],
            vec![0.5, 0.7],
        ];
        let auc = finding_auc(&scores, &findings, &names).unwrap();
        assert_eq!(auc.per_finding["a"], Some(0.75));
        assert_eq!(auc.per_finding["b"], None);
        assert_eq!(auc.macro_auc, Some(0.75));
        assert!(finding_auc(&scores, &findings[..6], &names).is_err());
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn auc_by_hand_with_ties() {
        // Positives 0.9, 0.5; negatives 0.5, 0.1. Pairs: (0.9>0.5) 1, (0.9>0.1) 1,
        // (0.5=0.5) 0.5, (0.5>0.1) 1 -> 3.5 / 4.
        let auc = binary_auc(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]).unwrap();
        assert_eq!(auc, Some(0.875));
        assert_eq!(binary_auc(&[0.1, 0.2], &[true, true]).unwrap(), None);
        // Perfectly inverted scores give 0.
        assert_eq!(binary_auc(&[0.1, 0.9], &[true, false]).unwrap(), Some(0.0));
    }

    #[test]
    fn ovr_auc_by_hand() {
        let scores = vec![
            vec![0.7, 0.2, 0.1],
            vec![0.3, 0.4, 0.3],
            vec![0.2, 0.5, 0.3],
            vec![0.1, 0.1, 0.8],
        ];
        let truth = [0, 1, 0, 2];
        let auc = ovr_auc(&scores, &truth, 3).unwrap();
        // class 0: positives {0.7, 0.2}, negatives {0.3, 0.1}: pairs 1+1+0+1 = 3/4.
        // class 1: positive {0.4}, negatives {0.2, 0.5, 0.1}: 2/3.
        // class 2: positive {0.8}, negatives {0.1, 0.3, 0.3}: 1.
        assert_eq!(auc.per_class, vec![Some(0.75), Some(2.0 / 3.0), Some(1.0)]);
        assert!((auc.macro_auc.unwrap() - (0.75 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
        let missing = ovr_auc(&scores[..2], &truth[..2], 3).unwrap();
        assert_eq!(missing.per_class[2], None);
        assert!(ovr_auc(&scores, &truth, 2).is_err());
    }
}
