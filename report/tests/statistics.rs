//! Cell statistics through the public `summarize`, against values worked out by hand.

mod common;

use common::{not_run, replicate, row};
use umdflow_report::{ReportError, ReportInput, summarize};

fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-5,
        "expected {expected}, got {actual}"
    );
}

#[test]
fn means_and_intervals_over_seeds() {
    let summary = summarize(&common::ablation()).unwrap();
    let base_acc = summary.rows[0].cells[0].estimate.unwrap();
    assert_eq!(base_acc.n, 3);
    close(base_acc.mean, 0.72);
    let interval = base_acc.interval.unwrap();
    // 4.302653 * 0.02 / sqrt(3)
    close(interval.half_width, 0.049683);
    close(interval.low, 0.72 - 0.049683);
    close(interval.high, 0.72 + 0.049683);
}

#[test]
fn paired_differences_match_by_seed() {
    let summary = summarize(&common::ablation()).unwrap();
    assert!(summary.rows[0].cells[0].difference.is_none());
    let full_acc = summary.rows[2].cells[0].difference.as_ref().unwrap();
    let estimate = full_acc.estimate.unwrap();
    assert_eq!(estimate.n, 3);
    close(estimate.mean, 0.09);
    // differences 0.10, 0.09, 0.08: s = 0.01, 4.302653 * 0.01 / sqrt(3)
    close(estimate.interval.unwrap().half_width, 0.024841);
    assert!(full_acc.excludes_zero);
    let plus_acc = summary.rows[1].cells[0].difference.as_ref().unwrap();
    close(plus_acc.estimate.unwrap().mean, 0.045);
    // differences 0.05, 0.04: 12.706205 * 0.005
    close(
        plus_acc.estimate.unwrap().interval.unwrap().half_width,
        0.063531,
    );
    assert!(!plus_acc.excludes_zero);
}

#[test]
fn pairing_uses_seed_names_not_positions() {
    // The arm lists its seeds in another order and lacks the baseline's seed "c".
    let input = ReportInput {
        title: "t".into(),
        metrics: vec!["m".into()],
        rows: vec![
            row(
                "base",
                &[],
                vec![
                    replicate("a", &[("m", 1.0)]),
                    replicate("b", &[("m", 2.0)]),
                    replicate("c", &[("m", 10.0)]),
                ],
            ),
            row(
                "arm",
                &[],
                vec![
                    replicate("b", &[("m", 2.5)]),
                    replicate("a", &[("m", 1.5)]),
                    replicate("d", &[("m", 7.0)]),
                ],
            ),
        ],
        baseline: Some(0),
        x_axis: None,
        curves: vec![],
    };
    let summary = summarize(&input).unwrap();
    let difference = summary.rows[1].cells[0].difference.as_ref().unwrap();
    let estimate = difference.estimate.unwrap();
    assert_eq!(estimate.n, 2);
    assert_eq!(estimate.mean, 0.5);
    assert_eq!(estimate.interval.unwrap().half_width, 0.0);
    // Identical differences give a zero-width interval, which is no evidence: never significant.
    assert!(!difference.excludes_zero);
    let note = &summary.notes[difference.note.unwrap()];
    assert_eq!(
        note,
        "difference to base: seed d has no \"m\" in the baseline"
    );
}

#[test]
fn one_seed_gives_the_mean_without_interval() {
    let summary = summarize(&common::ablation()).unwrap();
    let single = summary.rows[3].cells[0].estimate.unwrap();
    assert_eq!((single.n, single.mean, single.interval), (1, 0.65, None));
    let difference = summary.rows[3].cells[0].difference.as_ref().unwrap();
    close(difference.estimate.unwrap().mean, -0.05);
    assert!(!difference.excludes_zero);
}

#[test]
fn missing_replicates_are_counted_and_explained() {
    let summary = summarize(&common::ablation()).unwrap();
    let plus_acc = &summary.rows[1].cells[0];
    assert_eq!(plus_acc.estimate.unwrap().n, 2);
    assert_eq!(
        plus_acc.missing,
        vec!["plus, seed 3: evaluate[arm=plus,seed=3] has not run"]
    );
    // Both metrics of plus miss the same seed, so they cite one note.
    assert_eq!(plus_acc.note, summary.rows[1].cells[1].note);
    let full_auc = &summary.rows[2].cells[1];
    assert_eq!(
        full_auc.missing,
        vec!["full, seed 3: no metric \"auc\" in its results"]
    );
    assert_eq!(summary.notes.len(), 2);
}

