//! VQA accuracy split by answer type, after the VQA answer normalisation (the data crate's
//! `normalize_answer`, the same one the ingest applies to ground-truth answers).

use serde::Serialize;
use umdflow_data::readers::normalize::normalize_answer;

use crate::error::Result;
use crate::metrics::same_lengths;

/// Accuracy over CLOSED questions, OPEN questions and all of them; `None` when a group is empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VqaAccuracy {
    pub open: Option<f64>,
    pub closed: Option<f64>,
    pub overall: Option<f64>,
    pub n_open: usize,
    pub n_closed: usize,
}

/// Whether two answers agree after the VQA normalisation.
pub fn same_answer(predicted: &str, truth: &str) -> bool {
    normalize_answer(predicted) == normalize_answer(truth)
}

/// Compares predicted and true answer strings after normalisation.
pub fn vqa_accuracy(
    predicted: &[String],
    truth: &[String],
    closed: &[bool],
) -> Result<VqaAccuracy> {
    same_lengths(
        "vqa accuracy",
        &[predicted.len(), truth.len(), closed.len()],
    )?;
    let (mut hit_open, mut hit_closed, mut n_open, mut n_closed) = (0usize, 0usize, 0usize, 0usize);
    for ((p, t), &is_closed) in predicted.iter().zip(truth).zip(closed) {
        let hit = same_answer(p, t);
        if is_closed {
            n_closed += 1;
            hit_closed += usize::from(hit);
        } else {
            n_open += 1;
            hit_open += usize::from(hit);
        }
    }
    let ratio = |hits: usize, n: usize| (n > 0).then(|| hits as f64 / n as f64);
    Ok(VqaAccuracy {
        open: ratio(hit_open, n_open),
        closed: ratio(hit_closed, n_closed),
        overall: ratio(hit_open + hit_closed, n_open + n_closed),
        n_open,
        n_closed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_by_answer_type_and_normalises() {
        // closed: "Yes." vs "yes" (hit after normalisation), "no" vs "yes" (miss);
        // open: "Two" vs "2" (hit), "the liver" vs "liver" (hit), "left" vs "right" (miss).
        let acc = vqa_accuracy(
            &s(&["Yes.", "no", "Two", "the liver", "left"]),
            &s(&["yes", "yes", "2", "liver", "right"]),
            &[true, true, false, false, false],
        )
        .unwrap();
        assert_eq!(acc.closed, Some(0.5));
        assert_eq!(acc.open, Some(2.0 / 3.0));
        assert_eq!(acc.overall, Some(3.0 / 5.0));
        assert_eq!((acc.n_open, acc.n_closed), (3, 2));
    }

    #[test]
    fn empty_groups_are_none_and_lengths_are_checked() {
        let acc = vqa_accuracy(&s(&["a"]), &s(&["b"]), &[true]).unwrap();
        assert_eq!(
            (acc.open, acc.closed, acc.overall),
            (None, Some(0.0), Some(0.0))
        );
        assert!(vqa_accuracy(&s(&["a"]), &s(&[]), &[true]).is_err());
    }
}
