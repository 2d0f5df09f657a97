//! Retrieval recall@k in both directions from an exhaustive score matrix.
//!
//! `scores[i][j]` scores image i against text j; image i's own text is text i. The rank of the
//! right item is 1 + the number of OTHER candidates scoring at least as high: ties count against
//! the model (pessimistic), so a constant scorer gets recall@k = 0 for k < N instead of a lucky
//! value that depends on the sort order.
//!
//! Semantic recall counts a hit when a retrieved item has the same finding signature as the
//! query's own partner (two studies a reader could not tell apart), beside instance recall,
//! which needs the partner itself.

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

/// Pessimistic rank (1-based) of the best candidate in the group `same` (the partner and every
/// candidate indistinguishable from it): 1 + the number of candidates OUTSIDE the group scoring
/// at least as high as the group's best.
pub fn pessimistic_group_rank(candidates: &[f64], same: &[bool]) -> usize {
    let best = candidates
        .iter()
        .zip(same)
        .filter(|(_, s)| **s)
        .map(|(c, _)| *c)
        .fold(f64::NEG_INFINITY, f64::max);
    1 + candidates
        .iter()
        .zip(same)
        .filter(|&(&c, &s)| !s && c >= best)
        .count()
}

/// Ranks of every query in both directions: `i2t[i]` of text i among the texts for image i,
/// `t2i[j]` of image j among the images for text j.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranks {
    pub i2t: Vec<usize>,
    pub t2i: Vec<usize>,
}

impl Ranks {
    /// Recall@1/5/10 of these ranks.
    pub fn recall(&self) -> RetrievalRecall {
        let n = self.i2t.len();
        let recall =
            |ranks: &[usize], k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n as f64;
        RetrievalRecall {
            i2t_r1: recall(&self.i2t, RECALL_KS[0]),
            i2t_r5: recall(&self.i2t, RECALL_KS[1]),
            i2t_r10: recall(&self.i2t, RECALL_KS[2]),
            t2i_r1: recall(&self.t2i, RECALL_KS[0]),
            t2i_r5: recall(&self.t2i, RECALL_KS[1]),
            t2i_r10: recall(&self.t2i, RECALL_KS[2]),
            n,
        }
    }
}

fn check_scores(scores: &[Vec<f64>]) -> Result<usize> {
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
    Ok(n)
}

/// Instance ranks in both directions for a square score matrix.
pub fn instance_ranks(scores: &[Vec<f64>]) -> Result<Ranks> {
    let n = check_scores(scores)?;
    Ok(Ranks {
        i2t: (0..n).map(|i| pessimistic_rank(&scores[i], i)).collect(),
        t2i: (0..n)
            .map(|j| {
                let column: Vec<f64> = scores.iter().map(|row| row[j]).collect();
                pessimistic_rank(&column, j)
            })
            .collect(),
    })
}

/// Semantic ranks: item i's texts (and images) carry `signatures[i]`; a candidate with the
/// query's own signature counts as right.
pub fn semantic_ranks(scores: &[Vec<f64>], signatures: &[u64]) -> Result<Ranks> {
    let n = check_scores(scores)?;
    crate::metrics::same_lengths("semantic recall", &[n, signatures.len()])?;
    let same = |i: usize| -> Vec<bool> { signatures.iter().map(|&s| s == signatures[i]).collect() };
    Ok(Ranks {
        i2t: (0..n)
            .map(|i| pessimistic_group_rank(&scores[i], &same(i)))
            .collect(),
        t2i: (0..n)
            .map(|j| {
                let column: Vec<f64> = scores.iter().map(|row| row[j]).collect();
                pessimistic_group_rank(&column, &same(j))
            })
            .collect(),
    })
}

/// Recall@k in both directions for a square score matrix.
pub fn retrieval_recall(scores: &[Vec<f64>]) -> Result<RetrievalRecall> {
    Ok(instance_ranks(scores)?.recall())
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
    fn semantic_recall_counts_an_indistinguishable_item_as_a_hit() {
        // Items 0 and 1 share a signature; 2 differs. Image 0 ranks text 1 first, then 0:
        // instance rank 2, semantic rank 1. Image 2 ranks text 0 (other signature) above its
        // own: rank 2 both ways. Column 1 (text 1): images [0.9, 0.2, 0.95] -> image 2 (other
        // signature) is above image 0 (same) -> semantic rank 2.
        let scores = vec![
            vec![0.5, 0.9, 0.1],
            vec![0.1, 0.2, 0.1],
            vec![0.8, 0.95, 0.3],
        ];
        let sig = [7, 7, 9];
        let inst = instance_ranks(&scores).unwrap();
        let sem = semantic_ranks(&scores, &sig).unwrap();
        assert_eq!(inst.i2t, vec![2, 1, 3]);
        assert_eq!(sem.i2t, vec![1, 1, 3]);
        assert_eq!(sem.t2i[1], 2);
        // Semantic recall is never below instance recall.
        for (s, i) in sem
            .i2t
            .iter()
            .chain(&sem.t2i)
            .zip(inst.i2t.iter().chain(&inst.t2i))
        {
            assert!(s <= i);
        }
        // A tie with an item of another signature counts against the model.
        assert_eq!(pessimistic_group_rank(&[0.5, 0.5], &[true, false]), 2);
        // All-distinct signatures make semantic recall instance recall.
        assert_eq!(semantic_ranks(&scores, &[1, 2, 3]).unwrap(), inst);
        assert!(semantic_ranks(&scores, &[1, 2]).is_err());
    }

    #[test]
    fn bad_matrices_are_rejected() {
        assert!(retrieval_recall(&[]).is_err());
        assert!(retrieval_recall(&[vec![1.0, 2.0]]).is_err());
        assert!(retrieval_recall(&[vec![f64::NAN]]).is_err());
    }
}
