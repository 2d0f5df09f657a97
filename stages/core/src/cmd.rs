//! The `cmd` kind: runs a shell string or an argument vector as a stage.
//!
//! The command sees its inputs, params and output folder through environment variables
//! (`UMDFLOW_OUT`, `UMDFLOW_INPUT_<STAGE>`, `UMDFLOW_PARAM_<NAME>`, `UMDFLOW_PARAMS`, and
//! `UMDFLOW_RESUME_DIR`, a folder kept across failed attempts) and runs in
//! the folder that holds the pipeline file, in a process group of its own. Its stdout and stderr
//! go to the stage's log.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::api::{
    GpuDemand, Params, Problem, RunSpec, StageContext, StageDecl, StageError, StageKind,
};

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

    fn default_params(&self) -> Result<Params, Vec<Problem>> {
        Ok(Params::new())
    }

    /// Free-form params: a `device` param means nothing to umdflow here; a command asks for GPUs
    /// with `resources: {gpus: N}`.
    fn gpu_demand(&self, _params: &Params) -> GpuDemand {
        GpuDemand::None
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
        // Everything set here except the output and resume folders' locations and the GPU (below)
        // is in the key (the stage name and instance id because `sees_names` is true); the thread
        // budget is not keyed, so it is not passed: a command that wants a thread count takes it
        // as a param.
        command.current_dir(ctx.work_dir);
        command.env("UMDFLOW_OUT", ctx.out_dir);
        command.env("UMDFLOW_STAGE", ctx.name);
        command.env("UMDFLOW_INSTANCE", ctx.id);
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
        // Kept across failed attempts at this key, so a command can checkpoint there and resume.
        match ctx.resume {
            Some(resume) => command.env("UMDFLOW_RESUME_DIR", resume.dir),
            None => command.env_remove("UMDFLOW_RESUME_DIR"),
        };
        // Which GPU is not in the key (a run on GPU 1 and on GPU 3 is the same computation).
        // When the run manages GPUs, a command sees only its own, and one given none sees none.
        if let Some(gpus) = ctx.gpus {
            let visible: Vec<&str> = gpus.iter().map(|gpu| gpu.visible.as_str()).collect();
            command.env("CUDA_VISIBLE_DEVICES", visible.join(","));
            if gpus.is_empty() {
                command.env_remove("UMDFLOW_GPU");
            } else {
                let ids: Vec<String> = gpus.iter().map(|gpu| gpu.id.to_string()).collect();
                command.env("UMDFLOW_GPU", ids.join(","));
            }
        }
        // Its own process group, so that cancelling the stage ends every process it started.
        command.process_group(0);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let program = match run {
            RunSpec::Shell(_) => "sh".to_string(),
            RunSpec::Argv(argv) => argv[0].clone(),
        };
        let log = StageLog::create(ctx.log_path);
        let mut child = command
            .spawn()
            .map_err(StageError::io(format!("starting `{program}`")))?;
        let group = ProcessGroup(child.id());
        let readers: Vec<_> = [
            child.stdout.take().map(|out| log.copy_from(out)),
            child.stderr.take().map(|err| log.copy_from(err)),
        ]
        .into_iter()
        .flatten()
        .collect();

        // Poll rather than block so that Ctrl-C can stop the child; start fast so that trivial
        // commands add almost no latency, then back off.
        let mut pause = Duration::from_micros(100);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(err) => {
                    group.kill();
                    return Err(StageError::io("waiting for the command")(err));
                }
            }
            if ctx.cancelled() {
                group.kill();
                let _ = child.wait();
                return Err(StageError::Cancelled);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        // The output is complete when the command exits: a process it left behind must not write
        // into the folder being committed (and would hold the log pipes open).
        group.kill();
        for reader in readers {
            let _ = reader.join();
        }
        verdict(status, ctx.cancelled(), &log)
    }
}

/// What a command that exited means for the stage. A run cancelled meanwhile is `Cancelled`
/// even when the command exited 0: Slurm signals the whole job at a time limit or on `scancel`,
/// and a shell whose `sleep` died may run its next command and exit 0 with its work unfinished.
fn verdict(status: ExitStatus, cancelled: bool, log: &StageLog) -> Result<(), StageError> {
    if cancelled {
        return Err(StageError::Cancelled);
    }
    if status.success() {
        return Ok(());
    }
    let what = match status.code() {
        Some(code) => format!("command exited with status {code}"),
        None => format!("command was killed ({status})"),
    };
    Err(StageError::failed(match log.write_error() {
        None => format!("{what} (see the stage log)"),
        Some(err) => format!(
            "{what}; the stage log could not be written ({err}); its last lines:\n{}",
            log.tail()
        ),
    }))
}

/// A command's process group (its id is the leader's pid).
struct ProcessGroup(u32);

