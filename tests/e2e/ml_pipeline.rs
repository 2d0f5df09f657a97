//! The ML stage kinds run through the engine: ingest -> mask -> pretrain -> calibrate ->
//! coordinate-tune -> evaluate, shrunk with --set so it takes seconds.

use std::path::Path;

use crate::support::*;

const SMALL: [&str; 10] = [
    "--set",
    "corpus.params.count=64",
    "--set",
    "downstream.params.count=64",
    "--set",
    "pretrain.params.max_steps=2",
    "--set",
    "calibrate.params.max_steps=2",
    "--set",
    "tune.params.epochs=1",
];

fn run(project: &Project, extra: &[&str]) -> serde_json::Value {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/quickstart.yaml");
    let cache = project.path("cache");
    let mut args = vec![
        "run",
        pipeline.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--no-lock-file",
    ];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    project.json(&args, 0)
}

#[test]
fn the_quickstart_runs_and_a_masking_change_reruns_only_below_mask() {
    let project = Project::new();
    let first = run(&project, &[]);
    assert_eq!(first["executed"], 7, "{first}");
    let evaluate = first["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "evaluate")
        .unwrap();
    assert_eq!(evaluate["status"], "executed");

    let again = run(&project, &[]);
    assert_eq!(again["executed"], 0, "{again}");

    let changed = run(&project, &["--set", "mask.params.image_ratio=0.5"]);
    assert_eq!(
        with_status(&changed, "cached"),
        ["corpus", "downstream"],
        "changing the masking ratio never reruns ingest: {changed}"
    );
    assert_eq!(changed["executed"], 5);
}
