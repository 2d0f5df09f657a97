//! The contract between the engine and a stage kind.
//!
//! The engine owns everything around a stage: expansion, keys, caching, scheduling, progress bars.
//! A stage kind only (1) checks and completes its parameters before anything runs, and (2) turns
//! its inputs' output folders plus its parameters into files in a fresh output folder.
//! A `metrics.json` written at the top of the output folder becomes the stage's metrics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

/// Resolved parameters of one stage instance (every `${axis}` already substituted).
pub type Params = Map<String, Value>;

/// How a `cmd` stage's command is written in the pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum RunSpec {
    /// A shell string, run with `sh -c`.
    Shell(String),
    /// An argument vector, run without a shell.
    Argv(Vec<String>),
}

/// What a kind sees of a stage declaration when it checks it (before anything runs).
#[derive(Debug, Clone)]
pub struct StageDecl<'a> {
    /// The stage's name in the pipeline file.
    pub name: &'a str,
    /// The `run:` field, if the file has one.
    pub run: Option<&'a RunSpec>,
    /// The kinds of the stages listed in `inputs:`, in file order, as `(stage name, kind)`.
    pub inputs: &'a [(String, String)],
}

/// One problem found in a stage declaration. `field` is a dotted path relative to the stage,
/// such as `params.image_ratio` or `run`, so the engine can point at the line in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An input of a running stage: another stage's (read-only) output folder.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    /// The input stage's name in the pipeline file (e.g. `prep`).
    pub stage: String,
    /// The input stage's kind (e.g. `ingest`), so a kind can find "its ingest input".
    pub kind: String,
    /// The folder holding that stage's output files. Never write into it.
    pub dir: PathBuf,
}

/// Where a stage reports progress; the engine draws it as a progress bar.
pub trait ProgressSink: Send + Sync {
    /// The number of units (steps, epochs, files) the stage expects to do.
    fn set_total(&self, total: u64);
    /// How many units are done.
    fn set_position(&self, done: u64);
    /// A short status text, e.g. `loss 2.314`.
    fn set_message(&self, message: &str);
}

/// A progress sink that drops everything (tests, `--json` runs).
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn set_total(&self, _total: u64) {}
    fn set_position(&self, _done: u64) {}
    fn set_message(&self, _message: &str) {}
}

/// A GPU the scheduler gave a running instance (`umdflow run --gpus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// The CUDA device number as umdflow itself sees it: an in-process kind opens `cuda:<id>`.
    pub id: usize,
    /// What a child process's `CUDA_VISIBLE_DEVICES` must say to show it this GPU: the id, or,
    /// when umdflow runs under a `CUDA_VISIBLE_DEVICES` of its own, that list's entry at `id`.
    pub visible: String,
}

/// What an instance asks of the run's GPUs when its `resources:` give no `gpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuDemand {
    /// Runs on the CPU.
    None,
    /// One GPU, whichever is free (`device: auto`).
    Any,
    /// This CUDA device (`device: cuda:N`).
    Device(usize),
}

impl GpuDemand {
    /// The demand of a `device` param: `auto`, `cuda:N` or anything else (the CPU).
    pub fn of_device(spec: &str) -> GpuDemand {
        match spec {
            "auto" => GpuDemand::Any,
            _ => spec
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map_or(GpuDemand::None, GpuDemand::Device),
        }
    }
}

/// Everything a stage gets while it runs.
pub struct StageContext<'a> {
    /// Readable instance id, e.g. `train[ratio=0.5,seed=1]`.
    pub id: &'a str,
    /// The stage's name in the pipeline file.
    pub name: &'a str,
    /// Resolved parameters (defaults filled in by [`StageKind::resolve_params`]).
    pub params: &'a Params,
    /// The `run:` field of a `cmd` stage, with axes substituted.
    pub run: Option<&'a RunSpec>,
    /// The inputs' output folders, in the order of `inputs:`.
    pub inputs: &'a [InputArtifact],
    /// A fresh, empty folder: what the stage leaves here is its output.
    pub out_dir: &'a Path,
    /// The folder that holds the pipeline file; relative paths in params resolve against it.
    pub work_dir: &'a Path,
    /// The stage's own log file, kept in the cache beside its output.
    pub log_path: &'a Path,
    /// How many threads the stage may use.
    pub threads: usize,
    /// The GPUs this instance was given, when the run manages GPUs (`--gpus`): then a kind uses
    /// only these (none: the CPU). `None` when the run manages none (the kind's own choice).
    pub gpus: Option<&'a [Gpu]>,
    /// Progress reporting.
    pub progress: &'a dyn ProgressSink,
    /// Set when the user pressed Ctrl-C: stop soon and return [`StageError::Cancelled`].
    pub cancel: &'a AtomicBool,
    /// The instance's resume folder, kept across failed attempts at its key (see
    /// [`crate::resume`]); `None` where no cache keeps one (tests, benchmarks).
    pub resume: Option<crate::resume::Resume<'a>>,
}

