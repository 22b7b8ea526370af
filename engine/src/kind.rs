//! The task-kind API: what a kind declares (params, outputs, version) and the context it
//! runs in (inputs as local files, outputs into the store, progress, logs, checkpoints,
//! cancellation, a shared model cache). Kinds never see the scheduler.

pub mod model_cache;
pub mod typed;
pub mod workdirs;

pub use model_cache::ModelCache;

pub use typed::{Declared, Input, Kind, Typed};

use crate::store::{Artifact, InputRef, KvLog, ResultManifest, Store, StoreError};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A kind of task. Implementations are stateless; per-run state lives in [`TaskCtx`].
pub trait TaskKind: Send + Sync + 'static {
    /// The name used in workflow files (`kind: shell`).
    fn name(&self) -> &'static str;
    /// Bump when the kind's results change for the same params: old cache entries then miss.
    fn version(&self) -> u32;
    /// One line for `cocoflow kinds`.
    fn describe(&self) -> &'static str;
    /// Checks params and returns their canonical form (typed, defaults filled in), which
    /// is what the cache key hashes. Use [`typed_params`].
    fn check_params(&self, params: &Value) -> Result<Value, ParamError>;
    /// Names of the outputs an instance with these (checked) params produces.
    fn outputs(&self, params: &Value) -> Vec<String>;
    /// Checks the names of the inputs a task gives this kind.
    fn check_inputs(&self, _params: &Value, _inputs: &[&str]) -> Result<(), String> {
        Ok(())
    }
    /// Top-level param keys holding shell text. Templating never puts a value into them:
    /// each `${name}` becomes a quoted reference to an environment variable
    /// (`"${COCOFLOW_P_name}"`), and the rendered params carry the values under `vars`
    /// (variable → text). A kind that declares such keys accepts `vars` and exports each
    /// entry to the environment of the shell that runs the text.
    fn quoted_params(&self) -> &'static [&'static str] {
        &[]
    }
    /// Where the kind can run: anywhere, or only in a worker (it needs libtorch).
    fn placement(&self) -> Placement {
        Placement::Any
    }
    /// An instance with these (checked) params finishes in microseconds and never waits: no
    /// sleep, no input to read, outputs small enough to live in the manifest. The
    /// `in-process` executor then runs it on the scheduler's own thread instead of handing it
    /// to a pool thread and back (two thread wake-ups that cost more than the task; Airflow
    /// never sends an `EmptyOperator` to an executor for the same reason). Default: no.
    fn inline(&self, _params: &Value) -> bool {
        false
    }
    /// Params (a JSON Schema), inputs and outputs, for `cocoflow kinds --json`; `null` fields
    /// where the kind does not declare them.
    fn declaration(&self) -> Value {
        serde_json::json!({"params": null, "inputs": null, "outputs": null})
    }
    /// Does the work. Runs on a blocking thread (in-process) or in a child process.
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError>;
}

/// Where a kind's tasks can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// In this process or any other.
    Any,
    /// Only in the worker binary (`cocoflow-worker`: the kind needs libtorch); the front end
    /// knows the kind's params, inputs and outputs but cannot run it.
    Worker,
}

/// A param that does not fit the kind's schema: its key path and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub path: String,
    pub message: String,
}

/// Deserialises params into the kind's `#[serde(deny_unknown_fields)]` struct, reporting
/// the key path of a bad value, and returns the struct and its canonical JSON.
pub fn typed_params<P: DeserializeOwned + Serialize>(v: &Value) -> Result<(P, Value), ParamError> {
    let p: P = parse_params(v)?;
    let canonical = serde_json::to_value(&p).map_err(|e| ParamError {
        path: String::new(),
        message: e.to_string(),
    })?;
    Ok((p, canonical))
}

/// Deserialises params into the kind's struct (no copy of the JSON, no canonical form),
/// reporting the key path of a bad value.
pub fn parse_params<P: DeserializeOwned>(v: &Value) -> Result<P, ParamError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ParamError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Why a task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The task's own failure, in its words.
    #[error("{0}")]
    Failed(String),
    /// An input could not be read; corrupt or missing blobs make the producer run again.
    #[error("input `{input}`: {source}")]
    Input {
        input: String,
        producer: String,
        source: StoreError,
    },
    #[error("params: {0}")]
    Params(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl TaskError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TaskError {
        let context = context.into();
        move |source| TaskError::Io { context, source }
    }

    /// Whether a retry could help (everything but bad params and cancellation).
    pub fn retryable(&self) -> bool {
        !matches!(self, TaskError::Params(_) | TaskError::Cancelled)
    }
}

