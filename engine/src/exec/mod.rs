//! Executors: run one attempt of one instance and report how it ended. An [`Executor`] takes a
//! [`Launch`] and sends [`ExecEvent`]s back; the runner finds executors by name in
//! [`Executors`] (the built-ins below; a cluster executor registers itself the same way).
//! - `in-process` ([`in_process`]): a thread of this process; shares a [`ModelCache`].
//! - `workers` ([`workers`]): long-lived worker processes (`cocoflow-worker`), one per device
//!   slot, started lazily and reused: a worker keeps its model cache across tasks. The
//!   default for kinds that need libtorch ([`crate::kind::Placement::Worker`]).
//! - `subprocess` ([`subprocess`]): one fresh process per attempt (isolation), the worker
//!   binary for torch kinds and this program otherwise. Its stdout carries progress and the
//!   outcome as JSON lines.
//! - `slurm` ([`slurm`]): one Slurm batch job per attempt running the same program, followed
//!   through its output file and `squeue`, re-attached after an engine restart.
//! - `slurm-steps` ([`slurm_steps`]): for an engine inside a Slurm allocation, one job step
//!   (`srun`) of it per attempt.

pub mod in_process;
pub mod protocol;
pub mod slurm;
pub mod slurm_steps;
pub mod subprocess;
pub mod workers;

use crate::kind::{
    CtxParts, InputItem, ModelCache, Progress, ProgressSink, Registry, TaskCtx, TaskError,
};
use crate::plan::InstanceId;
use crate::store::{InputRef, ResultManifest, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Everything needed to run one attempt, in this process or another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub key: String,
    pub kind: String,
    pub kind_version: u32,
    pub run_id: String,
    pub attempt: u32,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Vec<JobInput>>,
    pub outputs: Vec<String>,
    pub gpus: Vec<u32>,
    /// Named pool units granted, by pool name.
    #[serde(default)]
    pub pools: BTreeMap<String, u32>,
    pub workdir: PathBuf,
    pub log_path: PathBuf,
    pub store_url: String,
    /// Directory relative `file://` stores resolve against.
    pub store_base: PathBuf,
    pub cache_dir: PathBuf,
    pub host: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInput {
    pub label: String,
    pub producer_key: String,
    pub output: String,
    pub artifact: crate::store::Artifact,
}

/// How an attempt ended, as the runner needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum JobOutcome {
    Succeeded {
        manifest: Box<ResultManifest>,
    },
    Failed {
        message: String,
        retryable: bool,
    },
    /// An input blob is corrupt or missing: its producer (by key) must run again.
    BadInput {
        producer_key: String,
        message: String,
    },
    Cancelled,
}

/// What an executor reports about an attempt it runs.
#[derive(Debug)]
pub enum ExecEvent {
    Progress {
        id: InstanceId,
        progress: Progress,
    },
    Done {
        id: InstanceId,
        attempt: u32,
        outcome: JobOutcome,
    },
}

/// One attempt to start.
pub struct Launch {
    pub id: InstanceId,
    pub attempt: u32,
    pub job: Job,
    /// The kind runs on libtorch: in the worker binary, not in a torch-free front end.
    pub needs_worker: bool,
    /// The kind says this attempt finishes in microseconds without waiting
    /// ([`crate::kind::TaskKind::inline`]): `in-process` runs it on the calling thread.
    pub inline: bool,
    /// Kill the attempt after this long (the task's `timeout`).
    pub timeout: Option<std::time::Duration>,
    /// CPU slots the task asked for (`resources: {cpus: N}`).
    pub cpus: u32,
    /// The task's own `slurm:` options (over the workflow's).
    pub slurm: Option<serde_json::Value>,
    pub events: tokio::sync::mpsc::UnboundedSender<ExecEvent>,
}

/// A running attempt: ask it to stop, or stop it now.
#[derive(Clone, Default)]
pub struct Running {
    cancel: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
    /// What to signal when the attempt has a process of its own: `-pgid` (its process
    /// group) or a pid (one process: a launcher such as `srun` that ends its remote work
    /// itself when signalled, and whose helpers must outlive it).
    pgid: Arc<std::sync::Mutex<Option<i32>>>,
}

impl Running {
    pub fn new() -> Running {
        Running::default()
    }

    /// Cooperative cancellation: the task stops at its next check (a process gets SIGTERM).
    pub fn cancel(&self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_waiters();
        if let Some(target) = *self.pgid.lock().unwrap() {
            // SAFETY: signals the attempt's own process group or process.
            unsafe { libc::kill(target, libc::SIGTERM) };
        }
    }

    /// Stops the attempt's process now (SIGKILL); in-process tasks cannot be killed.
    pub fn kill(&self) {
        self.killed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_waiters();
        if let Some(target) = *self.pgid.lock().unwrap() {
            // SAFETY: signals the attempt's own process group or process.
            unsafe { libc::kill(target, libc::SIGKILL) };
        }
    }

