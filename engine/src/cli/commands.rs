//! The commands behind the CLI.

use super::*;
use crate::plan::Plan;
use crate::runner::{self, RunError, RunOptions};
use crate::spec::{self, SpecError};
use crate::state::{Journal, JournalError, RedbJournal, RunStatus, pid_alive};
use crate::store::{Pin, RunSummary, Store};
use crate::ui::{Mode, Ui};
use crate::util::{format_ms, human_duration, now_ms, parse_duration};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// A command's failure with the exit code it maps to.
pub struct Fail {
    pub code: i32,
    pub text: String,
}

impl Fail {
    pub(crate) fn env(text: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_ENVIRONMENT,
            text: format!("error: {}", text.into()),
        }
    }
    pub(crate) fn usage(text: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_USAGE,
            text: format!("error: {}", text.into()),
        }
    }
}

impl From<SpecError> for Fail {
    fn from(e: SpecError) -> Fail {
        let text = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            let mut s = String::new();
            let handler = miette::GraphicalReportHandler::new_themed(
                miette::GraphicalTheme::unicode_nocolor(),
            );
            match handler.render_report(&mut s, &e) {
                Ok(()) => s,
                Err(_) => e.render(),
            }
        } else {
            e.render()
        };
        Fail {
            code: EXIT_INVALID,
            text: text.trim_end().to_string(),
        }
    }
}

impl From<JournalError> for Fail {
    fn from(e: JournalError) -> Fail {
        Fail::env(e.to_string())
    }
}

impl From<crate::store::StoreError> for Fail {
    fn from(e: crate::store::StoreError) -> Fail {
        Fail::env(e.to_string())
    }
}

pub async fn dispatch(cli: Cli, registry: Registry) -> i32 {
    // Absolute, so task working directories can use paths under it.
    let state = if cli.state_dir.is_absolute() {
        cli.state_dir.clone()
    } else {
        std::env::current_dir()
            .unwrap_or_default()
            .join(&cli.state_dir)
    };
    let r = match cli.command {
        Command::Run { wf, run } => cmd_run(&state, registry, &wf, &run, None).await,
        Command::Resume { run_id, run } => cmd_resume(&state, registry, &run_id, run).await,
        Command::Plan { wf, json } => cmd_plan(&state, &registry, &wf, json).await,
        Command::Graph { wf, format } => cmd_graph(&registry, &wf, &format),
        Command::Status { run_id, json } => cmd_status(&state, run_id.as_deref(), json),
        Command::Runs { json } => cmd_runs(&state, json),
        Command::Gc {
            dry_run,
            grace,
            force,
            store,
            keep_caches,
        } => {
            cmd_gc(
                &state,
                dry_run,
                &grace,
                force,
                store.as_deref(),
                keep_caches,
            )
            .await
        }
        Command::Verify(args) => super::verify::cmd_verify(&state, args).await,
        Command::Pin { run_id, name } => cmd_pin(&state, &run_id, name).await,
        Command::Unpin { name } => cmd_unpin(&state, &name).await,
        Command::Export {
            run_id,
            task,
            kind,
            output,
            to,
        } => cmd_export(&state, run_id, task, kind, output, to, false).await,
        Command::Report { run_id, to } => {
            cmd_export(&state, run_id, None, Some("report".into()), None, to, true).await
        }
        Command::Kinds { json } => {
            if json {
                let all: Vec<serde_json::Value> = registry
                    .iter()
                    .map(|k| {
                        let mut d = k.declaration();
                        d["name"] = k.name().into();
                        d["version"] = k.version().into();
                        d["describe"] = k.describe().into();
                        d
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&all).expect("declarations serialise")
                );
            } else {
                for k in registry.iter() {
                    println!("{:<14} v{:<3} {}", k.name(), k.version(), k.describe());
                }
            }
            Ok(EXIT_OK)
        }
        Command::Bench(args) => bench::run(args, registry).await,
        Command::Worker { .. } | Command::WorkerServe => {
            unreachable!("handled before the runtime starts")
        }
    };
    match r {
        Ok(code) => code,
        Err(f) => {
            eprintln!("{}", f.text);
            f.code
        }
    }
}

