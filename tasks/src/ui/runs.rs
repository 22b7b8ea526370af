//! The runs API: the journal's runs (a live run from its snapshot, `runs/<id>.status.json`),
//! one run's instances, its event stream (SSE over the snapshot and the event log
//! `runs/<id>.events.jsonl`), instance logs and stored outputs.

use super::{Ctx, Resp, error, file, full, json};
use bytes::Bytes;
use cocoflow_engine::state::{
    InstanceRecord, Journal, JournalError, RedbJournal, RunRecord, RunStatus, pid_alive,
};
use http_body_util::{BodyExt, StreamBody};
use hyper::StatusCode;
use hyper::body::Frame;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub workflow: String,
    pub workflow_name: String,
    pub status: String,
    pub live: bool,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub instances: usize,
    pub cached: usize,
    pub store: String,
}

fn row(r: &RunRecord, status: &str, live: bool) -> RunRow {
    RunRow {
        id: r.id.clone(),
        workflow: r.workflow.clone(),
        workflow_name: r.workflow_name.clone(),
        status: status.into(),
        live,
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        instances: r.instances,
        cached: r.cached,
        store: r.store.clone(),
    }
}

/// A run as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    pub run: RunRecord,
    pub status: String,
    pub live: bool,
    pub instances: Vec<InstanceRecord>,
}

fn snapshot_path(state: &Path, run: &str) -> PathBuf {
    state.join("runs").join(format!("{run}.status.json"))
}

pub fn events_path(state: &Path, run: &str) -> PathBuf {
    state.join("runs").join(format!("{run}.events.jsonl"))
}

/// A run's live snapshot, if its process is alive (a run killed with SIGKILL leaves its
/// snapshot behind: that one is not live).
fn read_snapshot(path: &Path) -> Option<RunState> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let run: RunRecord = serde_json::from_value(v["run"].clone()).ok()?;
    let instances: Vec<InstanceRecord> = serde_json::from_value(v["instances"].clone()).ok()?;
    let alive = run.host != cocoflow_engine::runner::hostname() || pid_alive(run.pid);
    if !alive {
        return None;
    }
    Some(RunState {
        status: run.status.label().into(),
        run,
        live: true,
        instances,
    })
}

/// Every live run's snapshot.
fn snapshots(state: &Path) -> Vec<RunState> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(state.join("runs")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.ends_with(".status.json")
                && let Some(s) = read_snapshot(&e.path())
            {
                out.push(s);
            }
        }
    }
    out
}

/// The journal's status of a run: a `running` run found while nobody holds the journal has
/// no process left (crashed).
fn settled(r: &RunRecord) -> &'static str {
    if r.status == RunStatus::Running {
        "crashed"
    } else {
        r.status.label()
    }
}

enum FromJournal<T> {
    Read(T),
    /// A run holds it.
    Busy,
    Missing,
}

/// What identifies the journal's content: the modification times and sizes of its files (a
/// run appends to the log, a fold rewrites the database).
pub fn journal_stamp(state: &Path) -> Vec<(u128, u64)> {
    ["journal.redb", "journal.wal"]
        .iter()
        .map(|f| {
            std::fs::metadata(state.join(f))
                .map(|m| {
                    let t = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    (t, m.len())
                })
                .unwrap_or((0, 0))
        })
        .collect()
}

/// Opens the journal briefly (a run that starts meanwhile waits up to 2 s for it).
fn with_journal<T>(
    state: &Path,
    f: impl FnOnce(&RedbJournal) -> Result<T, JournalError>,
) -> Result<FromJournal<T>, String> {
    let path = state.join("journal.redb");
    if !RedbJournal::exists(&path) {
        return Ok(FromJournal::Missing);
    }
    match RedbJournal::open(&path) {
        Ok(j) => f(&j).map(FromJournal::Read).map_err(|e| e.to_string()),
        Err(JournalError::Locked { .. }) => Ok(FromJournal::Busy),
        Err(e) => Err(e.to_string()),
    }
}

