//! The README's example pipeline runs and gives sensible metrics.

use std::path::Path;

use crate::support::*;

#[test]
fn the_example_pipeline_runs_and_reports_metrics() {
    let project = Project::new();
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/example/example.yaml");
    let cache = project.path("cache");
    let args = [
        "run",
        pipeline.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--set",
        "seeds=[0]",
        "--set",
        "sweep.lam=[0.1,1000]",
        "--no-lock-file",
    ];
    let run = project.json(&args, 0);
    assert_eq!(
        run["executed"], 6,
        "generate, split, 2 fits, 2 evaluations: {run}"
    );
    let show = project.umdflow(&[
        "show",
        pipeline.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--set",
        "seeds=[0]",
        "--set",
        "sweep.lam=[0.1,1000]",
        "--json",
    ]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let r2 = |id: &str| {
        shown["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["metrics"]["r2"]
            .as_f64()
            .unwrap()
    };
    // Light regularisation fits the linear data well; very heavy regularisation shrinks it away.
    assert!(r2("evaluate[lam=0.1,seed=0]") > 0.8);
    assert!(r2("evaluate[lam=1000,seed=0]") < r2("evaluate[lam=0.1,seed=0]"));
    assert!(
        !pipeline.parent().unwrap().join(".umdflow").exists(),
        "--cache was used"
    );
}
