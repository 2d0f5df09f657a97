//! The store's own guarantees through the binary: a damaged index gets a clear error and a repair
//! path, a stage cannot change its inputs, and the lock file says which thread count and device
//! produced each result.

use crate::support::*;

fn two_stages() -> String {
    format!(
        r#"name: two
stages:
  a:
    kind: cmd
    run: 'seq 1 1000 > "$UMDFLOW_OUT/data"; {RECORD}'
  b:
    kind: cmd
    inputs: [a]
    run: 'cp "$UMDFLOW_INPUT_A/data" "$UMDFLOW_OUT/copy"; {RECORD}'
"#
    )
}

#[test]
fn a_damaged_index_names_the_file_and_the_repair() {
    let project = Project::new();
    project.write("p.yaml", &two_stages());
    project.json(&["run", "p.yaml"], 0);
    let index = project.path(".umdflow/index.redb");
    std::fs::write(&index, b"not a database").unwrap();
    for args in [
        vec!["show", "p.yaml"],
        vec!["run", "p.yaml"],
        vec!["verify", "p.yaml"],
        vec!["gc"],
    ] {
        let output = project.umdflow(&args);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.contains(&index.display().to_string())
                && text.contains("is damaged")
                && text.contains("umdflow verify --repair"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    let repair = project.umdflow(&["verify", "p.yaml", "--repair"]);
    let text = stderr(&repair);
    assert_eq!(repair.status.code(), Some(1), "damage was found: {text}");
    assert!(text.contains("moved it to"), "{text}");
    assert!(
        std::fs::read_dir(project.path(".umdflow"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("index.redb.damaged-")),
        "the damaged index is kept beside the fresh one"
    );
    project.clear_journal();
    let run = project.json(&["run", "p.yaml"], 0);
    assert_eq!(with_status(&run, "executed"), ["a", "b"]);
    let verify = project.umdflow(&["verify", "p.yaml"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
}

/// Issue 11 item 5: inputs are hard links to the blobs, and root can write read-only files.
#[test]
fn a_stage_that_writes_into_its_input_fails_and_the_upstream_recomputes() {
    for write in [
        // Appends (size changes).
        r#"chmod u+w "$f"; echo evil >> "$f""#,
        // Rewrites one byte in place and restores the time (only a hash can tell).
        r#"cp -p "$f" ref; chmod u+w "$f"; printf 9 | dd of="$f" bs=1 seek=0 conv=notrunc 2>/dev/null; touch -r ref "$f""#,
    ] {
        let project = Project::new();
        let pipeline = format!(
            r#"name: writer
stages:
  a:
    kind: cmd
    run: 'seq 1 1000 > "$UMDFLOW_OUT/data"; {RECORD}'
  b:
    kind: cmd
    inputs: [a]
    params: {{write: 1}}
    run: |
      f="$UMDFLOW_INPUT_A/data"
      if [ "$UMDFLOW_PARAM_WRITE" = 1 ]; then {write}; fi
      cp "$f" "$UMDFLOW_OUT/copy"
"#
        );
        project.write("p.yaml", &pipeline);
        let output = project.umdflow(&["run", "p.yaml", "--json"]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{write}: {}",
            stderr(&output)
        );
        let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(with_status(&run, "failed"), ["b"], "{write}: {run}");
        assert!(
            stderr(&output).contains("an input changed while the stage ran (a/data"),
            "{write}: {}",
            stderr(&output)
        );
        // The changed upstream result is not served again: `a` recomputes, and `b` reads the
        // true bytes.
        project.clear_journal();
        let rerun = project.json(&["run", "p.yaml", "--set", "b.params.write=0"], 0);
        assert_eq!(
            with_status(&rerun, "executed"),
            ["a", "b"],
            "{write}: {rerun}"
        );
        let copy = std::fs::read_dir(project.path(".umdflow/blobs"))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap_or_default())
            .filter(|text| text.starts_with("1\n2\n"))
            .collect::<Vec<_>>();
        let expected: String = (1..=1000).map(|i| format!("{i}\n")).collect();
        assert!(
            !copy.is_empty() && copy.iter().all(|text| *text == expected),
            "{write}: every stored copy of a's output is the true one"
        );
        let verify = project.umdflow(&["verify", "p.yaml"]);
        assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    }
}

/// Issue 11 item 9 (H6): the lock file shows the thread count and device that produced each
/// cached result, not the current invocation's.
#[test]
fn the_lock_file_records_what_produced_each_result() {
    let project = Project::new();
    project.write(
        "p.yaml",
        r#"name: lock
stages:
  a:
    kind: cmd
    run: 'printf "{\"device\": \"cpu\", \"n\": 1}" > "$UMDFLOW_OUT/metrics.json"'
  b:
    kind: cmd
    inputs: [a]
    run: 'true'
"#,
    );
    project.json(&["run", "p.yaml", "--threads-per-stage", "3"], 0);
    let rerun = project.json(&["run", "p.yaml", "--threads-per-stage", "1"], 0);
    assert_eq!(rerun["executed"], 0);
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path("p.lock.json")).unwrap())
            .unwrap();
    assert!(lock.get("threads_per_stage").is_none(), "{lock}");
    let instances = lock["instances"].as_array().unwrap();
    assert_eq!(instances[0]["threads"], 3, "{lock}");
    assert_eq!(instances[0]["device"], "cpu", "{lock}");
    assert_eq!(instances[1]["threads"], 3, "{lock}");
    assert!(instances[1]["device"].is_null(), "{lock}");
}

/// A panic in the engine's own part of a job (here: a failpoint in the commit) fails that stage;
/// it used to leave the main loop waiting forever for the job (review C10).
#[test]
fn a_panic_while_committing_fails_the_stage_instead_of_hanging() {
    let project = Project::new();
    project.write("p.yaml", &two_stages());
    let mut child = project
        .command(&["run", "p.yaml", "--json", "--jobs", "2"])
        .env("UMDFLOW_FAILPOINT", "blob:renamed:panic")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("umdflow hung after a panic in a job");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(with_status(&run, "failed"), ["a"], "{run}");
    assert!(
        stderr(&output).contains("internal error: failpoint blob:renamed hit"),
        "{}",
        stderr(&output)
    );
    let rerun = project.json(&["run", "p.yaml"], 0);
    assert_eq!(with_status(&rerun, "executed"), ["a", "b"], "{rerun}");
}