/// The runs, newest first. The journal is opened only when its files changed since the last
/// read; while a run holds it, the last list read stands (plus the live snapshots).
pub fn read_runs(ctx: &Ctx) -> Result<Vec<RunRow>, String> {
    let stamp = journal_stamp(&ctx.state_dir);
    let cached = {
        let c = ctx.runs_cache.lock().expect("cache");
        (c.0 == stamp && !stamp.is_empty()).then(|| c.1.clone())
    };
    let mut rows = match cached {
        Some(rows) => rows,
        None => match with_journal(&ctx.state_dir, |j| {
            let runs = j.runs()?;
            let mut states = Vec::new();
            for r in &runs {
                states.push(RunState {
                    status: settled(r).into(),
                    instances: j.instances(&r.id)?,
                    run: r.clone(),
                    live: false,
                });
            }
            Ok(states)
        })? {
            FromJournal::Read(states) => {
                let rows: Vec<RunRow> = states
                    .iter()
                    .map(|s| row(&s.run, &s.status, false))
                    .collect();
                *ctx.runs_cache.lock().expect("cache") = (stamp, rows.clone());
                let mut rc = ctx.run_cache.lock().expect("cache");
                for st in states {
                    rc.insert(st.run.id.clone(), st);
                }
                rows
            }
            FromJournal::Busy => {
                let rows = ctx.runs_cache.lock().expect("cache").1.clone();
                if rows.is_empty() {
                    runs_from_store(ctx)
                } else {
                    rows
                }
            }
            FromJournal::Missing => Vec::new(),
        },
    };
    for s in snapshots(&ctx.state_dir) {
        let r = row(&s.run, &s.status, true);
        match rows.iter_mut().find(|x| x.id == r.id) {
            Some(x) => *x = r,
            None => rows.push(r),
        }
    }
    rows.sort_by(|a, b| (b.started_ms, &b.id).cmp(&(a.started_ms, &a.id)));
    Ok(rows)
}

/// A run's state now: its snapshot while it is live, else the journal (the last one read
/// while another run holds it).
pub fn read_run(ctx: &Ctx, run: &str) -> Result<Option<RunState>, String> {
    if let Some(s) = read_snapshot(&snapshot_path(&ctx.state_dir, run)) {
        return Ok(Some(s));
    }
    // Unchanged journal: the state read last time.
    let _ = read_runs(ctx);
    if ctx.runs_cache.lock().expect("cache").0 == journal_stamp(&ctx.state_dir)
        && let Some(s) = ctx.run_cache.lock().expect("cache").get(run)
    {
        return Ok(Some(s.clone()));
    }
    let got = with_journal(&ctx.state_dir, |j| {
        Ok(match j.run(run)? {
            Some(r) => Some(RunState {
                status: settled(&r).into(),
                instances: j.instances(&r.id)?,
                run: r,
                live: false,
            }),
            None => None,
        })
    })?;
    let mut cache = ctx.run_cache.lock().expect("cache");
    match got {
        FromJournal::Read(Some(s)) => {
            cache.insert(run.to_string(), s.clone());
            Ok(Some(s))
        }
        FromJournal::Read(None) | FromJournal::Missing => Ok(None),
        FromJournal::Busy => match cache.get(run) {
            Some(s) => Ok(Some(s.clone())),
            None => {
                drop(cache);
                match run_from_store(ctx, run) {
                    Some(s) => Ok(Some(s)),
                    None => Err(BUSY.into()),
                }
            }
        },
    }
}

// ---------------------------------------------------------------------------------------
// While a live run holds the journal and this server never read it (it started during the
// run): the finished runs come from the run summaries in the live runs' stores
// (`runs/<id>.json`: id, workflow name, status, times, the results it kept), their instances
// from those results' manifests (each `succeeded`; attempts, errors and failed instances are
// only in the journal).

fn live_store_urls(ctx: &Ctx) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for s in snapshots(&ctx.state_dir) {
        if !urls.contains(&s.run.store) {
            urls.push(s.run.store);
        }
    }
    urls
}

