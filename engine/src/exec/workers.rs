//! `workers`: long-lived worker processes (`cocoflow-worker worker-serve`), started lazily,
//! one per device slot — the set of GPUs an attempt was granted, or a CPU slot — and reused:
//! a worker keeps its [`crate::kind::ModelCache`] across every task it runs, so a base model
//! is loaded once per worker, not once per task. Each worker is pinned at spawn
//! (`CUDA_VISIBLE_DEVICES`), runs one attempt at a time and talks [`super::protocol`].
//!
//! - A worker that dies mid-task (crash, SIGKILL, OOM) fails only that attempt (retryable); the
//!   next attempt gets a fresh worker.
//! - The task's `timeout`: the worker is killed (SIGKILL) and the attempt fails, retryable.
//! - Cancellation (Ctrl-C): a `cancel` message, the task stops at its next check; at the end
//!   of the grace period the worker is killed.
//! - Workers die with the engine (`PR_SET_PDEATHSIG`, and their stdin closes); idle workers
//!   are stopped at the end of the run.

use super::protocol::{FromWorker, PROTOCOL, ToWorker};
use super::{ExecEnv, ExecEvent, Executor, JobOutcome, Launch, Running};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long a new worker may take to greet (loading libtorch, CUDA initialisation).
const HELLO_TIMEOUT: Duration = Duration::from_secs(120);

/// The message for a missing worker binary.
pub fn missing_worker(exe: &Path) -> String {
    format!(
        "this task kind runs on libtorch in the worker program `{}`, which does not exist; \
         build it (`cargo build --release` builds `cocoflow` and `cocoflow-worker` side by \
         side) or point `COCOFLOW_WORKER` at it",
        exe.display()
    )
}

/// `0,1` for GPUs 0 and 1; empty for none.
pub fn gpu_list(gpus: &[u32]) -> String {
    gpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

struct Worker {
    slot: String,
    pid: i32,
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

pub struct Workers {
    rt: tokio::runtime::Handle,
    exe: PathBuf,
    log_dir: PathBuf,
    idle: Arc<Mutex<Vec<Worker>>>,
    seq: Arc<AtomicU64>,
    started: Arc<AtomicU64>,
    /// Models the workers loaded (each attempt's count comes with its outcome).
    loads: Arc<AtomicU64>,
}

impl Workers {
    pub fn new(env: &ExecEnv) -> Workers {
        Workers {
            rt: env.rt.clone(),
            exe: env.worker_exe.clone(),
            log_dir: env.state_dir.join("logs").join("workers"),
            idle: Arc::default(),
            seq: Arc::default(),
            started: Arc::default(),
            loads: Arc::default(),
        }
    }

    /// Workers started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

async fn start(
    exe: &Path,
    slot: &str,
    gpus: &[u32],
    log_dir: &Path,
    n: u64,
) -> Result<Worker, String> {
    if !exe.is_file() {
        return Err(missing_worker(exe));
    }
    let _ = std::fs::create_dir_all(log_dir);
    let log_path = log_dir.join(format!("worker-{}-{n}.log", std::process::id()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open `{}`: {e}", log_path.display()))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("worker-serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(log))
        .env("CUDA_VISIBLE_DEVICES", gpu_list(gpus))
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the worker `{}`: {e}", exe.display()))?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let stdin = child.stdin.take().expect("piped");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    if let Some(m) = super::protocol::parse::<FromWorker>(&l) {
                        return m;
                    }
                }
                _ => return Err("it exited before greeting".to_string()),
            }
        }
    })
    .await
    .map_err(|_| {
        format!(
            "no greeting within {}",
            crate::util::human_duration(HELLO_TIMEOUT)
        )
    })
    .and_then(|r| r);
    let fail = |why: String| {
        format!(
            "the worker `{}` (pid {pid}) cannot be used: {why}; its log: `{}`",
            exe.display(),
            log_path.display()
        )
    };
    match hello {
        Ok(FromWorker::Hello {
            protocol, version, ..
        }) if protocol != PROTOCOL => Err(fail(format!(
            "it speaks worker protocol {protocol} (cocoflow {version}), this engine protocol \
             {PROTOCOL} (cocoflow {}): rebuild both from one checkout",
            env!("CARGO_PKG_VERSION")
        ))),
        Ok(FromWorker::Hello { .. }) => Ok(Worker {
            slot: slot.to_string(),
            pid,
            child,
            stdin,
            lines,
        }),
        Ok(other) => Err(fail(format!("it did not greet first: {other:?}"))),
        Err(e) => Err(fail(e)),
    }
}