/// All kinds known to a binary.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn TaskKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The engine's own kinds: `noop`, `shell`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::kinds::register(&mut r);
        r
    }

    pub fn register(&mut self, kind: impl TaskKind) {
        self.kinds.insert(kind.name(), Arc::new(kind));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn TaskKind>> {
        self.kinds.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn TaskKind>> {
        self.kinds.values()
    }
}

/// One item of an input as the task sees it.
#[derive(Debug, Clone)]
pub struct InputItem {
    pub label: String,
    pub producer: String,
    pub output: String,
    pub artifact: Artifact,
}

/// Progress a task reports: `done` of `total` units, with an optional message.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    #[serde(default)]
    pub message: String,
}

pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Everything one attempt of one instance runs with.
pub struct TaskCtx {
    pub name: String,
    pub key: String,
    pub kind: String,
    pub kind_version: u32,
    pub run_id: String,
    pub attempt: u32,
    /// Checked, canonical params.
    pub params: Value,
    pub inputs: BTreeMap<String, Vec<InputItem>>,
    /// Concrete GPU ids granted (empty: run on the CPU).
    pub gpus: Vec<u32>,
    /// Units granted from named pools (e.g. `judge: 4` → use up to 4 concurrent requests).
    pub pools: BTreeMap<String, u32>,
    /// Scratch directory of this attempt (created on first use by [`TaskCtx::workdir`]).
    workdir: PathBuf,
    /// The directory [`TaskCtx::workdir`] handed out (`workdir`, or a reused one).
    workdir_used: std::sync::OnceLock<PathBuf>,
    pub log_path: PathBuf,
    /// CUDA device ordinals as this process sees them (differs from `gpus` in a worker
    /// process started with `CUDA_VISIBLE_DEVICES`).
    pub cuda_ordinals: Vec<u32>,
    /// The run's store, recording the key-value records this task uses into `kv_log`.
    store: Store,
    kv_log: KvLog,
    rt: tokio::runtime::Handle,
    outputs: BTreeMap<String, Artifact>,
    metrics: serde_json::Map<String, Value>,
    progress: ProgressSink,
    cancel: Arc<AtomicBool>,
    models: Arc<ModelCache>,
    started_ms: u64,
}

/// What an executor needs to build a [`TaskCtx`].
pub struct CtxParts {
    pub name: String,
    pub key: String,
    pub kind: String,
    pub kind_version: u32,
    pub run_id: String,
    pub attempt: u32,
    pub params: Value,
    pub inputs: BTreeMap<String, Vec<InputItem>>,
    pub gpus: Vec<u32>,
    pub pools: BTreeMap<String, u32>,
    pub workdir: PathBuf,
    pub log_path: PathBuf,
    pub cuda_ordinals: Vec<u32>,
    pub store: Store,
    pub rt: tokio::runtime::Handle,
    pub progress: ProgressSink,
    pub cancel: Arc<AtomicBool>,
    pub models: Arc<ModelCache>,
}

impl TaskCtx {
    pub fn new(p: CtxParts) -> TaskCtx {
        let kv_log = KvLog::default();
        TaskCtx {
            name: p.name,
            key: p.key,
            kind: p.kind,
            kind_version: p.kind_version,
            run_id: p.run_id,
            attempt: p.attempt,
            params: p.params,
            inputs: p.inputs,
            gpus: p.gpus,
            pools: p.pools,
            workdir: p.workdir,
            workdir_used: std::sync::OnceLock::new(),
            log_path: p.log_path,
            cuda_ordinals: p.cuda_ordinals,
            store: p.store.with_kv_log(kv_log.clone()),
            kv_log,
            rt: p.rt,
            outputs: BTreeMap::new(),
            metrics: serde_json::Map::new(),
            progress: p.progress,
            cancel: p.cancel,
            models: p.models,
            started_ms: crate::util::now_ms(),
        }
    }

    /// An empty scratch directory for this attempt, made (or reused, see [`workdirs`]) on
    /// first call; emptied or removed after success, kept after a failure.
    pub fn workdir(&self) -> Result<PathBuf, TaskError> {
        if let Some(d) = self.workdir_used.get() {
            return Ok(d.clone());
        }
        let d = workdirs::take(&self.workdir).map_err(TaskError::io(format!(
            "cannot create working directory `{}`",
            self.workdir.display()
        )))?;
        Ok(self.workdir_used.get_or_init(|| d).clone())
    }