/// `--params FILE` as `key=value` overrides, followed by the `--set` ones (which win).
pub(crate) fn overrides(wf: &WorkflowArgs) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    if let Some(f) = &wf.params_file {
        let text = std::fs::read_to_string(f).map_err(|e| {
            Fail::usage(format!(
                "`--params {}`: cannot read the file: {e}",
                f.display()
            ))
        })?;
        let v: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| Fail::usage(format!("`--params {}`: not valid YAML: {e}", f.display())))?;
        let map = match v {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => Default::default(),
            _ => {
                return Err(Fail::usage(format!(
                    "`--params {}`: expected a mapping of param names to values",
                    f.display()
                )));
            }
        };
        // Name the file, not `--set`, when it has a key the workflow does not.
        let known: Vec<String> = spec::load(&wf.workflow, &[])
            .map(|w| w.params.keys().cloned().collect())
            .unwrap_or_default();
        for (k, v) in map {
            if let serde_yaml::Value::String(key) = &k
                && !known.is_empty()
                && !known.contains(key)
            {
                return Err(Fail::usage(format!(
                    "`--params {}`: `{key}` is not a param of `{}` (its params: {})",
                    f.display(),
                    wf.workflow.display(),
                    known.join(", ")
                )));
            }
            let serde_yaml::Value::String(key) = k else {
                return Err(Fail::usage(format!(
                    "`--params {}`: param names must be strings, got {k:?}",
                    f.display()
                )));
            };
            // Mappings and lists (e.g. `judge: {kind: openai, ...}`) travel as JSON, which is
            // YAML flow syntax: `--set` parses it back to the same value.
            // Strings travel as they are (`--set` takes a string param's text verbatim).
            let text = if let serde_yaml::Value::String(s) = &v {
                s.clone()
            } else if matches!(
                v,
                serde_yaml::Value::Mapping(_) | serde_yaml::Value::Sequence(_)
            ) {
                serde_json::to_string(&v)
                    .map_err(|e| Fail::usage(format!("`--params {}`: `{key}`: {e}", f.display())))?
            } else {
                serde_yaml::to_string(&v).unwrap_or_default()
            };
            out.push(format!(
                "{key}={}",
                if v.is_string() {
                    &text
                } else {
                    text.trim_end()
                }
            ));
        }
    }
    out.extend(wf.set.iter().cloned());
    Ok(out)
}

fn load_plan(registry: &Registry, wf: &WorkflowArgs) -> Result<Plan, Fail> {
    let w = spec::load(&wf.workflow, &overrides(wf)?)?;
    Ok(crate::plan::build(&w, registry, &wf.targets)?)
}

pub(crate) fn open_store(state: &Path, url: &str) -> Result<Store, Fail> {
    let base = std::env::current_dir()
        .map_err(|e| Fail::env(format!("cannot read the current directory: {e}")))?;
    Ok(Store::open(url, &base, &state.join("cache"))?)
}

pub(crate) fn journal_path(state: &Path) -> std::path::PathBuf {
    state.join("journal.redb")
}

/// The worker binary: `$COCOFLOW_WORKER`, else `cocoflow-worker` next to this program (or this
/// program itself when it is the worker).
pub fn worker_exe(self_exe: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("COCOFLOW_WORKER") {
        return PathBuf::from(p);
    }
    if self_exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("cocoflow-worker"))
    {
        return self_exe.to_path_buf();
    }
    self_exe.with_file_name("cocoflow-worker")
}

