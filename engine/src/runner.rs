//! The runner: drives the pure scheduler core with real events. It checks the cache,
//! journals every batch of state changes before acting on it, launches attempts on the
//! executors, shows progress, handles Ctrl-C, and writes the run's summary to the store.

use crate::core::resources::{Pools, Request};
use crate::core::{Action, Core, Event, Options, Outcome, State, TaskInfo};
use crate::exec::{ExecEnv, ExecEvent, Executors, Job, JobInput, JobOutcome, Launch, Running};
use crate::kind::{Placement, Registry};
use crate::plan::{InstanceId, Plan};
use crate::state::{InstanceRecord, Journal, JournalEvent, RunRecord, RunStatus};
use crate::store::{Lease, ResultManifest, RunSummary, Store};
use crate::ui::Ui;
use crate::util::{human_duration, now_ms};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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

/// Resolves the GPU pool and each instance's request; errors name the task and pool.
pub fn resources(
    plan: &Plan,
    opts: &RunOptions,
    ui: &Ui,
) -> Result<(Pools, Vec<Request>), RunError> {
    let w = &plan.workflow;
    let gpus: Vec<u32> = match (&opts.gpus, &w.pools.gpus) {
        (Some(g), _) => g.clone(),
        (None, Some(g)) => g.clone(),
        (None, None) => crate::gpu::discover()
            .map(|v| v.into_iter().map(|g| g.id).collect())
            .unwrap_or_default(),
    };
    let cpus = opts.cpus.or(w.pools.cpus).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let pools = Pools::new(gpus.clone(), cpus, &w.pools.named);
    let gpu_tasks = plan
        .instances
        .iter()
        .filter(|i| i.resources.gpus > 0)
        .count();
    if gpus.is_empty() && gpu_tasks > 0 {
        ui.notice(&format!(
            "no GPU found: {gpu_tasks} GPU task(s) will run on the CPU"
        ));
    }
    let mut reqs = Vec::with_capacity(plan.instances.len());
    for inst in &plan.instances {
        let r = &inst.resources;
        let mut named = Vec::new();
        for (pool, &n) in &r.pools {
            let idx = pools.pool_index(pool).ok_or_else(|| {
                RunError::Invalid(format!("task `{}` asks for resource `{pool}`, which the workflow does not declare under `resources:`", inst.name))
            })?;
            named.push((idx, n));
        }
        let req = Request {
            gpus: if gpus.is_empty() { 0 } else { r.gpus },
            cpus: r.cpus.min(cpus),
            named,
        };
        if !pools.satisfiable(&req) {
            let list = gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            return Err(RunError::Invalid(format!(
                "task `{}` asks for {} GPU(s); this run has {} (ids: {})",
                inst.name,
                req.gpus,
                gpus.len(),
                if list.is_empty() { "none".into() } else { list }
            )));
        }
        reqs.push(req);
    }
    Ok((pools, reqs))
}

