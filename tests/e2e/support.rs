//! A scratch project folder and helpers to drive the built `umdflow` binary.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_umdflow");

pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, content).unwrap();
    }

    /// The journal every test stage appends its instance id to, so tests can count executions
    /// across processes (it is outside the cache and not part of any key).
    pub fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("journal.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn clear_journal(&self) {
        let _ = std::fs::remove_file(self.path("journal.txt"));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("JOURNAL", self.path("journal.txt"))
            .env_remove("UMDFLOW_CACHE")
            .env_remove("RUST_LOG");
        command
    }

    pub fn umdflow(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run umdflow")
    }

    /// Runs with `--json` and returns the document; panics with stderr if the exit code differs.
    pub fn json(&self, args: &[&str], expected_code: i32) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let output = self.umdflow(&all);
        assert_eq!(
            output.status.code(),
            Some(expected_code),
            "umdflow {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

/// `(id, status)` pairs of a `--json` document.
pub fn statuses(document: &Value) -> Vec<(String, String)> {
    document["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The ids with a given status, sorted.
pub fn with_status(document: &Value, status: &str) -> Vec<String> {
    let mut ids: Vec<String> = statuses(document)
        .into_iter()
        .filter(|(_, s)| s == status)
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A stage command that records its execution and writes a deterministic output.
pub const RECORD: &str = r#"echo "$UMDFLOW_INSTANCE" >> "$JOURNAL"; echo "$UMDFLOW_PARAMS" > "$UMDFLOW_OUT/params.json""#;

/// The 3x2 example: a shared `prep` and a `train` per (ratio, seed).
pub fn sweep_pipeline(ratios: &str) -> String {
    format!(
        r#"name: sweep
seeds: [0, 1]
sweep:
  ratio: {ratios}
stages:
  prep:
    kind: cmd
    run: 'cat prep.txt > "$UMDFLOW_OUT/data.txt"; echo "$UMDFLOW_INSTANCE" >> "$JOURNAL"'
    deps: [prep.txt]
    params: {{n: 100}}
  train:
    kind: cmd
    inputs: [prep]
    run: ["sh", "-c", "{record}; cat \"$UMDFLOW_INPUT_PREP/data.txt\" >> \"$UMDFLOW_OUT/params.json\"; echo '{{\"score\": 1}}' > \"$UMDFLOW_OUT/metrics.json\""]
    params: {{ratio: "${{ratio}}", seed: "${{seed}}"}}
  report:
    kind: cmd
    inputs: [train]
    run: '{record_sq}'
"#,
        record = RECORD.replace('"', "\\\""),
        record_sq = RECORD.replace('\'', "''"),
    )
}

/// The quickstart (every kind that writes a training curve), shrunk to seconds.
pub const QUICKSTART_SMALL: [&str; 10] = [
    "--set",
    "corpus.params.count=64",
    "--set",
    "downstream.params.count=64",
    "--set",
    "pretrain.params.max_steps=2",
    "--set",
    "calibrate.params.max_steps=2",
    "--set",
    "tune.params.epochs=1",
];
