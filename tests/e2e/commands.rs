use crate::support::*;

fn failing_pipeline() -> String {
    format!(
        r#"name: fail
stages:
  bad:
    kind: cmd
    run: 'echo "about to fail" >&2; exit 3'
  below:
    kind: cmd
    inputs: [bad]
    run: '{RECORD}'
  independent:
    kind: cmd
    inputs: [slow]
    run: '{RECORD}'
  slow:
    kind: cmd
    run: 'sleep 0.3; {RECORD}'
"#
    )
}

#[test]
fn a_failure_skips_descendants_and_keeps_finished_work() {
    let project = Project::new();
    project.write("p.yaml", &failing_pipeline());
    let output = project
        .command(&["run", "p.yaml", "--json", "--jobs", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("stage bad failed: command exited with status 3"),
        "{err}"
    );
    assert!(
        err.contains("about to fail"),
        "the log tail is shown: {err}"
    );
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(with_status(&run, "failed"), ["bad"]);
    let below = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "below")
        .unwrap();
    assert_eq!(below["status"], "skipped");
    assert_eq!(below["reason"], "input bad failed");
    // `slow` was already running when `bad` failed: it finished and is cached.
    assert_eq!(with_status(&run, "executed"), ["slow"]);
    assert_eq!(with_status(&run, "skipped"), ["below", "independent"]);

    let keep_going = project.json(&["run", "p.yaml", "--keep-going"], 1);
    assert_eq!(with_status(&keep_going, "executed"), ["independent"]);
    assert_eq!(with_status(&keep_going, "cached"), ["slow"]);

    let log = project.umdflow(&["log", "p.yaml", "bad"]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("about to fail"));
}

#[test]
fn show_dag_log_and_kinds() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.5]"));
    project.json(&["run", "p.yaml"], 0);

    let show = project.umdflow(&["show", "p.yaml"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("train[ratio=0.5,seed=1]") && text.contains("score=1"),
        "{text}"
    );

    let dot = String::from_utf8_lossy(&project.umdflow(&["dag", "p.yaml"]).stdout).to_string();
    assert!(dot.starts_with("digraph \"sweep\""), "{dot}");
    assert_eq!(
        dot.matches(" -> ").count(),
        4,
        "prep feeds two trains, each feeds a report: {dot}"
    );
    let mermaid = String::from_utf8_lossy(
        &project
            .umdflow(&["dag", "p.yaml", "--format", "mermaid"])
            .stdout,
    )
    .to_string();
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("-->"),
        "{mermaid}"
    );

    let log = project.umdflow(&["log", "p.yaml", "train[ratio=0.5,seed=0]"]);
    assert_eq!(log.status.code(), Some(0), "{}", stderr(&log));

    let kinds = String::from_utf8_lossy(&project.umdflow(&["kinds"]).stdout).to_string();
    assert!(kinds.contains("cmd"), "{kinds}");
}

#[test]
fn gc_removes_what_the_pipeline_no_longer_reaches() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.25, 0.5]"));
    project.json(&["run", "p.yaml"], 0);
    project.write("p.yaml", &sweep_pipeline("[0.5]"));
    let gc = project.umdflow(&["gc", "p.yaml"]);
    let text = String::from_utf8_lossy(&gc.stdout).to_string();
    assert_eq!(gc.status.code(), Some(0), "{}", stderr(&gc));
    assert!(text.starts_with("removed 4 records"), "{text}");
    let run = project.json(&["run", "p.yaml"], 0);
    assert_eq!(
        run["executed"], 0,
        "what the pipeline reaches is kept: {run}"
    );
    let run = project.json(&["run", "p.yaml", "--set", "sweep.ratio=[0.25]"], 0);
    assert_eq!(
        run["executed"], 4,
        "what it no longer reached was removed: {run}"
    );
}

#[test]
fn cache_location_can_be_overridden() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.5]"));
    project.json(&["run", "p.yaml", "--cache", "elsewhere"], 0);
    assert!(project.path("elsewhere/index.redb").exists());
    let from_env = project
        .command(&["run", "p.yaml", "--json"])
        .env("UMDFLOW_CACHE", project.path("elsewhere"))
        .output()
        .unwrap();
    let run: serde_json::Value = serde_json::from_slice(&from_env.stdout).unwrap();
    assert_eq!(run["executed"], 0, "{run}");
}

#[test]
fn the_lock_file_is_identical_for_identical_results() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.5]"));
    project.json(&["run", "p.yaml", "--cache", "c1"], 0);
    let first = std::fs::read_to_string(project.path("p.lock.json"))
        .expect("lock file beside the pipeline");
    // A second run from an empty cache, and a rerun from a full one, write the same lock file.
    project.json(&["run", "p.yaml", "--cache", "c2"], 0);
    assert_eq!(
        std::fs::read_to_string(project.path("p.lock.json")).unwrap(),
        first
    );
    project.json(&["run", "p.yaml", "--cache", "c2"], 0);
    assert_eq!(
        std::fs::read_to_string(project.path("p.lock.json")).unwrap(),
        first
    );
    let lock: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(lock["pipeline"], "sweep");
    assert!(lock["dependencies"]["blake3"].is_string(), "{lock}");
    let train = lock["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "train[ratio=0.5,seed=0]")
        .unwrap();
    assert_eq!(train["params"]["ratio"], 0.5);
    assert_eq!(train["metrics"]["score"], 1);
    assert_eq!(train["metrics_digest"].as_str().unwrap().len(), 64);

    project.json(
        &[
            "run",
            "p.yaml",
            "--cache",
            "c2",
            "--lock-file",
            "elsewhere.json",
        ],
        0,
    );
    assert!(project.path("elsewhere.json").exists());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.25, 0.5, 0.75]"));
    project.json(&["run", "p.yaml"], 0);
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' run p.yaml --json | head -1"))
        .current_dir(project.dir.path())
        .output()
        .unwrap();
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

#[test]
fn the_pipeline_reference_lists_every_kind_with_its_defaults() {
    let output = std::process::Command::new(BIN)
        .args(["kinds", "--defaults"])
        .output()
        .unwrap();
    let listed = String::from_utf8(output.stdout).unwrap();
    let doc_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pipeline-reference.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();
    let block = doc
        .split("<!-- kinds:begin -->\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n<!-- kinds:end -->").next())
        .expect("the kinds block in docs/pipeline-reference.md");
    assert_eq!(
        block, listed,
        "update docs/pipeline-reference.md from `umdflow kinds --defaults`"
    );
}
