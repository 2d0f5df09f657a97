//! The Slurm executor against a real cluster (`scripts/slurm-ci.sh up` starts a one-node one;
//! `.ci/run` does that first). Without a cluster that answers, the cluster tests print a skip
//! line; with `UMDFLOW_REQUIRE_SLURM=1` (CI sets it) they fail instead, so CI never passes by
//! skipping. The worker tests at the end need no cluster.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::support::*;

/// Whether a Slurm cluster answers here; prints why not (or panics when CI requires one).
fn cluster(test: &str) -> bool {
    let Err(why_not) = cluster_answer() else {
        return true;
    };
    if std::env::var("UMDFLOW_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: UMDFLOW_REQUIRE_SLURM=1 but no Slurm cluster answers: {why_not} (run scripts/slurm-ci.sh up)"
        );
    }
    println!(
        "skip {test}: no Slurm cluster answers: {why_not} (scripts/slurm-ci.sh up starts one)"
    );
    false
}

/// `sinfo`'s answer, asked once per test process: without a controller it retries for about 9 s,
/// which every cluster test would otherwise pay again.
fn cluster_answer() -> &'static Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(|| {
        let answer = Command::new("sinfo")
            .args(["--noheader", "--format=%a"])
            .output();
        match answer {
            Err(err) => Err(format!("`sinfo` cannot run ({err})")),
            Ok(out) if !out.status.success() => Err(format!(
                "`sinfo` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(out) if !String::from_utf8_lossy(&out.stdout).contains("up") => {
                Err("no partition is up".to_string())
            }
            Ok(_) => Ok(()),
        }
    })
}

/// How many jobs whose name starts with `prefix` Slurm lists, finished ones included.
fn jobs_named(prefix: &str) -> usize {
    let out = Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%j"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// A pipeline name no earlier test run used, so that job counts by name are this run's alone.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{nanos}-{}", std::process::id())
}

/// A fresh project and a pipeline name no earlier test run used (`prefix` plus a unique tail), or
/// `None` after the skip line when no cluster answers.
fn slurm_project(test: &str, prefix: &str) -> Option<(Project, String)> {
    cluster(test).then(|| (Project::new(), unique(prefix)))
}

/// Look at the queue often: the tests wait on it.
const FAST_POLL: &str = "executor:\n  poll_seconds: 0.2\n";

#[test]
fn the_example_pipeline_through_slurm_writes_the_local_lock_file_and_reruns_submit_nothing() {
    if !cluster("example_through_slurm") {
        return;
    }
    let project = Project::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/example");
    for entry in std::fs::read_dir(&example).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".py") {
            std::fs::copy(&path, project.path(&name)).unwrap();
        }
    }
    let name = unique("slurm-example");
    let text = std::fs::read_to_string(example.join("example.yaml"))
        .unwrap()
        .replace("name: example", &format!("name: {name}"));
    project.write("example.yaml", &format!("{text}\n{FAST_POLL}"));
    let run = |executor: &str, cache: &str, lock: &str| {
        project.json(
            &[
                "run",
                "example.yaml",
                "--executor",
                executor,
                "--cache",
                cache,
                "--lock-file",
                lock,
                "--threads-per-stage",
                "1",
                "--set",
                "seeds=[0, 1]",
                "--set",
                "sweep.lam=[0.1,1000]",
            ],
            0,
        )
    };
    let local = run("local", "local-cache", "local.lock.json");
    let slurm = run("slurm", "slurm-cache", "slurm.lock.json");
    // generate, 2 splits, 4 fits, 4 evaluations
    assert_eq!(local["executed"], 11, "{local}");
    assert_eq!(slurm["executed"], 11, "{slurm}");
    assert_eq!(jobs_named(&format!("{name}/")), 11);
    let local_lock = std::fs::read_to_string(project.path("local.lock.json")).unwrap();
    let slurm_lock = std::fs::read_to_string(project.path("slurm.lock.json")).unwrap();
    assert!(local_lock.contains("\"output_digest\""), "{local_lock}");
    assert_eq!(
        local_lock, slurm_lock,
        "a Slurm run writes the same lock file as a local run"
    );

    let again = run("slurm", "slurm-cache", "slurm.lock.json");
    assert_eq!(again["cached"], 11, "{again}");
    assert_eq!(again["executed"], 0, "{again}");
    assert_eq!(
        jobs_named(&format!("{name}/")),
        11,
        "a second run submits nothing"
    );
    assert!(
        !project.path("slurm-cache/slurm").exists()
            || std::fs::read_dir(project.path("slurm-cache/slurm"))
                .unwrap()
                .next()
                .is_none(),
        "a run that succeeded leaves no job folder behind"
    );
}