fn summaries(ctx: &Ctx) -> Vec<(String, cocoflow_engine::store::RunSummary)> {
    let h = tokio::runtime::Handle::current();
    let mut out = Vec::new();
    for url in live_store_urls(ctx) {
        let Ok(store) = ctx.store(&url) else { continue };
        h.block_on(async {
            for (loc, _) in store.list("runs").await.unwrap_or_default() {
                if let Ok(Some(s)) = store
                    .read_json_at::<cocoflow_engine::store::RunSummary>(&loc, "run summary")
                    .await
                {
                    out.push((url.clone(), s));
                }
            }
        });
    }
    out
}

fn summary_record(url: &str, s: &cocoflow_engine::store::RunSummary) -> RunRecord {
    let status = match s.status.as_str() {
        "succeeded" => RunStatus::Succeeded,
        "failed" => RunStatus::Failed,
        "interrupted" => RunStatus::Interrupted,
        _ => RunStatus::Crashed,
    };
    RunRecord {
        id: s.run_id.clone(),
        workflow: s.workflow.clone(),
        workflow_name: s.workflow.clone(),
        overrides: vec![],
        targets: vec![],
        store: url.into(),
        started_ms: s.started_ms,
        finished_ms: s.finished_ms,
        status,
        pid: 0,
        host: s.host.clone(),
        instances: s.results.len(),
        cached: 0,
        options: Value::Null,
        model_loads: 0,
        workers_started: 0,
    }
}

fn runs_from_store(ctx: &Ctx) -> Vec<RunRow> {
    summaries(ctx)
        .iter()
        .map(|(url, s)| {
            let r = summary_record(url, s);
            row(&r, r.status.label(), false)
        })
        .collect()
}

fn run_from_store(ctx: &Ctx, run: &str) -> Option<RunState> {
    let (url, s) = summaries(ctx).into_iter().find(|(_, s)| s.run_id == run)?;
    let store = ctx.store(&url).ok()?;
    let h = tokio::runtime::Handle::current();
    let mut instances = Vec::new();
    for (seq, key) in s.results.iter().enumerate() {
        if let Ok(Some(m)) = h.block_on(store.get_result(key)) {
            instances.push(InstanceRecord {
                seq,
                key: key.clone(),
                name: m.name,
                kind: m.kind,
                state: "succeeded".into(),
                attempts: 0,
                started_ms: None,
                finished_ms: None,
                error: None,
                gpus: vec![],
                log: None,
            });
        }
    }
    let r = summary_record(&url, &s);
    Some(RunState {
        status: r.status.label().into(),
        run: r,
        live: false,
        instances,
    })
}

/// While a live run holds the journal, a run this server never read cannot be shown.
pub const BUSY: &str = "a live run holds the journal and this run was not read before it started; try again when the run ends (or restart `cocoflow ui` then)";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

pub async fn list(ctx: &Arc<Ctx>) -> Resp {
    let c = ctx.clone();
    match blocking(move || read_runs(&c)).await {
        Ok(rows) => json(
            StatusCode::OK,
            &json!({"runs": rows, "state_dir": ctx.state_dir.display().to_string()}),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn run_or_404(ctx: &Arc<Ctx>, run: &str) -> Result<RunState, Resp> {
    let c = ctx.clone();
    let id = run.to_string();
    match blocking(move || read_run(&c, &id)).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no run `{run}` in `{}`", ctx.state_dir.display()),
        )),
        Err(e) if e == BUSY => Err(error(StatusCode::SERVICE_UNAVAILABLE, e)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

pub async fn detail(ctx: &Arc<Ctx>, run: &str) -> Resp {
    match run_or_404(ctx, run).await {
        Ok(s) => json(
            StatusCode::OK,
            &serde_json::to_value(&s).expect("serialises"),
        ),
        Err(r) => r,
    }
}

fn instance<'a>(s: &'a RunState, key: &str) -> Result<&'a InstanceRecord, Resp> {
    s.instances.iter().find(|i| i.key == key).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("run `{}` has no instance `{key}`", s.run.id),
        )
    })
}

