//! The evaluation instruments through the engine: a `probe` of a `pretrain max_steps: 0`
//! checkpoint (the random-init baseline) beside a trained one, and the report's paired bootstrap
//! over the per-item outcomes a stage saves in its metrics.json.

use serde_json::Value;

use crate::support::*;

fn summary(project: &Project) -> Value {
    let text = std::fs::read_to_string(project.path("out/ablation.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_probe_reads_a_random_init_and_a_trained_checkpoint_beside_raw_pixels() {
    let project = Project::new();
    project.write(
        "p.yaml",
        r#"name: probe
sweep:
  steps: [0, 2]
stages:
  corpus:
    kind: ingest
    params: {source: synthrad, preset: ci, domain: source, count: 96, seed: 0}
  mask:
    kind: mask
    inputs: [corpus]
    params: {epochs: 1, patch_size: 8, seed: 0}
  pretrain:
    kind: pretrain
    inputs: [corpus, mask]
    params: {preset: tiny, batch_size: 16, max_steps: "${steps}", device: cpu}
  probe:
    kind: probe
    inputs: [corpus, pretrain]
    params: {device: cpu}
report:
  stage: probe
"#,
    );
    let run = project.json(&["run", "p.yaml", "--cache", "cache", "--no-lock-file"], 0);
    assert_eq!(run["executed"], 6, "{run}");
    let output = project.umdflow(&["report", "p.yaml", "--cache", "cache", "--out", "out"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows = summary(&project)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    let cell = |row: &Value, metric: &str| {
        row["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} in {row}"))["estimate"]["mean"]
            .as_f64()
            .unwrap()
    };
    for row in &rows {
        for metric in [
            "encoder.accuracy",
            "encoder.balanced_accuracy",
            "encoder.auc.macro_auc",
            "encoder.findings.macro_auc",
            "pixels.accuracy",
            "majority_accuracy",
        ] {
            assert!(
                (0.0..=1.0).contains(&cell(row, metric)),
                "{metric} in {row}"
            );
        }
    }
    // Raw pixels read no checkpoint: the same on both rows.
    assert_eq!(
        cell(&rows[0], "pixels.accuracy"),
        cell(&rows[1], "pixels.accuracy")
    );
    assert_eq!(
        cell(&rows[0], "pixels.auc.macro_auc"),
        cell(&rows[1], "pixels.auc.macro_auc")
    );
}

#[test]
fn the_report_pairs_per_item_outcomes_within_each_seed() {
    let project = Project::new();
    // Arm `better` is right on 150 of 200 items, `base` on 100; `same` copies `base`.
    project.write(
        "p.yaml",
        r#"name: boot
seeds: [0, 1]
sweep:
  arm: [base, better, same]
stages:
  eval:
    kind: cmd
    run: |
      python3 -c "
      import json, os
      p = json.loads(os.environ['UMDFLOW_PARAMS'])
      right = 150 if p['arm'] == 'better' else 100
      items = [1 if i < right else 0 for i in range(200)]
      json.dump({'acc': right / 200, 'items': {'acc': items}}, open(os.environ['UMDFLOW_OUT'] + '/metrics.json', 'w'))
      "
    params: {arm: "${arm}", seed: "${seed}"}
report:
  stage: eval
  baseline: {arm: base}
"#,
    );
    project.json(&["run", "p.yaml", "--cache", "cache", "--no-lock-file"], 0);
    let output = project.umdflow(&["report", "p.yaml", "--cache", "cache", "--out", "out"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = summary(&project);
    let rows = summary["rows"].as_array().unwrap();
    let difference = |label: &str| {
        rows.iter().find(|r| r["label"] == label).unwrap()["cells"][0]["difference"].clone()
    };
    let better = difference("arm=better");
    let within = better["within_seed"].as_array().unwrap();
    assert_eq!(within.len(), 2, "{better}");
    assert!(
        within
            .iter()
            .all(|b| b["excludes_zero"] == true && b["items"] == 200)
    );
    // Identical per-seed values: a zero-width t interval and zero-width bootstrap intervals,
    // none of them significant.
    assert_eq!(better["excludes_zero"], false, "{better}");
    let same = difference("arm=same");
    assert_eq!(same["excludes_zero"], false);
    assert!(
        same["within_seed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["excludes_zero"] == false)
    );
    let markdown = std::fs::read_to_string(project.path("out/ablation.md")).unwrap();
    assert!(
        markdown.contains("Paired bootstrap over test items"),
        "{markdown}"
    );
    assert!(
        !markdown.contains("items.acc"),
        "per-item outcomes never become columns: {markdown}"
    );
}
