//! `slurm-steps`: for an engine that runs inside a Slurm allocation (`salloc ... cocoflow run
//! ...`, or a batch script). Each attempt is a job step of that allocation —
//! `srun --jobid=$SLURM_JOB_ID --exact --nodes=1 --ntasks=1 --cpus-per-task=C [--gres=gpu:N]
//! -- PROGRAM worker --job - --gpus-from-env` — started as a child of the engine, fed and read
//! like the `subprocess` executor's worker (the job on stdin, progress and the outcome on
//! stdout, stderr into the task log). Slurm gives each step its own devices from the
//! allocation (`CUDA_VISIBLE_DEVICES`) and starts it at once: a step is created by one call to
//! slurmctld, not by a scheduling cycle, so tasks of a few seconds pack as tightly as on a
//! local node (the `slurm` executor's jobs wait for Slurm's scheduler, about half a second
//! each on the test cluster).
//!
//! - Cancellation (Ctrl-C, `--fail-fast`) and the task's `timeout`: SIGTERM to `srun` (not
//!   its process group), which kills the step's tasks and waits for them; SIGKILL to `srun` only
//!   if it has not ended 10 s later (a timeout) or after `--grace` (Ctrl-C) — its helper
//!   process then cancels the step through slurmctld. The worker gets no cooperative stop.
//! - Each step asks for `--cpus-per-task` (at most the allocation's), `--mem=0` (the
//!   allocation's memory, reserving none), `--gres=gpu:N` or `--gres=none`; the allocation's own
//!   `SLURM_GPUS*`, `SLURM_MEM_PER_*`, `SLURM_CPUS_PER_*`, `SLURM_NTASKS_PER_*` and
//!   `SLURM_TRES_PER_TASK` are not passed to `srun`. The worker's stderr is written into the
//!   task log on its node (`--error`, appended).
//! - An engine killed mid-run takes its steps with it (their `srun`s die with the engine,
//!   `PR_SET_PDEATHSIG`); the re-run starts them again (no re-attach: that is the `slurm`
//!   executor's).
//! - The allocation's nodes must see the state directory's logs and the store, as for
//!   `slurm`; a `memory://` store is refused.

use super::subprocess::{Launcher, fail, run};
use super::{ExecEnv, ExecEvent, Executor, JobOutcome, Launch, Running};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct SlurmSteps {
    rt: tokio::runtime::Handle,
    self_exe: PathBuf,
    worker_exe: PathBuf,
    /// The allocation (`SLURM_JOB_ID`), if the engine runs in one.
    job_id: Option<String>,
    /// `srun` found on `PATH`.
    srun: Option<PathBuf>,
    /// The store is process-local (`memory://`): refused.
    local_store: Option<String>,
    loads: Arc<AtomicU64>,
    steps: Arc<AtomicU64>,
}

impl SlurmSteps {
    pub fn new(env: &ExecEnv) -> SlurmSteps {
        let url = env.store.url().to_string();
        SlurmSteps {
            rt: env.rt.clone(),
            self_exe: env.self_exe.clone(),
            worker_exe: env.worker_exe.clone(),
            job_id: std::env::var("SLURM_JOB_ID")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            srun: on_path("srun"),
            local_store: url.starts_with("memory:").then_some(url),
            loads: Arc::default(),
            steps: Arc::default(),
        }
    }

    /// Why this executor cannot run anything here, if it cannot.
    fn refusal(&self) -> Option<String> {
        if self.job_id.is_none() {
            return Some(
                "the `slurm-steps` executor runs each task as a step of the Slurm allocation the \
                 engine runs in, and SLURM_JOB_ID is not set: start the run inside one (e.g. \
                 `salloc -N1 --gres=gpu:8 -c 16 cocoflow run ... --executor slurm-steps`, or \
                 from an sbatch script), or use `--executor slurm` (one job per task)"
                    .into(),
            );
        }
        if self.srun.is_none() {
            return Some(
                "the `slurm-steps` executor needs Slurm's `srun` on PATH, and there is none".into(),
            );
        }
        if let Some(url) = &self.local_store {
            return Some(format!(
                "the `slurm-steps` executor runs tasks on the allocation's nodes, which cannot \
                 see this process's store `{url}`: use a shared filesystem (`file://`) or S3"
            ));
        }
        None
    }
}