async fn cmd_run(
    state: &Path,
    registry: Registry,
    wf: &WorkflowArgs,
    run: &RunArgs,
    resume_id: Option<String>,
) -> Result<i32, Fail> {
    let plan = load_plan(&registry, wf)?;
    crate::exec::check_name(&run.executor, &[]).map_err(Fail::usage)?;
    let executor = run.executor.clone();
    let grace = parse_duration(&run.grace).ok_or_else(|| {
        Fail::usage(format!(
            "`--grace {}` is not a duration like `10s`",
            run.grace
        ))
    })?;
    let gpus = match &run.gpus {
        Some(g) => Some(crate::gpu::parse_list(g).map_err(Fail::usage)?),
        None => None,
    };
    let store = open_store(state, &plan.workflow.store)?;
    std::fs::create_dir_all(state).map_err(|e| {
        Fail::env(format!(
            "cannot create state directory `{}`: {e}",
            state.display()
        ))
    })?;
    let mut journal = RedbJournal::open_waiting(&journal_path(state), Duration::from_secs(2))?;
    let run_id = resume_id.unwrap_or_else(crate::util::new_run_id);
    let self_exe = std::env::current_exe()
        .map_err(|e| Fail::env(format!("cannot find this program's path: {e}")))?;
    let worker_exe = worker_exe(&self_exe);
    let opts = RunOptions {
        run_id,
        workflow_path: wf.workflow.display().to_string(),
        overrides: overrides(wf)?,
        targets: wf.targets.clone(),
        state_dir: state.to_path_buf(),
        base_dir: std::env::current_dir().unwrap_or_default(),
        gpus,
        cpus: run.cpus,
        fail_fast: run.fail_fast,
        executor,
        grace,
        self_exe,
        worker_exe,
        options_json: serde_json::json!({"gpus": run.gpus, "cpus": run.cpus, "fail_fast": run.fail_fast, "executor": run.executor, "grace": run.grace}),
    };
    let mut ui = Ui::new(Mode::detect(run.json, run.quiet));
    let report = match runner::run(plan, registry, store, &mut journal, opts, &mut ui).await {
        Ok(r) => r,
        Err(RunError::Invalid(m)) => {
            return Err(Fail {
                code: EXIT_INVALID,
                text: format!("error: {m}"),
            });
        }
        Err(RunError::Journal(e)) => return Err(e.into()),
        Err(RunError::Store(e)) => return Err(e.into()),
    };
    // The runner emitted `end` (the summary line, or its JSON) to the terminal and the events file.
    Ok(match report.status {
        RunStatus::Succeeded => EXIT_OK,
        RunStatus::Interrupted => EXIT_INTERRUPTED,
        _ => EXIT_TASK_FAILED,
    })
}

async fn cmd_resume(
    state: &Path,
    registry: Registry,
    run_id: &str,
    mut run: RunArgs,
) -> Result<i32, Fail> {
    let rec = {
        let j = RedbJournal::open(&journal_path(state))?;
        j.run(run_id)?.ok_or_else(|| {
            Fail::usage(format!(
                "no run `{run_id}` in `{}`; `cocoflow runs` lists them",
                state.display()
            ))
        })?
    };
    let o = &rec.options;
    if run.gpus.is_none() {
        run.gpus = o.get("gpus").and_then(|v| v.as_str()).map(String::from);
    }
    if run.cpus.is_none() {
        run.cpus = o.get("cpus").and_then(|v| v.as_u64()).map(|v| v as u32);
    }
    run.fail_fast |= o
        .get("fail_fast")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if let Some(e) = o.get("executor").and_then(|v| v.as_str()) {
        run.executor = e.to_string();
    }
    let wf = WorkflowArgs {
        workflow: rec.workflow.clone().into(),
        set: rec.overrides.clone(),
        params_file: None,
        targets: rec.targets.clone(),
    };
    cmd_run(state, registry, &wf, &run, Some(rec.id.clone())).await
}

