//! Retrieval recall@k in both directions from an exhaustive score matrix.
//!
//! `scores[i][j]` scores image i against text j; image i's own text is text i. The rank of the
//! right item is 1 + the number of OTHER candidates scoring at least as high: ties count against
//! the model (pessimistic), so a constant scorer gets recall@k = 0 for k < N instead of a lucky
//! value that depends on the sort order.

use serde::Serialize;

use crate::error::{Result, TuneError};

/// The cut-offs reported.
pub const RECALL_KS: [usize; 3] = [1, 5, 10];

/// Recall@1/5/10, image→text (`i2t`, M3AE's `tr_r@k`) and text→image (`t2i`, `ir_r@k`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalRecall {
    pub i2t_r1: f64,
    pub i2t_r5: f64,
    pub i2t_r10: f64,
    pub t2i_r1: f64,
    pub t2i_r5: f64,
    pub t2i_r10: f64,
    pub n: usize,
}

/// Pessimistic rank (1-based) of candidate `right` among `candidates`.
pub fn pessimistic_rank(candidates: &[f64], right: usize) -> usize {
    let target = candidates[right];
    1 + candidates
        .iter()
        .enumerate()
        .filter(|&(j, &s)| j != right && s >= target)
        .count()
}

/// Recall@k in both directions for a square score matrix.
pub fn retrieval_recall(scores: &[Vec<f64>]) -> Result<RetrievalRecall> {
    let n = scores.len();
    if n == 0 {
        return Err(TuneError::invalid("retrieval: no test pairs to score"));
    }
    if let Some(row) = scores.iter().find(|row| row.len() != n) {
        return Err(TuneError::invalid(format!(
            "retrieval: score matrix is not square ({n} images, a row with {} texts)",
            row.len()
        )));
    }
    if scores.iter().flatten().any(|s| !s.is_finite()) {
        return Err(TuneError::invalid("retrieval: a score is not finite"));
    }
    let i2t: Vec<usize> = (0..n).map(|i| pessimistic_rank(&scores[i], i)).collect();
    let t2i: Vec<usize> = (0..n)
        .map(|j| {
            let column: Vec<f64> = scores.iter().map(|row| row[j]).collect();
            pessimistic_rank(&column, j)
        })
        .collect();
    let recall =
        |ranks: &[usize], k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n as f64;
    Ok(RetrievalRecall {
        i2t_r1: recall(&i2t, RECALL_KS[0]),
        i2t_r5: recall(&i2t, RECALL_KS[1]),
        i2t_r10: recall(&i2t, RECALL_KS[2]),
        t2i_r1: recall(&t2i, RECALL_KS[0]),
        t2i_r5: recall(&t2i, RECALL_KS[1]),
        t2i_r10: recall(&t2i, RECALL_KS[2]),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_ties_against_the_model() {
        assert_eq!(pessimistic_rank(&[0.5, 0.9, 0.1], 0), 2);
        assert_eq!(pessimistic_rank(&[0.5, 0.5, 0.5], 1), 3);
        assert_eq!(pessimistic_rank(&[0.9, 0.5], 0), 1);
    }

    #[test]
    fn recall_by_hand() {
        // 3 pairs. i2t ranks: row0 [0.9,0.1,0.2] -> 1; row1 [0.8,0.3,0.1] -> 2;
        // row2 [0.4,0.4,0.4] -> 3 (ties pessimistic).
        // t2i ranks: col0 [0.9,0.8,0.4] -> 1; col1 [0.1,0.3,0.4] -> 2; col2 [0.2,0.1,0.4] -> 1.
        let scores = vec![
            vec![0.9, 0.1, 0.2],
            vec![0.8, 0.3, 0.1],
            vec![0.4, 0.4, 0.4],
        ];
        let r = retrieval_recall(&scores).unwrap();
        assert_eq!(r.i2t_r1, 1.0 / 3.0);
        assert_eq!(r.i2t_r5, 1.0);
        assert_eq!(r.t2i_r1, 2.0 / 3.0);
        assert_eq!(r.t2i_r10, 1.0);
    }

    #[test]
    fn a_constant_scorer_gets_nothing_below_n() {
        let scores = vec![vec![1.0; 12]; 12];
        let r = retrieval_recall(&scores).unwrap();
        assert_eq!((r.i2t_r1, r.i2t_r5, r.i2t_r10), (0.0, 0.0, 0.0));
        assert_eq!((r.t2i_r1, r.t2i_r5, r.t2i_r10), (0.0, 0.0, 0.0));
    }

    #[test]
    fn bad_matrices_are_rejected() {
        assert!(retrieval_recall(&[]).is_err());
        assert!(retrieval_recall(&[vec![1.0, 2.0]]).is_err());
        assert!(retrieval_recall(&[vec![f64::NAN]]).is_err());
    }
}
