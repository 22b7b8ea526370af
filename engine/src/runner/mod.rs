//! The runner: drives the pure scheduler core with real events. It checks the cache,
//! journals every batch of state changes before acting on it, launches attempts on the
//! executors, shows progress, handles Ctrl-C, and writes the run's summary to the store.
//!
//! What happens is emitted as [`RunEvent`]s to the caller's [`Observer`] (the terminal
//! output) and to the run's events file, `<state dir>/runs/<run id>.events.jsonl` (one JSON
//! line per event, the same lines as `--json`; kept after the run, appended to by `resume`;
//! see [`crate::ui::event`]). Beside it, `<run id>.status.json` is the live snapshot `status`
//! reads while the run holds the journal; it is removed when the run ends.

use crate::core::{Action, Core, Event, Options, Outcome, State, TaskInfo};
use crate::exec::{ExecEnv, ExecEvent, Executors, JobOutcome, Running};
use crate::kind::Registry;
use crate::plan::{InstanceId, Plan};
use crate::state::{InstanceRecord, Journal, JournalEvent, RunRecord, RunStatus};
use crate::store::{Lease, ResultManifest, RunSummary, Store};
use crate::ui::{EndSummary, EventLog, FinishState, Observer, Observers, RunEvent};
use crate::util::now_ms;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod cache;
mod launch;
mod resources;
mod signals;

pub use cache::cache_hits;
use launch::Launcher;
pub use resources::{allocation_cpus, resources};
use signals::Signals;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run_id: String,
    pub workflow_path: String,
    pub overrides: Vec<String>,
    pub targets: Vec<String>,
    /// `.cocoflow` by default: journal, logs, work dirs, blob cache.
    pub state_dir: PathBuf,
    /// Where relative `file://` stores resolve (the current directory).
    pub base_dir: PathBuf,
    pub gpus: Option<Vec<u32>>,
    pub cpus: Option<u32>,
    pub fail_fast: bool,
    /// The default executor's name (`in-process`, `subprocess`, `workers`, ...); kinds that
    /// need libtorch default to `workers` when it is `in-process`.
    pub executor: String,
    /// How long running tasks may finish after Ctrl-C before they are cancelled.
    pub grace: Duration,
    /// This program (started as `PROGRAM worker --job FILE` by the subprocess executor for
    /// kinds this binary can run).
    pub self_exe: PathBuf,
    /// The worker binary (`cocoflow-worker`): kinds that need libtorch run there.
    pub worker_exe: PathBuf,
    pub options_json: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The plan cannot run here (resources); nothing was started.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Journal(#[from] crate::state::JournalError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub status: RunStatus,
    pub succeeded: usize,
    pub cached: usize,
    pub failed: usize,
    pub blocked: usize,
    pub interrupted: usize,
    pub elapsed: Duration,
    /// Base models loaded from disk by this run's attempts (the rest came from a cache).
    pub model_loads: u64,
    /// Worker processes started (`workers` executor).
    pub workers_started: u64,
    /// Lines the executors add to the summary (Slurm jobs submitted and re-attached).
    pub executor_notes: Vec<String>,
}

