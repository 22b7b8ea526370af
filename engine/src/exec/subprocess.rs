//! `subprocess`: one fresh process per attempt, `PROGRAM worker --job FILE` — the worker binary
//! for kinds that need libtorch, this program otherwise — so a crash, panic or OOM kill fails
//! that attempt only. The process gets its own process group (cancellation: SIGTERM to it;
//! the task's `timeout` and the end of the grace period: SIGKILL) and dies with the engine
//! (`PR_SET_PDEATHSIG`). Its stdout carries progress and the outcome as JSON lines.

use super::{
    ExecEnv, ExecEvent, Executor, Job, JobOutcome, Launch, Running, WORKER_PREFIX, WorkerLine,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc::UnboundedSender;

pub struct Subprocess {
    rt: tokio::runtime::Handle,
    state_dir: PathBuf,
    self_exe: PathBuf,
    worker_exe: PathBuf,
    /// Models the attempts' processes loaded (each reports its own before its outcome).
    loads: Arc<AtomicU64>,
}

impl Subprocess {
    pub fn new(env: &ExecEnv) -> Subprocess {
        Subprocess {
            rt: env.rt.clone(),
            state_dir: env.state_dir.clone(),
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
        let job_file = self.state_dir.join("jobs").join(format!(
            "{}-{}-{}.json",
            &l.job.key[..16.min(l.job.key.len())],
            l.job.run_id,
            l.attempt
        ));
        let r = running.clone();
        let loads = self.loads.clone();
        self.rt.spawn(async move {
            let (id, attempt) = (l.id, l.attempt);
            let outcome = run(
                &exe, &l.job, &job_file, id, &l.events, &r, l.timeout, &loads,
            )
            .await;
            let _ = std::fs::remove_file(&job_file);
            let _ = l.events.send(ExecEvent::Done {
                id,
                attempt,
                outcome,
            });
        });
        running
    }
}

fn fail(message: String) -> JobOutcome {
    JobOutcome::Failed {
        message,
        retryable: true,
    }
}

async fn run(
    exe: &Path,
    job: &Job,
    job_file: &Path,
    id: crate::plan::InstanceId,
    tx: &UnboundedSender<ExecEvent>,
    running: &Running,
    timeout: Option<std::time::Duration>,
    loads: &AtomicU64,
) -> JobOutcome {
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::AsyncBufReadExt;
    if !exe.is_file() {
        return JobOutcome::Failed {
            message: super::workers::missing_worker(exe),
            retryable: false,
        };
    }
    if let Err(e) =
        crate::store::write_atomic(job_file, &serde_json::to_vec(job).unwrap_or_default())
    {
        return fail(format!(
            "cannot write job file `{}`: {e}",
            job_file.display()
        ));
    }
    if let Some(p) = job.log_path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&job.log_path)
    {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open log `{}`: {e}", job.log_path.display())),
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("worker").arg("--job").arg(job_file);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(log));
    cmd.env("CUDA_VISIBLE_DEVICES", super::workers::gpu_list(&job.gpus));
    cmd.kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start worker `{}`: {e}", exe.display())),
    };
    running.set_pgid(child.id().map(|p| p as i32));
    if running.is_cancelled() {
        running.cancel();
    }
    let mut outcome = None;
    let mut timed_out = false;
    if let Some(out) = child.stdout.take() {
        let mut lines = tokio::io::BufReader::new(out).lines();
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
                    running.kill();
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
    let status = child.wait().await;
    running.set_pgid(None);
    if timed_out {
        return fail(format!(
            "timed out after {}",
            crate::util::human_duration(timeout.unwrap_or_default())
        ));
    }
    match (outcome, status) {
        (Some(o), _) => o,
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