    /// Whether [`Running::kill`] was called (an executor without a local process, e.g.
    /// Slurm, stops the attempt its own way).
    pub fn is_killed(&self) -> bool {
        self.killed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Completes when [`Running::cancel`] is called.
    pub async fn cancelled(&self) {
        loop {
            let n = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            n.await;
        }
    }

    pub fn set_pgid(&self, pgid: Option<i32>) {
        *self.pgid.lock().unwrap() = pgid.map(|g| -g);
    }

    /// Signals go to this one process, not its group (see the field).
    pub fn set_pid(&self, pid: i32) {
        *self.pgid.lock().unwrap() = Some(pid);
    }
}

/// Runs attempts somewhere (module docs).
pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts an attempt; its events go to `launch.events`, ending with exactly one `Done`.
    fn launch(&self, launch: Launch) -> Running;
    /// Stops what the executor keeps running between attempts (idle workers).
    fn shutdown(&self) {}
    /// Long-lived processes it started so far (workers), for the run summary.
    fn processes_started(&self) -> u64 {
        0
    }
    /// Models its attempts loaded so far (the rest came from a process's model cache).
    fn model_loads(&self) -> u64 {
        0
    }
    /// A line for the run summary (e.g. Slurm jobs submitted and re-attached), if any.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// The executors of a run, by name.
#[derive(Clone, Default)]
pub struct Executors {
    map: BTreeMap<String, Arc<dyn Executor>>,
}

/// The names of the built-in executors.
pub const BUILTIN: [&str; 5] = [
    "in-process",
    "subprocess",
    "workers",
    "slurm",
    "slurm-steps",
];

/// Checks an executor name against the built-ins (`known` adds registered ones).
pub fn check_name(name: &str, known: &[&str]) -> Result<(), String> {
    if BUILTIN.contains(&name) || known.contains(&name) {
        Ok(())
    } else {
        let all: Vec<String> = BUILTIN
            .iter()
            .chain(known)
            .map(|n| format!("`{n}`"))
            .collect();
        Err(format!(
            "unknown executor `{name}`; known executors: {}",
            all.join(", ")
        ))
    }
}

impl Executors {
    pub fn new() -> Executors {
        Executors::default()
    }

    pub fn register(&mut self, e: Arc<dyn Executor>) {
        self.map.insert(e.name().to_string(), e);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.map.get(name)
    }

    pub fn shutdown(&self) {
        for e in self.map.values() {
            e.shutdown();
        }
    }

    /// Long-lived processes the executors started (workers).
    pub fn processes_started(&self) -> u64 {
        self.map.values().map(|e| e.processes_started()).sum()
    }

    /// Models the executors' attempts loaded.
    pub fn model_loads(&self) -> u64 {
        self.map.values().map(|e| e.model_loads()).sum()
    }

    /// The executors' lines for the run summary.
    pub fn summaries(&self) -> Vec<String> {
        self.map.values().filter_map(|e| e.summary()).collect()
    }
}

/// What the built-in executors need from a run.
#[derive(Clone)]
pub struct ExecEnv {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub rt: tokio::runtime::Handle,
    pub state_dir: PathBuf,
    /// This program (`PROGRAM worker --job FILE` for torch-free kinds in a subprocess).
    pub self_exe: PathBuf,
    /// The worker binary (`cocoflow-worker`), for kinds that need libtorch.
    pub worker_exe: PathBuf,
    /// The workflow's `slurm:` options (the `slurm` executor's defaults).
    pub slurm: slurm::SlurmOptions,
}

impl Executors {
    /// The built-in executors for a run.
    pub fn builtin(env: &ExecEnv) -> Executors {
        let mut e = Executors::new();
        e.register(Arc::new(in_process::InProcess::new(env)));
        e.register(Arc::new(subprocess::Subprocess::new(env)));
        e.register(Arc::new(workers::Workers::new(env)));
        e.register(Arc::new(slurm::Slurm::new(env)));
        e.register(Arc::new(slurm_steps::SlurmSteps::new(env)));
        e
    }
}

/// Runs a job to completion in the calling (blocking) thread.
pub fn run_job(
    job: &Job,
    registry: &Registry,
    store: &Store,
    rt: tokio::runtime::Handle,
    progress: ProgressSink,
    cancel: Arc<AtomicBool>,
    models: Arc<ModelCache>,
    cuda_ordinals: Vec<u32>,
) -> JobOutcome {
    let Some(kind) = registry.get(&job.kind) else {
        return JobOutcome::Failed {
            message: format!("this cocoflow binary has no task kind `{}`", job.kind),
            retryable: false,
        };
    };
    // The log (and its folder) is created when the task writes to it.
    let inputs: BTreeMap<String, Vec<InputItem>> = job
        .inputs
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.iter()
                    .map(|i| InputItem {
                        label: i.label.clone(),
                        producer: i.producer_key.clone(),
                        output: i.output.clone(),
                        artifact: i.artifact.clone(),
                    })
                    .collect(),
            )
        })
        .collect();
    let refs: BTreeMap<String, Vec<InputRef>> = job
        .inputs
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.iter()
                    .map(|i| InputRef {
                        label: i.label.clone(),
                        key: i.producer_key.clone(),
                        output: i.output.clone(),
                    })
                    .collect(),
            )
        })
        .collect();
    let mut ctx = TaskCtx::new(CtxParts {
        name: job.name.clone(),
        key: job.key.clone(),
        kind: job.kind.clone(),
        kind_version: job.kind_version,
        run_id: job.run_id.clone(),
        attempt: job.attempt,
        params: job.params.clone(),
        inputs,
        gpus: job.gpus.clone(),
        pools: job.pools.clone(),
        workdir: job.workdir.clone(),
        log_path: job.log_path.clone(),
        cuda_ordinals,
        store: store.clone(),
        rt,
        progress,
        cancel,
        models,
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.run(&mut ctx)));
    let workdir = ctx.workdir_handed_out();
    let outcome = match result {
        Ok(Ok(())) => match ctx.finish(&job.outputs, refs, &job.host) {
            Ok(m) => JobOutcome::Succeeded {
                manifest: Box::new(m),
            },
            Err(e) => failed(e),
        },
        Ok(Err(e)) => {
            ctx.log(format!("error: {e}"));
            failed(e)
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            JobOutcome::Failed {
                message: format!("task panicked: {msg}"),
                retryable: true,
            }
        }
    };
    if let Some(dir) = workdir {
        let ok = matches!(outcome, JobOutcome::Succeeded { .. });
        crate::kind::workdirs::release(&dir, &job.workdir, ok);
    }
    outcome
}

