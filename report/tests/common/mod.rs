//! A small ablation whose every number was worked out by hand (see `tables.rs`).

#![allow(dead_code)]

use std::collections::BTreeMap;

use umdflow_report::{CurveSet, Replicate, ReportInput, Row, Series};

pub fn replicate(seed: &str, metrics: &[(&str, f64)]) -> Replicate {
    Replicate {
        seed: seed.to_string(),
        metrics: Some(
            metrics
                .iter()
                .map(|(name, value)| (name.to_string(), *value))
                .collect::<BTreeMap<_, _>>(),
        ),
        missing: None,
        items: BTreeMap::new(),
    }
}

pub fn not_run(seed: &str, why: &str) -> Replicate {
    Replicate {
        seed: seed.to_string(),
        metrics: None,
        missing: Some(why.to_string()),
        items: BTreeMap::new(),
    }
}

pub fn row(label: &str, axes: &[(&str, &str)], replicates: Vec<Replicate>) -> Row {
    Row {
        label: label.to_string(),
        axes: axes
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        replicates,
    }
}

/// base: three complete seeds; plus: seed 3 has not run; full: seed 3 lacks `auc`;
/// single: one seed.
pub fn ablation() -> ReportInput {
    ReportInput {
        title: "demo".to_string(),
        metrics: vec!["acc".to_string(), "auc".to_string()],
        rows: vec![
            row(
                "base",
                &[("arm", "base")],
                vec![
                    replicate("1", &[("acc", 0.70), ("auc", 0.80)]),
                    replicate("2", &[("acc", 0.72), ("auc", 0.82)]),
                    replicate("3", &[("acc", 0.74), ("auc", 0.84)]),
                ],
            ),
            row(
                "plus",
                &[("arm", "plus")],
                vec![
                    replicate("1", &[("acc", 0.75), ("auc", 0.85)]),
                    replicate("2", &[("acc", 0.76), ("auc", 0.86)]),
                    not_run("3", "evaluate[arm=plus,seed=3] has not run"),
                ],
            ),
            row(
                "full",
                &[("arm", "full")],
                vec![
                    replicate("1", &[("acc", 0.80), ("auc", 0.90)]),
                    replicate("2", &[("acc", 0.81), ("auc", 0.91)]),
                    replicate("3", &[("acc", 0.82)]),
                ],
            ),
            row(
                "single",
                &[("arm", "single")],
                vec![replicate("1", &[("acc", 0.65), ("auc", 0.68)])],
            ),
        ],
        baseline: Some(0),
        x_axis: None,
        curves: Vec::new(),
    }
}

/// A masking-ratio sweep for two arms, plus two curve sets.
pub fn sweep() -> ReportInput {
    let mut rows = Vec::new();
    for (arm, offset) in [("full", 0.0), ("mr-only", -0.08)] {
        for (ratio, level) in [("0.25", 0.70), ("0.5", 0.76), ("0.75", 0.78), ("0.9", 0.72)] {
            let replicates = (1..=3)
                .map(|seed| {
                    // Seeds spread more at ratio 0.5, and differently per arm.
                    let spread = if ratio == "0.5" { 0.02 } else { 0.01 };
                    let pattern = if arm == "full" {
                        [-1.0, 0.0, 1.0]
                    } else {
                        [0.5, -1.0, 0.5]
                    };
                    let wobble = spread * pattern[seed - 1];
                    replicate(
                        &seed.to_string(),
                        &[
                            ("vqa_acc", level + offset + wobble),
                            ("recall@1", level - 0.3 + offset - wobble),
                        ],
                    )
                })
                .collect();
            rows.push(row(
                &format!("{arm} ratio={ratio}"),
                &[("arm", arm), ("ratio", ratio)],
                replicates,
            ));
        }
    }
    let steps: Vec<f64> = (0..200).map(f64::from).collect();
    ReportInput {
        title: "ablation <sweep> & 50% test".to_string(),
        metrics: vec!["vqa_acc".to_string(), "recall@1".to_string()],
        rows,
        baseline: Some(0),
        x_axis: Some("ratio".to_string()),
        curves: vec![
            CurveSet {
                title: "Pre-training loss".to_string(),
                x_label: "step".to_string(),
                y_label: "loss".to_string(),
                series: vec![
                    Series {
                        label: "seed 1".to_string(),
                        points: steps
                            .iter()
                            .map(|&s| (s, 2.5 * (-s / 60.0).exp() + 0.4))
                            .collect(),
                    },
                    Series {
                        label: "seed 2".to_string(),
                        points: steps
                            .iter()
                            .map(|&s| (s, 2.4 * (-s / 50.0).exp() + 0.45))
                            .collect(),
                    },
                ],
            },
            CurveSet {
                title: "GM-Coord ρ".to_string(),
                x_label: "step".to_string(),
                y_label: "ρ".to_string(),
                series: vec![Series {
                    label: "full".to_string(),
                    points: steps
                        .iter()
                        .map(|&s| (s, 0.5 + 0.4 * (s / 30.0).sin() * (-s / 100.0).exp()))
                        .collect(),
                }],
            },
        ],
    }
}