impl StageContext<'_> {
    /// Appends one line to the stage's kept log (`umdflow log`). For facts that must stay out of
    /// the output, such as wall-clock times: they would make two identical runs' outputs differ.
    pub fn log(&self, line: &str) -> Result<(), StageError> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path)
            .map_err(StageError::io("opening the stage log"))?;
        writeln!(file, "{line}").map_err(StageError::io("writing the stage log"))
    }

    /// True once the run was interrupted; long stages check it between steps.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The first input whose stage has the given kind.
    pub fn input_of_kind(&self, kind: &str) -> Option<&InputArtifact> {
        self.inputs.iter().find(|input| input.kind == kind)
    }

    /// Like [`Self::input_of_kind`], but a missing input is an error naming the stage.
    pub fn require_input(&self, kind: &str) -> Result<&InputArtifact, StageError> {
        self.input_of_kind(kind).ok_or_else(|| {
            StageError::Failed(format!(
                "stage `{}` needs an input of kind `{kind}` in its `inputs:`",
                self.name
            ))
        })
    }
}

/// Why a stage did not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Failed(String),
    #[error("interrupted")]
    Cancelled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StageError {
    pub fn failed(message: impl Into<String>) -> Self {
        StageError::Failed(message.into())
    }

    /// Wraps an I/O error with what was being done, e.g. `reading data/train.json`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StageError {
        let context = context.into();
        move |source| StageError::Io { context, source }
    }
}

/// A stage kind: `cmd`, `ingest`, `mask`, `pretrain`, ...
pub trait StageKind: Send + Sync {
    /// The name used in `kind:`.
    fn name(&self) -> &'static str;

    /// Bumped whenever the kind's output for the same inputs and params changes (or a default
    /// changes); it is part of every key, so a bump reruns all stages of this kind.
    fn version(&self) -> u32;

    /// One line for `umdflow kinds` and error messages.
    fn summary(&self) -> &'static str;

    /// Checks a declaration and returns the parameters with every default filled in; the result
    /// is what enters the key. Called once per instance, after axes are substituted.
    fn resolve_params(&self, decl: &StageDecl<'_>, params: Params) -> Result<Params, Vec<Problem>>;

    /// Every parameter with its default, as `resolve_params` fills them in when a declaration sets
    /// none (`umdflow kinds --defaults`); empty when the params are free-form. It needs no
    /// declaration, so the engine can list any kind's defaults without knowing its inputs.
    fn default_params(&self) -> Result<Params, Vec<Problem>>;

    /// Produces the output. Must be deterministic given params, inputs and thread count.
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError>;

    /// Whether the running stage can see names: its stage name, its instance id and its inputs'
    /// stage names (`cmd` does, through `UMDFLOW_STAGE`, `UMDFLOW_INSTANCE` and
    /// `UMDFLOW_INPUT_<NAME>`). Then they are in the key and renaming the stage reruns it. A kind
    /// that finds its inputs by kind ([`StageContext::require_input`]) returns false: its inputs
    /// are keyed by kind, and renaming any stage reruns none of its instances.
    fn sees_names(&self) -> bool {
        true
    }

    /// The files and folders an instance reads besides its inputs, each named by the param that
    /// holds its path (relative to the pipeline folder or absolute). The engine hashes their
    /// content like `deps:` and keys that digest in place of the param's path, so edited data
    /// reruns the stage and the same data at another path does not.
    fn reads(&self, params: &Params) -> Vec<ReadPath> {
        let _ = params;
        Vec::new()
    }

    /// Params that cannot change the output (how often to write a checkpoint): the running stage
    /// sees them, but the engine leaves them out of the key, so changing one reruns nothing.
    fn unkeyed_params(&self) -> &'static [&'static str] {
        &[]
    }

    /// The GPUs an instance wants when its `resources:` do not say. By default a kind's `device`
    /// param decides (`auto`: any one GPU, `cuda:N`: that one, else none), which is what every
    /// kind with such a param means by it; a kind whose params are free-form overrides this.
    fn gpu_demand(&self, params: &Params) -> GpuDemand {
        params
            .get("device")
            .and_then(Value::as_str)
            .map_or(GpuDemand::None, GpuDemand::of_device)
    }
}

/// A path a stage reads (see [`StageKind::reads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPath {
    /// The param that names the path, e.g. `path`; it leaves the keyed params.
    pub param: String,
    /// The path as given in the param.
    pub path: String,
}
