//! `slurm`: each attempt is a Slurm batch job (`sbatch`) that runs `PROGRAM worker --job FILE`
//! on an allocation — the worker binary for kinds that need libtorch, the front end otherwise
//! — with `--gres=gpu:N` for a task's GPUs and `--cpus-per-task` for its CPUs. Slurm picks the
//! devices: the job's `CUDA_VISIBLE_DEVICES` is its allocation, and the attempt runs on those
//! (`worker --gpus-from-env`); the engine's own GPU pool (`--gpus`) only limits how many GPUs
//! the run asks for at once.
//!
//! - The job file, the job's stdout (`<state>/slurm/<job id>.out`: progress and the outcome as
//!   the subprocess executor's JSON lines) and the task log are written under the state
//!   directory, and results go to the store: both must be on storage every node sees (a shared
//!   filesystem, or S3 for the store). A `memory://` store is refused.
//! - State: the `.out` file (progress, outcome) and `squeue` while the job is queued or
//!   running (one `squeue --me` listing per poll interval serves every followed job); a job that left the queue without an outcome is described from
//!   `scontrol show job` (`TIMEOUT`, `NODE_FAIL`, `PREEMPTED`, `OUT_OF_MEMORY`, `CANCELLED`,
//!   `FAILED` with its exit code), as a retryable failure: the retry policy applies.
//! - Cancellation (Ctrl-C, `--fail-fast`): `scancel --signal=TERM` (the worker stops at its
//!   next check), then, at the end of the grace period, `scancel` (Slurm's SIGTERM, then
//!   SIGKILL after `KillWait`).
//! - Re-attach: the job is named `cocoflow-<state dir hash>-<instance key>`, and its id is
//!   recorded in `<state>/slurm/<key>.job` as soon as `sbatch` returns. An engine killed and
//!   restarted (`cocoflow resume`, or the same `run` again) finds the job of an instance it
//!   launches — by the record, or by name in `squeue` when the engine died between `sbatch`
//!   and the record — and, while it is queued or running, follows it instead of submitting it
//!   again.
//! - Options (`slurm:` at the workflow's top level, overridden per task by a task's `slurm:`):
//!   `partition`, `account`, `qos`, `time` (a Slurm time limit, e.g. `2:00:00`), `mem`,
//!   `sbatch_args` (a list of extra `sbatch` arguments), `poll` (how often `squeue` is asked,
//!   default `2s`; the job's output file, which carries the outcome, is read every 100 ms). The Slurm clients are `sbatch`, `squeue`, `scontrol` and `scancel` on
//!   `PATH` (`SLURM_CONF` is passed on as usual); each call runs under a 30 s timeout.

use super::{
    ExecEnv, ExecEvent, Executor, Job, JobOutcome, Launch, Running, WORKER_PREFIX, WorkerLine,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// `slurm:` options (workflow-level, and per task over them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Slurm's `--time` (e.g. `30`, `2:00:00`, `1-00:00:00`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_or_number"
    )]
    pub time: Option<String>,
    /// Slurm's `--mem` (e.g. `64G`, or a number of megabytes).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_or_number"
    )]
    pub mem: Option<String>,
    /// Extra `sbatch` arguments, appended after cocoflow's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbatch_args: Option<Vec<String>>,
    /// How often `squeue` is asked about a job (`2s`; a number is seconds).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_or_number"
    )]
    pub poll: Option<String>,
}

/// A string, or a number written as its text (`time: 30`, `mem: 4096`).
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        I(i64),
        F(f64),
    }
    Ok(Option::<V>::deserialize(d)?.map(|v| match v {
        V::S(s) => s,
        V::I(i) => i.to_string(),
        V::F(f) => f.to_string(),
    }))
}

impl SlurmOptions {
    /// Parses a `slurm:` block (as JSON), or says which key is wrong.
    pub fn from_json(v: &serde_json::Value) -> Result<SlurmOptions, String> {
        let o: SlurmOptions = serde_json::from_value(v.clone()).map_err(|e| {
            format!(
                "{e}; known keys: partition, account, qos, time, mem, sbatch_args (a list), poll"
            )
        })?;
        if let Some(p) = &o.poll
            && poll_duration(p).is_none()
        {
            return Err(format!("`poll: {p}` is not a duration like `2s`"));
        }
        Ok(o)
    }

