//! The `cmd` kind: runs a shell string or an argument vector as a stage.
//!
//! The command sees its inputs, params and output folder through environment variables
//! (`UMDFLOW_OUT`, `UMDFLOW_INPUT_<STAGE>`, `UMDFLOW_PARAM_<NAME>`, `UMDFLOW_PARAMS`) and runs in
//! the folder that holds the pipeline file. Its stdout and stderr go to the stage's log.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::api::{Params, Problem, RunSpec, StageContext, StageDecl, StageError, StageKind};

pub struct CmdKind;

/// `prep-data` -> `PREP_DATA`: the form a stage or param name takes in an environment variable.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A param as the command sees it: strings bare, everything else as JSON.
fn env_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl StageKind for CmdKind {
    fn name(&self) -> &'static str {
        "cmd"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "runs a shell command or argv; what it writes to $UMDFLOW_OUT is the output"
    }

    fn resolve_params(&self, decl: &StageDecl<'_>, params: Params) -> Result<Params, Vec<Problem>> {
        match decl.run {
            None => Err(vec![Problem::new(
                "run",
                "a `cmd` stage needs `run:` (a shell string or a list of arguments)",
            )]),
            Some(RunSpec::Shell(text)) if text.trim().is_empty() => {
                Err(vec![Problem::new("run", "`run:` is empty")])
            }
            Some(RunSpec::Argv(argv)) if argv.is_empty() => {
                Err(vec![Problem::new("run", "`run:` is an empty list")])
            }
            Some(_) => Ok(params),
        }
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        let run = ctx
            .run
            .ok_or_else(|| StageError::failed("a `cmd` stage needs `run:`"))?;
        let mut command = match run {
            RunSpec::Shell(text) => {
                let mut command = Command::new("sh");
                command.arg("-c").arg(text);
                command
            }
            RunSpec::Argv(argv) => {
                let mut command = Command::new(&argv[0]);
                command.args(&argv[1..]);
                command
            }
        };
        command.current_dir(ctx.work_dir);
        command.env("UMDFLOW_OUT", ctx.out_dir);
        command.env("UMDFLOW_STAGE", ctx.name);
        command.env("UMDFLOW_INSTANCE", ctx.id);
        command.env("UMDFLOW_THREADS", ctx.threads.to_string());
        for input in ctx.inputs {
            command.env(
                format!("UMDFLOW_INPUT_{}", env_name(&input.stage)),
                &input.dir,
            );
        }
        for (name, value) in ctx.params {
            command.env(
                format!("UMDFLOW_PARAM_{}", env_name(name)),
                env_value(value),
            );
        }
        command.env(
            "UMDFLOW_PARAMS",
            Value::Object(ctx.params.clone()).to_string(),
        );

        let log = File::create(ctx.log_path).map_err(StageError::io("creating the stage log"))?;
        let log_err = log
            .try_clone()
            .map_err(StageError::io("creating the stage log"))?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);

        let program = match run {
            RunSpec::Shell(_) => "sh".to_string(),
            RunSpec::Argv(argv) => argv[0].clone(),
        };
        let mut child = command
            .spawn()
            .map_err(StageError::io(format!("starting `{program}`")))?;

        // Poll rather than block so that Ctrl-C can stop the child; start fast so that trivial
        // commands add almost no latency, then back off.
        let mut pause = Duration::from_micros(100);
        loop {
            match child
                .try_wait()
                .map_err(StageError::io("waiting for the command"))?
            {
                Some(status) if status.success() => return Ok(()),
                Some(status) => {
                    return Err(StageError::failed(match status.code() {
                        Some(code) => {
                            format!("command exited with status {code} (see the stage log)")
                        }
                        None => format!("command was killed ({status}) (see the stage log)"),
                    }));
                }
                None => {}
            }
            if ctx.cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StageError::Cancelled);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InputArtifact, NoProgress};
    use std::sync::atomic::AtomicBool;

    fn run_cmd(
        run: RunSpec,
        params: Params,
        inputs: &[InputArtifact],
    ) -> (Result<(), StageError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let log = dir.path().join("log.txt");
        let cancel = AtomicBool::new(false);
        let ctx = StageContext {
            id: "s",
            name: "s",
            params: &params,
            run: Some(&run),
            inputs,
            out_dir: &out,
            work_dir: dir.path(),
            log_path: &log,
            threads: 1,
            progress: &NoProgress,
            cancel: &cancel,
        };
        (CmdKind.run(&ctx), dir)
    }

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(env_name("prep-data.v2"), "PREP_DATA_V2");
    }

    #[test]
    fn params_inputs_and_out_reach_the_command() {
        let mut params = Params::new();
        params.insert("ratio".into(), serde_json::json!(0.5));
        params.insert("name".into(), serde_json::json!("abc"));
        let inputs = vec![InputArtifact {
            stage: "prep-data".into(),
            kind: "cmd".into(),
            dir: "/some/where".into(),
        }];
        let script = r#"echo "$UMDFLOW_PARAM_RATIO $UMDFLOW_PARAM_NAME $UMDFLOW_INPUT_PREP_DATA $UMDFLOW_PARAMS" > "$UMDFLOW_OUT/seen""#;
        let (result, dir) = run_cmd(RunSpec::Shell(script.into()), params, &inputs);
        result.unwrap();
        let seen = std::fs::read_to_string(dir.path().join("out/seen")).unwrap();
        assert_eq!(
            seen.trim(),
            r#"0.5 abc /some/where {"name":"abc","ratio":0.5}"#
        );
    }

    #[test]
    fn a_failing_command_reports_its_status_and_logs_stderr() {
        let (result, dir) = run_cmd(
            RunSpec::Argv(vec![
                "sh".into(),
                "-c".into(),
                "echo oops >&2; exit 3".into(),
            ]),
            Params::new(),
            &[],
        );
        let message = result.unwrap_err().to_string();
        assert!(message.contains("status 3"), "{message}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log.txt")).unwrap(),
            "oops\n"
        );
    }

    #[test]
    fn a_missing_program_is_named() {
        let (result, _dir) = run_cmd(
            RunSpec::Argv(vec!["no-such-program-umdflow".into()]),
            Params::new(),
            &[],
        );
        assert!(
            result
                .unwrap_err()
                .to_string()
                .contains("no-such-program-umdflow")
        );
    }
}