/// Which instances are cache hits. The cached results a re-running instance reads, and
/// those the run ends with (no dependents in the plan), are checked cheaply: every blob
/// present with its size (see [`Store::artifact_present`]); a failed check makes the
/// instance run again. `cocoflow verify` hashes every blob instead.
pub async fn cache_hits(
    plan: &Plan,
    store: &Store,
) -> Result<(Vec<bool>, HashMap<String, ResultManifest>), RunError> {
    let keys: Vec<String> = plan.instances.iter().map(|i| i.key.clone()).collect();
    let mut cached = store.have_results(&keys).await?;
    let dependents = plan.dependents();
    let mut manifests = HashMap::new();
    let mut checked = HashSet::new();
    let mut to_check: Vec<InstanceId> = plan
        .instances
        .iter()
        .filter(|i| cached[i.id] && dependents[i.id].is_empty())
        .map(|i| i.id)
        .collect();
    loop {
        for inst in &plan.instances {
            if !cached[inst.id] {
                to_check.extend(
                    inst.deps
                        .iter()
                        .copied()
                        .filter(|&d| cached[d] && !checked.contains(&d)),
                );
            }
        }
        if to_check.is_empty() {
            break;
        }
        for d in std::mem::take(&mut to_check) {
            if !checked.insert(d) {
                continue;
            }
            let ok = match store.get_result(&plan.instances[d].key).await? {
                Some(m) => {
                    let mut ok = true;
                    for a in m.outputs.values() {
                        if !store.artifact_present(a).await? {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        manifests.insert(m.key.clone(), m);
                    }
                    ok
                }
                None => false,
            };
            if !ok {
                tracing::info!(instance = %plan.instances[d].name, "cached result has a missing or truncated output; it runs again");
                cached[d] = false;
            }
        }
    }
    Ok((cached, manifests))
}

struct Launched {
    started: Instant,
    running: Running,
    log: PathBuf,
}

/// Runs a plan to the end (or until interrupted).
pub async fn run(
    plan: Plan,
    registry: Registry,
    store: Store,
    journal: &mut dyn Journal,
    opts: RunOptions,
    ui: &mut Ui,
) -> Result<RunReport, RunError> {
    let t0 = Instant::now();
    let (pools, requests) = resources(&plan, &opts, ui)?;
    let (cached, mut manifests) = cache_hits(&plan, &store).await?;
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
    ui.start(&opts.run_id, &plan.workflow.name, n, n_cached);
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
    });
    crate::kind::workdirs::recycle(true);
    let mut launched: HashMap<InstanceId, Launched> = HashMap::new();
    let mut interrupted = false;
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let mut cancelled_all = false;
    let mut kill_deadline: Option<tokio::time::Instant> = None;
    let epoch = Instant::now();
    let now = |e: &Instant| e.elapsed().as_millis() as u64;
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    // Made once (`tokio::signal::ctrl_c()` in the loop registered a listener every round).
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
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
                        ui.blocked(&plan.instances[id].name, &by);
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
            let inst = &plan.instances[id];
            let log = opts
                .state_dir
                .join("logs")
                .join(&opts.run_id)
                .join(format!("{}.{attempt}.log", slug(&inst.name)));
            records[id].log = Some(log.display().to_string());
            let mut inputs = std::collections::BTreeMap::new();
            let mut missing = None;
            for (name, items) in &inst.inputs {
                let mut v = Vec::new();
                for it in items {
                    let pkey = &plan.instances[it.producer].key;
                    if !manifests.contains_key(pkey) {
                        match store.get_result(pkey).await? {
                            Some(m) => {
                                manifests.insert(pkey.clone(), m);
                            }
                            None => {
                                missing = Some(it.producer);
                                break;
                            }
                        }
                    }
                    let m = &manifests[pkey];
                    match m.outputs.get(&it.output) {
                        Some(a) => v.push(JobInput {
                            label: it.label.clone(),
                            producer_key: pkey.clone(),
                            output: it.output.clone(),
                            artifact: a.clone(),
                        }),
                        None => {
                            missing = Some(it.producer);
                            break;
                        }
                    }
                }
                inputs.insert(name.clone(), v);
            }
            if let Some(p) = missing {
                let outcome = JobOutcome::BadInput {
                    producer_key: plan.instances[p].key.clone(),
                    message: "its result disappeared from the store".into(),
                };
                let _ = tx.send(ExecEvent::Done {
                    id,
                    attempt,
                    outcome,
                });
                launched.insert(
                    id,
                    Launched {
                        started: Instant::now(),
                        running: Running::new(),
                        log,
                    },
                );
                continue;
            }
            let job = Job {
                name: inst.name.clone(),
                key: inst.key.clone(),
                kind: inst.kind.clone(),
                kind_version: inst.kind_version,
                run_id: opts.run_id.clone(),
                attempt,
                params: inst.params.clone(),
                inputs,
                outputs: inst.outputs.clone(),
                gpus: gpus.clone(),
                pools,
                workdir: opts.state_dir.join("work").join(format!(
                    "{}-{}-{attempt}",
                    &inst.key[..16],
                    opts.run_id
                )),
                log_path: log.clone(),
                store_url: store.url().to_string(),
                store_base: opts.base_dir.clone(),
                cache_dir: opts.state_dir.join("cache"),
                host: host.clone(),
            };
            let needs_worker = registry
                .get(&inst.kind)
                .is_some_and(|k| k.placement() == Placement::Worker);
            let name = match inst.executor.as_deref() {
                Some(e) => e,
                None if needs_worker && opts.executor == "in-process" => "workers",
                None => opts.executor.as_str(),
            };
            tracing::debug!(instance = %inst.name, key = %&inst.key[..12], attempt, ?gpus, executor = name, "launch");
            ui.launched(id, &inst.name, attempt, &gpus);
            let running = match executors.get(name) {
                Some(x) => x.launch(Launch {
                    id,
                    attempt,
                    job,
                    needs_worker,
                    timeout: inst.timeout,
                    events: tx.clone(),
                }),
                None => {
                    let _ = tx.send(ExecEvent::Done {
                        id,
                        attempt,
                        outcome: JobOutcome::Failed {
                            message: format!("no executor `{name}` in this run"),
                            retryable: false,
                        },
                    });
                    Running::new()
                }
            };
            launched.insert(
                id,
                Launched {
                    started: Instant::now(),
                    running,
                    log,
                },
            );
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
            _ = async { match sigint.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {
                if interrupted {
                    cancel_all(&launched);
                    cancelled_all = true;
                    kill_deadline.get_or_insert(tokio::time::Instant::now() + KILL_AFTER);
                    ui.notice("second interrupt: cancelling running tasks");
                } else {
                    interrupted = true;
                    grace_deadline = Some(tokio::time::Instant::now() + opts.grace);
                    ui.notice(&format!("interrupted: no new tasks; waiting up to {} for {} running task(s) (Ctrl-C again to cancel them)", human_duration(opts.grace), launched.len()));
                    actions.extend(core.handle(Event::Interrupt, now(&epoch)));
                }
            }
            _ = async { match sigterm.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending::<()>().await } } => {
                interrupted = true;
                grace_deadline.get_or_insert(tokio::time::Instant::now() + opts.grace);
                actions.extend(core.handle(Event::Interrupt, now(&epoch)));
            }
            _ = tokio::time::sleep_until(grace_deadline.unwrap_or(far)), if grace_deadline.is_some() && !cancelled_all => {
                ui.notice("grace period over: cancelling running tasks");
                cancel_all(&launched);
                cancelled_all = true;
                kill_deadline.get_or_insert(tokio::time::Instant::now() + KILL_AFTER);
            }
            _ = tokio::time::sleep_until(kill_deadline.unwrap_or(far)), if kill_deadline.is_some() => {
                // Tasks that ignored cancellation: kill workers, abandon in-process threads
                // (they end with this process) and record them as interrupted.
                ui.notice(&format!("{} task(s) ignored cancellation for {}: stopping without them", launched.len(), human_duration(KILL_AFTER)));
                for l in launched.values() {
                    l.running.kill();
                }
                for (&id, _) in launched.iter() {
                    if let State::Running { attempt } = core.state(id).clone() {
                        batch.push(ExecEvent::Done { id, attempt, outcome: JobOutcome::Cancelled });
                    }
                }
                kill_deadline = None;
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
                ExecEvent::Progress { id, progress } => {
                    ui.progress(id, &plan.instances[id].name, &progress)
                }
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
                    let outcome = match (outcome, &published) {
                        (JobOutcome::Succeeded { .. }, Err(e)) => JobOutcome::Failed {
                            message: format!("cannot publish the result: {e}"),
                            retryable: true,
                        },
                        (o, _) => o,
                    };
                    let outcome = match outcome {
                        JobOutcome::Succeeded { manifest } => {
                            ui.finished(id, name, "succeeded", took, None, None);
                            manifests.insert(manifest.key.clone(), *manifest);
                            Outcome::Success
                        }
                        JobOutcome::Failed { message, retryable } => {
                            let last = !retryable
                                || attempt > plan.instances[id].retries.count
                                || interrupted;
                            ui.finished(
                                id,
                                name,
                                if last { "failed" } else { "retry" },
                                took,
                                Some(&message),
                                Some(&log),
                            );
                            Outcome::Failure { message, retryable }
                        }
                        JobOutcome::Cancelled => {
                            ui.finished(id, name, "interrupted", took, None, None);
                            Outcome::Cancelled
                        }
                        JobOutcome::BadInput {
                            producer_key,
                            message,
                        } => match by_key.get(producer_key.as_str()) {
                            Some(&p) => {
                                ui.notice(&format!(
                                    "`{name}`: {message}; running `{}` again",
                                    plan.instances[p].name
                                ));
                                discard_result(&store, &producer_key, &mut manifests).await;
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
    record.status = if interrupted {
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
    Ok(RunReport {
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
    })
}

/// After cancellation, how long tasks may take to stop before the run ends without them.
const KILL_AFTER: Duration = Duration::from_secs(10);

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

/// Forgets a producer's result whose blobs failed verification, and removes bad blobs, so
/// it runs again and can store them afresh.
async fn discard_result(store: &Store, key: &str, manifests: &mut HashMap<String, ResultManifest>) {
    let m = match manifests.remove(key) {
        Some(m) => Some(m),
        None => store.get_result(key).await.ok().flatten(),
    };
    if let Some(m) = m {
        for a in m.outputs.values() {
            for d in store
                .artifact_blobs(a)
                .await
                .unwrap_or_else(|_| vec![a.digest.clone()])
            {
                if store.get_blob(&d).await.is_err() {
                    let _ = store.delete_blob(&d).await;
                }
            }
        }
    }
    let _ = store.delete_result(key).await;
}

fn cancel_all(launched: &HashMap<InstanceId, Launched>) {
    for l in launched.values() {
        l.running.cancel();
    }
}