    /// `self` with every option `task` sets replaced by the task's.
    pub fn merged(&self, task: &SlurmOptions) -> SlurmOptions {
        SlurmOptions {
            partition: task.partition.clone().or_else(|| self.partition.clone()),
            account: task.account.clone().or_else(|| self.account.clone()),
            qos: task.qos.clone().or_else(|| self.qos.clone()),
            time: task.time.clone().or_else(|| self.time.clone()),
            mem: task.mem.clone().or_else(|| self.mem.clone()),
            sbatch_args: task
                .sbatch_args
                .clone()
                .or_else(|| self.sbatch_args.clone()),
            poll: task.poll.clone().or_else(|| self.poll.clone()),
        }
    }

    fn poll_interval(&self) -> Duration {
        self.poll
            .as_deref()
            .and_then(poll_duration)
            .unwrap_or(Duration::from_secs(2))
            .max(Duration::from_millis(50))
    }
}

/// `2s`, `200ms`, or a bare number of seconds.
fn poll_duration(p: &str) -> Option<Duration> {
    crate::util::parse_duration(p).or_else(|| {
        p.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
    })
}

/// Job ids this process submitted or followed: never re-attached to (a retry must not pick up
/// the job of the attempt it replaces), and the ones still followed are cancelled when the
/// executor shuts down.
#[derive(Default)]
struct Jobs {
    seen: std::collections::HashSet<String>,
    live: std::collections::HashSet<String>,
}

pub struct Slurm {
    rt: tokio::runtime::Handle,
    state_dir: PathBuf,
    self_exe: PathBuf,
    worker_exe: PathBuf,
    defaults: SlurmOptions,
    /// The store is process-local (`memory://`): refused.
    local_store: Option<String>,
    submitted: Arc<AtomicU64>,
    reattached: Arc<AtomicU64>,
    loads: Arc<AtomicU64>,
    jobs: Arc<std::sync::Mutex<Jobs>>,
    view: Arc<QueueView>,
}

impl Slurm {
    pub fn new(env: &ExecEnv) -> Slurm {
        let url = env.store.url().to_string();
        Slurm {
            rt: env.rt.clone(),
            state_dir: std::path::absolute(&env.state_dir).unwrap_or(env.state_dir.clone()),
            self_exe: env.self_exe.clone(),
            worker_exe: env.worker_exe.clone(),
            defaults: env.slurm.clone(),
            local_store: url.starts_with("memory:").then_some(url),
            submitted: Arc::default(),
            reattached: Arc::default(),
            loads: Arc::default(),
            jobs: Arc::default(),
            view: Arc::default(),
        }
    }
}

/// What one attempt's job needs.
struct Plan {
    exe: PathBuf,
    job_file: PathBuf,
    dir: PathBuf,
    name: String,
    record: PathBuf,
    opts: SlurmOptions,
    cpus: u32,
}