async fn cmd_plan(
    state: &Path,
    registry: &Registry,
    wf: &WorkflowArgs,
    json: bool,
) -> Result<i32, Fail> {
    let plan = load_plan(registry, wf)?;
    let store = open_store(state, &plan.workflow.store)?;
    let keys: Vec<String> = plan.instances.iter().map(|i| i.key.clone()).collect();
    let cached = store.have_results(&keys).await?;
    let n_cached = cached.iter().filter(|c| **c).count();
    if json {
        let items: Vec<_> = plan
            .instances
            .iter()
            .map(|i| serde_json::json!({"name": i.name, "task": i.task, "kind": i.kind, "key": i.key, "cached": cached[i.id], "deps": i.deps.iter().map(|&d| &plan.instances[d].name).collect::<Vec<_>>(), "arms": i.arms.iter().map(|&a| &plan.arm_names[a]).collect::<Vec<_>>()}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"workflow": plan.workflow.name, "arms": plan.arm_names, "instances": items, "cached": n_cached, "to_run": plan.instances.len() - n_cached})
        );
        return Ok(EXIT_OK);
    }
    let width = plan
        .instances
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(4)
        .min(60);
    println!(
        "workflow `{}`: {} arm(s), {} instance(s)",
        plan.workflow.name,
        plan.arm_names.len(),
        plan.instances.len()
    );
    for i in &plan.instances {
        println!(
            "  {:<7} {:<width$}  {:<12} {}",
            if cached[i.id] { "cached" } else { "run" },
            i.name,
            i.kind,
            &i.key[..12]
        );
    }
    println!(
        "{} cached, {} to run",
        n_cached,
        plan.instances.len() - n_cached
    );
    Ok(EXIT_OK)
}

fn cmd_graph(registry: &Registry, wf: &WorkflowArgs, format: &str) -> Result<i32, Fail> {
    let plan = load_plan(registry, wf)?;
    match format {
        "text" => print!("{}", crate::plan::render::text(&plan)),
        "dot" => print!("{}", crate::plan::render::dot(&plan, &|_| None)),
        other => {
            return Err(Fail::usage(format!(
                "unknown graph format `{other}`; use `text` or `dot`"
            )));
        }
    }
    Ok(EXIT_OK)
}

/// The journal, or — while a run holds it — that run's live snapshot.
enum StatusSource {
    Journal(RedbJournal),
    Snapshot(serde_json::Value),
}

fn latest_snapshot(state: &Path) -> Option<serde_json::Value> {
    let dir = state.join("runs");
    let mut best: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        // not the events files (`<id>.events.jsonl`) nor a snapshot being written
        if !e.file_name().to_string_lossy().ends_with(".status.json") {
            continue;
        }
        let m = e.metadata().ok()?.modified().ok()?;
        if best.as_ref().is_none_or(|(t, _)| m > *t) {
            best = Some((m, e.path()));
        }
    }
    serde_json::from_slice(&std::fs::read(best?.1).ok()?).ok()
}