    /// Whether [`TaskCtx::workdir`] was used (so there is something to clean up).
    pub fn workdir_used(&self) -> bool {
        self.workdir_used.get().is_some()
    }

    /// The directory [`TaskCtx::workdir`] handed out, if it was called.
    pub fn workdir_handed_out(&self) -> Option<PathBuf> {
        self.workdir_used.get().cloned()
    }

    /// Params as the kind's typed struct.
    pub fn params<P: DeserializeOwned + Serialize>(&self) -> Result<P, TaskError> {
        parse_params::<P>(&self.params)
            .map_err(|e| TaskError::Params(format!("`{}`: {}", e.path, e.message)))
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        wait_on(&self.rt, f)
    }

    fn one_input(&self, name: &str) -> Result<&InputItem, TaskError> {
        match self.inputs.get(name).map(Vec::as_slice) {
            Some([item]) => Ok(item),
            Some(items) => Err(TaskError::Failed(format!(
                "input `{name}` is a list of {} items; use `input_items`",
                items.len()
            ))),
            None => Err(TaskError::Failed(format!(
                "task `{}` has no input `{name}`",
                self.name
            ))),
        }
    }

    pub fn input_items(&self, name: &str) -> Result<&[InputItem], TaskError> {
        self.inputs
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| TaskError::Failed(format!("task `{}` has no input `{name}`", self.name)))
    }

    /// A local path holding the item (a file, or a directory for tree artifacts), verified.
    pub fn item_path(&self, input: &str, item: &InputItem) -> Result<PathBuf, TaskError> {
        self.block(self.store.artifact_file(&item.artifact))
            .map_err(|source| TaskError::Input {
                input: input.to_string(),
                producer: item.producer.clone(),
                source,
            })
    }

    pub fn input_path(&self, name: &str) -> Result<PathBuf, TaskError> {
        let item = self.one_input(name)?.clone();
        self.item_path(name, &item)
    }

    pub fn input_bytes(&self, name: &str) -> Result<Bytes, TaskError> {
        let item = self.one_input(name)?;
        self.block(self.store.read_artifact(&item.artifact))
            .map_err(|source| TaskError::Input {
                input: name.to_string(),
                producer: item.producer.clone(),
                source,
            })
    }

    pub fn output_bytes(&mut self, name: &str, bytes: impl Into<Bytes>) -> Result<(), TaskError> {
        let a = self.block(self.store.put_output(bytes.into()))?;
        self.outputs.insert(name.to_string(), a);
        Ok(())
    }

    pub fn output_file(&mut self, name: &str, path: &Path) -> Result<(), TaskError> {
        let a = self.block(self.store.put_file_output(path))?;
        self.outputs.insert(name.to_string(), a);
        Ok(())
    }

    pub fn output_dir(&mut self, name: &str, dir: &Path) -> Result<(), TaskError> {
        let a = self.block(self.store.put_dir(dir))?;
        self.outputs.insert(name.to_string(), a);
        Ok(())
    }

    pub fn metric(&mut self, name: &str, value: impl Into<Value>) {
        self.metrics.insert(name.to_string(), value.into());
    }

    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        (self.progress)(Progress {
            done,
            total,
            message: message.into(),
        });
    }

    /// Appends a line to the task's log (kept with its result; the file and its folder are
    /// created on the first line).
    pub fn log(&self, line: impl AsRef<str>) {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
        };
        let f = open().or_else(|e| match self.log_path.parent() {
            Some(dir) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                open()
            }
            _ => Err(e),
        });
        if let Ok(mut f) = f {
            let _ = writeln!(f, "{}", line.as_ref());
        }
    }

    /// Saves partial state under this instance's key; a re-run attempt can load it.
    pub fn checkpoint_save(&self, name: &str, bytes: impl Into<Bytes>) -> Result<(), TaskError> {
        Ok(self.block(self.store.put_checkpoint(&self.key, name, bytes.into()))?)
    }

    pub fn checkpoint_load(&self, name: &str) -> Result<Option<Bytes>, TaskError> {
        Ok(self.block(self.store.get_checkpoint(&self.key, name))?)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The progress reporter, for threads of the task ([`TaskCtx::progress`] from elsewhere).
    pub fn progress_sink(&self) -> ProgressSink {
        self.progress.clone()
    }

    /// The cancellation flag, for threads of the task ([`TaskCtx::is_cancelled`]).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Returns `Err(Cancelled)` once cancellation was requested: call between work units.
    pub fn check_cancelled(&self) -> Result<(), TaskError> {
        if self.is_cancelled() {
            Err(TaskError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The async runtime, for kinds that do async I/O (HTTP clients): `runtime().block_on(..)`.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    pub fn models(&self) -> &Arc<ModelCache> {
        &self.models
    }

    /// The run's store. Key-value records read or written through it (and through clones
    /// of it, e.g. a response cache) are listed in this task's result, which keeps them
    /// through `gc`.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks every declared output was produced, stores the log and returns the result
    /// manifest. The runner publishes it (with the others of its scheduling round, in one
    /// append), so the result becomes visible all at once and only after its blobs.
    pub fn finish(
        self,
        declared: &[String],
        inputs: BTreeMap<String, Vec<InputRef>>,
        host: &str,
    ) -> Result<ResultManifest, TaskError> {
        for o in declared {
            if !self.outputs.contains_key(o) {
                return Err(TaskError::Failed(format!(
                    "task `{}` finished without producing its output `{o}`",
                    self.name
                )));
            }
        }
        let log = match std::fs::read(&self.log_path) {
            Ok(b) if !b.is_empty() => Some(self.block(self.store.put_output(Bytes::from(b)))?),
            _ => None,
        };
        let kv_locations = self.kv_log.locations();
        let kv = if kv_locations.is_empty() {
            None
        } else {
            let listing = serde_json::to_vec(&kv_locations).expect("strings serialise");
            Some(self.block(self.store.put_output(Bytes::from(listing)))?)
        };
        let m = ResultManifest {
            key: self.key.clone(),
            kind: self.kind.clone(),
            kind_version: self.kind_version,
            name: self.name.clone(),
            params: self.params.clone(),
            inputs,
            outputs: self.outputs.clone(),
            metrics: self.metrics.clone(),
            log,
            kv,
            run_id: self.run_id.clone(),
            attempt: self.attempt,
            started_ms: self.started_ms,
            duration_ms: crate::util::now_ms().saturating_sub(self.started_ms),
            host: host.to_string(),
        };
        Ok(m)
    }
}

/// Waits for a store future from synchronous task code. One poll first: an inline output or
/// a cached lookup is ready at once, with no trip through the runtime. Otherwise on a thread of
/// a multi-threaded runtime (an inline task on the scheduler's thread) the wait hands the
/// thread's other work to the runtime first; elsewhere (pool threads, workers) it blocks on
/// the runtime `rt`.
pub(crate) fn wait_on<F: std::future::Future>(rt: &tokio::runtime::Handle, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let first = {
        // (in the runtime's context: a future may need it on its first poll)
        let _in_rt = rt.enter();
        f.as_mut().poll(&mut cx)
    };
    if let std::task::Poll::Ready(v) = first {
        return v;
    }
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| rt.block_on(f))
        }
        // (nothing here would drive this runtime's timers and I/O while it waits)
        Ok(_) => panic!(
            "a task waited on the store inside a single-threaded runtime; run it on a pool \
             thread (the in-process executor does) or in a worker"
        ),
        Err(_) => rt.block_on(f),
    }
}

