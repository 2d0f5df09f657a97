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

/// The paper's ablation pipeline, shrunk to seconds: every arm runs, `report` renders it, and a
/// new seed would run only the new instances (the ingests are shared).
#[test]
fn the_ablation_pipeline_runs_small_and_reports() {
    let project = Project::new();
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/ablation.yaml");
    let cache = project.path("cache");
    let shrink = [
        "--set",
        "corpus.params.count=64",
        "--set",
        "downstream.params.count=64",
        "--set",
        "pretrain.params.max_steps=2",
        "--set",
        "calibrate.params.epochs=1",
        "--set",
        "tune_vqa.params.epochs=1",
        "--set",
        "tune_cls.params.epochs=1",
        "--set",
        "tune_ret.params.epochs=1",
    ];
    let with = |extra: &[&str]| {
        let mut args = vec![
            pipeline.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(&shrink);
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let mut run_args = vec!["run".to_string(), "--no-lock-file".to_string()];
    run_args.extend(with(&["--set", "seeds=[0]"]));
    let run_refs: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let run = project.json(&run_refs, 0);
    assert_eq!(run["failed"], 0);
    // 2 ingests, 4 masks, 7 pre-trainings, 8 calibrations, 10 x 3 tunings and evaluations.
    assert_eq!(run["executed"], 81, "10 arms x 1 seed, shared work once");

    let mut plan_args = vec!["plan".to_string()];
    plan_args.extend(with(&["--set", "seeds=[0, 1]"]));
    let plan_refs: Vec<&str> = plan_args.iter().map(String::as_str).collect();
    let plan = project.json(&plan_refs, 0);
    assert_eq!(plan["cached"], 81, "{plan}");
    assert_eq!(plan["run"], 79, "only seed 1's instances would run: {plan}");

    let out = project.path("report");
    let mut report_args = vec![
        "report".to_string(),
        "--out".to_string(),
        out.to_str().unwrap().to_string(),
    ];
    report_args.extend(with(&["--set", "seeds=[0]"]));
    let report_refs: Vec<&str> = report_args.iter().map(String::as_str).collect();
    let output = project.umdflow(&report_refs);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    for arm in [
        "data-level",
        "+feamim",
        "+feamlm",
        "full-mr",
        "+td-calib",
        "+gm-coord",
        "full-umd, ratio=0.9",
    ] {
        assert!(table.contains(arm), "{arm} missing from\n{table}");
    }
}