impl Executor for Workers {
    fn name(&self) -> &'static str {
        "workers"
    }

    fn launch(&self, l: Launch) -> Running {
        let running = Running::new();
        let r = running.clone();
        let (idle, seq, started, loads, exe, log_dir) = (
            self.idle.clone(),
            self.seq.clone(),
            self.started.clone(),
            self.loads.clone(),
            self.exe.clone(),
            self.log_dir.clone(),
        );
        self.rt.spawn(async move {
            let (id, attempt) = (l.id, l.attempt);
            let slot = if l.job.gpus.is_empty() {
                "cpu".to_string()
            } else {
                format!("gpu:{}", gpu_list(&l.job.gpus))
            };
            let reused = {
                let mut pool = idle.lock().unwrap();
                pool.iter()
                    .position(|w| w.slot == slot)
                    .map(|i| pool.swap_remove(i))
            };
            let worker = match reused {
                Some(w) => Ok(w),
                None => {
                    let n = started.fetch_add(1, Ordering::Relaxed);
                    start(&exe, &slot, &l.job.gpus, &log_dir, n).await
                }
            };
            let (outcome, model_loads, keep) = match worker {
                Err(message) => (
                    JobOutcome::Failed {
                        message,
                        retryable: false,
                    },
                    0,
                    None,
                ),
                Ok(w) => {
                    let s = seq.fetch_add(1, Ordering::Relaxed);
                    drive(w, s, &l, &r).await
                }
            };
            if let Some(w) = keep {
                idle.lock().unwrap().push(w);
            }
            loads.fetch_add(model_loads, Ordering::Relaxed);
            let _ = l.events.send(ExecEvent::Done {
                id,
                attempt,
                outcome,
            });
        });
        running
    }

    fn processes_started(&self) -> u64 {
        self.started()
    }

    fn model_loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn shutdown(&self) {
        // Dropping a worker closes its stdin (it exits) and kills it (`kill_on_drop`).
        self.idle.lock().unwrap().clear();
    }
}

/// Runs attempt `seq` on worker `w`: the outcome, the models it loaded, and the worker when it
/// can take another task.
async fn drive(
    mut w: Worker,
    seq: u64,
    l: &Launch,
    running: &Running,
) -> (JobOutcome, u64, Option<Worker>) {
    running.set_pgid(Some(w.pid));
    let died = |w: &mut Worker, what: &str| {
        let status = w.child.try_wait().ok().flatten();
        JobOutcome::Failed {
            message: format!(
                "the worker (pid {}) {what}{}; the attempt runs again on a fresh worker",
                w.pid,
                status.map(|s| format!(" ({s})")).unwrap_or_default()
            ),
            retryable: true,
        }
    };
    let msg = super::protocol::line(&ToWorker::Run {
        seq,
        job: Box::new(l.job.clone()),
    });
    if w.stdin.write_all(msg.as_bytes()).await.is_err() || w.stdin.flush().await.is_err() {
        running.set_pgid(None);
        return (died(&mut w, "could not take the task"), 0, None);
    }
    let deadline = l
        .timeout
        .map(|t| tokio::time::Instant::now() + t)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400));
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            line = w.lines.next_line() => match line {
                Ok(Some(line)) => match super::protocol::parse::<FromWorker>(&line) {
                    Some(Ok(FromWorker::Progress { seq: s, progress })) if s == seq => {
                        let _ = l.events.send(ExecEvent::Progress { id: l.id, progress });
                    }
                    Some(Ok(FromWorker::Done { seq: s, outcome, model_loads })) if s == seq => {
                        running.set_pgid(None);
                        return (outcome, model_loads, Some(w));
                    }
                    _ => {}
                },
                _ => {
                    let _ = w.child.wait().await;
                    running.set_pgid(None);
                    return (died(&mut w, "ended during the task"), 0, None);
                }
            },
            _ = running.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                let msg = super::protocol::line(&ToWorker::Cancel { seq });
                let _ = w.stdin.write_all(msg.as_bytes()).await;
                let _ = w.stdin.flush().await;
            },
            _ = tokio::time::sleep_until(deadline) => {
                running.kill();
                let _ = w.child.wait().await;
                running.set_pgid(None);
                return (
                    JobOutcome::Failed {
                        message: format!(
                            "timed out after {}: the worker (pid {}) was killed",
                            crate::util::human_duration(l.timeout.unwrap_or_default()),
                            w.pid
                        ),
                        retryable: true,
                    },
                    0,
                    None,
                );
            }
        }
    }
}