fn failed(e: TaskError) -> JobOutcome {
    match e {
        TaskError::Input {
            producer,
            source: source @ (StoreError::Corrupt { .. } | StoreError::Missing { .. }),
            input,
        } => JobOutcome::BadInput {
            producer_key: producer,
            message: format!("input `{input}`: {source}"),
        },
        TaskError::Cancelled => JobOutcome::Cancelled,
        other => JobOutcome::Failed {
            retryable: other.retryable(),
            message: other.to_string(),
        },
    }
}

/// One line on a worker's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerLine {
    Progress(Progress),
    /// Models the attempt loaded (printed before the outcome).
    ModelLoads(u64),
    Outcome(JobOutcome),
}

pub const WORKER_PREFIX: &str = "@@cocoflow ";

/// The `cocoflow worker --job FILE` entry point (`--job -`: the job on stdin, as the
/// subprocess executor passes it): runs the job, prints the outcome. With
/// `gpus_from_env` (a Slurm job) the attempt runs on the devices of `CUDA_VISIBLE_DEVICES` (the
/// allocation's) instead of the ids the engine granted.
pub fn worker_main(job_file: &std::path::Path, registry: &Registry, gpus_from_env: bool) -> i32 {
    let bytes = if job_file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b).map(|_| b)
    } else {
        std::fs::read(job_file)
    };
    let job: Job = match bytes
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot read job `{}`: {e}", job_file.display());
            return 70;
        }
    };
    let mut job = job;
    if gpus_from_env && !job.gpus.is_empty() {
        let env = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
        match crate::gpu::parse_list(&env) {
            Ok(ids) if ids.len() == job.gpus.len() => job.gpus = ids,
            _ => {
                print_line(&WorkerLine::Outcome(JobOutcome::Failed {
                    message: format!(
                        "the allocation's CUDA_VISIBLE_DEVICES is {env:?}, but the task asked \
                         for {} GPU(s) (cocoflow reads integer device ids here, not UUIDs or \
                         MIG names)",
                        job.gpus.len()
                    ),
                    retryable: false,
                }));
                return 1;
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 70;
        }
    };
    let store = match Store::open(&job.store_url, &job.store_base, &job.cache_dir) {
        Ok(s) => s,
        Err(e) => {
            print_line(&WorkerLine::Outcome(JobOutcome::Failed {
                message: e.to_string(),
                retryable: true,
            }));
            return 1;
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // SIGTERM from the runner means: stop at the next cancellation check.
        rt.spawn(async move {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let progress: ProgressSink = Arc::new(|p: Progress| print_line(&WorkerLine::Progress(p)));
    let handle = rt.handle().clone();
    let models = Arc::new(ModelCache::default());
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            run_job(
                &job,
                registry,
                &store,
                handle,
                progress,
                cancel,
                models.clone(),
                (0..job.gpus.len() as u32).collect(),
            )
        })
        .join()
    })
    .unwrap_or_else(|_| JobOutcome::Failed {
        message: "worker thread panicked".into(),
        retryable: true,
    });
    let code = if matches!(outcome, JobOutcome::Succeeded { .. }) {
        0
    } else {
        1
    };
    print_line(&WorkerLine::ModelLoads(models.loads()));
    print_line(&WorkerLine::Outcome(outcome));
    code
}

fn print_line(line: &WorkerLine) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{WORKER_PREFIX}{}",
        serde_json::to_string(line).unwrap_or_default()
    );
    let _ = out.flush();
}