#[test]
fn a_row_with_nothing_run_has_no_estimate() {
    let mut input = common::ablation();
    input.rows.push(row(
        "pending",
        &[],
        vec![
            not_run("1", "pretrain[seed=1] has not run"),
            not_run("2", "pretrain[seed=2] has not run"),
        ],
    ));
    let summary = summarize(&input).unwrap();
    let cell = &summary.rows[4].cells[0];
    assert_eq!(cell.estimate, None);
    assert_eq!(cell.missing.len(), 2);
    let difference = cell.difference.as_ref().unwrap();
    assert_eq!(difference.estimate, None);
    assert_eq!(difference.note, cell.note);
    let markdown = umdflow_report::to_markdown(&summary);
    assert!(
        markdown.contains("| pending | 2 | —[^3] | —[^3] |"),
        "{markdown}"
    );
    assert!(markdown.contains(
        "[^3]: Not available: pending, seed 1: pretrain\\[seed=1\\] has not run; pending, seed 2: \
         pretrain\\[seed=2\\] has not run."
    ));
}

#[test]
fn invalid_input_is_rejected_with_the_record_named() {
    let mut input = common::ablation();
    input.baseline = Some(9);
    let error = summarize(&input).unwrap_err();
    assert!(matches!(
        error,
        ReportError::BaselineOutOfRange { index: 9, rows: 4 }
    ));
    assert!(error.to_string().contains("`baseline` is 9"));

    let mut input = common::ablation();
    input.rows[2].label = "base".into();
    assert!(matches!(
        summarize(&input).unwrap_err(),
        ReportError::DuplicateRow { .. }
    ));

    let mut input = common::ablation();
    input.rows[0].replicates[1].seed = "1".into();
    let error = summarize(&input).unwrap_err().to_string();
    assert!(
        error.contains("row \"base\" has seed \"1\" twice"),
        "{error}"
    );

    let mut input = common::ablation();
    input.metrics.push("acc".into());
    assert!(matches!(
        summarize(&input).unwrap_err(),
        ReportError::DuplicateMetric { .. }
    ));

    let mut input = common::ablation();
    input.rows[1].replicates[0] = replicate("1", &[("acc", f64::NAN), ("auc", 0.5)]);
    let error = summarize(&input).unwrap_err().to_string();
    assert!(
        error.contains("row \"plus\", seed \"1\", metric \"acc\" is NaN"),
        "{error}"
    );
    // A value of an unlisted metric is not shown, so it may be anything.
    let mut input = common::ablation();
    input.rows[1].replicates[0] = replicate("1", &[("acc", 0.7), ("loss", f64::INFINITY)]);
    assert!(summarize(&input).is_ok());
}

/// Per-item outcomes of `acc` for seeds "1" and "2": `right` of 200 items correct, the first ones.
fn with_items(seed: &str, acc_right: usize) -> umdflow_report::Replicate {
    let outcomes: Vec<f64> = (0..200).map(|i| f64::from(i < acc_right)).collect();
    let mut r = replicate(seed, &[("acc", acc_right as f64 / 200.0)]);
    r.items.insert("acc".to_string(), outcomes);
    r
}

#[test]
fn the_paired_bootstrap_stands_beside_the_t_interval_and_repeats() {
    let input = ReportInput {
        title: "boot".to_string(),
        metrics: vec!["acc".to_string()],
        rows: vec![
            row(
                "base",
                &[],
                vec![with_items("1", 100), with_items("2", 110)],
            ),
            // Seed 1: +60 items right; seed 2: the same items right as the baseline.
            row("arm", &[], vec![with_items("1", 160), with_items("2", 110)]),
        ],
        baseline: Some(0),
        x_axis: None,
        curves: vec![],
    };
    let summary = summarize(&input).unwrap();
    let difference = summary.rows[1].cells[0].difference.as_ref().unwrap();
    let within = &difference.within_seed;
    assert_eq!(within.len(), 2);
    assert_eq!((within[0].seed.as_str(), within[0].items), ("1", 200));
    assert!((within[0].mean - 0.3).abs() < 1e-12);
    assert!(
        within[0].excludes_zero && within[0].low > 0.2,
        "{:?}",
        within[0]
    );
    // Identical outcomes: a zero-width interval at 0, never significant.
    assert_eq!(
        (within[1].mean, within[1].low, within[1].high),
        (0.0, 0.0, 0.0)
    );
    assert!(!within[1].excludes_zero);
    // Over seeds the t interval (2 values, 0.3 and 0) is wide and does not exclude 0.
    assert!(!difference.excludes_zero);
    let markdown = umdflow_report::to_markdown(&summary);
    assert!(
        markdown.contains("## Paired bootstrap over test items, within each seed"),
        "{markdown}"
    );
    // Seeded: the same input gives the same report.
    assert_eq!(summarize(&input).unwrap(), summary);
    // Replicates without items give no bootstrap rows and no section.
    let plain = summarize(&common::ablation()).unwrap();
    assert!(
        plain.rows[1].cells[0]
            .difference
            .as_ref()
            .unwrap()
            .within_seed
            .is_empty()
    );
    assert!(!umdflow_report::to_markdown(&plain).contains("Paired bootstrap"));
}
