//! The `umdflow` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use umdflow::registry;
use umdflow_engine::commands::{self, DagFormat, Loaded, LockFile, PipelineArgs};
use umdflow_engine::diagnostics::Invalid;
use umdflow_engine::exit::Exit;
use umdflow_engine::registry::Registry;
use umdflow_engine::resources::{Budget, parse_gpus};
use umdflow_engine::scheduler::{RunOptions, Status, cache_dir};
use umdflow_engine::slurm::SlurmOptions;
use umdflow_engine::slurm::worker::{self, Report};
use umdflow_engine::spec::ExecutorKind;
use umdflow_stages::Gpu;

#[derive(Parser)]
#[command(
    name = "umdflow",
    version,
    about = "Declarative, cached ML experiment pipelines"
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress bars or summary table.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Pipeline {
    /// The pipeline file (YAML).
    file: PathBuf,
    /// Override a value: `sweep.ratio=[0.5,0.75]`, `train.params.lr=0.001`, `seeds=3`, or
    /// `preset=ci` (the overrides listed under the file's `presets: ci:`).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    sets: Vec<String>,
    /// Refuse sweeps with more points than this.
    #[arg(long, default_value_t = 10_000)]
    max_points: usize,
    /// Cache folder (default: `.umdflow/` beside the pipeline file; or $UMDFLOW_CACHE).
    #[arg(long)]
    cache: Option<PathBuf>,
}