impl ProcessGroup {
    fn kill(&self) {
        let Ok(pid) = libc::pid_t::try_from(self.0) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// How much of a command's output is kept in memory, so that a failure can be explained even
/// when the log file cannot be written (a full disk).
const TAIL_BYTES: usize = 4096;

/// The stage log: the command's stdout and stderr go to the log file and, the last
/// [`TAIL_BYTES`] of them, to memory.
#[derive(Clone)]
struct StageLog(Arc<Mutex<LogState>>);

struct LogState {
    file: Option<File>,
    tail: VecDeque<u8>,
    write_error: Option<String>,
}

impl StageLog {
    fn create(path: &std::path::Path) -> StageLog {
        let (file, write_error) = match File::create(path) {
            Ok(file) => (Some(file), None),
            Err(err) => (None, Some(err.to_string())),
        };
        StageLog(Arc::new(Mutex::new(LogState {
            file,
            tail: VecDeque::with_capacity(TAIL_BYTES),
            write_error,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Copies a pipe into the log on a thread of its own until the pipe closes.
    fn copy_from(&self, mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<()> {
        let log = self.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(read) = pipe.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                log.append(&buffer[..read]);
            }
        })
    }

    fn append(&self, bytes: &[u8]) {
        let mut state = self.lock();
        if let Some(file) = state.file.as_mut()
            && let Err(err) = file.write_all(bytes)
        {
            state.write_error = Some(err.to_string());
            state.file = None;
        }
        state.tail.extend(bytes);
        let excess = state.tail.len().saturating_sub(TAIL_BYTES);
        state.tail.drain(..excess);
    }

    fn write_error(&self) -> Option<String> {
        let mut state = self.lock();
        if let Some(file) = state.file.as_mut()
            && let Err(err) = file.sync_data()
        {
            state.write_error = Some(err.to_string());
        }
        state.write_error.clone()
    }

    fn tail(&self) -> String {
        let state = self.lock();
        let bytes: Vec<u8> = state.tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InputArtifact, NoProgress};
    use std::sync::atomic::{AtomicBool, Ordering};

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
            gpus: None,
            progress: &NoProgress,
            cancel: &cancel,
            resume: None,
        };
        (CmdKind.run(&ctx), dir)
    }

    /// Runs `script` with `sh -c`, the log at `log`, cancelling once `cancel_when` says so.
    fn run_shell_with(
        script: &str,
        dir: &std::path::Path,
        log: &std::path::Path,
        cancel_when: impl Fn() -> bool + Send + 'static,
    ) -> Result<(), StageError> {
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        let watcher = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                while !cancel.load(Ordering::SeqCst) {
                    if cancel_when() {
                        cancel.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let params = Params::new();
        let run = RunSpec::Shell(script.into());
        let ctx = StageContext {
            id: "s",
            name: "s",
            params: &params,
            run: Some(&run),
            inputs: &[],
            out_dir: &out,
            work_dir: dir,
            log_path: log,
            threads: 1,
            gpus: None,
            progress: &NoProgress,
            cancel: &cancel,
            resume: None,
        };
        let result = CmdKind.run(&ctx);
        cancel.store(true, Ordering::SeqCst);
        watcher.join().unwrap();
        result
    }

    /// True while a process exists and is not a zombie (an orphan may wait for a reaper).
    fn alive(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn a_command_that_exits_0_after_the_run_was_cancelled_is_not_a_result() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let log = StageLog::create(&dir.path().join("log"));
        let success = ExitStatus::from_raw(0);
        assert!(verdict(success, false, &log).is_ok());
        let result = verdict(success, true, &log);
        assert!(matches!(result, Err(StageError::Cancelled)), "{result:?}");
    }

    #[test]
    fn cancelling_kills_the_commands_children_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let started = pid_file.clone();
        let script = format!(
            "sleep 30 & echo $! > '{}'; wait",
            pid_file.to_string_lossy()
        );
        let result = run_shell_with(&script, dir.path(), &dir.path().join("log"), move || {
            std::fs::read_to_string(&started).is_ok_and(|pid| pid.ends_with('\n'))
        });
        assert!(matches!(result, Err(StageError::Cancelled)), "{result:?}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let pid = pid.trim();
        for _ in 0..100 {
            if !alive(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the shell's child {pid} still runs after the stage was cancelled");
    }

    #[test]
    fn a_log_on_a_full_device_still_explains_the_failure() {
        // /dev/full accepts the open and fails every write with ENOSPC, as a full disk does.
        let dir = tempfile::tempdir().unwrap();
        let result = run_shell_with(
            "echo step 1 done; echo 'cannot write model.bin' >&2; exit 1",
            dir.path(),
            std::path::Path::new("/dev/full"),
            || false,
        );
        let message = result.unwrap_err().to_string();
        assert!(message.contains("status 1"), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
        assert!(message.contains("cannot write model.bin"), "{message}");
        assert!(message.contains("step 1 done"), "{message}");
    }

    #[test]
    fn the_kept_tail_is_bounded() {
        let log = StageLog::create(std::path::Path::new("/dev/full"));
        for _ in 0..100 {
            log.append(&[b'x'; 1000]);
        }
        log.append(b"\nlast line");
        assert_eq!(log.tail().len(), TAIL_BYTES);
        assert!(log.tail().ends_with("last line"));
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
