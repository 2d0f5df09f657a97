//! Crashes and interrupts never lose or corrupt what is cached.

use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn slow_pipeline() -> String {
    format!(
        r#"name: crash
stages:
  a:
    kind: cmd
    run: '{RECORD}'
  b:
    kind: cmd
    inputs: [a]
    run: 'echo partial > "$UMDFLOW_OUT/part"; if [ -n "$SLOW" ]; then touch started; sleep 30; fi; {RECORD}'
"#
    )
}

fn wait_for(project: &Project, file: &str, child: &mut Child) {
    let start = Instant::now();
    while !project.path(file).exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("umdflow exited early with {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stage never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(target: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, "--", target])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn kill_9_in_the_middle_of_a_stage_loses_nothing_completed() {
    let project = Project::new();
    project.write("p.yaml", &slow_pipeline());
    let mut child = project
        .command(&["run", "p.yaml", "--quiet"])
        .env("SLOW", "1")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&project, "started", &mut child);
    // Kill umdflow and the stage's shell together, as a crash or an OOM kill would.
    signal(&format!("-{}", child.id()), "-KILL");
    let _ = child.wait();

    let run = project.json(&["run", "p.yaml"], 0);
    assert_eq!(
        with_status(&run, "cached"),
        ["a"],
        "the completed stage stays cached: {run}"
    );
    assert_eq!(with_status(&run, "executed"), ["b"]);
    let verify = project.umdflow(&["verify", "p.yaml"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    let staging = std::fs::read_dir(project.path(".umdflow/staging"))
        .unwrap()
        .count();
    assert_eq!(staging, 0, "the dead run's staging folder is cleaned up");
}

#[test]
fn ctrl_c_stops_cleanly_and_keeps_completed_stages() {
    let project = Project::new();
    project.write("p.yaml", &slow_pipeline());
    let mut child = project
        .command(&["run", "p.yaml", "--json"])
        .env("SLOW", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&project, "started", &mut child);
    let clock = Instant::now();
    signal(&child.id().to_string(), "-INT");
    let output = child.wait_with_output().unwrap();
    assert!(
        clock.elapsed() < Duration::from_secs(10),
        "stopped promptly"
    );
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(run["interrupted"], true);
    assert_eq!(with_status(&run, "executed"), ["a"]);
    assert_eq!(with_status(&run, "failed"), ["b"]);

    let rerun = project.json(&["run", "p.yaml"], 0);
    assert_eq!(with_status(&rerun, "cached"), ["a"]);
    assert_eq!(with_status(&rerun, "executed"), ["b"]);
}