#[test]
fn the_ablation_ci_preset_through_slurm_writes_the_local_lock_file() {
    if !cluster("ablation_through_slurm") {
        return;
    }
    let project = Project::new();
    let ablation = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/ablation.yaml");
    let run = |executor: &str, cache: &str, lock: &str| {
        let cache = project.path(cache);
        let lock = project.path(lock);
        project.json(
            &[
                "run",
                ablation.to_str().unwrap(),
                "--set",
                "preset=ci",
                "--set",
                "executor.poll_seconds=0.5",
                "--executor",
                executor,
                "--cache",
                cache.to_str().unwrap(),
                "--lock-file",
                lock.to_str().unwrap(),
                // The ML stages are bit-identical for a given thread count.
                "--threads-per-stage",
                "1",
            ],
            0,
        )
    };
    let local = run("local", "local-cache", "local.lock.json");
    let slurm = run("slurm", "slurm-cache", "slurm.lock.json");
    assert_eq!(local["failed"], 0, "{local}");
    assert_eq!(slurm["executed"], local["executed"], "{slurm}");
    let local_lock = std::fs::read_to_string(project.path("local.lock.json")).unwrap();
    let slurm_lock = std::fs::read_to_string(project.path("slurm.lock.json")).unwrap();
    assert!(local_lock.contains("\"metrics_digest\""), "{local_lock}");
    assert!(
        local_lock == slurm_lock,
        "the ablation's ci preset through Slurm writes the local run's lock file; diff {} {}",
        project.path("local.lock.json").display(),
        project.path("slurm.lock.json").display()
    );
}

#[test]
fn a_failing_job_shows_its_log_and_stops_only_its_descendants() {
    let Some((project, name)) = slurm_project("failing_job", "slurm-failing") else {
        return;
    };
    project.write(
        "p.yaml",
        &format!(
            r#"name: {name}
stages:
  a: {{kind: cmd, run: 'echo a > "$UMDFLOW_OUT/a.txt"'}}
  bad: {{kind: cmd, inputs: [a], run: 'echo boom-from-bad; exit 3'}}
  after_bad: {{kind: cmd, inputs: [bad], run: 'echo x > "$UMDFLOW_OUT/x.txt"'}}
  good: {{kind: cmd, inputs: [a], run: 'sleep 1; echo g > "$UMDFLOW_OUT/g.txt"'}}
  after_good: {{kind: cmd, inputs: [good], run: 'echo y > "$UMDFLOW_OUT/y.txt"'}}
executor: {{kind: slurm, poll_seconds: 0.2}}
"#
        ),
    );
    // No --executor: the file's `executor.kind` chooses Slurm.
    let output = project.umdflow(&["run", "p.yaml", "--keep-going", "--json", "--no-lock-file"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut found = statuses(&run);
    found.sort();
    let expected = [
        ("a", "executed"),
        ("after_bad", "skipped"),
        ("after_good", "executed"),
        ("bad", "failed"),
        ("good", "executed"),
    ]
    .map(|(id, status)| (id.to_string(), status.to_string()));
    assert_eq!(found, expected, "{run}");
    let err = stderr(&output);
    assert!(
        err.contains("last lines of the log of bad") && err.contains("boom-from-bad"),
        "the failed job's log is shown: {err}"
    );
    // The failed job's Slurm log stays for the user.
    let bad = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "bad")
        .unwrap();
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains("job log: "), "{reason}");
    let log = reason
        .rsplit("job log: ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("boom-from-bad"),
        "{log}"
    );
}

#[test]
fn without_keep_going_a_failure_cancels_the_pending_jobs_and_running_ones_finish() {
    let Some((project, name)) = slurm_project("no_keep_going", "slurm-stop") else {
        return;
    };
    // `bad` fails only once `other` runs: on a busy node `other` could still be pending when
    // `bad` ends, and pending jobs are rightly cancelled (exit 4 means it never started).
    let started = project.path("other-started").display().to_string();
    project.write(
        "p.yaml",
        &format!(
            r#"name: {name}
stages:
  bad: {{kind: cmd, run: 'for i in $(seq 600); do [ -e {started} ] && exit 3; sleep 0.2; done; exit 4'}}
  other: {{kind: cmd, run: 'touch {started}; sleep 4; echo o > "$UMDFLOW_OUT/o.txt"'}}
  after_other: {{kind: cmd, inputs: [other], run: 'echo a > "$UMDFLOW_OUT/a.txt"'}}
{FAST_POLL}"#
        ),
    );
    let run = project.json(
        &["run", "p.yaml", "--executor", "slurm", "--no-lock-file"],
        1,
    );
    assert_eq!(with_status(&run, "failed"), ["bad"], "{run}");
    assert_eq!(
        with_status(&run, "executed"),
        ["other"],
        "running jobs finish: {run}"
    );
    assert_eq!(with_status(&run, "skipped"), ["after_other"], "{run}");
    let after_other = &run["stages"].as_array().unwrap()[2];
    assert!(
        after_other["reason"]
            .as_str()
            .unwrap()
            .contains("bad failed (use --keep-going"),
        "{after_other}"
    );
}