#[cfg(test)]
mod wait_tests {
    use super::wait_on;
    use std::time::Duration;

    fn multi() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    async fn later(v: u32) -> u32 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        v
    }

    #[test]
    fn a_ready_future_and_a_pending_one_from_a_plain_thread() {
        let rt = multi();
        assert_eq!(wait_on(rt.handle(), async { 1 }), 1);
        // (the first poll needs the runtime's context: tokio's timer)
        assert_eq!(wait_on(rt.handle(), later(2)), 2);
    }

    #[test]
    fn a_pending_future_on_the_runtimes_own_threads() {
        let rt = multi();
        let h = rt.handle().clone();
        // The thread inside `Runtime::block_on` (where the runner runs inline tasks) ...
        assert_eq!(rt.block_on(async { wait_on(&h, later(3)) }), 3);
        // ... and a worker thread, while other tasks keep running.
        let ticker = rt.spawn(later(5));
        let h2 = h.clone();
        let v =
            rt.block_on(async move { tokio::spawn(async move { wait_on(&h2, later(4)) }).await });
        assert_eq!(v.unwrap(), 4);
        assert_eq!(rt.block_on(ticker).unwrap(), 5);
    }

    #[test]
    #[should_panic(expected = "single-threaded runtime")]
    fn a_pending_future_inside_a_current_thread_runtime_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let h = rt.handle().clone();
        rt.block_on(async { wait_on(&h, later(6)) });
    }
}