impl Pipeline {
    fn args(&self) -> PipelineArgs {
        PipelineArgs {
            file: self.file.clone(),
            sets: self.sets.clone(),
            max_points: self.max_points,
            cache: self.cache.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run every stage instance that is not cached yet.
    Run {
        #[command(flatten)]
        pipeline: Pipeline,
        /// Stages to run at once (default: the number of cores).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// After a failure, keep starting stages that do not depend on it.
        #[arg(short, long)]
        keep_going: bool,
        /// Recompute these stages (a stage name, an instance id, or `all`) even if cached.
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Threads each stage may use unless its `resources:` say (default: threads / jobs).
        #[arg(long)]
        threads_per_stage: Option<usize>,
        /// Threads all running stages may hold together (default: the number of cores, or
        /// --threads-per-stage if that is more).
        #[arg(long)]
        threads: Option<usize>,
        /// GPUs to hand out: a count (`4`: ids 0 to 3) or ids (`0,1,3`). Without it umdflow
        /// assigns no GPU and the kinds pick their device themselves.
        #[arg(long, value_name = "N|IDS", value_parser = gpus_arg)]
        gpus: Option<GpuIds>,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Where to write the lock file (default: `<pipeline>.lock.json` beside the pipeline).
        #[arg(long, value_name = "PATH")]
        lock_file: Option<PathBuf>,
        /// Write no lock file.
        #[arg(long, conflicts_with = "lock_file")]
        no_lock_file: bool,
        /// Where the stages run (default: the file's `executor.kind`, else local). `slurm`
        /// submits one job per missing instance, ready ones of a stage as one job array
        /// (docs/scaling.md).
        #[arg(long, value_enum)]
        executor: Option<ExecutorKind>,
    },
    /// Run one instance and exit: what each Slurm job runs (`run --executor slurm`).
    #[command(hide = true)]
    Worker {
        #[command(flatten)]
        pipeline: Pipeline,
        /// The instance id.
        #[arg(long, required_unless_present = "instance_list")]
        instance: Option<String>,
        /// An array job's instance list: the task runs line $SLURM_ARRAY_TASK_ID.
        #[arg(long, value_name = "FILE", conflicts_with = "instance")]
        instance_list: Option<PathBuf>,
        /// Recompute it even if cached.
        #[arg(long)]
        force: bool,
        /// Threads the stage may use (default: $SLURM_CPUS_PER_TASK, else 1).
        #[arg(long)]
        threads: Option<usize>,
        /// Where to write what happened, as JSON, for the driver.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
        /// Write the report as `<instance>.report.json` in this folder (for array tasks).
        #[arg(long, value_name = "DIR", conflicts_with = "report")]
        report_dir: Option<PathBuf>,
    },
    /// The Slurm jobs of the pipeline's runs (`run --executor slurm`) that are queued or running.
    Status {
        #[command(flatten)]
        pipeline: Pipeline,
        /// Also the jobs that ended (of runs whose job folder is kept: those with a failure).
        #[arg(long)]
        all: bool,
    },
    /// Cancel the pipeline's queued and running Slurm jobs; what they committed stays cached.
    Cancel {
        #[command(flatten)]
        pipeline: Pipeline,
    },
    /// Say what `run` would execute and why, running nothing.
    Plan {
        #[command(flatten)]
        pipeline: Pipeline,
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the instance graph.
    Dag {
        #[command(flatten)]
        pipeline: Pipeline,
        #[arg(long, value_enum, default_value = "dot")]
        format: DagFormat,
    },
    /// Each instance: cached or not, key prefix, metrics.
    Show {
        #[command(flatten)]
        pipeline: Pipeline,
        #[arg(long)]
        json: bool,
    },
    /// Print the kept log of an instance, e.g. `umdflow log p.yaml 'train[seed=1]'`.
    Log {
        #[command(flatten)]
        pipeline: Pipeline,
        /// The instance id.
        id: String,
    },
    /// Remove what the given pipelines no longer reach (with no file: only unreferenced files).
    Gc {
        /// Pipelines whose cached results to keep.
        files: Vec<PathBuf>,
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Re-hash every blob in the cache; damaged ones are removed and their stages recompute.
    /// Exits 1 when it found damage (a damaged index included).
    Verify {
        /// A pipeline file whose cache to verify (default: --cache, $UMDFLOW_CACHE or ./.umdflow).
        file: Option<PathBuf>,
        #[arg(long)]
        cache: Option<PathBuf>,
        /// If the index is damaged, move it aside and start a fresh one (the blobs are kept).
        #[arg(long)]
        repair: bool,
    },
    /// Tables (Markdown, CSV, JSON, LaTeX), plots and an HTML page from cached results; runs nothing.
    Report {
        #[command(flatten)]
        pipeline: Pipeline,
        /// Output folder (default: `<pipeline>-report/` beside the pipeline).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A folder with the pipeline, its lock file, every metric and the report, for a reviewer;
    /// or every cached instance as a TensorBoard or MLflow run.
    Export {
        #[command(flatten)]
        pipeline: Pipeline,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// What to write.
        #[arg(long, value_enum, default_value = "bundle")]
        format: umdflow_engine::report::ExportFormat,
    },
    /// List the stage kinds (with `--defaults`, every parameter with its default value).
    Kinds {
        #[arg(long)]
        defaults: bool,
    },
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

/// Sets, once and before any stage or worker thread starts, how candle's CPU code uses threads
/// (a value the user set is kept):
/// - `CANDLE_NUM_THREADS=1`: candle's own pool for large element-wise ops spins, serialises its
///   callers on one lock and makes them spin-wait for its workers; with it at 2 threads a `tiny`
///   step took 2× as long (docs/benchmarks.md, issue 13). Element-wise ops then run on the
///   calling thread; the training step's independent passes use the stage's threads instead.
/// - `RAYON_NUM_THREADS=threads_per_stage`: candle reads it at every matrix product to choose how
///   many pieces to cut the product into (without it, it parses /proc/cpuinfo at every product).
///   rayon's global pool (the cache's hashing) would read it too, so that pool is given every
///   core explicitly.
fn set_compute_threads(threads_per_stage: usize, cores: usize) {
    for (name, value) in [
        ("CANDLE_NUM_THREADS", 1),
        ("RAYON_NUM_THREADS", threads_per_stage.max(1)),
    ] {
        if std::env::var_os(name).is_none() {
            // SAFETY: called from main before any other thread of the process is started.
            unsafe { std::env::set_var(name, value.to_string()) };
        }
    }
    // An error means the global pool exists already (its size is then fixed anyway).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.max(1))
        .build_global();
}

/// The parsed `--gpus` (one value, so clap must not take it for a list of values).
#[derive(Clone)]
struct GpuIds(Vec<Gpu>);

/// `--gpus`, mapped through umdflow's own `CUDA_VISIBLE_DEVICES` when it has one.
fn gpus_arg(text: &str) -> Result<GpuIds, String> {
    parse_gpus(text, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref()).map(GpuIds)
}

static CANCEL: AtomicBool = AtomicBool::new(false);

fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            eprintln!("\numdflow: second interrupt, exiting now (completed stages are cached)");
            std::process::exit(Exit::Interrupted.code());
        }
        eprintln!(
            "\numdflow: interrupted; stopping running stages (completed stages stay cached; press Ctrl-C again to exit now)"
        );
    });
}

/// Slurm ends a job (scancel, time limit) with SIGTERM, then SIGKILL after `KillWait`: stop the
/// stage the way Ctrl-C does, so that its staging folder is cleaned up and nothing is committed.
fn cancel_on_sigterm() {
    extern "C" fn on_sigterm(_: libc::c_int) {
        CANCEL.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Exit code 2 for an invalid pipeline, with every problem listed.
fn load(pipeline: &Pipeline, registry: &Registry) -> Result<Loaded, Invalid> {
    commands::load_pipeline(&pipeline.args(), registry)
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Output piped into `head` should end umdflow quietly, as it ends any Unix tool, rather than
/// panic in `println!` (Rust ignores SIGPIPE by default).
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match execute(cli) {
        Ok(code) => code,
        // An invalid pipeline lists every problem and exits with 2, before anything ran.
        Err(err) => match err.downcast_ref::<Invalid>() {
            Some(invalid) => {
                eprintln!("{invalid}");
                Exit::Invalid.into()
            }
            None => {
                eprintln!("error: {err:#}");
                Exit::Failed.into()
            }
        },
    }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let registry = registry::builtin();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match cli.command {
        Command::Run {
            pipeline,
            jobs,
            keep_going,
            force,
            threads_per_stage,
            threads,
            gpus,
            json,
            lock_file,
            no_lock_file,
            executor,
        } => {
            let loaded = load(&pipeline, &registry)?;
            let executor = executor.unwrap_or_else(|| {
                let block = loaded.source.raw.executor.as_ref();
                block.map(|e| e.kind).unwrap_or_default()
            });
            let slurm = match executor {
                ExecutorKind::Local => None,
                ExecutorKind::Slurm => Some(SlurmOptions::from_source(
                    &loaded.source,
                    std::env::current_exe()?,
                    threads_per_stage,
                )?),
            };
            let jobs = jobs.unwrap_or(cores).max(1);
            // An explicit --threads-per-stage above the core count oversubscribes on purpose.
            let threads = threads
                .unwrap_or(cores.max(threads_per_stage.unwrap_or(0)))
                .max(1);
            let options = RunOptions {
                jobs,
                keep_going,
                threads_per_stage: threads_per_stage.unwrap_or((threads / jobs).max(1)),
                budget: Budget {
                    threads,
                    gpus: gpus.map(|GpuIds(gpus)| gpus),
                },
                umdflow_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            // Slurm jobs inherit this environment: each worker sets its own budget instead.
            if slurm.is_none() {
                set_compute_threads(options.threads_per_stage, cores);
            }
            install_ctrl_c();
            let lock = match (no_lock_file, lock_file) {
                (true, _) => LockFile::Off,
                (false, Some(path)) => LockFile::At(path),
                (false, None) => LockFile::BesidePipeline,
            };
            let result = commands::run(
                &loaded,
                &options,
                &force,
                json,
                cli.quiet,
                &lock,
                slurm.as_ref(),
                &CANCEL,
            )?;
            Ok(if result.interrupted {
                Exit::Interrupted.into()
            } else if result
                .outcomes
                .iter()
                // Skipped: after a failure, or (Slurm) a job cancelled from outside the run.
                .any(|o| matches!(o.status, Status::Failed | Status::Skipped))
            {
                Exit::Failed.into()
            } else {
                Exit::Ok.into()
            })
        }
        Command::Worker {
            pipeline,
            instance,
            instance_list,
            force,
            threads,
            report,
            report_dir,
        } => {
            let task = std::env::var("SLURM_ARRAY_TASK_ID").ok();
            let instance =
                worker::which_instance(instance, instance_list.as_deref(), task.as_deref())?;
            let report = worker::report_path(report, report_dir.as_deref(), &instance);
            let loaded = load(&pipeline, &registry)?;
            let threads = threads
                .or_else(|| std::env::var("SLURM_CPUS_PER_TASK").ok()?.parse().ok())
                .unwrap_or(1)
                .max(1);
            let options = RunOptions {
                jobs: 1,
                keep_going: false,
                threads_per_stage: threads,
                budget: Budget {
                    threads,
                    gpus: None,
                },
                umdflow_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            set_compute_threads(threads, cores);
            install_ctrl_c();
            cancel_on_sigterm();
            let outcome = worker::run_instance(&loaded, &instance, &options, force, &CANCEL)?;
            if let Some(path) = &report {
                Report::of(&outcome).write(path)?;
            }
            eprintln!("umdflow worker: {instance}: {}", outcome.reason);
            if let Some(tail) = &outcome.log_tail {
                eprintln!("--- last lines of the log of {instance} ---\n{tail}\n---");
            }
            Ok(match outcome.status {
                Status::Executed | Status::Cached => Exit::Ok.into(),
                Status::Failed | Status::Skipped => Exit::Failed.into(),
            })
        }
        Command::Status { pipeline, all } => {
            let loaded = load(&pipeline, &registry)?;
            commands::slurm_status(&loaded, all)?;
            Ok(Exit::Ok.into())
        }
        Command::Cancel { pipeline } => {
            let loaded = load(&pipeline, &registry)?;
            let cancelled = commands::slurm_cancel(&loaded)?;
            println!(
                "cancelled {cancelled} Slurm jobs of {}",
                loaded.expanded.name
            );
            Ok(Exit::Ok.into())
        }
        Command::Plan {
            pipeline,
            force,
            json,
        } => {
            let loaded = load(&pipeline, &registry)?;
            commands::plan(&loaded, &force, json)?;
            Ok(Exit::Ok.into())
        }
        Command::Dag { pipeline, format } => {
            let loaded = load(&pipeline, &registry)?;
            print!("{}", commands::dag(&loaded.expanded, format));
            Ok(Exit::Ok.into())
        }
        Command::Show { pipeline, json } => {
            let loaded = load(&pipeline, &registry)?;
            commands::show(&loaded, json)?;
            Ok(Exit::Ok.into())
        }
        Command::Log { pipeline, id } => {
            let loaded = load(&pipeline, &registry)?;
            print!("{}", commands::log(&loaded, &id)?);
            Ok(Exit::Ok.into())
        }
        Command::Gc { files, cache, sets } => {
            let mut loaded = Vec::new();
            for file in &files {
                let args = PipelineArgs {
                    file: file.clone(),
                    sets: sets.clone(),
                    max_points: usize::MAX,
                    cache: cache.clone(),
                };
                loaded.push(commands::load_pipeline(&args, &registry)?);
            }
            let dir = match loaded.first() {
                Some(first) => first.cache_dir.clone(),
                None => cache_dir(cache.as_deref(), std::path::Path::new(".")),
            };
            if let Some(other) = loaded.iter().find(|l| l.cache_dir != dir) {
                anyhow::bail!(
                    "{} and {} use different caches ({} and {}); gc one cache at a time",
                    files[0].display(),
                    other.source.file.display(),
                    dir.display(),
                    other.cache_dir.display()
                );
            }
            let report = commands::gc(&dir, &loaded)?;
            println!(
                "removed {} records, {} blobs and {} resume folders, freed {} in {}",
                report.records_removed,
                report.blobs_removed,
                report.resume.removed,
                human_bytes(report.bytes_freed),
                dir.display()
            );
            if report.resume.kept > 0 {
                println!(
                    "kept {} resume folders ({}) of interrupted stages, so their next run \
                     continues; `umdflow gc FILE` removes those FILE no longer reaches",
                    report.resume.kept,
                    human_bytes(report.resume.kept_bytes)
                );
            }
            Ok(Exit::Ok.into())
        }
        Command::Verify {
            file,
            cache,
            repair,
        } => {
            let dir = match (&cache, &file) {
                (None, Some(file)) => {
                    let parent = file
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    cache_dir(None, parent)
                }
                _ => cache_dir(cache.as_deref(), std::path::Path::new(".")),
            };
            let verified = commands::verify(&dir, repair)?;
            if let Some(moved) = &verified.index_moved_to {
                eprintln!(
                    "the cache index was damaged: moved it to {} and started a fresh one; the \
                     cached files are kept, and the stages it recorded recompute on the next run",
                    moved.display()
                );
            }
            let report = verified.report;
            for (hash, problem) in &report.damaged {
                eprintln!("damaged blob {hash}: {problem}");
            }
            for instance in &report.records_forgotten {
                eprintln!("forgot the cached result of {instance}; it recomputes on the next run");
            }
            println!(
                "{} blobs checked, {} damaged in {}",
                report.blobs_checked,
                report.damaged.len(),
                dir.display()
            );
            Ok(
                if report.damaged.is_empty() && verified.index_moved_to.is_none() {
                    Exit::Ok.into()
                } else {
                    Exit::Failed.into()
                },
            )
        }
        Command::Report { pipeline, out } => {
            let loaded = load(&pipeline, &registry)?;
            let out = out
                .unwrap_or_else(|| umdflow_engine::report::default_report_dir(&loaded.source.file));
            let files = umdflow_engine::report::report(&loaded, &out)?;
            println!("wrote {} files to {}", files.len(), out.display());
            Ok(Exit::Ok.into())
        }
        Command::Export {
            pipeline,
            out,
            format,
        } => {
            let loaded = load(&pipeline, &registry)?;
            let files = umdflow_engine::report::export(&loaded, &out, format)?;
            println!("wrote {} files to {}", files.len(), out.display());
            Ok(Exit::Ok.into())
        }
        Command::Kinds { defaults } => {
            for kind in registry.all() {
                println!(
                    "{:<16} v{:<3} {}",
                    kind.name(),
                    kind.version(),
                    kind.summary()
                );
                if defaults {
                    println!("{}", commands::kind_defaults(kind.as_ref()));
                }
            }
            Ok(Exit::Ok.into())
        }
    }
}
