//! `umdflow report` and `umdflow export` read only the cache.

use crate::support::*;

fn pipeline() -> String {
    r#"name: rep
seeds: [0, 1, 2]
design: one-at-a-time
baseline: {arm: full, ratio: 0.5}
sweep:
  arm:
    - {name: full, bonus: 2}
    - {name: ablated, bonus: 0}
  ratio: [0.25, 0.5]
stages:
  train:
    kind: cmd
    run: |
      python3 -c "import json,os; p=json.loads(os.environ['UMDFLOW_PARAMS']); json.dump({'acc': {'overall': p['ratio'] + p['bonus'] + p['seed'] / 10}}, open(os.environ['UMDFLOW_OUT'] + '/metrics.json', 'w'))"
      printf 'step,loss\n0,2.0\n1,1.5\n' > "$UMDFLOW_OUT/loss.csv"
    params: {ratio: "${ratio}", bonus: "${arm.bonus}", seed: "${seed}"}
report:
  stage: train
  x_axis: ratio
  curves:
    - {stage: train, file: loss.csv, x: step, y: loss, title: training loss}
"#
    .to_string()
}

#[test]
fn report_tabulates_cached_results_and_says_what_is_missing() {
    let project = Project::new();
    project.write("p.yaml", &pipeline());
    // Run only seeds 0 and 1; the report must say that seed 2 has not run, and never run it.
    project.json(&["run", "p.yaml", "--set", "seeds=[0, 1]"], 0);
    let output = project.umdflow(&["report", "p.yaml", "--out", "out"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let markdown = std::fs::read_to_string(project.path("out/ablation.md")).unwrap();
    assert!(markdown.contains("has not run"), "{markdown}");
    assert!(markdown.contains("ablated"), "{markdown}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path("out/ablation.json")).unwrap())
            .unwrap();
    assert!(json.to_string().contains("acc.overall"), "{json}");
    for file in ["ablation.csv", "ablation.tex", "report.html"] {
        assert!(project.path(&format!("out/{file}")).exists(), "{file}");
    }
    let html = std::fs::read_to_string(project.path("out/report.html")).unwrap();
    assert!(html.contains("<svg"), "plots are inline");
    assert_eq!(
        project.json(&["plan", "p.yaml"], 0)["run"],
        3,
        "report ran nothing: seed 2 of the 3 points is still missing"
    );
}

#[test]
fn export_bundles_pipeline_lock_metrics_and_report() {
    let project = Project::new();
    project.write("p.yaml", &pipeline());
    project.json(&["run", "p.yaml"], 0);
    let output = project.umdflow(&["export", "p.yaml", "--out", "bundle"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for file in [
        "p.yaml",
        "p.lock.json",
        "metrics.json",
        "report/ablation.md",
        "report/report.html",
    ] {
        assert!(project.path(&format!("bundle/{file}")).exists(), "{file}");
    }
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.path("bundle/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        metrics["train[arm.bonus=0,ratio=0.5,seed=2]"]["acc"]["overall"],
        0.7
    );
}

#[test]
fn report_without_a_report_section_explains() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.5]"));
    let output = project.umdflow(&["report", "p.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("has no `report:` section"),
        "{}",
        stderr(&output)
    );
}