/// The worker side: `cocoflow-worker worker-serve`. Greets, then runs every `run` message on
/// a thread of its own with one model cache for the whole process, until stdin closes.
pub fn serve_main(registry: &crate::kind::Registry) -> i32 {
    use super::protocol::line;
    use crate::kind::{ModelCache, Progress, ProgressSink};
    use crate::store::Store;
    use std::collections::HashMap;
    use std::io::{BufRead, Write};
    use std::sync::atomic::AtomicBool;

    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = {
        let out = out.clone();
        move |s: String| {
            let mut o = out.lock().unwrap();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    };
    // A test hook: pretend another protocol version.
    let protocol = std::env::var("COCOFLOW_TEST_WORKER_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PROTOCOL);
    say(line(&FromWorker::Hello {
        protocol,
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
    }));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 70;
        }
    };
    let models = Arc::new(ModelCache::default());
    let cancels: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>> = Arc::default();
    let mut stores: HashMap<(String, PathBuf, PathBuf), Store> = HashMap::new();
    let registry = Arc::new(registry.clone());
    for l in std::io::stdin().lock().lines() {
        let Ok(l) = l else { break };
        let msg = match super::protocol::parse::<ToWorker>(&l) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                eprintln!("error: unreadable message: {e}");
                continue;
            }
            None => continue,
        };
        match msg {
            ToWorker::Cancel { seq } => {
                if let Some(c) = cancels.lock().unwrap().get(&seq) {
                    c.store(true, Ordering::Relaxed);
                }
            }
            ToWorker::Run { seq, job } => {
                let skey = (
                    job.store_url.clone(),
                    job.store_base.clone(),
                    job.cache_dir.clone(),
                );
                let store = match stores.get(&skey) {
                    Some(s) => s.clone(),
                    None => match Store::open(&job.store_url, &job.store_base, &job.cache_dir) {
                        Ok(s) => {
                            stores.insert(skey, s.clone());
                            s
                        }
                        Err(e) => {
                            say(line(&FromWorker::Done {
                                seq,
                                outcome: JobOutcome::Failed {
                                    message: e.to_string(),
                                    retryable: true,
                                },
                                model_loads: 0,
                            }));
                            continue;
                        }
                    },
                };
                let cancel = Arc::new(AtomicBool::new(false));
                cancels.lock().unwrap().insert(seq, cancel.clone());
                let (say2, say3) = (say.clone(), say.clone());
                let progress: ProgressSink = Arc::new(move |p: Progress| {
                    say2(line(&FromWorker::Progress { seq, progress: p }));
                });
                let (registry, models, cancels, handle) = (
                    registry.clone(),
                    models.clone(),
                    cancels.clone(),
                    rt.handle().clone(),
                );
                std::thread::spawn(move || {
                    let before = models.loads();
                    let ordinals = (0..job.gpus.len() as u32).collect();
                    let outcome = run_job_catching(
                        &job,
                        &registry,
                        &store,
                        handle,
                        progress,
                        cancel,
                        models.clone(),
                        ordinals,
                    );
                    cancels.lock().unwrap().remove(&seq);
                    say3(line(&FromWorker::Done {
                        seq,
                        outcome,
                        model_loads: models.loads() - before,
                    }));
                });
            }
        }
    }
    // stdin closed: the engine is gone or done.
    0
}

#[allow(clippy::too_many_arguments)]
fn run_job_catching(
    job: &super::Job,
    registry: &crate::kind::Registry,
    store: &crate::store::Store,
    rt: tokio::runtime::Handle,
    progress: crate::kind::ProgressSink,
    cancel: Arc<std::sync::atomic::AtomicBool>,
    models: Arc<crate::kind::ModelCache>,
    ordinals: Vec<u32>,
) -> JobOutcome {
    super::run_job(job, registry, store, rt, progress, cancel, models, ordinals)
}
