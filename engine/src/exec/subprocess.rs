//! `subprocess`: one fresh process per attempt, `PROGRAM worker --job -` — the worker binary
//! for kinds that need libtorch, this program otherwise — so a crash, panic or OOM kill fails
//! that attempt only. The process gets its own process group (cancellation: SIGTERM to it;
//! the task's `timeout` and the end of the grace period: SIGKILL) and dies with the engine
//! (`PR_SET_PDEATHSIG`). It is started like a shell task's `sh` ([`child::spawn_io`]:
//! `clone(CLONE_VM | CLONE_VFORK)`, no copy of the engine's page tables); the job arrives on
//! its stdin (no job file), its stdout carries progress and the outcome as JSON lines, and its
//! stderr is the task log.

use super::{
    ExecEnv, ExecEvent, Executor, Job, JobOutcome, Launch, Running, WORKER_PREFIX, WorkerLine,
};
use crate::kinds::child::{self, Proc as _, Spawned};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc::UnboundedSender;

pub struct Subprocess {
    rt: tokio::runtime::Handle,
    self_exe: PathBuf,
    worker_exe: PathBuf,
    /// Models the attempts' processes loaded (each reports its own before its outcome).
    loads: Arc<AtomicU64>,
}

impl Subprocess {
    pub fn new(env: &ExecEnv) -> Subprocess {
        Subprocess {
            rt: env.rt.clone(),
            self_exe: env.self_exe.clone(),
            worker_exe: env.worker_exe.clone(),
            loads: Arc::default(),
        }
    }
}

impl Executor for Subprocess {
    fn name(&self) -> &'static str {
        "subprocess"
    }

    fn model_loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn launch(&self, l: Launch) -> Running {
        let running = Running::new();
        let exe = if l.needs_worker {
            self.worker_exe.clone()
        } else {
            self.self_exe.clone()
        };
        let r = running.clone();
        let loads = self.loads.clone();
        self.rt.spawn(async move {
            let (id, attempt) = (l.id, l.attempt);
            let outcome = run(&exe, None, &l.job, id, &l.events, &r, l.timeout, &loads).await;
            let _ = l.events.send(ExecEvent::Done {
                id,
                attempt,
                outcome,
            });
        });
        running
    }
}

pub(super) fn fail(message: String) -> JobOutcome {
    JobOutcome::Failed {
        message,
        retryable: true,
    }
}

/// A program that starts the worker somewhere else, and its arguments before the worker's
/// command line (the `slurm-steps` executor: `srun ... --`).
pub(super) struct Launcher<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    /// Arguments after the worker's own (`--gpus-from-env`).
    pub worker_args: Vec<OsString>,
    /// Environment variables (by prefix) the launcher must not see.
    pub env_remove: &'static [&'static str],
}