impl RunReport {
    /// The `end` event's summary.
    pub fn summary(&self) -> EndSummary {
        EndSummary {
            run: self.run_id.clone(),
            status: self.status.label().to_string(),
            succeeded: self.succeeded,
            cached: self.cached,
            failed: self.failed,
            blocked: self.blocked,
            interrupted: self.interrupted,
            seconds: self.elapsed.as_secs_f64(),
            model_loads: self.model_loads,
            workers_started: self.workers_started,
            executor_notes: self.executor_notes.clone(),
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

struct Launched {
    started: Instant,
    running: Running,
    log: PathBuf,
}

/// Runs a plan to the end (or until interrupted). Every event goes to `observer` (a
/// [`crate::ui::Ui`], or several in [`Observers`]) and to the run's events file, from `start`
/// to `end` (none when the plan cannot run here).
pub async fn run(
    plan: Plan,
    registry: Registry,
    store: Store,
    journal: &mut dyn Journal,
    opts: RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunReport, RunError> {
    let t0 = Instant::now();
    let mut notices = Vec::new();
    let (pools, requests) = resources::resources(&plan, &opts, &mut notices)?;
    let mut obs = Observers::new()
        .with(observer)
        .with(EventLog::for_run(&opts.state_dir, &opts.run_id));
    let (cached, mut manifests) = cache::cache_hits(&plan, &store).await?;
    let n = plan.instances.len();
    let n_cached = cached.iter().filter(|c| **c).count();
    let host = hostname();
    let infos: Vec<TaskInfo> = plan
        .instances
        .iter()
        .map(|inst| TaskInfo {
            deps: inst.deps.clone(),
            request: requests[inst.id].clone(),
            max_attempts: 1 + inst.retries.count,
            backoff_ms: inst.retries.backoff.as_millis() as u64,
            backoff_factor: inst.retries.factor,
            max_backoff_ms: inst.retries.max_backoff.as_millis() as u64,
            priority: inst.priority,
            cached: cached[inst.id],
        })
        .collect();
    let mut core = Core::new(
        infos,
        pools,
        Options {
            fail_fast: opts.fail_fast,
        },
    );
    let by_key: HashMap<&str, InstanceId> = plan
        .instances
        .iter()
        .map(|i| (i.key.as_str(), i.id))
        .collect();

    let mut record = RunRecord {
        id: opts.run_id.clone(),
        workflow: opts.workflow_path.clone(),
        workflow_name: plan.workflow.name.clone(),
        overrides: opts.overrides.clone(),
        targets: opts.targets.clone(),
        store: store.url().to_string(),
        started_ms: now_ms(),
        finished_ms: None,
        status: RunStatus::Running,
        pid: std::process::id(),
        host: host.clone(),
        instances: n,
        cached: n_cached,
        options: opts.options_json.clone(),
        model_loads: 0,
        workers_started: 0,
    };
    journal.put_run(&record)?;
    let lease = Lease {
        run_id: opts.run_id.clone(),
        host: host.clone(),
        pid: std::process::id(),
        heartbeat_ms: now_ms(),
    };
    store.put_lease(&lease).await?;
    let lease_task = {
        let store = store.clone();
        let mut lease = lease.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                lease.heartbeat_ms = now_ms();
                let _ = store.put_lease(&lease).await;
            }
        })
    };

    tracing::info!(run = %opts.run_id, workflow = %plan.workflow.name, instances = n, cached = n_cached, store = %store.url(), "run starts");
    obs.emit(RunEvent::Start {
        t_ms: now_ms(),
        run: opts.run_id.clone(),
        workflow: plan.workflow.name.clone(),
        instances: n,
        cached: n_cached,
    });
    for m in notices {
        obs.notice(m);
    }
    let mut records: Vec<InstanceRecord> = plan
        .instances
        .iter()
        .map(|i| InstanceRecord {
            seq: i.id,
            key: i.key.clone(),
            name: i.name.clone(),
            kind: i.kind.clone(),
            state: if cached[i.id] {
                "cached".into()
            } else {
                "waiting".into()
            },
            attempts: 0,
            started_ms: None,
            finished_ms: None,
            error: None,
            gpus: vec![],
            log: None,
        })
        .collect();
    journal.record(&opts.run_id, &[], &records)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<ExecEvent>();
    let registry = Arc::new(registry);
    let executors = Executors::builtin(&ExecEnv {
        registry: registry.clone(),
        store: store.clone(),
        rt: tokio::runtime::Handle::current(),
        state_dir: opts.state_dir.clone(),
        self_exe: opts.self_exe.clone(),
        worker_exe: opts.worker_exe.clone(),
        slurm: plan.workflow.slurm.clone(),
    });
    crate::kind::workdirs::recycle(true);
    let mut launched: HashMap<InstanceId, Launched> = HashMap::new();
    let epoch = Instant::now();
    let now = |e: &Instant| e.elapsed().as_millis() as u64;
    let mut signals = Signals::new(opts.grace);
    let launcher = Launcher {
        plan: &plan,
        registry: &registry,
        store: &store,
        opts: &opts,
        executors: &executors,
        host: &host,
        tx: &tx,
    };
    let snapshot_path = opts
        .state_dir
        .join("runs")
        .join(format!("{}.status.json", opts.run_id));
    // A snapshot at most every second while something changed, the first after a second: a
    // run that ends sooner writes none (`status` asks to try again meanwhile).
    let mut last_snapshot = Instant::now();
    let mut snapshot_dirty = true;

    // Test hook: `COCOFLOW_CRASH_AFTER_PUBLISH=N` kills this process right after the N-th
    // batch of results is published, before anything that follows from it is journaled.
    let crash_after_publish: Option<usize> = std::env::var("COCOFLOW_CRASH_AFTER_PUBLISH")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut publications = 0usize;
    let mut actions = core.start(now(&epoch));
    loop {
        // 1. Journal this batch's state changes, then 2. act on it.
        let mut events = Vec::new();
        let mut touched = Vec::new();
        let mut launches = Vec::new();
        let t = now_ms();
        for a in actions.drain(..) {
            match a {
                Action::Record { id, state, error } => {
                    let r = &mut records[id];
                    r.state = state.label().to_string();
                    match &state {
                        State::Running { attempt } => {
                            r.attempts = *attempt;
                            r.started_ms = Some(t);
                            r.finished_ms = None;
                        }
                        s if s.is_terminal() || matches!(s, State::RetryWait { .. }) => {
                            r.finished_ms = Some(t)
                        }
                        _ => {}
                    }
                    if error.is_some() {
                        r.error = error.clone();
                    } else if matches!(state, State::Succeeded) {
                        r.error = None;
                    }
                    let attempt = if let State::Running { attempt } = state {
                        attempt
                    } else {
                        r.attempts
                    };
                    events.push(JournalEvent {
                        t_ms: t,
                        key: r.key.clone(),
                        name: r.name.clone(),
                        state: r.state.clone(),
                        attempt,
                        error,
                    });
                    touched.push(id);
                    if let State::Blocked { by } = &state {
                        let by = by
                            .map(|b| plan.instances[b].name.clone())
                            .unwrap_or_else(|| "fail-fast".into());
                        obs.emit(RunEvent::Blocked {
                            t_ms: t,
                            name: plan.instances[id].name.clone(),
                            by,
                        });
                    }
                }
                Action::Launch { id, attempt, alloc } => {
                    records[id].gpus = alloc.gpus.clone();
                    let pools: std::collections::BTreeMap<String, u32> = alloc
                        .named
                        .iter()
                        .map(|&(i, n)| (core.pools().pool_name(i).to_string(), n))
                        .collect();
                    launches.push((id, attempt, alloc.gpus, pools));
                }
                Action::WakeAt { .. } => {}
            }
        }
        if !events.is_empty() {
            touched.sort_unstable();
            touched.dedup();
            let updates: Vec<InstanceRecord> =
                touched.iter().map(|&i| records[i].clone()).collect();
            journal.record(&opts.run_id, &events, &updates)?;
            snapshot_dirty = true;
        }
        for (id, attempt, gpus, pools) in launches {
            let l = launcher
                .launch(id, attempt, gpus, pools, &mut manifests, &mut obs)
                .await?;
            records[id].log = Some(l.log.display().to_string());
            launched.insert(id, l);
        }

        if core.is_finished() {
            break;
        }
        if snapshot_dirty && last_snapshot.elapsed() >= Duration::from_secs(1) {
            write_snapshot(&snapshot_path, &record, &records);
            last_snapshot = Instant::now();
            snapshot_dirty = false;
        }

        // 3. Wait for the next event(s).
        let wake = core
            .next_wake()
            .map(|ms| tokio::time::Instant::from_std(epoch + Duration::from_millis(ms)));
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut batch: Vec<ExecEvent> = Vec::new();
        tokio::select! {
            m = rx.recv() => {
                if let Some(m) = m { batch.push(m); }
                while batch.len() < 4096 {
                    match rx.try_recv() { Ok(m) => batch.push(m), Err(_) => break }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(last_snapshot + Duration::from_secs(1))), if snapshot_dirty => {}
            _ = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() => {
                actions.extend(core.handle(Event::Tick, now(&epoch)));
            }
            sig = signals.next() => {
                actions.extend(signals.handle(sig, &launched, &mut core, now(&epoch), &mut obs, &mut batch));
            }
        }
        // Publish this round's results together (one append), before the state changes
        // that follow from them are journaled and acted on.
        let published = {
            let results: Vec<&ResultManifest> = batch
                .iter()
                .filter_map(|m| match m {
                    ExecEvent::Done {
                        outcome: JobOutcome::Succeeded { manifest },
                        ..
                    } => Some(&**manifest),
                    _ => None,
                })
                .collect();
            let published = store.put_results(&results).await.map_err(|e| e.to_string());
            if !results.is_empty() {
                publications += 1;
                if crash_after_publish == Some(publications) {
                    // Test hook: die between publishing and journaling (see tests/it/crash.rs).
                    // SAFETY: raising a signal on this process.
                    unsafe { libc::raise(libc::SIGKILL) };
                }
            }
            published
        };
        for m in batch {
            match m {
                ExecEvent::Progress { id, progress } => obs.emit(RunEvent::Progress {
                    t_ms: now_ms(),
                    id,
                    name: plan.instances[id].name.clone(),
                    key: plan.instances[id].key.clone(),
                    done: progress.done,
                    total: progress.total,
                    message: progress.message,
                }),
                ExecEvent::Done {
                    id,
                    attempt,
                    outcome,
                } => {
                    let Some(l) = launched.remove(&id) else {
                        continue;
                    };
                    let took = l.started.elapsed();
                    let name = &plan.instances[id].name;
                    let log = l.log.display().to_string();
                    let mut finish = |state, err: Option<&str>, log_path: Option<&str>| {
                        obs.emit(RunEvent::Finish {
                            t_ms: now_ms(),
                            id,
                            name: name.clone(),
                            key: plan.instances[id].key.clone(),
                            state,
                            seconds: took.as_secs_f64(),
                            error: err.map(String::from),
                            log: log_path.map(String::from),
                        })
                    };
                    let outcome = match (outcome, &published) {
                        (JobOutcome::Succeeded { .. }, Err(e)) => JobOutcome::Failed {
                            message: format!("cannot publish the result: {e}"),
                            retryable: true,
                        },
                        (o, _) => o,
                    };
                    let outcome = match outcome {
                        JobOutcome::Succeeded { manifest } => {
                            finish(FinishState::Succeeded, None, None);
                            manifests.insert(manifest.key.clone(), *manifest);
                            Outcome::Success
                        }
                        JobOutcome::Failed { message, retryable } => {
                            let last = !retryable
                                || attempt > plan.instances[id].retries.count
                                || signals.interrupted;
                            finish(
                                if last {
                                    FinishState::Failed
                                } else {
                                    FinishState::Retry
                                },
                                Some(&message),
                                Some(&log),
                            );
                            Outcome::Failure { message, retryable }
                        }
                        JobOutcome::Cancelled => {
                            finish(FinishState::Interrupted, None, None);
                            Outcome::Cancelled
                        }
                        JobOutcome::BadInput {
                            producer_key,
                            message,
                        } => match by_key.get(producer_key.as_str()) {
                            Some(&p) => {
                                obs.notice(format!(
                                    "`{name}`: {message}; running `{}` again",
                                    plan.instances[p].name
                                ));
                                cache::discard_result(&store, &producer_key, &mut manifests).await;
                                Outcome::BadInput {
                                    producer: p,
                                    message,
                                }
                            }
                            None => Outcome::Failure {
                                message,
                                retryable: false,
                            },
                        },
                    };
                    actions.extend(core.handle(
                        Event::Finished {
                            id,
                            attempt,
                            outcome,
                        },
                        now(&epoch),
                    ));
                }
            }
        }
    }

    executors.shutdown();
    let workers_started = executors.processes_started();
    let model_loads = executors.model_loads();
    let executor_notes = executors.summaries();
    tracing::info!(run = %opts.run_id, seconds = t0.elapsed().as_secs_f64(), model_loads, workers_started, "run ends");
    lease_task.abort();
    crate::kind::workdirs::drop_spares();
    let _ = store.delete_lease(&opts.run_id).await;
    let states = core.states();
    let count = |f: &dyn Fn(&State) -> bool| states.iter().filter(|s| f(s)).count();
    let succeeded = count(&|s| *s == State::Succeeded);
    let failed = count(&|s| *s == State::Failed);
    let blocked = count(&|s| matches!(s, State::Blocked { .. }));
    let interrupted_n = count(&|s| *s == State::Interrupted);
    let cached_n = count(&|s| *s == State::Cached);
    record.status = if signals.interrupted {
        RunStatus::Interrupted
    } else if failed + blocked > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    record.finished_ms = Some(now_ms());
    record.model_loads = model_loads;
    record.workers_started = workers_started;
    journal.put_run(&record)?;
    // The journal now holds it all (and `status` reads it once this process lets go).
    let _ = std::fs::remove_file(&snapshot_path);
    let results: Vec<String> = plan
        .instances
        .iter()
        .filter(|i| states[i.id].is_done())
        .map(|i| i.key.clone())
        .collect();
    store
        .put_run(&RunSummary {
            run_id: opts.run_id.clone(),
            workflow: plan.workflow.name.clone(),
            status: record.status.label().to_string(),
            started_ms: record.started_ms,
            finished_ms: record.finished_ms,
            host,
            results,
        })
        .await?;
    let report = RunReport {
        run_id: opts.run_id,
        status: record.status,
        succeeded,
        cached: cached_n,
        failed,
        blocked,
        interrupted: interrupted_n,
        elapsed: t0.elapsed(),
        model_loads,
        workers_started,
        executor_notes,
    };
    obs.emit(RunEvent::End {
        t_ms: now_ms(),
        summary: report.summary(),
    });
    Ok(report)
}

fn write_snapshot(path: &std::path::Path, run: &RunRecord, records: &[InstanceRecord]) {
    #[derive(serde::Serialize)]
    struct Snapshot<'a> {
        run: &'a RunRecord,
        instances: &'a [InstanceRecord],
    }
    let bytes = serde_json::to_vec(&Snapshot {
        run,
        instances: records,
    })
    .unwrap_or_default();
    let _ = crate::store::write_atomic(path, &bytes);
}