impl Executor for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn model_loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Cancels every job still followed (a run ending after Ctrl-C's grace, or with attempts
    /// marked cancelled): they must not outlive the run. Pending jobs included — Slurm does not
    /// deliver a signal to a job that has not started.
    fn shutdown(&self) {
        let live: Vec<String> = {
            let j = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            j.live.iter().cloned().collect()
        };
        if live.is_empty() {
            return;
        }
        let _ = std::process::Command::new("timeout")
            .arg("30")
            .arg("scancel")
            .args(&live)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn summary(&self) -> Option<String> {
        let (s, r) = (
            self.submitted.load(Ordering::Relaxed),
            self.reattached.load(Ordering::Relaxed),
        );
        (s + r > 0).then(|| format!("slurm: {s} jobs submitted, {r} re-attached"))
    }

    fn launch(&self, l: Launch) -> Running {
        let running = Running::new();
        if let Some(url) = &self.local_store {
            let _ = l.events.send(ExecEvent::Done {
                id: l.id,
                attempt: l.attempt,
                outcome: JobOutcome::Failed {
                    message: format!(
                        "the slurm executor needs a store every node can reach (a shared \
                         `file://` directory or `s3://`), not `{url}`"
                    ),
                    retryable: false,
                },
            });
            return running;
        }
        let task_opts = match l.slurm.as_ref().map(SlurmOptions::from_json).transpose() {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => {
                let _ = l.events.send(ExecEvent::Done {
                    id: l.id,
                    attempt: l.attempt,
                    outcome: JobOutcome::Failed {
                        message: format!("task `slurm:` options: {e}"),
                        retryable: false,
                    },
                });
                return running;
            }
        };
        let dir = self.state_dir.join("slurm");
        let state_hash = blake3::hash(self.state_dir.display().to_string().as_bytes()).to_hex();
        let plan = Plan {
            exe: if l.needs_worker {
                self.worker_exe.clone()
            } else {
                self.self_exe.clone()
            },
            job_file: dir.join(format!(
                "{}-{}-{}.json",
                &l.job.key[..16.min(l.job.key.len())],
                l.job.run_id,
                l.attempt
            )),
            name: format!(
                "cocoflow-{}-{}",
                &state_hash[..8],
                &l.job.key[..16.min(l.job.key.len())]
            ),
            record: dir.join(format!("{}.job", l.job.key)),
            dir,
            opts: self.defaults.merged(&task_opts),
            cpus: l.cpus.max(1),
        };
        let r = running.clone();
        let (submitted, reattached, loads, jobs, view) = (
            self.submitted.clone(),
            self.reattached.clone(),
            self.loads.clone(),
            self.jobs.clone(),
            self.view.clone(),
        );
        self.rt.spawn(async move {
            let (id, attempt) = (l.id, l.attempt);
            let outcome = follow(
                &plan,
                &l.job,
                id,
                &l.events,
                &r,
                l.timeout,
                (&submitted, &reattached, &loads),
                (&jobs, &view),
            )
            .await;
            let _ = std::fs::remove_file(&plan.job_file);
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

/// Runs a Slurm client with a timeout; its stdout, or an error naming the command.
async fn client(program: &str, args: &[String]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = || format!("`{program} {}`", args.join(" "));
    let out = match tokio::time::timeout(Duration::from_secs(30), cmd.output()).await {
        Err(_) => return Err(format!("{} did not answer within 30 s", shown())),
        Ok(Err(e)) => {
            return Err(format!(
                "cannot run {}: {e} (is Slurm's client installed and on PATH?)",
                shown()
            ));
        }
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// How often a running job's output file is read (its outcome is noticed within this).
const TICK: Duration = Duration::from_millis(100);

/// Job states of a job that has not ended (Slurm's `squeue -o %T` names).
const ACTIVE: &[&str] = &[
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
];

/// The state of a job in the queue (`PENDING`, `RUNNING`, ...), `None` once it ended.
async fn queue_state(job_id: &str) -> Result<Option<String>, String> {
    let args = vec![
        "-h".into(),
        "-j".into(),
        job_id.into(),
        "-o".into(),
        "%T".into(),
    ];
    match client("squeue", &args).await {
        Ok(s) => Ok(s
            .lines()
            .next()
            .map(|l| l.trim().to_string())
            .filter(|l| ACTIVE.contains(&l.as_str()))),
        // a job id the controller has forgotten
        Err(e) if e.contains("Invalid job id") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The queue as one `squeue --me` lists it, shared by every job the executor follows: at
/// most one listing per poll interval for all of them (one per job would load slurmctld with
/// hundreds of calls a second on a large sweep).
#[derive(Default)]
struct QueueView {
    inner: tokio::sync::Mutex<(Option<tokio::time::Instant>, HashMap<String, String>)>,
}

impl QueueView {
    /// The state of `job_id` (`None`: not queued or running — it ended), from a listing taken
    /// after `not_before` (the job's submission) and at most `max_age` old.
    async fn state(
        &self,
        job_id: &str,
        max_age: Duration,
        not_before: tokio::time::Instant,
    ) -> Result<Option<String>, String> {
        let mut g = self.inner.lock().await;
        let fresh =
            g.0.is_some_and(|at| at >= not_before && at.elapsed() < max_age);
        if !fresh {
            let at = tokio::time::Instant::now();
            let args: Vec<String> = ["-h", "--me", "-o", "%i %T"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let text = client("squeue", &args).await?;
            g.1 = text
                .lines()
                .filter_map(|l| {
                    let (id, st) = l.trim().split_once(' ')?;
                    Some((id.to_string(), st.trim().to_string()))
                })
                .collect();
            g.0 = Some(at);
        }
        Ok(g.1
            .get(job_id)
            .filter(|st| ACTIVE.contains(&st.as_str()))
            .cloned())
    }
}

/// The queued or running job named `name`, if any.
async fn find_by_name(name: &str) -> Result<Option<String>, String> {
    let args = vec![
        "-h".into(),
        "--me".into(),
        "--name".into(),
        name.into(),
        "-t".into(),
        "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED,REQUEUE_HOLD".into(),
        "-o".into(),
        "%i".into(),
    ];
    Ok(client("squeue", &args)
        .await?
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string))
}

/// What `scontrol show job` says of a job: `(JobState, Reason, a sentence)`.
async fn describe(job_id: &str) -> (String, String, String) {
    let args = vec!["show".into(), "job".into(), job_id.into()];
    match client("scontrol", &args).await {
        Ok(text) => {
            let field = |k: &str| {
                text.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .unwrap_or("?")
                    .to_string()
            };
            let (state, reason, code) = (field("JobState"), field("Reason"), field("ExitCode"));
            let what = if state == "TIMEOUT" || reason == "TimeLimit" {
                format!("reached its time limit (TimeLimit={})", field("TimeLimit"))
            } else {
                match state.as_str() {
                    "NODE_FAIL" => "lost its node (NODE_FAIL)".into(),
                    "PREEMPTED" => "was preempted".into(),
                    "OUT_OF_MEMORY" => "ran out of memory (OUT_OF_MEMORY)".into(),
                    "CANCELLED" => "was cancelled (scancel)".into(),
                    s => format!("ended {s}"),
                }
            };
            let sentence = format!("{what}; JobState={state} Reason={reason} ExitCode={code}");
            (state, reason, sentence)
        }
        Err(e) => (
            "?".into(),
            "?".into(),
            format!("its final state is unknown: {e}"),
        ),
    }
}

/// A failed attempt's message with what Slurm did to the job, where Slurm ended it (time
/// limit, preemption, node failure, out of memory, scancel): the worker only saw a signal.
async fn attribute(job_id: &str, o: JobOutcome) -> JobOutcome {
    let JobOutcome::Failed { message, retryable } = o else {
        return o;
    };
    let (state, reason, sentence) = describe(job_id).await;
    let by_slurm = reason == "TimeLimit"
        || matches!(
            state.as_str(),
            "TIMEOUT" | "PREEMPTED" | "NODE_FAIL" | "OUT_OF_MEMORY" | "CANCELLED"
        );
    if by_slurm {
        JobOutcome::Failed {
            message: format!("Slurm job {job_id} {sentence} ({message})"),
            retryable: true,
        }
    } else {
        JobOutcome::Failed { message, retryable }
    }
}

/// Reads the job's new stdout lines (from `offset`): progress to the runner, the outcome kept.
fn read_lines(
    out: &Path,
    offset: &mut u64,
    id: crate::plan::InstanceId,
    tx: &UnboundedSender<ExecEvent>,
    loads: &AtomicU64,
    outcome: &mut Option<JobOutcome>,
) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(out) else {
        return;
    };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return;
    }
    // whole lines only; a partial last line is read again next time
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    *offset += end as u64 + 1;
    for line in String::from_utf8_lossy(&buf[..end]).lines() {
        let Some(json) = line.strip_prefix(WORKER_PREFIX) else {
            continue;
        };
        match serde_json::from_str::<WorkerLine>(json) {
            Ok(WorkerLine::Progress(p)) => {
                let _ = tx.send(ExecEvent::Progress { id, progress: p });
            }
            Ok(WorkerLine::ModelLoads(n)) => {
                loads.fetch_add(n, Ordering::Relaxed);
            }
            Ok(WorkerLine::Outcome(o)) => *outcome = Some(o),
            Err(_) => {}
        }
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Submits the attempt's job; returns its id.
async fn submit(plan: &Plan, job: &Job) -> Result<String, String> {
    std::fs::create_dir_all(&plan.dir)
        .map_err(|e| format!("cannot create `{}`: {e}", plan.dir.display()))?;
    crate::store::write_atomic(
        &plan.job_file,
        &serde_json::to_vec(job).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("cannot write `{}`: {e}", plan.job_file.display()))?;
    if let Some(p) = job.log_path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let script = plan.job_file.with_extension("sh");
    let body = format!(
        "#!/bin/sh\n# cocoflow: {} attempt {} of run {}\nexec {} worker --gpus-from-env --job {}\n",
        job.name,
        job.attempt,
        job.run_id,
        sh_quote(&plan.exe.display().to_string()),
        sh_quote(&plan.job_file.display().to_string())
    );
    crate::store::write_atomic(&script, body.as_bytes())
        .map_err(|e| format!("cannot write `{}`: {e}", script.display()))?;
    let mut args: Vec<String> = vec![
        "--parsable".into(),
        format!("--job-name={}", plan.name),
        format!("--output={}", plan.dir.join("%j.out").display()),
        format!("--error={}", job.log_path.display()),
        "--open-mode=append".into(),
        format!("--chdir={}", job.store_base.display()),
        format!("--cpus-per-task={}", plan.cpus),
        "--export=ALL".into(),
    ];
    if !job.gpus.is_empty() {
        args.push(format!("--gres=gpu:{}", job.gpus.len()));
    }
    let o = &plan.opts;
    for (flag, v) in [
        ("partition", &o.partition),
        ("account", &o.account),
        ("qos", &o.qos),
        ("time", &o.time),
        ("mem", &o.mem),
    ] {
        if let Some(v) = v {
            args.push(format!("--{flag}={v}"));
        }
    }
    args.extend(o.sbatch_args.iter().flatten().cloned());
    args.push(script.display().to_string());
    let out = client("sbatch", &args).await?;
    // `--parsable`: `ID` or `ID;cluster`
    let id = out
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("sbatch printed no job id: {:?}", out.trim()));
    }
    Ok(id)
}

/// What an earlier engine left of this instance's job.
enum Earlier {
    /// Still queued or running: follow it.
    Active(String),
    /// Ended while no engine followed it, with this outcome in its output file.
    Ended(String, JobOutcome),
    None,
}

/// A job of this instance submitted by an engine since killed (never one this process
/// submitted or followed): by the record, or by name in the queue.
async fn earlier_job(plan: &Plan, jobs: &std::sync::Mutex<Jobs>) -> Result<Earlier, String> {
    let seen = |id: &str| {
        jobs.lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .contains(id)
    };
    if let Ok(id) = std::fs::read_to_string(&plan.record) {
        let id = id.trim().to_string();
        if !id.is_empty() && !seen(&id) {
            if queue_state(&id).await?.is_some() {
                return Ok(Earlier::Active(id));
            }
            // it ended while the engine was down: its outcome, if it wrote one
            let (mut offset, mut outcome) = (0, None);
            let out = plan.dir.join(format!("{id}.out"));
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            read_lines(&out, &mut offset, 0, &tx, &AtomicU64::new(0), &mut outcome);
            if let Some(o @ JobOutcome::Succeeded { .. }) = outcome {
                return Ok(Earlier::Ended(id, o));
            }
        }
    }
    Ok(match find_by_name(&plan.name).await? {
        Some(id) if !seen(&id) => Earlier::Active(id),
        _ => Earlier::None,
    })
}

/// Submits (or re-attaches to) the attempt's job and follows it to its outcome.
async fn follow(
    plan: &Plan,
    job: &Job,
    id: crate::plan::InstanceId,
    tx: &UnboundedSender<ExecEvent>,
    running: &Running,
    timeout: Option<Duration>,
    counters: (&AtomicU64, &AtomicU64, &AtomicU64),
    (jobs, view): (&std::sync::Mutex<Jobs>, &QueueView),
) -> JobOutcome {
    let (submitted, reattached, loads) = counters;
    if !plan.exe.is_file() {
        return JobOutcome::Failed {
            message: super::workers::missing_worker(&plan.exe),
            retryable: false,
        };
    }
    let job_id = match earlier_job(plan, jobs).await {
        Err(e) => return fail(format!("slurm: {e}")),
        Ok(Earlier::Ended(jid, o)) => {
            reattached.fetch_add(1, Ordering::Relaxed);
            tracing::info!(instance = %job.name, job = %jid, "slurm: a job that ended while no engine ran");
            jobs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .seen
                .insert(jid);
            let _ = std::fs::remove_file(&plan.record);
            return o;
        }
        Ok(Earlier::Active(jid)) => {
            reattached.fetch_add(1, Ordering::Relaxed);
            tracing::info!(instance = %job.name, job = %jid, "slurm: re-attached");
            jid
        }
        Ok(Earlier::None) => {
            if running.is_cancelled() {
                return JobOutcome::Cancelled;
            }
            match submit(plan, job).await {
                Ok(jid) => {
                    submitted.fetch_add(1, Ordering::Relaxed);
                    jid
                }
                Err(e) => return fail(format!("slurm: {e}")),
            }
        }
    };
    {
        let mut j = jobs.lock().unwrap_or_else(|p| p.into_inner());
        j.seen.insert(job_id.clone());
        j.live.insert(job_id.clone());
    }
    let since = tokio::time::Instant::now();
    if let Err(e) = crate::store::write_atomic(&plan.record, job_id.as_bytes()) {
        tracing::warn!(
            "slurm: cannot record job {job_id} in `{}`: {e}",
            plan.record.display()
        );
    }
    let out = plan.dir.join(format!("{job_id}.out"));
    let mut offset = 0u64;
    let mut outcome = None;
    let poll = plan.opts.poll_interval();
    // The task's `timeout` counts from when the job runs, not from its submission.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut state = String::new();
    let (mut termed, mut killed) = (false, false);
    let mut last_asked: Option<tokio::time::Instant> = None;
    // A worker stopped by a SIGTERM the engine did not ask for (`scancel` from outside,
    // preemption) reports `Cancelled`: that is a failure of the attempt, and retryable.
    let own = |o: JobOutcome, asked: bool| match o {
        JobOutcome::Cancelled if !asked => fail(format!(
            "Slurm job {job_id} was cancelled from outside this run (scancel or preemption)"
        )),
        o => o,
    };
    let result = loop {
        read_lines(&out, &mut offset, id, tx, loads, &mut outcome);
        if let Some(o) = outcome.take() {
            break attribute(&job_id, own(o, termed || killed)).await;
        }
        if running.is_killed() && !killed {
            killed = true;
            let _ = client("scancel", std::slice::from_ref(&job_id)).await;
        } else if running.is_cancelled() && !termed {
            termed = true;
            // A pending job takes no signal: cancel it outright.
            if state.is_empty() || state == "PENDING" {
                state = view
                    .state(&job_id, Duration::ZERO, since)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
            }
            let args: Vec<String> = if state == "PENDING" {
                vec![job_id.clone()]
            } else {
                vec!["--signal=TERM".into(), "--full".into(), job_id.clone()]
            };
            let _ = client("scancel", &args).await;
        }
        if let Some(d) = deadline
            && tokio::time::Instant::now() >= d
        {
            let _ = client("scancel", std::slice::from_ref(&job_id)).await;
            break fail(format!(
                "timed out after {} (Slurm job {job_id} cancelled)",
                crate::util::human_duration(timeout.unwrap_or_default())
            ));
        }
        // The output file is read every tick (cheap); `squeue` is asked every `poll`.
        if last_asked.is_some_and(|t: tokio::time::Instant| t.elapsed() < poll) {
            tokio::select! {
                _ = tokio::time::sleep(TICK.min(poll)) => {}
                _ = running.cancelled(), if !termed => {}
            }
            continue;
        }
        last_asked = Some(tokio::time::Instant::now());
        match view.state(&job_id, poll, since).await {
            Ok(Some(st)) => {
                if deadline.is_none() && st != "PENDING" {
                    deadline = timeout.map(|t| tokio::time::Instant::now() + t);
                }
                state = st;
            }
            Ok(None) => {
                // left the queue: the last lines, then its final state
                read_lines(&out, &mut offset, id, tx, loads, &mut outcome);
                if let Some(o) = outcome.take() {
                    break attribute(&job_id, own(o, termed || killed)).await;
                }
                if termed || killed {
                    break JobOutcome::Cancelled;
                }
                break fail(format!(
                    "Slurm job {job_id} ended without reporting an outcome ({}); see the log \
                     `{}`",
                    describe(&job_id).await.2,
                    job.log_path.display()
                ));
            }
            Err(e) => tracing::warn!("slurm: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK.min(poll)) => {}
            _ = running.cancelled(), if !termed => {}
        }
    };
    jobs.lock()
        .unwrap_or_else(|p| p.into_inner())
        .live
        .remove(&job_id);
    let _ = std::fs::remove_file(&plan.record);
    let _ = std::fs::remove_file(plan.job_file.with_extension("sh"));
    result
}
