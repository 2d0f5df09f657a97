//! Resources and GPUs on one machine (issue 12, section 1). GPU ids are fake: on a machine without
//! a GPU, `--gpus` only hands ids to `cmd` stages, and these tests look at what the commands saw.

use std::process::Output;

use crate::support::{Project, stderr};

/// Appends `instance|CUDA_VISIBLE_DEVICES|UMDFLOW_GPU|start ns|end ns` to `spans.txt` (`unset`
/// for a variable that is not set), around half a second of work.
const SPAN: &str = r#"s=$(date +%s%N); sleep 0.5; cv=$(printenv CUDA_VISIBLE_DEVICES || echo unset); g=$(printenv UMDFLOW_GPU || echo unset); echo "$UMDFLOW_INSTANCE|$cv|$g|$s|$(date +%s%N)" >> spans.txt"#;

#[derive(Debug)]
struct Span {
    id: String,
    visible: String,
    gpu: String,
    start: u128,
    end: u128,
}

fn spans(project: &Project) -> Vec<Span> {
    std::fs::read_to_string(project.path("spans.txt"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), 5, "{line}");
            Span {
                id: f[0].into(),
                visible: f[1].into(),
                gpu: f[2].into(),
                start: f[3].parse().unwrap(),
                end: f[4].parse().unwrap(),
            }
        })
        .collect()
}

fn overlap(a: &Span, b: &Span) -> bool {
    a.start < b.end && b.start < a.end
}