/// The first `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

impl Executor for SlurmSteps {
    fn name(&self) -> &'static str {
        "slurm-steps"
    }

    fn model_loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn summary(&self) -> Option<String> {
        let n = self.steps.load(Ordering::Relaxed);
        (n > 0).then(|| {
            format!(
                "{n} Slurm job step(s) started in allocation {}",
                self.job_id.as_deref().unwrap_or("?")
            )
        })
    }

    fn launch(&self, l: Launch) -> Running {
        let running = Running::new();
        if let Some(message) = self.refusal() {
            let _ = l.events.send(ExecEvent::Done {
                id: l.id,
                attempt: l.attempt,
                outcome: JobOutcome::Failed {
                    message,
                    retryable: false,
                },
            });
            return running;
        }
        let (Some(job_id), Some(srun)) = (self.job_id.clone(), self.srun.clone()) else {
            unreachable!("refusal() checked both");
        };
        let exe = if l.needs_worker {
            self.worker_exe.clone()
        } else {
            self.self_exe.clone()
        };
        let gpus = l.job.gpus.len();
        // (a step cannot ask for more CPUs than the allocation has: it would never start)
        let cpus = match crate::runner::allocation_cpus() {
            Some(n) => l.cpus.clamp(1, n),
            None => l.cpus.max(1),
        };
        let log = std::path::absolute(&l.job.log_path).unwrap_or(l.job.log_path.clone());
        let mut error = OsString::from("--error=");
        error.push(&log);
        let args: Vec<OsString> = vec![
            format!("--jobid={job_id}").into(),
            "--exact".into(),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!("--cpus-per-task={cpus}").into(),
            // all of the allocation's memory, reserving none (steps run side by side)
            "--mem=0".into(),
            // no GPU unless asked for (a step without --gres gets all the allocation's)
            if gpus > 0 {
                format!("--gres=gpu:{gpus}").into()
            } else {
                "--gres=none".into()
            },
            format!(
                "--job-name=cocoflow-{}",
                &l.job.key[..16.min(l.job.key.len())]
            )
            .into(),
            // the worker's stderr written on its node, straight into the task log it publishes
            error,
            "--open-mode=append".into(),
            "--quiet".into(),
            "--".into(),
        ];
        let (r, loads, steps) = (running.clone(), self.loads.clone(), self.steps.clone());
        self.rt.spawn(async move {
            let (id, attempt) = (l.id, l.attempt);
            steps.fetch_add(1, Ordering::Relaxed);
            let launcher = Launcher {
                program: &srun,
                args,
                worker_args: vec!["--gpus-from-env".into()],
                // the allocation's own request, which `srun` would take as options
                env_remove: &[
                    "SLURM_GPUS",
                    "SLURM_TRES_PER_TASK",
                    "SLURM_CPUS_PER_GPU",
                    "SLURM_CPUS_PER_TASK",
                    "SLURM_NTASKS_PER_",
                    "SLURM_MEM_PER_",
                ],
            };
            let outcome = match std::path::absolute(&exe) {
                Ok(exe) => {
                    run(
                        &exe,
                        Some(launcher),
                        &l.job,
                        id,
                        &l.events,
                        &r,
                        l.timeout,
                        &loads,
                    )
                    .await
                }
                Err(e) => fail(format!("cannot resolve `{}`: {e}", exe.display())),
            };
            let _ = l.events.send(ExecEvent::Done {
                id,
                attempt,
                outcome,
            });
        });
        running
    }
}