#[test]
fn a_local_and_a_slurm_run_on_one_cache_compute_no_stage_twice() {
    let Some((project, name)) = slurm_project("local_and_slurm", "slurm-shared") else {
        return;
    };
    let mut text = format!("name: {name}\nseeds: 4\nstages:\n");
    text.push_str(&format!(
        "  shared:\n    kind: cmd\n    run: 'sleep 0.5; {RECORD}'\n"
    ));
    text.push_str(&format!(
        "  work:\n    kind: cmd\n    inputs: [shared]\n    run: 'sleep 0.5; {RECORD}'\n    params: {{seed: \"${{seed}}\"}}\n"
    ));
    text.push_str(FAST_POLL);
    project.write("p.yaml", &text);
    let spawn = |executor: &str| {
        project
            .command(&[
                "run",
                "p.yaml",
                "--json",
                "--jobs",
                "2",
                "--no-lock-file",
                "--executor",
                executor,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let slurm = spawn("slurm");
    let local = spawn("local");
    for output in [
        slurm.wait_with_output().unwrap(),
        local.wait_with_output().unwrap(),
    ] {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            run["executed"].as_u64().unwrap() + run["cached"].as_u64().unwrap(),
            5,
            "{run}"
        );
    }
    let mut journal = project.journal();
    journal.sort();
    assert_eq!(
        journal,
        [
            "shared",
            "work[seed=0]",
            "work[seed=1]",
            "work[seed=2]",
            "work[seed=3]"
        ],
        "every stage ran exactly once across the local run and the Slurm jobs"
    );
}

#[test]
fn two_hundred_trivial_instances_are_submitted_and_finish() {
    let Some((project, name)) = slurm_project("two_hundred", "slurm-many") else {
        return;
    };
    project.write(
        "p.yaml",
        &format!(
            "name: {name}\nseeds: 200\nstages:\n  work:\n    kind: cmd\n    run: '{RECORD}'\n    params: {{seed: \"${{seed}}\"}}\n{FAST_POLL}"
        ),
    );
    let args = ["run", "p.yaml", "--executor", "slurm", "--no-lock-file"];
    let run = project.json(&args, 0);
    assert_eq!(run["executed"], 200, "{run}");
    assert_eq!(jobs_named(&format!("{name}/")), 200);
    assert_eq!(
        arrays_of(&format!("{name}/work")).len(),
        1,
        "one array of 200"
    );
    let mut journal = project.journal();
    journal.sort();
    journal.dedup();
    assert_eq!(journal.len(), 200, "each instance ran once");
    let again = project.json(&args, 0);
    assert_eq!(again["cached"], 200, "{again}");
    assert_eq!(jobs_named(&format!("{name}/")), 200, "nothing resubmitted");
}

// ---- the worker alone (no cluster needed)

const CHAIN: &str = r#"name: chain
stages:
  first: {kind: cmd, run: 'echo "$UMDFLOW_INSTANCE" >> "$JOURNAL"; echo 1 > "$UMDFLOW_OUT/one.txt"'}
  second: {kind: cmd, inputs: [first], run: 'echo "$UMDFLOW_INSTANCE" >> "$JOURNAL"; cat "$UMDFLOW_INPUT_FIRST/one.txt" > "$UMDFLOW_OUT/two.txt"'}
"#;

#[test]
fn a_worker_runs_its_instance_once_and_a_run_then_finds_it_cached() {
    let project = Project::new();
    project.write("p.yaml", CHAIN);
    let worker = |id: &str, report: &str| {
        project.umdflow(&["worker", "p.yaml", "--instance", id, "--report", report])
    };
    let report = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(project.path(name)).unwrap()).unwrap()
    };

    // An instance whose input is not cached cannot run: a clear error, nothing computed.
    let early = worker("second", "early.json");
    assert_eq!(early.status.code(), Some(1));
    assert!(
        stderr(&early).contains("second cannot run yet: its input first is not in the cache"),
        "{}",
        stderr(&early)
    );
    assert!(project.journal().is_empty());

    let first = worker("first", "first.json");
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(report("first.json")["status"], "executed");
    let second = worker("second", "second.json");
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(report("second.json")["status"], "executed");
    assert_eq!(project.journal(), ["first", "second"]);

    // Already committed: the worker exits at once without running the stage.
    let again = worker("second", "again.json");
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(report("again.json")["status"], "cached");
    assert_eq!(report("again.json")["key"], report("second.json")["key"]);
    assert_eq!(project.journal(), ["first", "second"]);

    // What the workers committed is what a local run looks for.
    let run = project.json(&["run", "p.yaml", "--no-lock-file"], 0);
    assert_eq!(run["cached"], 2, "{run}");
    assert_eq!(project.journal(), ["first", "second"]);
}