fn status_source(state: &Path, run_id: Option<&str>) -> Result<StatusSource, Fail> {
    if !RedbJournal::exists(&journal_path(state)) {
        return Err(Fail::usage(format!("no runs yet in `{}`", state.display())));
    }
    // A short wait: a run killed a moment ago may hold the lock a little longer through a
    // child between clone and exec.
    match RedbJournal::open_waiting(&journal_path(state), std::time::Duration::from_millis(200)) {
        Ok(j) => Ok(StatusSource::Journal(j)),
        Err(JournalError::Locked { .. }) => {
            // A live run's snapshot, else (a run younger than a second, or one just killed
            // whose lock is still being let go on a loaded machine) keep trying both a while.
            let snapshot = || match run_id {
                Some(id) => std::fs::read(state.join("runs").join(format!("{id}.status.json")))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok()),
                None => latest_snapshot(state),
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                if let Some(snap) = snapshot() {
                    return Ok(StatusSource::Snapshot(snap));
                }
                match RedbJournal::open(&journal_path(state)) {
                    Ok(j) => return Ok(StatusSource::Journal(j)),
                    Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(25));
                    }
                    Err(JournalError::Locked { .. }) => {
                        return Err(Fail::env(
                            "a run is in progress and has not written a status snapshot yet; try again in a second",
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn effective_status(r: &crate::state::RunRecord) -> RunStatus {
    if r.status == RunStatus::Running && r.host == runner::hostname() && !pid_alive(r.pid) {
        RunStatus::Crashed
    } else {
        r.status.clone()
    }
}

fn cmd_status(state: &Path, run_id: Option<&str>, json: bool) -> Result<i32, Fail> {
    let (run, instances, live) = match status_source(state, run_id)? {
        StatusSource::Journal(j) => {
            let run = match run_id {
                Some(id) => j.run(id)?.ok_or_else(|| {
                    Fail::usage(format!("no run `{id}`; `cocoflow runs` lists them"))
                })?,
                None => j.runs()?.pop().ok_or_else(|| Fail::usage("no runs yet"))?,
            };
            let inst = j.instances(&run.id)?;
            (run, inst, false)
        }
        StatusSource::Snapshot(v) => {
            let run: crate::state::RunRecord = serde_json::from_value(v["run"].clone())
                .map_err(|e| Fail::env(format!("malformed status snapshot: {e}")))?;
            let inst: Vec<crate::state::InstanceRecord> =
                serde_json::from_value(v["instances"].clone())
                    .map_err(|e| Fail::env(format!("malformed status snapshot: {e}")))?;
            (run, inst, true)
        }
    };
    let status = effective_status(&run);
    if json {
        println!(
            "{}",
            serde_json::json!({"run": run, "status": status.label(), "live": live, "instances": instances})
        );
        return Ok(EXIT_OK);
    }
    println!(
        "run {} ({}) {}{}: {}  started {}",
        run.id,
        run.workflow,
        status.label(),
        if live { " (live)" } else { "" },
        run.workflow_name,
        format_ms(run.started_ms)
    );
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in &instances {
        *counts.entry(i.state.as_str()).or_default() += 1;
    }
    println!(
        "  {}",
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let width = instances
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(4)
        .min(50);
    println!(
        "  {:<width$}  {:<11} {:>8} {:>9}  error",
        "instance", "state", "attempts", "duration"
    );
    for i in &instances {
        let dur = match (i.started_ms, i.finished_ms) {
            (Some(s), Some(f)) => human_duration(Duration::from_millis(f.saturating_sub(s))),
            (Some(s), None) if i.state == "running" => format!(
                "{}+",
                human_duration(Duration::from_millis(now_ms().saturating_sub(s)))
            ),
            _ => "-".into(),
        };
        let err = i
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .unwrap_or("");
        println!(
            "  {:<width$}  {:<11} {:>8} {:>9}  {}",
            i.name, i.state, i.attempts, dur, err
        );
    }
    Ok(EXIT_OK)
}

fn cmd_runs(state: &Path, json: bool) -> Result<i32, Fail> {
    let runs = match status_source(state, None)? {
        StatusSource::Journal(j) => j.runs()?,
        StatusSource::Snapshot(v) => {
            vec![serde_json::from_value(v["run"].clone()).map_err(|e| Fail::env(e.to_string()))?]
        }
    };
    if json {
        println!("{}", serde_json::to_string(&runs).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    for r in &runs {
        let st = effective_status(r);
        let took = r
            .finished_ms
            .map(|f| human_duration(Duration::from_millis(f.saturating_sub(r.started_ms))))
            .unwrap_or_else(|| "-".into());
        println!(
            "{}  {:<11} {:>8}  {} instances ({} cached)  {}{}",
            r.id,
            st.label(),
            took,
            r.instances,
            r.cached,
            r.workflow,
            if r.overrides.is_empty() {
                String::new()
            } else {
                format!(" --set {}", r.overrides.join(" --set "))
            }
        );
    }
    Ok(EXIT_OK)
}

async fn store_of_latest(state: &Path, explicit: Option<&str>) -> Result<Store, Fail> {
    let url = match explicit {
        Some(u) => u.to_string(),
        None => {
            let j = RedbJournal::open(&journal_path(state)).map_err(|e| match e {
                JournalError::Locked { .. } => Fail::env(
                    "a run is in progress in this state directory; `gc` waits until it ends",
                ),
                e => e.into(),
            })?;
            j.runs()?
                .pop()
                .map(|r| r.store)
                .ok_or_else(|| Fail::usage("no runs yet: pass `--store URL`"))?
        }
    };
    open_store(state, &url)
}

/// Refuses (exit 5) while a run holds a fresh lease on the store, unless `force`.
pub(crate) async fn refuse_if_live(store: &Store, force: bool, what: &str) -> Result<(), Fail> {
    let now = now_ms();
    let live_window = 120_000;
    for (loc, _) in store.list("leases").await? {
        if let Some(l) = store
            .read_json_at::<crate::store::Lease>(&loc, "lease")
            .await?
            && now.saturating_sub(l.heartbeat_ms) < live_window
            && !force
        {
            return Err(Fail::env(format!(
                "run `{}` on `{}` (pid {}) is live on this store; {what} could delete what it reads (`--force` to go ahead)",
                l.run_id, l.host, l.pid
            )));
        }
    }
    Ok(())
}

async fn cmd_gc(
    state: &Path,
    dry_run: bool,
    grace: &str,
    force: bool,
    store_url: Option<&str>,
    keep_caches: bool,
) -> Result<i32, Fail> {
    let grace = parse_duration(grace)
        .ok_or_else(|| Fail::usage(format!("`--grace {grace}` is not a duration")))?;
    // Holding the journal keeps runs of this state directory from starting meanwhile.
    let _journal = if RedbJournal::exists(&journal_path(state)) {
        Some(
            RedbJournal::open(&journal_path(state)).map_err(|e| match e {
                JournalError::Locked { .. } => Fail::env(
                    "a run is in progress in this state directory; `gc` would be unsafe now",
                ),
                e => e.into(),
            })?,
        )
    } else {
        None
    };
    drop(_journal);
    let store = store_of_latest(state, store_url).await?;
    let _journal = if RedbJournal::exists(&journal_path(state)) {
        Some(RedbJournal::open(&journal_path(state))?)
    } else {
        None
    };
    let now = now_ms();
    refuse_if_live(&store, force, "`gc`").await?;
    // Roots: every result a run summary or pin names.
    let mut roots: HashSet<String> = HashSet::new();
    for (loc, _) in store.list("runs").await? {
        if let Some(s) = store
            .read_json_at::<RunSummary>(&loc, "run summary")
            .await?
        {
            roots.extend(s.results);
        }
    }
    for (loc, _) in store.list("pins").await? {
        if let Some(p) = store.read_json_at::<Pin>(&loc, "pin").await? {
            roots.extend(p.results);
        }
    }
    let young = |mtime: u64| now.saturating_sub(mtime) < grace.as_millis() as u64;
    let mut live_blobs: HashSet<String> = HashSet::new();
    // Key-value records the kept results list; `None` once one listing cannot be read
    // (then no record is collected).
    let mut live_kv: Option<HashSet<String>> = Some(HashSet::new());
    let mut drop_results = Vec::new();
    let mut kept_results = 0;
    for r in store.results().await? {
        let key = r.key;
        if roots.contains(&key) || young(r.t_ms) {
            if let Some(m) = store.read_result(&key).await.ok().flatten() {
                for a in m.outputs.values().chain(m.log.iter()).chain(m.kv.iter()) {
                    for d in store
                        .artifact_blobs(a)
                        .await
                        .unwrap_or_else(|_| vec![a.digest.clone()])
                    {
                        live_blobs.insert(d);
                    }
                }
                if let Some(a) = &m.kv {
                    let listing = store
                        .read_artifact(a)
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok());
                    match (listing, live_kv.as_mut()) {
                        (Some(l), Some(live)) => live.extend(l),
                        (None, Some(_)) => {
                            eprintln!(
                                "warning: the key-value listing of result `{key}` cannot be read; keeping every key-value record"
                            );
                            live_kv = None;
                        }
                        _ => {}
                    }
                }
            }
            kept_results += 1;
        } else {
            drop_results.push(key);
        }
    }
    let mut drop_kv = Vec::new();
    let mut kept_kv = 0;
    for (loc, mtime) in store.list("kv").await? {
        let live =
            keep_caches || young(mtime) || live_kv.as_ref().is_none_or(|live| live.contains(&loc));
        if live {
            kept_kv += 1;
        } else {
            drop_kv.push(loc);
        }
    }
    let mut drop_blobs = Vec::new();
    let mut freed = 0u64;
    let mut kept_blobs = 0;
    for (loc, mtime) in store.list("blobs").await? {
        let digest = loc.rsplit('/').next().unwrap_or_default().to_string();
        if live_blobs.contains(&digest) || young(mtime) {
            kept_blobs += 1;
        } else {
            if let Some(root) = store.local_root() {
                freed += std::fs::metadata(root.join(&loc))
                    .map(|m| m.len())
                    .unwrap_or(0);
            }
            drop_blobs.push(loc);
        }
    }
    let mut drop_ckpt = Vec::new();
    for (loc, mtime) in store.list("checkpoints").await? {
        let key = loc.split('/').nth(1).unwrap_or_default();
        if store.has_result(key).await? && !young(mtime) {
            drop_ckpt.push(loc);
        }
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    if !dry_run {
        // Results first: a result must never name a deleted blob.
        store
            .remove_results(&drop_results.iter().cloned().collect())
            .await?;
        for loc in drop_blobs.iter().chain(&drop_ckpt).chain(&drop_kv) {
            store.delete_at(loc).await?;
        }
        let _ = std::fs::remove_dir_all(state.join("cache").join("trees"));
        let _ = std::fs::remove_dir_all(state.join("work"));
    }
    println!(
        "gc {}: {verb} {} result(s), {} blob(s){}, {} checkpoint(s), {} kv record(s); kept {} result(s), {} blob(s), {} kv record(s) ({} root result(s) from runs and pins)",
        store.url(),
        drop_results.len(),
        drop_blobs.len(),
        if freed > 0 {
            format!(" ({:.1} MiB)", freed as f64 / 1048576.0)
        } else {
            String::new()
        },
        drop_ckpt.len(),
        drop_kv.len(),
        kept_results,
        kept_blobs,
        kept_kv,
        roots.len()
    );
    Ok(EXIT_OK)
}

async fn cmd_pin(state: &Path, run_id: &str, name: Option<String>) -> Result<i32, Fail> {
    let j = RedbJournal::open(&journal_path(state))?;
    let run = j
        .run(run_id)?
        .ok_or_else(|| Fail::usage(format!("no run `{run_id}`")))?;
    drop(j);
    let store = open_store(state, &run.store)?;
    let summary: RunSummary = store
        .read_json_at(&format!("runs/{run_id}.json"), "run summary")
        .await?
        .ok_or_else(|| {
            Fail::usage(format!(
                "run `{run_id}` has no summary in the store (did it finish?)"
            ))
        })?;
    let name = name.unwrap_or_else(|| run_id.to_string());
    store
        .put_pin(&Pin {
            name: name.clone(),
            results: summary.results.clone(),
            created_ms: now_ms(),
        })
        .await?;
    println!(
        "pinned {} result(s) of run {run_id} as `{name}`",
        summary.results.len()
    );
    Ok(EXIT_OK)
}

/// Does instance `name` belong to task `task` (`train`, `train[arm]`, `rl[3].train[arm]`)?
fn instance_of(name: &str, task: &str) -> bool {
    let base = name.split('[').next().unwrap_or(name);
    let last = name.rsplit('.').next().unwrap_or(name);
    let last = last.split('[').next().unwrap_or(last);
    name == task || base == task || last == task
}

/// A name (an instance name holds arm names, which may hold anything) as one path
/// component: `/` and NUL become `_`, and `.`/`..` get a `_` in front.
fn path_component(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        format!("_{s}")
    } else {
        s
    }
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    if src.is_dir() {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            n += copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else {
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        // A copy, never a link: the cache's files are the store's blobs.
        let _ = std::fs::remove_file(dst);
        std::fs::copy(src, dst)?;
        n += 1;
    }
    Ok(n)
}

async fn cmd_export(
    state: &Path,
    run_id: Option<String>,
    task: Option<String>,
    kind: Option<String>,
    output: Option<String>,
    to: Option<std::path::PathBuf>,
    print_tables: bool,
) -> Result<i32, Fail> {
    let j = RedbJournal::open(&journal_path(state)).map_err(|e| match e {
        JournalError::Locked { .. } => {
            Fail::env("a run is in progress in this state directory; export after it ends")
        }
        e => e.into(),
    })?;
    let run = match &run_id {
        Some(id) => j
            .run(id)?
            .ok_or_else(|| Fail::usage(format!("no run `{id}` (see `cocoflow runs`)")))?,
        None => j
            .runs()?
            .pop()
            .ok_or_else(|| Fail::usage("no runs yet in this state directory"))?,
    };
    drop(j);
    let store = open_store(state, &run.store)?;
    let summary: RunSummary = store
        .read_json_at(&format!("runs/{}.json", run.id), "run summary")
        .await?
        .ok_or_else(|| {
            Fail::usage(format!(
                "run `{}` has no summary in the store (did it finish?)",
                run.id
            ))
        })?;
    let dest = to.unwrap_or_else(|| {
        Path::new(if print_tables { "reports" } else { "exports" }).join(&run.id)
    });
    let mut written = 0usize;
    let mut tables = Vec::new();
    for key in &summary.results {
        let Some(r) = store.get_result(key).await? else {
            continue;
        };
        if task.as_deref().is_some_and(|t| !instance_of(&r.name, t))
            || kind.as_deref().is_some_and(|k| r.kind != k)
        {
            continue;
        }
        for (name, artifact) in &r.outputs {
            if output.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let src = store.artifact_file(artifact).await?;
            let dst = dest
                .join(path_component(&r.name))
                .join(path_component(name));
            let n = copy_tree(&src, &dst)
                .map_err(|e| Fail::env(format!("cannot write `{}`: {e}", dst.display())))?;
            println!("{} {} → {} ({n} file(s))", r.name, name, dst.display());
            written += 1;
            let t = dst.join("table.md");
            if print_tables && t.is_file() {
                tables.push(t);
            }
        }
    }
    if written == 0 {
        let what = match (&task, &kind) {
            (Some(t), _) => format!("task `{t}`"),
            (None, Some(k)) => format!("kind `{k}`"),
            _ => "any task".into(),
        };
        return Err(Fail::usage(format!(
            "run `{}` has no finished outputs of {what}{}",
            run.id,
            output.map(|o| format!(" named `{o}`")).unwrap_or_default()
        )));
    }
    for t in tables {
        println!();
        print!("{}", std::fs::read_to_string(&t).unwrap_or_default());
    }
    Ok(EXIT_OK)
}

async fn cmd_unpin(state: &Path, name: &str) -> Result<i32, Fail> {
    let store = store_of_latest(state, None).await?;
    if store.delete_pin(name).await? {
        println!("removed pin `{name}`");
        Ok(EXIT_OK)
    } else {
        Err(Fail::usage(format!("no pin `{name}`")))
    }
}
