//! The ML stage kinds run through the engine: ingest -> mask -> pretrain -> calibrate ->
//! coordinate-tune -> evaluate, shrunk with --set so it takes seconds.

use std::path::Path;

use crate::support::*;

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
    args.extend_from_slice(&QUICKSTART_SMALL);
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

fn ablation_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/ablation.yaml")
}

/// `umdflow COMMAND pipelines/ablation.yaml --set preset=ci --cache CACHE EXTRA...`.
fn ablation_args(command: &str, cache: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        command,
        ablation_file().to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--set",
        "preset=ci",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn ablation(project: &Project, command: &str, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let args = ablation_args(command, cache, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    project.json(&refs, 0)
}

/// `(stage name, id)` of the instances a `plan --json` would run.
fn would_run(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "run")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The paper's ablation pipeline at its `ci` preset (the one CI runs): every arm runs and shared
/// work runs once; a new seed would run only its own instances; a GM-Coord `alpha` change reaches
/// only the tunings (and evaluations) of arms that modulate; `report` renders the table.
#[test]
fn the_ablation_pipeline_runs_at_its_ci_preset_and_reruns_only_what_changed() {
    let project = Project::new();
    let cache = project.path("cache");
    let run = ablation(&project, "run", &cache, &["--no-lock-file"]);
    assert_eq!(run["failed"], 0, "{run}");
    // Per seed: 1 mask, 3 pre-trainings (none, data-level, full), 4 calibrations (3 pass-throughs
    // and one TD-Calib) and a probe of each, 6 arms x 3 tunings and evaluations; plus the 2
    // ingests: 2 + 2 x 48.
    assert_eq!(run["executed"], 98, "6 arms x 2 seeds, shared work once");

    let plan = ablation(&project, "plan", &cache, &["--set", "seeds=[0, 1, 2]"]);
    assert_eq!(plan["cached"], 98, "{plan}");
    assert_eq!(plan["run"], 48, "only seed 2's instances would run: {plan}");
    assert!(would_run(&plan).iter().all(|(_, id)| id.contains("seed=2")));

    let alpha = [
        "--set",
        "tune_vqa.params.gmcoord.alpha=0.9",
        "--set",
        "tune_cls.params.gmcoord.alpha=0.9",
        "--set",
        "tune_ret.params.gmcoord.alpha=0.9",
    ];
    let plan = ablation(&project, "plan", &cache, &alpha);
    let rerun = would_run(&plan);
    // The arms that modulate: +gm-coord and full-umd = 2 points x 2 seeds x 3 tasks, each a tuning
    // and its evaluation.
    assert_eq!(rerun.len(), 2 * 2 * 3 * 2, "{plan}");
    for (name, id) in &rerun {
        assert!(
            name.starts_with("tune_") || name.starts_with("eval_"),
            "{id} must not rerun for alpha"
        );
        assert!(id.contains("arm.coord=true"), "{id} does not modulate");
    }

    let out = project.path("report");
    let mut args = ablation_args("report", &cache, &[]);
    args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = project.umdflow(&refs);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    for arm in [
        "no-pretraining",
        "data-level",
        "full-mr",
        "+td-calib",
        "+gm-coord",
        "full-umd",
    ] {
        assert!(table.contains(arm), "{arm} missing from\n{table}");
    }
}

/// Two runs from empty caches give bit-identical metrics and outputs: their lock files agree.
#[test]
fn two_runs_from_empty_caches_give_identical_metrics() {
    let project = Project::new();
    let mut locks = Vec::new();
    for name in ["first", "second"] {
        let cache = project.path(&format!("{name}-cache"));
        let lock = project.path(&format!("{name}.lock.json"));
        // One seed and the full-umd arm: every ML kind, in seconds.
        ablation(
            &project,
            "run",
            &cache,
            &[
                "--lock-file",
                lock.to_str().unwrap(),
                "--set",
                "seeds=[0]",
                "--set",
                "sweep.arm=[{name: full-umd, steps: null, feamim: true, feamlm: true, calib_steps: null, coord: true}]",
            ],
        );
        locks.push(std::fs::read_to_string(&lock).unwrap());
    }
    let lock: serde_json::Value = serde_json::from_str(&locks[0]).unwrap();
    let evaluations: Vec<&serde_json::Value> = lock["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "evaluate")
        .collect();
    assert_eq!(evaluations.len(), 3);
    assert!(evaluations.iter().all(|e| e["metrics_digest"].is_string()));
    // The lock file holds every key, output digest and metric digest, and no times or paths
    // that differ between runs: identical files mean identical results.
    assert_eq!(locks[0], locks[1]);
}