pub async fn log(ctx: &Arc<Ctx>, run: &str, key: &str, q: &HashMap<String, String>) -> Resp {
    let s = match run_or_404(ctx, run).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let inst = match instance(&s, key) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let tail: u64 = q
        .get("tail")
        .and_then(|t| t.parse().ok())
        .unwrap_or(64 << 10)
        .min(1 << 20);
    // A running (or failed) attempt's log file under the state directory's `logs/` ...
    if let Some(path) = inst.log.clone() {
        let logs = ctx.state_dir.join("logs");
        let res = blocking(move || -> Option<Vec<u8>> {
            let root = logs.canonicalize().ok()?;
            let p = PathBuf::from(path).canonicalize().ok()?;
            if !p.starts_with(&root) {
                return None;
            }
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&p).ok()?;
            let len = f.metadata().ok()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(tail))).ok()?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).ok()?;
            Some(buf)
        })
        .await;
        if let Some(b) = res {
            return full(StatusCode::OK, "text/plain; charset=utf-8", b);
        }
    }
    // ... else the log kept with the stored result.
    let (c, r, k) = (ctx.clone(), run.to_string(), key.to_string());
    on_blocking_thread(move || async move {
        let (store, m) = match manifest_of(&c, &r, &k).await {
            Ok(x) => x,
            Err(_) => {
                return full(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "(no log lines yet)",
                );
            }
        };
        match &m.log {
            None => full(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "(the task wrote no log lines)",
            ),
            Some(a) => match store.read_artifact(a).await {
                Ok(b) => {
                    let from = b.len().saturating_sub(tail as usize);
                    full(StatusCode::OK, "text/plain; charset=utf-8", b.slice(from..))
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            },
        }
    })
    .await
}

async fn manifest_of(
    ctx: &Arc<Ctx>,
    run: &str,
    key: &str,
) -> Result<
    (
        cocoflow_engine::store::Store,
        cocoflow_engine::store::ResultManifest,
    ),
    Resp,
> {
    let s = run_or_404(ctx, run).await?;
    instance(&s, key)?;
    let store = ctx
        .store(&s.run.store)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    match store.get_result(key).await {
        Ok(Some(m)) => Ok((store, m)),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            format!("`{key}` has no stored result (yet)"),
        )),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

/// Runs a store-reading handler on a blocking thread: the store's futures are not `Send`
/// for every lifetime, which the server's connection tasks need.
async fn on_blocking_thread<F>(f: impl FnOnce() -> F + Send + 'static) -> Resp
where
    F: std::future::Future<Output = Resp>,
{
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || h.block_on(f()))
        .await
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
}

pub async fn outputs(ctx: &Arc<Ctx>, run: &str, key: &str) -> Resp {
    let (c, r, k) = (ctx.clone(), run.to_string(), key.to_string());
    on_blocking_thread(move || async move { outputs_here(&c, &r, &k).await }).await
}

pub async fn output_file(ctx: &Arc<Ctx>, run: &str, key: &str, output: &str, path: &str) -> Resp {
    let (c, r, k, o, p) = (
        ctx.clone(),
        run.to_string(),
        key.to_string(),
        output.to_string(),
        path.to_string(),
    );
    on_blocking_thread(move || async move { output_file_here(&c, &r, &k, &o, &p).await }).await
}

/// The largest file the dashboard serves (it is read whole).
const MAX_FILE: u64 = 256 << 20;

