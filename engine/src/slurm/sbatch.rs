//! The `sbatch` command line of one job, and what `sbatch --parsable` answers.

use std::path::Path;

use crate::spec::RawExecutor;

/// What one job asks Slurm for: its stage's `resources:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobResources {
    pub threads: Option<u32>,
    pub memory_mib: Option<u64>,
    pub time_s: Option<u64>,
    pub gpus: Option<u32>,
}

impl JobResources {
    /// `--cpus-per-task`, `--mem`, `--time` (whole minutes, rounded up), `--gres=gpu:N`.
    fn arguments(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(threads) = self.threads {
            args.push(format!("--cpus-per-task={threads}"));
        }
        if let Some(mib) = self.memory_mib {
            args.push(format!("--mem={mib}M"));
        }
        if let Some(seconds) = self.time_s {
            args.push(format!("--time={}", seconds.div_ceil(60).max(1)));
        }
        if let Some(gpus) = self.gpus.filter(|&n| n > 0) {
            args.push(format!("--gres=gpu:{gpus}"));
        }
        args
    }
}

/// One instance's job, or one array of jobs.
pub struct Submission<'a> {
    /// `--job-name`.
    pub name: &'a str,
    /// Where Slurm writes the job's stdout and stderr (for an array, a pattern with `%a`, the
    /// task index, so that each task has its own).
    pub log: &'a Path,
    /// The number of tasks of an array job (`--array=0-(N-1)`), None for a plain job.
    pub array: Option<usize>,
    /// The folder the job starts in.
    pub workdir: &'a Path,
    /// Job ids of the inputs submitted in this run: the job starts after they all succeed.
    pub after: &'a [String],
    /// The command the job runs (`umdflow worker ...`), one argument per item.
    pub command: &'a [String],
    pub resources: &'a JobResources,
}

/// The arguments of `sbatch` for one job: what umdflow needs, then the executor block's settings,
/// then its `sbatch_args` as given.
pub fn arguments(executor: &RawExecutor, submission: &Submission) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={}", submission.name),
        format!("--output={}", submission.log.display()),
        format!("--chdir={}", submission.workdir.display()),
    ];
    if let Some(tasks) = submission.array {
        args.push(format!("--array=0-{}", tasks.saturating_sub(1)));
    }
    if !submission.after.is_empty() {
        args.push(format!(
            "--dependency=afterok:{}",
            submission.after.join(":")
        ));
        // A job whose input failed is cancelled instead of pending forever.
        args.push("--kill-on-invalid-dep=yes".into());
    }
    let settings = [
        ("--partition", &executor.partition),
        ("--account", &executor.account),
        ("--qos", &executor.qos),
        ("--constraint", &executor.constraint),
    ];
    for (flag, value) in settings {
        if let Some(value) = value {
            args.push(format!("{flag}={value}"));
        }
    }
    args.extend(submission.resources.arguments());
    args.extend(executor.sbatch_args.iter().cloned());
    let command: Vec<String> = submission.command.iter().map(|a| shell_quote(a)).collect();
    // `exec`: the worker itself receives Slurm's signals (scancel, time limit).
    args.push(format!("--wrap=exec {}", command.join(" ")));
    args
}

