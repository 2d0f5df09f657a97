//! Several processes on one cache at different moments: staggered runs compute every stage once,
//! and `gc` during runs breaks nothing and makes nothing compute twice.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::*;

/// A prep stage, three seeds of work and a sum; each stage takes a noticeable time.
fn slow_pipeline() -> String {
    format!(
        r#"name: shared
seeds: 3
stages:
  prep:
    kind: cmd
    run: 'sleep 0.4; seq 1 50000 > "$UMDFLOW_OUT/big"; {RECORD}'
  work:
    kind: cmd
    inputs: [prep]
    params: {{seed: "${{seed}}"}}
    run: 'sleep 0.4; cp "$UMDFLOW_INPUT_PREP/big" "$UMDFLOW_OUT/copy"; {RECORD}'
  sum:
    kind: cmd
    inputs: [work]
    run: 'sleep 0.3; {RECORD}'
"#
    )
}

const INSTANCES: [&str; 7] = [
    "prep",
    "sum[seed=0]",
    "sum[seed=1]",
    "sum[seed=2]",
    "work[seed=0]",
    "work[seed=1]",
    "work[seed=2]",
];

fn spawn_run(project: &Project) -> Child {
    project
        .command(&["run", "p.yaml", "--json", "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_all_succeeded(children: Vec<Child>) {
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(run["failed"], 0, "{run}");
        assert_eq!(run["skipped"], 0, "{run}");
    }
}

fn assert_each_ran_once(project: &Project) {
    let mut journal = project.journal();
    journal.sort();
    assert_eq!(journal, INSTANCES, "every stage ran exactly once");
}

/// Issue 11 item 3: a process that planned before another finished a key must not recompute it.
#[test]
fn staggered_runs_compute_every_stage_once() {
    let project = Project::new();
    project.write("p.yaml", &slow_pipeline());
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(spawn_run(&project));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_all_succeeded(children);
    assert_each_ran_once(&project);
    let verify = project.umdflow(&["verify", "p.yaml"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
}

/// Issue 11 item 4: `gc` while runs are going (which used to delete their just-stored blobs).
#[test]
fn gc_during_runs_breaks_nothing_and_recomputes_nothing() {
    let project = Project::new();
    project.write("p.yaml", &slow_pipeline());
    let first = spawn_run(&project);
    std::thread::sleep(Duration::from_millis(300));
    let gc_all = project
        .command(&["gc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let second = spawn_run(&project);
    let gc_pipeline = project
        .command(&["gc", "p.yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for gc in [gc_all, gc_pipeline] {
        let output = gc.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    assert_all_succeeded(vec![first, second]);
    assert_each_ran_once(&project);
    let verify = project.umdflow(&["verify", "p.yaml"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    let rerun = project.json(&["run", "p.yaml"], 0);
    assert_eq!(rerun["executed"], 0, "{rerun}");
}
