//! `umdflow export --format tensorboard|mlflow`: the cache's runs, read back with the tools' own
//! Python packages and compared with `umdflow show --json`. Tests that need a package print a
//! skip line and return when it is absent (`pip install tensorboard mlflow-skinny`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use umdflow_engine::report::flatten_metrics;
use umdflow_engine::scheduler::file_safe;

use crate::support::*;

fn quickstart_args(command: &str, project: &Project, extra: &[&str]) -> Vec<String> {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/quickstart.yaml");
    let mut args: Vec<String> = vec![
        command.into(),
        pipeline.to_str().unwrap().into(),
        "--cache".into(),
        project.path("cache").to_str().unwrap().into(),
    ];
    args.extend(QUICKSTART_SMALL.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn umdflow_ok(project: &Project, args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = project.umdflow(&args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}",
        stderr(&output)
    );
}

/// Runs the small quickstart and returns `show --json`'s instances by id.
fn cached_quickstart(project: &Project) -> BTreeMap<String, Value> {
    umdflow_ok(
        project,
        &quickstart_args("run", project, &["--no-lock-file", "-q"]),
    );
    let args = quickstart_args("show", project, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shown = project.json(&args, 0);
    let instances: BTreeMap<String, Value> = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    assert!(instances.values().all(|s| s["status"] == "cached"));
    instances
}

/// Equal up to a few units in the last place: serde_json's float parser (without its
/// `float_roundtrip` feature) may land one ULP off the number Python printed.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

/// Whether `python3` can import `module`; if not, prints the skip line. With
/// `UMDFLOW_REQUIRE_TRACKING=1` (CI sets it, after installing the packages) a missing package fails
/// the test instead, so that CI never skips it.
fn python_has(module: &str, test: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var("UMDFLOW_REQUIRE_TRACKING").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: UMDFLOW_REQUIRE_TRACKING=1 but the Python package `{module}` is not installed \
             (pip install tensorboard mlflow-skinny)"
        );
        eprintln!("skipping {test}: the Python package `{module}` is not installed");
    }
    found
}

/// Runs a Python script with arguments and parses the JSON it prints.
fn python_json(script: &str, args: &[&str]) -> Value {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        // MLflow 3 refuses file stores unless asked (they are in maintenance mode).
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// One column of a CSV as `(step, value)`, empty cells left out.
fn csv_column(text: &str, column: &str) -> Vec<(i64, f64)> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let step = header.iter().position(|h| *h == "step").unwrap();
    let wanted = header.iter().position(|h| *h == column).unwrap();
    lines
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let value = cells[wanted].parse::<f64>().ok()?;
            Some((cells[step].parse().unwrap(), value))
        })
        .collect()
}

const READ_TENSORBOARD: &str = r#"
import json, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
root = sys.argv[1]
runs = {}
for name in sorted(os.listdir(root)):
    acc = EventAccumulator(os.path.join(root, name), size_guidance={"scalars": 0})
    acc.Reload()
    runs[name] = {
        tag: [[e.step, e.value, e.wall_time] for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }
print(json.dumps(runs))
"#;

const READ_MLFLOW: &str = r#"
import json, sys, urllib.parse
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri="file:" + sys.argv[1])
experiment = client.get_experiment_by_name(sys.argv[2])
runs = {}
for run in client.search_runs([experiment.experiment_id], max_results=1000):
    history = {
        key: [[m.step, m.value, m.timestamp] for m in client.get_metric_history(run.info.run_id, key)]
        for key in run.data.metrics
    }
    runs[run.data.tags["instance"]] = {
        "name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": run.data.tags,
        "history": history,
        "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
        "artifact_dir": urllib.parse.unquote(urllib.parse.urlparse(run.info.artifact_uri).path),
    }
print(json.dumps({"experiment": experiment.name, "runs": runs}))
"#;