/// Quotes an argument for `sh` (what `--wrap` runs): unchanged when plainly safe, else in single
/// quotes.
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The job id in what `sbatch --parsable` printed: `<id>` or, on a multi-cluster setup,
/// `<id>;<cluster>`.
pub fn parse_job_id(stdout: &str) -> Result<String, String> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty());
    let id = line.and_then(|l| l.split(';').next()).unwrap_or("").trim();
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(format!(
            "expected a job id from `sbatch --parsable`, got `{}`",
            stdout.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_RESOURCES: JobResources = JobResources {
        threads: None,
        memory_mib: None,
        time_s: None,
        gpus: None,
    };

    fn submission<'a>(after: &'a [String], command: &'a [String]) -> Submission<'a> {
        Submission {
            name: "p/train[seed=1]",
            log: Path::new("/c/slurm/r/train_seed_1_.out"),
            array: None,
            workdir: Path::new("/work"),
            after,
            command,
            resources: &NO_RESOURCES,
        }
    }

    #[test]
    fn a_stage_s_resources_become_its_job_s_request() {
        let resources = JobResources {
            threads: Some(4),
            memory_mib: Some(16384),
            time_s: Some(90 * 60 + 1),
            gpus: Some(2),
        };
        let command = ["umdflow".to_string()];
        let args = arguments(
            &RawExecutor {
                sbatch_args: vec!["--time=10".into()],
                ..RawExecutor::default()
            },
            &Submission {
                resources: &resources,
                ..submission(&[], &command)
            },
        );
        let requested: Vec<&str> = args[4..args.len() - 1].iter().map(String::as_str).collect();
        // The executor's sbatch_args come last, so they win where both say something.
        assert_eq!(
            requested,
            [
                "--cpus-per-task=4",
                "--mem=16384M",
                "--time=91",
                "--gres=gpu:2",
                "--time=10"
            ]
        );
        let none = JobResources {
            gpus: Some(0),
            ..NO_RESOURCES
        };
        assert!(none.arguments().is_empty(), "no GPU asked: no --gres");
    }

    #[test]
    fn a_job_waits_for_its_inputs_and_carries_the_executor_settings() {
        let executor = RawExecutor {
            partition: Some("gpu".into()),
            qos: Some("short".into()),
            sbatch_args: vec!["--time=01:00:00".into()],
            ..RawExecutor::default()
        };
        let after = ["11".to_string(), "12".to_string()];
        let command = ["/bin/umdflow".to_string(), "worker".to_string()];
        let args = arguments(&executor, &submission(&after, &command));
        assert_eq!(
            args,
            [
                "--parsable",
                "--job-name=p/train[seed=1]",
                "--output=/c/slurm/r/train_seed_1_.out",
                "--chdir=/work",
                "--dependency=afterok:11:12",
                "--kill-on-invalid-dep=yes",
                "--partition=gpu",
                "--qos=short",
                "--time=01:00:00",
                "--wrap=exec /bin/umdflow worker",
            ]
        );
    }

    #[test]
    fn a_job_without_inputs_in_the_run_has_no_dependency() {
        let command = ["umdflow".to_string()];
        let args = arguments(&RawExecutor::default(), &submission(&[], &command));
        assert!(
            !args.iter().any(|a| a.starts_with("--dependency")),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a.starts_with("--kill-on")), "{args:?}");
        assert!(
            !args.iter().any(|a| a.starts_with("--partition")),
            "{args:?}"
        );
    }

    #[test]
    fn an_array_asks_for_its_tasks_and_a_log_per_task() {
        let command = ["umdflow".to_string()];
        let args = arguments(
            &RawExecutor::default(),
            &Submission {
                log: Path::new("/c/slurm/r/array0_%a.out"),
                array: Some(500),
                ..submission(&[], &command)
            },
        );
        assert_eq!(
            args[..5],
            [
                "--parsable",
                "--job-name=p/train[seed=1]",
                "--output=/c/slurm/r/array0_%a.out",
                "--chdir=/work",
                "--array=0-499"
            ]
        );
    }

    #[test]
    fn the_command_survives_the_shell() {
        let command = [
            "/opt/my tools/umdflow".to_string(),
            "--instance".to_string(),
            "train[ratio=0.5,seed=1]".to_string(),
            "--set".to_string(),
            "a.params.msg=it's $HOME".to_string(),
        ];
        let args = arguments(&RawExecutor::default(), &submission(&[], &command));
        let wrap = args.last().unwrap().strip_prefix("--wrap=").unwrap();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -- {}; for a in \"$@\"; do printf '%s\\n' \"$a\"; done",
                wrap.strip_prefix("exec ").unwrap()
            ))
            .output()
            .unwrap();
        let printed: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(printed, command);
    }

    #[test]
    fn job_ids_are_read_with_or_without_a_cluster_name() {
        assert_eq!(parse_job_id("4242\n").unwrap(), "4242");
        assert_eq!(parse_job_id("4242;ci\n").unwrap(), "4242");
        assert!(parse_job_id("").is_err());
        assert!(parse_job_id("sbatch: error: x\n").is_err());
    }
}
