//! Several `umdflow run` processes on one cache: all succeed, no stage runs twice.

use std::process::Stdio;

use crate::support::*;

#[test]
fn two_concurrent_runs_share_the_work() {
    let project = Project::new();
    let mut text = String::from("name: concurrent\nseeds: 4\nstages:\n");
    text.push_str(&format!(
        "  shared:\n    kind: cmd\n    run: 'sleep 0.2; {RECORD}'\n"
    ));
    text.push_str(&format!(
        "  work:\n    kind: cmd\n    inputs: [shared]\n    run: 'sleep 0.2; {RECORD}'\n    params: {{seed: \"${{seed}}\"}}\n"
    ));
    project.write("p.yaml", &text);
    let spawn = || {
        project
            .command(&["run", "p.yaml", "--json", "--jobs", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    let second = spawn();
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut executed = Vec::new();
    for output in &outputs {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
        let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(run["failed"], 0);
        assert_eq!(
            run["executed"].as_u64().unwrap() + run["cached"].as_u64().unwrap(),
            5
        );
        executed.extend(with_status(&run, "executed"));
    }
    executed.sort();
    let mut journal = project.journal();
    journal.sort();
    let expected = [
        "shared",
        "work[seed=0]",
        "work[seed=1]",
        "work[seed=2]",
        "work[seed=3]",
    ];
    assert_eq!(
        journal, expected,
        "every stage ran exactly once across both processes"
    );
    assert_eq!(executed, expected);
    assert_eq!(
        project.umdflow(&["verify", "p.yaml"]).status.code(),
        Some(0)
    );
}