/// Runs one attempt as `exe worker --job -` (through `launcher` when given) and reads its
/// outcome.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    exe: &Path,
    launcher: Option<Launcher<'_>>,
    job: &Job,
    id: crate::plan::InstanceId,
    tx: &UnboundedSender<ExecEvent>,
    running: &Running,
    timeout: Option<std::time::Duration>,
    loads: &AtomicU64,
) -> JobOutcome {
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !exe.is_file() {
        return JobOutcome::Failed {
            message: super::workers::missing_worker(exe),
            retryable: false,
        };
    }
    let json = serde_json::to_vec(job).unwrap_or_default();
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.insert(
        "CUDA_VISIBLE_DEVICES".into(),
        super::workers::gpu_list(&job.gpus).into(),
    );
    if let Some(l) = &launcher {
        env.retain(|k, _| {
            let k = k.to_string_lossy();
            !l.env_remove.iter().any(|p| k.starts_with(p))
        });
    }
    // stdin: the job; stdout: progress and the outcome; stderr: the task log itself (the
    // worker reads the log when it publishes the result, so nothing may be in flight).
    if let Some(p) = job.log_path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&job.log_path)
    {
        Ok(f) => OwnedFd::from(f),
        Err(e) => return fail(format!("cannot open log `{}`: {e}", job.log_path.display())),
    };
    let started = (|| -> std::io::Result<_> {
        let (in_rd, in_wr) = child::pipe()?;
        let (out_rd, out_wr) = child::pipe()?;
        let cwd = std::env::current_dir()?;
        let worker = [OsStr::new("worker"), OsStr::new("--job"), OsStr::new("-")];
        let proc = match &launcher {
            None => child::spawn_io(exe, &worker, &env, &cwd, Some(&in_rd), &out_wr, &log)?,
            Some(l) => {
                let mut args: Vec<&OsStr> = l.args.iter().map(|a| a.as_os_str()).collect();
                args.push(exe.as_os_str());
                args.extend(worker);
                args.extend(l.worker_args.iter().map(|a| a.as_os_str()));
                child::spawn_io(l.program, &args, &env, &cwd, Some(&in_rd), &out_wr, &log)?
            }
        };
        Ok((
            proc,
            tokio::net::unix::pipe::Sender::from_owned_fd(in_wr)?,
            tokio::net::unix::pipe::Receiver::from_owned_fd(out_rd)?,
        ))
    })();
    drop(log);
    let (mut proc, mut stdin, stdout) = match started {
        Ok(s) => s,
        Err(e) => {
            let what = launcher.as_ref().map_or(exe, |l| l.program);
            return fail(format!("cannot start worker `{}`: {e}", what.display()));
        }
    };
    let pid = proc.id();
    if launcher.is_some() {
        // `srun` ends its step when signalled; its helper process (same group) cancels the
        // step should `srun` itself be killed, so only `srun` is signalled
        running.set_pid(pid as i32);
    } else {
        running.set_pgid(Some(pid as i32));
    }
    if running.is_cancelled() {
        running.cancel();
    }
    let feed = tokio::spawn(async move {
        // (a worker that died first closes the pipe: nothing to report here)
        let _ = stdin.write_all(&json).await;
    });
    let mut outcome = None;
    let mut timed_out = false;
    {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, lines.next_line()).await.ok(),
                    None => Some(lines.next_line().await),
                }
            };
            match next.await {
                None => {
                    timed_out = true;
                    if launcher.is_some() {
                        // SIGTERM: `srun` kills the step's tasks and waits for them; SIGKILL
                        // only if it has not ended a while later
                        running.cancel();
                        let pid = proc.id();
                        let gone =
                            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                                while !exited(pid) {
                                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                }
                            })
                            .await
                            .is_ok();
                        if !gone {
                            running.kill();
                        }
                    } else {
                        running.kill();
                    }
                    break;
                }
                Some(Ok(Some(line))) => {
                    if let Some(json) = line.strip_prefix(WORKER_PREFIX) {
                        match serde_json::from_str::<WorkerLine>(json) {
                            Ok(WorkerLine::Progress(p)) => {
                                let _ = tx.send(ExecEvent::Progress { id, progress: p });
                            }
                            Ok(WorkerLine::Outcome(o)) => outcome = Some(o),
                            Ok(WorkerLine::ModelLoads(n)) => {
                                loads.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(_) => {}
                        }
                    }
                }
                Some(_) => break,
            }
        }
    }
    let status = exit(&mut proc, running).await;
    feed.abort();
    if timed_out {
        return fail(format!(
            "timed out after {}",
            crate::util::human_duration(timeout.unwrap_or_default())
        ));
    }
    match (outcome, status) {
        (Some(o), _) => o,
        // (a launcher ends its remote worker its own way and exits with a status of its own)
        (None, _) if launcher.is_some() && running.is_cancelled() => JobOutcome::Cancelled,
        (None, Ok(st)) => match (st.code(), st.signal()) {
            (_, Some(9)) => fail("worker was killed by signal 9 (SIGKILL; out of memory?)".into()),
            (_, Some(15)) => JobOutcome::Cancelled,
            (_, Some(s)) => fail(format!("worker was killed by signal {s}")),
            (Some(c), _) => fail(format!(
                "worker exited with status {c} without reporting an outcome; see its log `{}`",
                job.log_path.display()
            )),
            _ => fail("worker ended without an outcome".into()),
        },
        (None, Err(e)) => fail(format!("waiting for the worker: {e}")),
    }
}

/// Waits for the worker to exit (on a pidfd the runtime watches; without one, by polling every
/// 5 ms) and reaps it. Its process group stops being the attempt's before the reaping, while
/// the zombie still holds the id: a `cancel` or `kill` meanwhile cannot reach a new group.
async fn exit(proc: &mut Spawned, running: &Running) -> std::io::Result<std::process::ExitStatus> {
    let pid = proc.id();
    let exited = || exited(pid);
    // SAFETY: the AsyncFd owns the pidfd, which nothing else replaces or closes.
    let watched = child::pidfd_open(pid).and_then(|fd| {
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
    });
    while !exited() {
        match &watched {
            Some(fd) => match fd.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            },
            None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    running.set_pgid(None);
    proc.wait()
}

/// Whether our child `pid` has exited (without reaping it: WNOWAIT).
fn exited(pid: u32) -> bool {
    // SAFETY: asks about our own child without reaping it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // (an error, e.g. already reaped: the caller's reaping reports it)
    r != 0 || unsafe { info.si_pid() } != 0
}
