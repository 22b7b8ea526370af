//! The `cocoflow` command line. Binaries call [`main_with`] with their task kinds.
//!
//! Exit codes: 0 success · 1 `verify` found broken results (and did not repair them) ·
//! 2 bad command line · 3 invalid workflow · 4 a task failed · 5 environment problem (store
//! unreachable, state directory busy, a live run) · 70 internal error · 130 interrupted.

pub mod bench;
pub mod commands;
pub mod verify;

use crate::kind::Registry;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub const EXIT_OK: i32 = 0;
/// `verify` found broken results and was not asked to repair them.
pub const EXIT_BROKEN: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_INVALID: i32 = 3;
pub const EXIT_TASK_FAILED: i32 = 4;
pub const EXIT_ENVIRONMENT: i32 = 5;
pub const EXIT_INTERNAL: i32 = 70;
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "cocoflow",
    version,
    about = "CoCoEdit experiments as a cached, resumable DAG",
    max_term_width = 100
)]
pub struct Cli {
    /// Where the run journal, logs, work directories and blob cache live.
    #[arg(
        long,
        global = true,
        env = "COCOFLOW_STATE_DIR",
        default_value = ".cocoflow"
    )]
    pub state_dir: PathBuf,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Default)]
pub struct WorkflowArgs {
    /// The workflow file.
    pub workflow: PathBuf,
    /// Override a param: `--set iterations=3` (typed like the param's default).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A YAML file of param overrides (`key: value` lines, e.g. a preset); `--set` wins.
    #[arg(long = "params", value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// Only these tasks and what they need.
    #[arg(long = "target", value_name = "TASK")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// GPU ids to use (`0,1,2,3` or `none`); default: the workflow's, else discovered.
    #[arg(long)]
    pub gpus: Option<String>,
    /// CPU slots (default: the machine's cores; with `--executor slurm`, 1024: the cluster
    /// queues what it cannot run yet; with `slurm-steps`, the allocation's CPUs).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Stop launching after the first failure (default: keep going).
    #[arg(long)]
    pub fail_fast: bool,
    /// Default executor: `in-process` (this process; kinds that need libtorch then go to
    /// `workers`), `workers` (long-lived worker processes), `subprocess` (a fresh process
    /// per attempt), `slurm` (a Slurm batch job per attempt) or `slurm-steps` (inside a Slurm
    /// allocation: a job step of it per attempt).
    #[arg(long, default_value = "in-process")]
    pub executor: String,
    /// After Ctrl-C, how long running tasks may finish before they are cancelled.
    #[arg(long, default_value = "10s")]
    pub grace: String,
    /// Machine-readable event stream on stdout (one JSON object per line).
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow; finished instances come from the cache.
    Run {
        #[command(flatten)]
        wf: WorkflowArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Continue a run by id (same workflow, overrides and options).
    Resume {
        run_id: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show what would run and what is cached.
    Plan {
        #[command(flatten)]
        wf: WorkflowArgs,
        #[arg(long)]
        json: bool,
    },
    /// Print the DAG as text or Graphviz DOT.
    Graph {
        #[command(flatten)]
        wf: WorkflowArgs,
        /// `text` or `dot`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Each instance's state, attempts, duration and error (default: the latest run).
    Status {
        run_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List runs.
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// Remove results, blobs and key-value records that no run record or pin references.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Keep anything younger than this (protects writes in flight).
        #[arg(long, default_value = "1h")]
        grace: String,
        /// Collect even while another run holds a live lease on the store.
        #[arg(long)]
        force: bool,
        /// The store to collect (default: the store of the latest run).
        #[arg(long)]
        store: Option<String>,
        /// Keep every key-value record (curation shards, response caches), referenced or not.
        #[arg(long)]
        keep_caches: bool,
    },
    /// Check every result and blob a run references; `--repair` removes what is broken.
    Verify(verify::VerifyArgs),
    /// Keep a run's results through `gc`.
    Pin {
        run_id: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a pin.
    Unpin { name: String },
    /// Copy outputs of a finished run out of the store into a folder.
    Export {
        /// The run (default: the latest run of this state directory).
        run_id: Option<String>,
        /// Only instances of this task (`train` matches `train`, `train[arm]`, `rl[3].train`, ...).
        #[arg(long)]
        task: Option<String>,
        /// Only instances of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only this output.
        #[arg(long)]
        output: Option<String>,
        /// Destination (default: `exports/<run>`); written as `<dest>/<instance>/<output>`.
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Copy the run's `report` outputs to `reports/<run>` and print their tables.
    Report {
        /// The run (default: the latest run of this state directory).
        run_id: Option<String>,
        /// Destination (default: `reports/<run>`).
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// List the task kinds this binary knows.
    Kinds {
        /// Every kind's params (a JSON Schema with types, defaults and descriptions), inputs
        /// and outputs, as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Engine benchmarks (print figures; not tests).
    Bench(bench::BenchArgs),
    /// Serve attempts over stdin/stdout as a long-lived worker (used by the `workers`
    /// executor).
    #[command(hide = true, name = "worker-serve")]
    WorkerServe,
    /// Run one task attempt (used by the subprocess executor).
    #[command(hide = true)]
    Worker {
        /// The job description (JSON); `-` reads it from stdin.
        #[arg(long)]
        job: PathBuf,
        /// Run on the devices of `CUDA_VISIBLE_DEVICES` (a Slurm allocation's).
        #[arg(long)]
        gpus_from_env: bool,
    },
}

/// A subcommand a binary adds to the engine's CLI (e.g. `cocoflow score`).
pub struct Extension {
    /// The clap command (its name is the subcommand's name).
    pub command: clap::Command,
    /// Runs it; returns the exit code (use the `EXIT_*` constants).
    pub run: fn(&clap::ArgMatches) -> i32,
}

/// Runs the CLI with these kinds; returns the process exit code.
pub fn main_with(registry: Registry) -> i32 {
    main_with_extensions(registry, Vec::new())
}

/// Runs the CLI with these kinds and extra subcommands; returns the process exit code.
pub fn main_with_extensions(registry: Registry, extensions: Vec<Extension>) -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    for ext in &extensions {
        command = command.subcommand(ext.command.clone());
    }
    let matches = match command.try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    if let Some((name, sub)) = matches.subcommand()
        && let Some(ext) = extensions.iter().find(|e| e.command.get_name() == name)
    {
        let verbose = matches.get_count("verbose");
        init_tracing(verbose);
        return (ext.run)(sub);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    if let Command::Worker { job, gpus_from_env } = &cli.command {
        return crate::exec::worker_main(job, &registry, *gpus_from_env);
    }
    if let Command::WorkerServe = &cli.command {
        return crate::exec::workers::serve_main(&registry);
    }
    init_tracing(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_INTERNAL;
        }
    };
    rt.block_on(commands::dispatch(cli, registry))
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