#[test]
fn tensorboard_reads_every_cached_instance_with_its_curves_and_metrics() {
    const TEST: &str = "tensorboard_reads_every_cached_instance_with_its_curves_and_metrics";
    if !python_has("tensorboard", TEST) {
        return;
    }
    let project = Project::new();
    let shown = cached_quickstart(&project);
    umdflow_ok(
        &project,
        &quickstart_args(
            "export",
            &project,
            &["--format", "tensorboard", "--out", "tb"],
        ),
    );
    let read = python_json(READ_TENSORBOARD, &[project.path("tb").to_str().unwrap()]);
    let runs = read.as_object().unwrap();
    let expected: Vec<String> = shown.keys().map(|id| file_safe(id)).collect();
    let mut names: Vec<String> = runs.keys().cloned().collect();
    names.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(names, expected_sorted, "one run per cached instance");

    for (id, instance) in &shown {
        let run = &runs[&file_safe(id)];
        let finished_s = instance["finished_at_ms"].as_f64().unwrap() / 1000.0;
        for (metric, value) in flatten_metrics(&instance["metrics"]) {
            let points = run[&metric]
                .as_array()
                .unwrap_or_else(|| panic!("{id}: {metric}"));
            assert_eq!(points.len(), 1, "{id}: {metric}");
            assert_eq!(points[0][0], 0, "final metrics sit at step 0");
            let read = points[0][1].as_f64().unwrap();
            assert!(
                same(read, f64::from(value as f32)),
                "{id}: {metric} is {read}, expected {value} as a 32-bit float"
            );
            assert!((points[0][2].as_f64().unwrap() - finished_s).abs() < 1e-3);
        }
    }

    // Training curves per step, from the kinds' CSVs: MR-Pretrain's terms, learning rate and
    // gradient norm; TD-Calib's loss; GM-Coord's rho and coefficients and the fine-tuning losses.
    let tags = |id: &str| -> Vec<String> {
        runs[&file_safe(id)]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let pretrain = shown.keys().find(|id| id.starts_with("pretrain")).unwrap();
    let calibrate = shown.keys().find(|id| id.starts_with("calibrate")).unwrap();
    let tune = shown.keys().find(|id| id.starts_with("tune")).unwrap();
    for tag in [
        "loss_curve/total",
        "loss_curve/mim",
        "loss_curve/lr",
        "loss_curve/grad_norm",
    ] {
        assert!(tags(pretrain).contains(&tag.to_string()), "{tag}");
    }
    assert!(tags(calibrate).contains(&"calib_loss/mr_loss".to_string()));
    for tag in [
        "gmcoord/rho",
        "gmcoord/coeff_text",
        "gmcoord/coeff_image",
        "gmcoord/task_loss",
    ] {
        assert!(tags(tune).contains(&tag.to_string()), "{tag}");
    }
    let total = runs[&file_safe(pretrain)]["loss_curve/total"]
        .as_array()
        .unwrap();
    let steps: Vec<i64> = total.iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert_eq!(steps.len(), 2, "pre-training ran two steps: {steps:?}");

    // The same cache gives the same bytes.
    umdflow_ok(
        &project,
        &quickstart_args(
            "export",
            &project,
            &["--format", "tensorboard", "--out", "tb2"],
        ),
    );
    for name in &expected {
        let files = |root: &str| -> Vec<(String, Vec<u8>)> {
            let dir = project.path(root).join(name);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().to_string(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            files.sort();
            files
        };
        assert_eq!(files("tb"), files("tb2"), "{name}");
    }
}

#[test]
fn mlflow_reads_every_cached_instance_with_params_metrics_tags_and_artifacts() {
    const TEST: &str = "mlflow_reads_every_cached_instance_with_params_metrics_tags_and_artifacts";
    if !python_has("mlflow", TEST) {
        return;
    }
    let project = Project::new();
    let shown = cached_quickstart(&project);
    umdflow_ok(
        &project,
        &quickstart_args("export", &project, &["--format", "mlflow", "--out", "ml"]),
    );
    let store = project.path("ml/mlruns");
    let read = python_json(READ_MLFLOW, &[store.to_str().unwrap(), "quickstart"]);
    assert_eq!(read["experiment"], "quickstart");
    let runs = read["runs"].as_object().unwrap();
    let mut names: Vec<&String> = runs.keys().collect();
    names.sort();
    assert_eq!(
        names,
        shown.keys().collect::<Vec<_>>(),
        "one run per cached instance"
    );

    for (id, instance) in &shown {
        let run = &runs[id];
        assert_eq!(run["name"], id.as_str());
        assert_eq!(run["status"], "FINISHED");
        assert_eq!(run["end_time"], instance["finished_at_ms"]);
        assert_eq!(run["tags"]["key"], instance["key"]);
        assert_eq!(run["tags"]["pipeline"], "quickstart");
        for (metric, value) in flatten_metrics(&instance["metrics"]) {
            let read = run["metrics"][&metric].as_f64().unwrap_or(f64::NAN);
            assert!(
                same(read, value),
                "{id}: {metric} is {read}, expected {value}"
            );
        }
    }

    let tune_id = shown.keys().find(|id| id.starts_with("tune")).unwrap();
    let tune = &runs[tune_id];
    assert_eq!(tune["tags"]["kind"], "coordinate-tune");
    assert_eq!(tune["tags"]["seed"], "0");
    assert_eq!(tune["params"]["epochs"], "1", "the --set value");
    assert_eq!(tune["params"]["gmcoord.enabled"], "true");
    assert_eq!(tune["params"]["task"], "classification");
    let artifacts: Vec<&str> = tune["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for file in ["gmcoord.csv", "gmcoord.png", "metrics.json"] {
        assert!(artifacts.contains(&file), "{file} in {artifacts:?}");
    }
    assert!(
        !artifacts.iter().any(|a| a.ends_with(".safetensors")),
        "checkpoints stay in the cache: {artifacts:?}"
    );

    // Each curve's history is the stage's own CSV column, step by step, stamped with the finish.
    let csv = std::fs::read_to_string(
        Path::new(tune["artifact_dir"].as_str().unwrap()).join("gmcoord.csv"),
    )
    .unwrap();
    for column in ["rho", "coeff_text", "task_loss"] {
        let history: Vec<(i64, f64)> = tune["history"][&format!("gmcoord/{column}")]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m[2], shown[tune_id]["finished_at_ms"]);
                (m[0].as_i64().unwrap(), m[1].as_f64().unwrap())
            })
            .collect();
        let expected = csv_column(&csv, column);
        assert_eq!(history.len(), expected.len(), "gmcoord/{column}");
        for ((step, value), (csv_step, csv_value)) in history.iter().zip(&expected) {
            assert_eq!(step, csv_step, "gmcoord/{column}");
            assert!(
                same(*value, *csv_value),
                "gmcoord/{column} at {step}: {value} vs {csv_value}"
            );
        }
        assert!(!history.is_empty());
    }
    let pretrain = &runs[shown.keys().find(|id| id.starts_with("pretrain")).unwrap()];
    assert_eq!(
        pretrain["history"]["loss_curve/lr"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Works without Python: what has not run is said and left out; run folders are named by id.
#[test]
fn instances_that_have_not_run_are_named_and_left_out() {
    let project = Project::new();
    project.write(
        "p.yaml",
        r#"name: curves
seeds: [0, 1, 2]
stages:
  train:
    kind: cmd
    run: |
      printf 'step,loss,note\n0,2.0,a\n1,1.5,b\n' > "$UMDFLOW_OUT/loss.csv"
      echo '{"acc": 0.5}' > "$UMDFLOW_OUT/metrics.json"
    params: {seed: "${seed}"}
"#,
    );
    project.json(&["run", "p.yaml", "--set", "seeds=[0, 1]"], 0);
    for format in ["tensorboard", "mlflow"] {
        let output = project.umdflow(&["export", "p.yaml", "--format", format, "--out", format]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(
            stderr(&output)
                .contains("1 instances have not run and are not exported: train[seed=2]"),
            "{}",
            stderr(&output)
        );
    }
    let mut tb: Vec<String> = std::fs::read_dir(project.path("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    tb.sort();
    assert_eq!(tb, ["train_seed_0_", "train_seed_1_"]);

    let store = project.path("mlflow/mlruns");
    let experiments: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "0" && p.file_name().unwrap() != ".trash")
        .collect();
    assert_eq!(experiments.len(), 1, "{experiments:?}");
    let run_dirs: Vec<_> = std::fs::read_dir(&experiments[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(run_dirs.len(), 2);
    for run in &run_dirs {
        let loss = std::fs::read_to_string(run.join("metrics/loss/loss")).unwrap();
        assert_eq!(
            loss.lines()
                .map(|l| l.split(' ').skip(1).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>(),
            ["2 0", "1.5 1"]
        );
        assert!(!run.join("metrics/loss/note").exists(), "text is no curve");
        assert_eq!(
            std::fs::read_to_string(run.join("metrics/acc"))
                .unwrap()
                .split(' ')
                .nth(1),
            Some("0.5")
        );
    }
}