#[test]
fn a_worker_names_an_unknown_instance() {
    let project = Project::new();
    project.write("p.yaml", CHAIN);
    let output = project.umdflow(&["worker", "p.yaml", "--instance", "third"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no instance `third`"),
        "{}",
        stderr(&output)
    );
}

/// `a`, then `b` (slow when `$SLOW` is set; it writes `started` first), then `c`.
fn slow_chain(name: &str) -> String {
    format!(
        r#"name: {name}
stages:
  a: {{kind: cmd, run: 'echo a > "$UMDFLOW_OUT/a.txt"'}}
  b: {{kind: cmd, inputs: [a], run: 'touch started; if [ -n "$SLOW" ]; then sleep 120; fi; echo b > "$UMDFLOW_OUT/b.txt"'}}
  c: {{kind: cmd, inputs: [b], run: 'echo c > "$UMDFLOW_OUT/c.txt"'}}
{FAST_POLL}"#
    )
}

/// Waits until the slow stage has started in its Slurm job.
fn wait_started(project: &Project, child: &mut std::process::Child) {
    let clock = std::time::Instant::now();
    while !project.path("started").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before the slow stage started");
        }
        assert!(
            clock.elapsed() < std::time::Duration::from_secs(60),
            "the slow stage's job did not start within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// How many of the pipeline's jobs are still queued or running.
fn active_jobs(prefix: &str) -> usize {
    let out = Command::new("squeue")
        .args(["--noheader", "--format=%j"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn ctrl_c_cancels_the_jobs_and_keeps_what_is_committed() {
    let Some((project, name)) = slurm_project("ctrl_c", "slurm-ctrl-c") else {
        return;
    };
    project.write("p.yaml", &slow_chain(&name));
    let args = ["run", "p.yaml", "--executor", "slurm", "--no-lock-file"];
    let mut child = project
        .command(&[&args[..], &["--json"]].concat())
        .env("SLOW", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&project, &mut child);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(run["interrupted"], true, "{run}");
    assert_eq!(with_status(&run, "executed"), ["a"], "{run}");
    assert_eq!(with_status(&run, "skipped").last().unwrap(), "c", "{run}");
    assert_eq!(active_jobs(&format!("{name}/")), 0, "no job is left queued");

    let again = project.json(&args, 0);
    assert_eq!(with_status(&again, "cached"), ["a"], "{again}");
    assert_eq!(with_status(&again, "executed"), ["b", "c"], "{again}");
}

#[test]
fn status_lists_a_running_pipeline_s_jobs_and_cancel_cancels_them() {
    let Some((project, name)) = slurm_project("status_cancel", "slurm-status") else {
        return;
    };
    project.write("p.yaml", &slow_chain(&name));
    let mut child = project
        .command(&[
            "run",
            "p.yaml",
            "--executor",
            "slurm",
            "--json",
            "--no-lock-file",
        ])
        .env("SLOW", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&project, &mut child);
    let status = project.umdflow(&["status", "p.yaml"]);
    let shown = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert!(
        shown.contains("RUNNING") && shown.contains("PENDING"),
        "b runs and c waits for it: {shown}"
    );
    assert!(
        shown.contains(&format!("2 Slurm jobs of {name} queued or running")),
        "{shown}"
    );

    let cancel = project.umdflow(&["cancel", "p.yaml"]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    assert!(
        String::from_utf8_lossy(&cancel.stdout).contains("cancelled 2 Slurm jobs"),
        "{}",
        String::from_utf8_lossy(&cancel.stdout)
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(with_status(&run, "executed"), ["a"], "{run}");
    assert_eq!(with_status(&run, "skipped").last().unwrap(), "c", "{run}");
    assert_eq!(active_jobs(&format!("{name}/")), 0);
    let after = project.umdflow(&["status", "p.yaml"]);
    assert!(
        String::from_utf8_lossy(&after.stdout).contains(&format!("0 Slurm jobs of {name}")),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
}

#[test]
fn an_executor_block_that_would_break_the_driver_is_refused_with_its_line() {
    let project = Project::new();
    project.write(
        "p.yaml",
        "name: p\nstages:\n  a: {kind: cmd, run: 'true'}\nexecutor:\n  kind: slurm\n  sbatch_args: [\"--time=10\", \"--dependency=afterany:1\"]\n  poll_seconds: 0\n",
    );
    let output = project.umdflow(&["run", "p.yaml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("p.yaml:6") && err.contains("--dependency=afterany:1"),
        "the reserved argument is named with its line: {err}"
    );
    assert!(
        err.contains("p.yaml:7") && err.contains("executor.poll_seconds"),
        "{err}"
    );
}

#[test]
fn a_stage_s_resources_become_its_job_s_request_and_its_thread_count() {
    let Some((project, name)) = slurm_project("resources", "slurm-resources") else {
        return;
    };
    project.write(
        "p.yaml",
        &format!(
            r#"name: {name}
stages:
  wide:
    kind: cmd
    run: 'echo "cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE" >> "$JOURNAL"; echo w > "$UMDFLOW_OUT/w.txt"'
    resources: {{threads: 3, memory: 100M, time: "00:02:00"}}
  narrow:
    kind: cmd
    run: 'echo "cpus=$SLURM_CPUS_PER_TASK" >> "$JOURNAL"; echo n > "$UMDFLOW_OUT/n.txt"'
{FAST_POLL}"#
        ),
    );
    let run = project.json(
        &[
            "run",
            "p.yaml",
            "--executor",
            "slurm",
            "--lock-file",
            "p.lock.json",
        ],
        0,
    );
    assert_eq!(run["executed"], 2, "{run}");
    let mut journal = project.journal();
    journal.sort();
    assert_eq!(journal, ["cpus=", "cpus=3 mem=100"], "{run}");
    // The worker gave the stage the threads it asked for; the lock file records them.
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.path("p.lock.json")).unwrap()).unwrap();
    let threads: Vec<&serde_json::Value> = lock["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["threads"])
        .collect();
    assert_eq!(threads, [3, 1], "{lock}");
}

/// With `max_resubmits: 0` a job killed by its time limit is final, as before resubmission.
#[test]
fn a_job_past_its_time_limit_is_reported_as_timed_out_with_its_log() {
    let Some((project, name)) = slurm_project("time_limit", "slurm-timeout") else {
        return;
    };
    // Slurm's smallest limit is one minute; it ends the job about a minute later.
    project.write(
        "p.yaml",
        &format!(
            r#"name: {name}
stages:
  slow:
    kind: cmd
    run: 'echo slow-started; sleep 300; echo s > "$UMDFLOW_OUT/s.txt"'
    resources: {{time: 1}}
  after: {{kind: cmd, inputs: [slow], run: 'echo a > "$UMDFLOW_OUT/a.txt"'}}
{FAST_POLL}  max_resubmits: 0
"#
        ),
    );
    let output = project.umdflow(&[
        "run",
        "p.yaml",
        "--executor",
        "slurm",
        "--json",
        "--no-lock-file",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(with_status(&run, "failed"), ["slow"], "{run}");
    assert_eq!(with_status(&run, "skipped"), ["after"], "{run}");
    let slow = &run["stages"].as_array().unwrap()[0];
    assert!(
        slow["reason"].as_str().unwrap().contains("ended TIMEOUT"),
        "{slow}"
    );
    assert!(
        stderr(&output).contains("slow-started"),
        "{}",
        stderr(&output)
    );
}

// ---- job arrays and adopting the jobs of a driver that is gone (issue 12)

/// `(job id, name)` of every task Slurm lists whose name starts with `prefix`, finished ones
/// included, one line per array task (`--array`: a pending range is not folded into one line).
fn tasks_named(prefix: &str) -> Vec<(String, String)> {
    let out = Command::new("squeue")
        .args(["--noheader", "--states=all", "--array", "--format=%i|%j"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('|'))
        .filter(|(_, name)| name.starts_with(prefix))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect()
}

/// The arrays (ids before `_`) the tasks named `name` belong to; a plain job counts as its own.
fn arrays_of(name: &str) -> Vec<String> {
    let mut arrays: Vec<String> = tasks_named(name)
        .into_iter()
        .filter(|(_, n)| n == name)
        .map(|(id, _)| id.split('_').next().unwrap().to_string())
        .collect();
    arrays.sort();
    arrays.dedup();
    arrays
}

/// `work` over `seeds` seeds (each `sleep $SLEEP` if set, after touching `started`), and `after`
/// per seed, which reads it: `seeds` array tasks and `seeds` jobs `afterok` on them. `prelude`
/// runs first in `work`.
fn fan_with(name: &str, seeds: usize, prelude: &str) -> String {
    format!(
        r#"name: {name}
seeds: {seeds}
stages:
  work:
    kind: cmd
    run: '{prelude}touch started; {RECORD}; if [ -n "$SLEEP" ]; then sleep $SLEEP; fi'
    params: {{seed: "${{seed}}"}}
  after:
    kind: cmd
    inputs: [work]
    run: '{RECORD}'
{FAST_POLL}"#
    )
}

fn fan(name: &str, seeds: usize) -> String {
    fan_with(name, seeds, "")
}

fn spawn_run(project: &Project, envs: &[(&str, &str)]) -> std::process::Child {
    project
        .command(&[
            "run",
            "p.yaml",
            "--executor",
            "slurm",
            "--json",
            "--no-lock-file",
            "--keep-going",
        ])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished_run(child: std::process::Child) -> (serde_json::Value, String) {
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let run = serde_json::from_slice(&output.stdout).unwrap();
    (run, stderr(&output))
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let clock = std::time::Instant::now();
    while !done() {
        assert!(
            clock.elapsed() < std::time::Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn ready_instances_of_a_stage_go_out_as_one_array_and_their_dependents_wait_on_their_tasks() {
    let Some((project, name)) = slurm_project("array", "slurm-array") else {
        return;
    };
    project.write("p.yaml", &fan(&name, 6));
    let (run, err) = finished_run(spawn_run(&project, &[]));
    assert_eq!(run["executed"], 12, "{run}");
    assert!(err.contains("submitted 12 Slurm jobs"), "{err}");
    assert_eq!(arrays_of(&format!("{name}/work")).len(), 1, "one array");
    assert_eq!(tasks_named(&format!("{name}/work")).len(), 6);
    assert_eq!(
        tasks_named(&format!("{name}/after")).len(),
        6,
        "one plain job per dependent"
    );
    let mut journal = project.journal();
    journal.sort();
    journal.dedup();
    assert_eq!(journal.len(), 12, "each instance ran once");
}

#[test]
fn a_failing_array_task_shows_its_own_log_and_stops_only_its_descendants() {
    let Some((project, name)) = slurm_project("array_failure", "slurm-array-fail") else {
        return;
    };
    project.write(
        "p.yaml",
        &format!(
            r#"name: {name}
seeds: 4
stages:
  work:
    kind: cmd
    run: 'if [ "$UMDFLOW_INSTANCE" = "work[seed=2]" ]; then echo boom-from-seed-2; exit 3; fi; echo "$UMDFLOW_INSTANCE"; {RECORD}'
    params: {{seed: "${{seed}}"}}
  after: {{kind: cmd, inputs: [work], run: '{RECORD}'}}
{FAST_POLL}"#
        ),
    );
    let output = project.umdflow(&[
        "run",
        "p.yaml",
        "--executor",
        "slurm",
        "--keep-going",
        "--json",
        "--no-lock-file",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(with_status(&run, "failed"), ["work[seed=2]"], "{run}");
    assert_eq!(with_status(&run, "skipped"), ["after[seed=2]"], "{run}");
    assert_eq!(run["executed"], 6, "{run}");
    assert_eq!(arrays_of(&format!("{name}/work")).len(), 1, "one array");
    let err = stderr(&output);
    assert!(err.contains("boom-from-seed-2"), "{err}");
    let failed = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "work[seed=2]")
        .unwrap();
    let reason = failed["reason"].as_str().unwrap();
    let log = reason
        .rsplit("job log: ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("boom-from-seed-2") && !text.contains("work[seed=1]"),
        "the task's own log: {log}: {text}"
    );
}

#[test]
fn a_killed_driver_s_jobs_are_adopted_by_one_new_driver_and_none_is_submitted_twice() {
    let Some((project, name)) = slurm_project("adopt", "slurm-adopt") else {
        return;
    };
    // work[seed=0] fails at once in the first run (and after[seed=0] is cancelled by Slurm): the
    // new driver submits those two again, and adopts the others that still wait or run.
    let fail_once = r#"if [ "$UMDFLOW_INSTANCE" = "work[seed=0]" ] && [ ! -e failed-once ]; then touch failed-once; exit 3; fi; "#;
    project.write("p.yaml", &fan_with(&name, 6, fail_once));
    let mut first = spawn_run(&project, &[("SLEEP", "4")]);
    let all_submitted = || tasks_named(&format!("{name}/")).len() == 12;
    wait_until("the first driver submits and the jobs start", || {
        project.path("started").exists() && project.path("failed-once").exists() && all_submitted()
    });
    first.kill().unwrap(); // SIGKILL: no chance to cancel anything
    first.wait().unwrap();
    // A job cancelled from outside while its input still runs: the new driver submits it again,
    // `afterok` on the input's adopted task (it could not run before its input is cached).
    let (waiting, _) = tasks_named(&format!("{name}/after[seed=1]")).pop().unwrap();
    assert!(
        Command::new("scancel")
            .arg(&waiting)
            .status()
            .unwrap()
            .success()
    );

    // Two new drivers at once: one adopts the jobs, the other waits for it.
    let second = spawn_run(&project, &[("SLEEP", "4")]);
    let third = spawn_run(&project, &[("SLEEP", "4")]);
    let mut runs = [finished_run(second), finished_run(third)];
    runs.sort_by_key(|(run, _)| run["cached"].as_u64());
    let [(adopter, adopter_err), (waiter, waiter_err)] = runs;
    // (A work task that already finished when the driver started is cached, not adopted.)
    let cached = adopter["cached"].as_u64().unwrap();
    let adopted = format!(
        "watching {} jobs adopted from a driver that is gone",
        9 - cached
    );
    assert!(
        adopter_err.contains("submitted 3 Slurm jobs") && adopter_err.contains(&adopted),
        "the failed work[seed=0], its cancelled dependent and the cancelled after[seed=1] are \
         submitted again: {adopter_err}"
    );
    assert_eq!(
        adopter["executed"].as_u64().unwrap() + adopter["cached"].as_u64().unwrap(),
        12,
        "{adopter}"
    );
    assert_eq!(
        adopter["executed"].as_u64().unwrap(),
        12 - cached,
        "the adopted jobs ran on: {adopter}"
    );
    assert_eq!(waiter["cached"], 12, "{waiter}");
    assert!(
        waiter_err.contains("waiting for the other Slurm driver"),
        "{waiter_err}"
    );
    assert_eq!(
        tasks_named(&format!("{name}/")).len(),
        15,
        "12 jobs, and 3 again for the failed and the cancelled ones: no job twice"
    );
    let mut journal = project.journal();
    journal.sort();
    let mut once = journal.clone();
    once.dedup();
    assert_eq!(journal, once, "every instance ran once");
    assert_eq!(journal.len(), 12);
    // The adopter took over the first run's list and removed both folders on success: `status`
    // lists no job.
    let status = project.umdflow(&["status", "p.yaml", "--all"]);
    let shown = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        shown.contains(&format!("0 Slurm jobs of {name} queued")),
        "{shown}"
    );
}

#[test]
fn a_second_driver_started_a_moment_later_waits_and_computes_nothing_twice() {
    let Some((project, name)) = slurm_project("staggered", "slurm-staggered") else {
        return;
    };
    project.write("p.yaml", &fan(&name, 4));
    let first = spawn_run(&project, &[("SLEEP", "1")]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = spawn_run(&project, &[("SLEEP", "1")]);
    let mut runs = [finished_run(first), finished_run(second)];
    runs.sort_by_key(|(run, _)| run["cached"].as_u64());
    let [(ran, _), (waited, waited_err)] = runs;
    assert_eq!(ran["executed"], 8, "{ran}");
    assert_eq!(waited["cached"], 8, "{waited}");
    assert!(
        waited_err.contains("waiting for the other Slurm driver"),
        "{waited_err}"
    );
    assert_eq!(tasks_named(&format!("{name}/")).len(), 8, "no job twice");
    let mut journal = project.journal();
    journal.sort();
    journal.dedup();
    assert_eq!(journal.len(), 8);
    assert_eq!(project.journal().len(), 8, "every instance ran once");
}

#[test]
fn without_keep_going_a_failing_task_cancels_the_array_s_pending_tasks_and_reports_them_skipped() {
    let Some((project, name)) = slurm_project("array_stop", "slurm-array-stop") else {
        return;
    };
    // 12 tasks on the cluster's 8 CPUs: at least 3 still pend when seed 0 fails, for 8 s, long
    // enough for a driver on a loaded CI machine to see the failure first.
    project.write(
        "p.yaml",
        &format!(
            r#"name: {name}
seeds: 12
stages:
  work:
    kind: cmd
    run: 'if [ "$UMDFLOW_INSTANCE" = "work[seed=0]" ]; then exit 3; fi; sleep 8; {RECORD}'
    params: {{seed: "${{seed}}"}}
{FAST_POLL}"#
        ),
    );
    let run = project.json(
        &["run", "p.yaml", "--executor", "slurm", "--no-lock-file"],
        1,
    );
    assert_eq!(with_status(&run, "failed"), ["work[seed=0]"], "{run}");
    let skipped = with_status(&run, "skipped");
    assert!(!skipped.is_empty(), "pending tasks were cancelled: {run}");
    assert_eq!(
        run["executed"].as_u64().unwrap() + skipped.len() as u64,
        11,
        "running tasks finish, pending ones are cancelled: {run}"
    );
    for stage in run["stages"].as_array().unwrap() {
        if stage["status"] == "skipped" {
            assert!(
                stage["reason"]
                    .as_str()
                    .unwrap()
                    .contains("work[seed=0] failed (use --keep-going"),
                "{stage}"
            );
        }
    }
}

#[test]
fn an_array_cancelled_from_outside_reports_its_pending_tasks_as_skipped() {
    let Some((project, name)) = slurm_project("array_cancel", "slurm-array-cancel") else {
        return;
    };
    // 12 tasks on the cluster's 8 CPUs: some still pend when `umdflow cancel` runs, and Slurm
    // forgets a pending task at once when it is cancelled.
    project.write(
        "p.yaml",
        &format!(
            r#"name: {name}
seeds: 12
stages:
  work:
    kind: cmd
    run: 'touch started; sleep 30 && echo "$UMDFLOW_INSTANCE" > "$UMDFLOW_OUT/id.txt"'
    params: {{seed: "${{seed}}"}}
{FAST_POLL}"#
        ),
    );
    let mut child = spawn_run(&project, &[]);
    wait_started(&project, &mut child);
    let cancel = project.umdflow(&["cancel", "p.yaml"]);
    assert!(
        String::from_utf8_lossy(&cancel.stdout).contains("cancelled 12 Slurm jobs"),
        "{}",
        String::from_utf8_lossy(&cancel.stdout)
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(run["executed"], 0, "{run}");
    let skipped = with_status(&run, "skipped");
    assert!(skipped.len() >= 4, "the pending tasks: {run}");
    for stage in run["stages"].as_array().unwrap() {
        let reason = stage["reason"].as_str().unwrap();
        assert!(
            !reason.contains("left the queue"),
            "a cancelled task is not a lost one: {stage}"
        );
    }
    assert_eq!(active_jobs(&format!("{name}/")), 0);
}

/// `work`: `units` one-second units of work, counted in its resume folder (and copied to the file
/// `progress` when given), with `work starts at N` in the journal at each start; `work_extra` is
/// added to its block. `after` copies its result.
fn counting_pipeline(name: &str, units: u32, progress: Option<&str>, work_extra: &str) -> String {
    let copy = progress.map_or(String::new(), |p| {
        format!("        echo \"$n\" > {p}.tmp && mv {p}.tmp {p}\n")
    });
    format!(
        r#"name: {name}
stages:
  work:
    kind: cmd
    run: |
      n=$(cat "$UMDFLOW_RESUME_DIR/n" 2>/dev/null || echo 0)
      echo "work starts at $n" >> "$JOURNAL"
      while [ "$n" -lt {units} ]; do
        sleep 1; n=$((n + 1))
        echo "$n" > "$UMDFLOW_RESUME_DIR/n.tmp" && mv "$UMDFLOW_RESUME_DIR/n.tmp" "$UMDFLOW_RESUME_DIR/n"
{copy}      done
      echo "$n" > "$UMDFLOW_OUT/n.txt"
{work_extra}  after: {{kind: cmd, inputs: [work], run: 'cp "$UMDFLOW_INPUT_WORK/n.txt" "$UMDFLOW_OUT/"'}}
{FAST_POLL}"#
    )
}

/// The journal's `work starts at N` counts, in order.
fn work_starts(project: &Project) -> Vec<u32> {
    project
        .journal()
        .iter()
        .filter_map(|line| line.strip_prefix("work starts at "))
        .map(|n| n.parse().unwrap())
        .collect()
}

/// No resume folder is left once the keys committed.
fn assert_no_resume_folders(project: &Project) {
    let resume = project.path(".umdflow/resume");
    let left = std::fs::read_dir(&resume).map_or(0, |dir| dir.count());
    assert_eq!(left, 0, "resume folders left in {}", resume.display());
}

#[test]
fn a_job_killed_by_its_time_limit_is_resubmitted_and_resumes_from_its_checkpoint() {
    let Some((project, name)) = slurm_project("time_limit_resume", "slurm-resume") else {
        return;
    };
    // 120 one-second units of work, counted in the resume folder: more than one attempt can do
    // under a one-minute limit (Slurm ends a job 60 to about 90 s after it started), so the stage
    // finishes only if a resubmitted job continues from the count the killed one left.
    project.write(
        "p.yaml",
        &counting_pipeline(&name, 120, None, "    resources: {time: 1}\n"),
    );
    let run = project.json(
        &["run", "p.yaml", "--executor", "slurm", "--no-lock-file"],
        0,
    );
    assert_eq!(with_status(&run, "executed"), ["after", "work"], "{run}");
    let work = &run["stages"].as_array().unwrap()[0];
    assert!(
        work["reason"].as_str().unwrap().contains("after TIMEOUT"),
        "{work}"
    );
    let starts = work_starts(&project);
    assert!(starts.len() >= 2, "{starts:?}");
    assert_eq!(starts[0], 0, "{starts:?}");
    assert!(
        starts.windows(2).all(|w| w[1] > w[0]),
        "each attempt continues where the last stopped: {starts:?}"
    );
    assert_no_resume_folders(&project);
}

#[test]
fn a_job_the_cluster_requeues_runs_again_and_resumes_from_its_checkpoint() {
    let Some((project, name)) = slurm_project("requeue_resume", "slurm-requeue") else {
        return;
    };
    // 30 one-second units of work, counted in the resume folder and copied to `progress`. The test
    // requeues the running job once 5 are done, as a cluster preempting with `PreemptMode=REQUEUE`
    // does: Slurm kills it and runs it again under the same job id, which must continue the count.
    let progress = project.path("progress").display().to_string();
    project.write("p.yaml", &counting_pipeline(&name, 30, Some(&progress), ""));
    let child = spawn_run(&project, &[]);
    let done = || {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    wait_until("5 units of work done", || done() >= 5);
    let work = format!("{name}/work");
    let ids: Vec<String> = tasks_named(&work)
        .into_iter()
        .filter(|(_, n)| *n == work)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 1, "one job for work: {ids:?}");
    let requeue = Command::new("scontrol")
        .args(["requeue", &ids[0]])
        .output()
        .expect("scontrol");
    assert!(
        requeue.status.success(),
        "scontrol requeue {}: {}",
        ids[0],
        String::from_utf8_lossy(&requeue.stderr)
    );
    let (run, err) = finished_run(child);
    assert_eq!(
        with_status(&run, "executed"),
        ["after", "work"],
        "{run}\n{err}"
    );
    let starts = work_starts(&project);
    assert_eq!(
        starts.len(),
        2,
        "one start, one after the requeue: {starts:?}"
    );
    assert_eq!(starts[0], 0, "{starts:?}");
    assert!(
        starts[1] >= 5,
        "the requeued job continues the count: {starts:?}"
    );
    assert_no_resume_folders(&project);
}