async fn outputs_here(ctx: &Arc<Ctx>, run: &str, key: &str) -> Resp {
    let (store, m) = match manifest_of(ctx, run, key).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut outs = serde_json::Map::new();
    for (name, a) in &m.outputs {
        let files: Vec<Value> = if a.tree {
            match store.read_tree(&a.digest).await {
                Ok(t) => t
                    .entries
                    .iter()
                    .map(|e| json!({"path": e.path, "size": e.size}))
                    .collect(),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        } else {
            Vec::new()
        };
        outs.insert(
            name.clone(),
            json!({"tree": a.tree, "size": a.size, "files": files}),
        );
    }
    json(
        StatusCode::OK,
        &json!({"key": m.key, "name": m.name, "kind": m.kind, "outputs": outs, "metrics": m.metrics}),
    )
}

async fn output_file_here(ctx: &Arc<Ctx>, run: &str, key: &str, output: &str, path: &str) -> Resp {
    let (store, m) = match manifest_of(ctx, run, key).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(a) = m.outputs.get(output) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`{}` has no output `{output}`", m.name),
        );
    };
    if !a.tree && a.size > MAX_FILE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "output `{output}` of `{}` is {} bytes; the dashboard shows files up to {MAX_FILE} bytes (`cocoflow export` copies it)",
                m.name, a.size
            ),
        );
    }
    let bytes: Result<Bytes, String> = if a.tree {
        match store.read_tree(&a.digest).await {
            Ok(t) => match t.entries.iter().find(|e| e.path == path) {
                Some(e) if e.size > MAX_FILE => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "`{path}` of output `{output}` is {} bytes; the dashboard shows files up to {MAX_FILE} bytes (`cocoflow export` copies it)",
                            e.size
                        ),
                    );
                }
                Some(e) => store.get_blob(&e.digest).await.map_err(|e| e.to_string()),
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!("output `{output}` has no file `{path}`"),
                    );
                }
            },
            Err(e) => Err(e.to_string()),
        }
    } else if path.is_empty() {
        store.read_artifact(a).await.map_err(|e| e.to_string())
    } else {
        return error(
            StatusCode::NOT_FOUND,
            format!("output `{output}` is one file, not a directory"),
        );
    };
    match bytes {
        Ok(b) => file(if path.is_empty() { output } else { path }, b),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

// ---------------------------------------------------------------------------------------
// The event stream.

struct Follow {
    ctx: Arc<Ctx>,
    run: String,
    last: String,
    live: bool,
    offset: u64,
    partial: Vec<u8>,
    ticks: u64,
    first: bool,
}

fn sse(event: &str, data: &str) -> Bytes {
    let mut s = format!("event: {event}\n");
    for line in data.lines() {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

impl Follow {
    /// What happened since the last call, as SSE frames.
    fn poll(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        // The state: every tick while live, every 5 s otherwise (a resumed run).
        if (self.first
            || self.live
            || self.ticks.is_multiple_of(20)
            || snapshot_path(&self.ctx.state_dir, &self.run).exists())
            && let Ok(Some(s)) = read_run(&self.ctx, &self.run)
        {
            {
                let text = serde_json::to_string(&s).expect("serialises");
                self.live = s.live;
                if text != self.last {
                    out.extend_from_slice(&sse("state", &text));
                    self.last = text;
                }
            }
        }
        // New lines of the event log.
        let path = events_path(&self.ctx.state_dir, &self.run);
        if let Ok(mut f) = std::fs::File::open(&path) {
            use std::io::{Read, Seek, SeekFrom};
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < self.offset {
                self.offset = 0;
                self.partial.clear();
            }
            if len > self.offset && f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = Vec::new();
                if f.take(4 << 20).read_to_end(&mut buf).is_ok() {
                    self.offset += buf.len() as u64;
                    self.partial.extend_from_slice(&buf);
                    while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.partial.drain(..=nl).collect();
                        // Re-serialised: one line, no CR, or dropped when it is not JSON.
                        if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                            out.extend_from_slice(&sse("run-event", &v.to_string()));
                        }
                    }
                }
            }
        }
        if out.is_empty() && self.ticks % 40 == 39 {
            out.extend_from_slice(b": ping\n\n");
        }
        self.first = false;
        self.ticks += 1;
        out
    }
}

pub async fn stream(ctx: Arc<Ctx>, run: String) -> Resp {
    if let Err(r) = run_or_404(&ctx, &run).await {
        return r;
    }
    let follow = Follow {
        ctx,
        run,
        last: String::new(),
        live: false,
        offset: 0,
        partial: Vec::new(),
        ticks: 0,
        first: true,
    };
    let frames = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if !f.first {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let (g, bytes) = blocking(move || {
                let b = f.poll();
                (f, b)
            })
            .await;
            f = g;
            if !bytes.is_empty() {
                return Some((
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(bytes))),
                    f,
                ));
            }
        }
    });
    let body = StreamBody::new(frames).boxed();
    let mut r = hyper::Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(body)
        .expect("a valid response");
    r.headers_mut()
        .insert("x-accel-buffering", "no".parse().expect("header"));
    r
}