/// The most spans running at one instant.
fn most_at_once(spans: &[&Span]) -> usize {
    spans
        .iter()
        .map(|s| {
            spans
                .iter()
                .filter(|o| o.start <= s.start && s.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Four ready 1-GPU instances of `work` and one `cpu` stage that asks for none.
fn gpu_pipeline() -> String {
    format!(
        "name: gpus
sweep:
  n: [1, 2, 3, 4]
stages:
  work:
    kind: cmd
    params: {{n: '${{n}}'}}
    resources: {{gpus: 1}}
    run: '{SPAN}'
  cpu:
    kind: cmd
    run: '{SPAN}'
"
    )
}

/// Runs umdflow without the test environment's own CUDA_VISIBLE_DEVICES, if any.
fn run(project: &Project, args: &[&str]) -> Output {
    project
        .command(args)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .unwrap()
}

/// [`run`] with `--json`, expecting `code`.
fn run_json(project: &Project, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = run(project, &all);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs the GPU pipeline with room for every instance except GPUs (`--jobs 5 --threads 8`), under
/// `cuda_visible` as umdflow's own CUDA_VISIBLE_DEVICES (none if `None`).
fn run_on_gpus(project: &Project, gpus: &str, cuda_visible: Option<&str>) {
    let mut command = project.command(&[
        "run",
        "p.yaml",
        "--gpus",
        gpus,
        "--jobs",
        "5",
        "--threads",
        "8",
        "-q",
    ]);
    match cuda_visible {
        Some(list) => command.env("CUDA_VISIBLE_DEVICES", list),
        None => command.env_remove("CUDA_VISIBLE_DEVICES"),
    };
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

fn lock(project: &Project) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(project.path("p.lock.json")).unwrap()).unwrap()
}

#[test]
fn two_gpus_are_never_shared_and_a_zero_gpu_stage_sees_none() {
    let project = Project::new();
    project.write("p.yaml", &gpu_pipeline());
    run_on_gpus(&project, "0,1", None);

    let all = spans(&project);
    let work: Vec<&Span> = all.iter().filter(|s| s.id.starts_with("work")).collect();
    assert_eq!(work.len(), 4, "{all:?}");
    for span in &work {
        assert!(["0", "1"].contains(&span.visible.as_str()), "{span:?}");
        assert_eq!(span.gpu, span.visible, "{span:?}");
    }
    for (i, a) in work.iter().enumerate() {
        for b in &work[i + 1..] {
            assert!(
                !(overlap(a, b) && a.visible == b.visible),
                "GPU {} given to two running instances: {a:?} {b:?}",
                a.visible
            );
        }
    }
    assert!(most_at_once(&work) <= 2, "{work:?}");
    // Both GPUs were handed out: the first two instances started together.
    assert!(work.iter().any(|s| s.visible == "0") && work.iter().any(|s| s.visible == "1"));
    let cpu = all.iter().find(|s| s.id == "cpu").unwrap();
    assert_eq!((cpu.visible.as_str(), cpu.gpu.as_str()), ("", "unset"));

    // The lock file shows the GPU and threads each result was computed with.
    let lock = lock(&project);
    for instance in lock["instances"].as_array().unwrap() {
        let id = instance["id"].as_str().unwrap();
        let span = all.iter().find(|s| s.id == id).unwrap();
        assert_eq!(instance["threads"], 1, "{instance}");
        if id == "cpu" {
            assert!(instance["device"].is_null(), "{instance}");
        } else {
            assert_eq!(instance["device"], format!("cuda:{}", span.visible));
        }
    }
}

#[test]
fn a_gpu_count_hands_out_ids_from_zero_mapped_through_cuda_visible_devices() {
    let project = Project::new();
    project.write("p.yaml", &gpu_pipeline());
    run_on_gpus(&project, "2", None);
    let mut seen: Vec<String> = spans(&project)
        .into_iter()
        .filter(|s| s.id.starts_with("work"))
        .map(|s| s.gpu)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["0", "1"]);

    // Under a CUDA_VISIBLE_DEVICES of its own, umdflow's ids 0 and 1 are its devices 5 and 7: a
    // command is shown the physical entry, and a 0-GPU command not the parent's list.
    let project = Project::new();
    project.write("p.yaml", &gpu_pipeline());
    run_on_gpus(&project, "2", Some("5,7"));
    for span in spans(&project) {
        let pair = (span.visible.as_str(), span.gpu.as_str());
        if span.id == "cpu" {
            assert_eq!(pair, ("", "unset"));
        } else {
            assert!([("5", "0"), ("7", "1")].contains(&pair), "{span:?}");
        }
    }
}

#[test]
fn two_stages_that_each_take_the_whole_thread_budget_never_overlap() {
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            "name: threads
stages:
  a: {{kind: cmd, resources: {{threads: 2}}, run: '{SPAN}'}}
  b: {{kind: cmd, resources: {{threads: 2}}, run: '{SPAN}'}}
"
        ),
    );
    run_json(
        &project,
        &["run", "p.yaml", "--threads", "2", "--jobs", "2"],
        0,
    );
    let all = spans(&project);
    assert_eq!(all.len(), 2);
    assert!(!overlap(&all[0], &all[1]), "{all:?}");
    assert_eq!(lock(&project)["instances"][0]["threads"], 2);
}

#[test]
fn a_request_beyond_the_run_is_an_error_naming_the_stage_and_field() {
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            "name: big
stages:
  small: {{kind: cmd, run: '{SPAN}'}}
  big:
    kind: cmd
    resources: {{gpus: 3}}
    run: '{SPAN}'
"
        ),
    );
    let output = run(&project, &["run", "p.yaml", "--gpus", "2"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("p.yaml:6:") && err.contains("`big` asks for 3 GPUs (`resources.gpus`)"),
        "{err}"
    );
    assert!(err.contains("has 2 (--gpus: 0,1)"), "{err}");
    // Without --gpus the run hands out none.
    let output = run(&project, &["run", "p.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("manages no GPUs"),
        "{}",
        stderr(&output)
    );
    // More threads than the run has, given on the command line.
    let output = run(
        &project,
        &[
            "run",
            "p.yaml",
            "--gpus",
            "4",
            "--threads",
            "2",
            "--set",
            "big.resources.threads=3",
        ],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--set big.resources.threads=3") && err.contains("`big` asks for 3 threads"),
        "{err}"
    );
    // Nothing ran.
    assert!(spans(&project).is_empty());
}

#[test]
fn malformed_resources_are_refused_with_their_line() {
    let cases = [
        ("gpus: -1", "invalid value: integer `-1`"),
        ("threads: 1.5", "invalid type: floating point `1.5`"),
        ("gpu: 1", "unknown field `gpu`"),
        ("threads: 0", "must be at least 1"),
        ("memory: lots", "`resources.memory` must be a size"),
        ("time: soon", "`resources.time` must be minutes"),
    ];
    for (resources, expected) in cases {
        let project = Project::new();
        project.write(
            "p.yaml",
            &format!("name: bad\nstages:\n  a:\n    kind: cmd\n    run: 'true'\n    resources: {{{resources}}}\n"),
        );
        let output = run(&project, &["run", "p.yaml", "--gpus", "2"]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{resources}: {err}");
        assert!(
            err.contains("p.yaml:6:") && err.contains(expected),
            "{resources}: {err}"
        );
    }
}

#[test]
fn resources_are_not_in_the_key() {
    let project = Project::new();
    project.write("p.yaml", &gpu_pipeline());
    run_json(
        &project,
        &["run", "p.yaml", "--gpus", "2", "--jobs", "5"],
        0,
    );
    let before = lock(&project);
    let rerun = run_json(
        &project,
        &[
            "run",
            "p.yaml",
            "--gpus",
            "0,1,3",
            "--threads",
            "4",
            "--set",
            "work.resources={gpus: 2, threads: 2, memory: 8G, time: '1:00:00'}",
            "--set",
            "cpu.resources.threads=3",
        ],
        0,
    );
    assert_eq!(rerun["executed"], 0, "{rerun}");
    assert_eq!(rerun["cached"], 5, "{rerun}");
    // No GPUs at all, and the lock file still shows what computed each result.
    let rerun = run_json(
        &project,
        &["run", "p.yaml", "--set", "work.resources.gpus=0"],
        0,
    );
    assert_eq!(rerun["executed"], 0, "{rerun}");
    assert_eq!(lock(&project)["instances"], before["instances"]);
}

/// What a stage of a run with `--threads-per-stage 3` saw in `CANDLE_NUM_THREADS|RAYON_NUM_THREADS`,
/// with `env` added to umdflow's environment.
fn candle_thread_settings(env: &[(&str, &str)]) -> String {
    let project = Project::new();
    project.write(
        "p.yaml",
        r#"name: env
stages:
  a:
    kind: cmd
    run: 'echo "$(printenv CANDLE_NUM_THREADS || echo unset)|$(printenv RAYON_NUM_THREADS || echo unset)" > seen.txt'
"#,
    );
    let mut command = project.command(&["run", "p.yaml", "--threads-per-stage", "3"]);
    command
        .env_remove("CANDLE_NUM_THREADS")
        .env_remove("RAYON_NUM_THREADS");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run umdflow");
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::read_to_string(project.path("seen.txt"))
        .unwrap()
        .trim()
        .to_string()
}

/// candle's element-wise pool is off and a matrix product is cut into as many pieces as a stage
/// has threads (docs/method.md); values the user set are kept.
#[test]
fn stages_get_candles_thread_settings_from_the_budget() {
    assert_eq!(candle_thread_settings(&[]), "1|3");
    assert_eq!(
        candle_thread_settings(&[("CANDLE_NUM_THREADS", "2"), ("RAYON_NUM_THREADS", "5")]),
        "2|5"
    );
}
