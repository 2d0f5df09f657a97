//! Several processes on one cache at different moments: staggered runs compute every stage once,
//! and `gc` during runs breaks nothing and makes nothing compute twice.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::*;

/// A prep stage, three seeds of work and a sum; each stage takes a noticeable time.
fn slow_pipeline() -> String {
    format!(
        r#"name: shared
seeds: 6
stages:
  prep:
    kind: cmd
    run: 'sleep 0.4; seq 1 50000 > "$UMDFLOW_OUT/big"; {RECORD}'
  work:
    kind: cmd
    inputs: [prep]
    params: {{seed: "${{seed}}"}}
    run: 'sleep 0.$(( (UMDFLOW_PARAM_SEED * 7) % 5 + 1 )); cp "$UMDFLOW_INPUT_PREP/big" "$UMDFLOW_OUT/copy"; {RECORD}'
  sum:
    kind: cmd
    inputs: [work]
    run: 'sleep 0.3; {RECORD}'
"#
    )
}

const INSTANCES: [&str; 13] = [
    "prep",
    "sum[seed=0]",
    "sum[seed=1]",
    "sum[seed=2]",
    "sum[seed=3]",
    "sum[seed=4]",
    "sum[seed=5]",
    "work[seed=0]",
    "work[seed=1]",
    "work[seed=2]",
    "work[seed=3]",
    "work[seed=4]",
    "work[seed=5]",
];

fn spawn_run(project: &Project, jobs: &str) -> Child {
    project
        .command(&["run", "p.yaml", "--json", "--jobs", jobs])
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
    // Different --jobs give each process a different order of lease attempts.
    for jobs in ["1", "3", "2", "4"] {
        children.push(spawn_run(&project, jobs));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_all_succeeded(children);
    assert_each_ran_once(&project);
    let verify = project.umdflow(&["verify", "p.yaml"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
}

/// The exact window of issue 11 item 3: B plans while A has not finished `work[k=2]`, is busy
/// with `work[k=1]` while A finishes it, then finds its lease free.
#[test]
fn a_key_finished_elsewhere_after_planning_is_not_recomputed() {
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            r#"name: window
sweep:
  k: [2]
stages:
  prep:
    kind: cmd
    run: '{RECORD}'
  work:
    kind: cmd
    inputs: [prep]
    params: {{k: "${{k}}"}}
    run: 'if [ "$UMDFLOW_PARAM_K" = 1 ]; then sleep 1.2; else sleep 0.3; fi; {RECORD}'
"#
        ),
    );
    let first = project
        .command(&["run", "p.yaml", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !project.journal().contains(&"prep".to_string()) {
        assert!(start.elapsed() < Duration::from_secs(20), "prep never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = project
        .command(&[
            "run",
            "p.yaml",
            "--json",
            "--jobs",
            "1",
            "--set",
            "sweep.k=[1,2]",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_all_succeeded(vec![first, second]);
    let mut journal = project.journal();
    journal.sort();
    assert_eq!(journal, ["prep", "work[k=1]", "work[k=2]"]);
}

/// Issue 11 item 4: `gc` while runs are going (which used to delete their just-stored blobs).
#[test]
fn gc_during_runs_breaks_nothing_and_recomputes_nothing() {
    let project = Project::new();
    project.write("p.yaml", &slow_pipeline());
    let first = spawn_run(&project, "1");
    std::thread::sleep(Duration::from_millis(300));
    let gc_all = project
        .command(&["gc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let second = spawn_run(&project, "2");
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

/// `gc` with settings that no longer reach a running pipeline's results would delete the blobs
/// that run still has to read (issue 11 item 4: "…/inputs/gen1/big: No such file or directory").
/// It waits for the run instead, then removes them.
#[test]
fn gc_waits_for_the_runs_whose_results_it_would_delete() {
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            r#"name: gcwait
seeds: 3
stages:
  gen:
    kind: cmd
    params: {{n: 1}}
    run: 'seq 1 50000 > "$UMDFLOW_OUT/big"; {RECORD}'
  mix:
    kind: cmd
    inputs: [gen]
    params: {{seed: "${{seed}}"}}
    run: 'sleep 0.5; cp "$UMDFLOW_INPUT_GEN/big" "$UMDFLOW_OUT/big"; {RECORD}'
"#
        ),
    );
    let run = spawn_run(&project, "1");
    let start = std::time::Instant::now();
    while !project.journal().contains(&"gen".to_string()) {
        assert!(start.elapsed() < Duration::from_secs(20), "gen never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let gc = project.umdflow(&["gc", "p.yaml", "--set", "gen.params.n=2"]);
    assert_all_succeeded(vec![run]);
    assert_eq!(gc.status.code(), Some(0), "{}", stderr(&gc));
    assert!(
        stderr(&gc).contains("waiting for the other umdflow processes"),
        "{}",
        stderr(&gc)
    );
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("removed 4 records"),
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
}
