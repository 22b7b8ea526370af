//! `in-process`: attempts run on a fixed pool of threads of this process and share one
//! [`ModelCache`]. Fast (no process start), no isolation: a task that crashes the process takes
//! the run with it (its journal and store stay consistent; re-run resumes). An attempt whose
//! kind says it is done in microseconds ([`crate::kind::TaskKind::inline`]: a `noop` without
//! a sleep) runs on the scheduler's thread instead, when the runtime has several threads;
//! `COCOFLOW_INPROCESS_INLINE=0` turns that off.

use super::{ExecEnv, ExecEvent, Executor, JobOutcome, Launch, Running, run_job};
use crate::kind::{ModelCache, ProgressSink, Registry};
use crate::store::Store;
use std::sync::Arc;

pub struct InProcess {
    registry: Arc<Registry>,
    store: Store,
    rt: tokio::runtime::Handle,
    models: Arc<ModelCache>,
    pool: ThreadPool,
    /// Run inline tasks on the calling thread (`COCOFLOW_INPROCESS_INLINE=0`: never; every
    /// task then goes through the pool, as `cocoflow bench noop` measures too).
    inline: bool,
}

impl InProcess {
    pub fn new(env: &ExecEnv) -> InProcess {
        InProcess {
            registry: env.registry.clone(),
            store: env.store.clone(),
            rt: env.rt.clone(),
            models: Arc::new(ModelCache::default()),
            pool: ThreadPool::new(threads()),
            inline: std::env::var("COCOFLOW_INPROCESS_INLINE").as_deref() != Ok("0"),
        }
    }
}

impl Executor for InProcess {
    fn model_loads(&self) -> u64 {
        self.models.loads()
    }

    fn name(&self) -> &'static str {
        "in-process"
    }

    fn launch(&self, l: Launch) -> Running {
        let running = Running::new();
        // A task that is done in microseconds runs right here, on the scheduler's thread: a
        // hand-off to the pool and back would cost two thread wake-ups, more than the task.
        // (Only on a multi-threaded runtime: a wait inside it can then give the thread's
        // other work away.)
        if l.inline
            && self.inline
            && matches!(
                self.rt.runtime_flavor(),
                tokio::runtime::RuntimeFlavor::MultiThread
            )
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let (id, attempt, tx) = (l.id, l.attempt, l.events);
            let ptx = tx.clone();
            let progress: ProgressSink = Arc::new(move |p| {
                let _ = ptx.send(ExecEvent::Progress { id, progress: p });
            });
            let ordinals = l.job.gpus.clone();
            let outcome = run_job(
                &l.job,
                &self.registry,
                &self.store,
                self.rt.clone(),
                progress,
                running.cancel_flag(),
                self.models.clone(),
                ordinals,
            );
            let _ = tx.send(ExecEvent::Done {
                id,
                attempt,
                outcome,
            });
            return running;
        }
        let (registry, store, models, handle) = (
            self.registry.clone(),
            self.store.clone(),
            self.models.clone(),
            self.rt.clone(),
        );
        let cancel = running.cancel_flag();
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(t) = l.timeout {
            let (r, flag) = (running.clone(), timed_out.clone());
            self.rt.spawn(async move {
                tokio::time::sleep(t).await;
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                r.cancel();
            });
        }
        let timeout = l.timeout;
        let (id, attempt, job, tx) = (l.id, l.attempt, l.job, l.events);
        let ptx = tx.clone();
        let progress: ProgressSink = Arc::new(move |p| {
            let _ = ptx.send(ExecEvent::Progress { id, progress: p });
        });
        self.pool.submit(Box::new(move || {
            let ordinals = job.gpus.clone();
            let outcome = run_job(
                &job,
                &registry,
                &store,
                handle,
                progress,
                cancel,
                models.clone(),
                ordinals,
            );
            let outcome = match outcome {
                JobOutcome::Cancelled if timed_out.load(std::sync::atomic::Ordering::Relaxed) => {
                    JobOutcome::Failed {
                        message: format!(
                            "timed out after {}",
                            crate::util::human_duration(timeout.unwrap_or_default())
                        ),
                        retryable: true,
                    }
                }
                o => o,
            };
            let _ = tx.send(ExecEvent::Done {
                id,
                attempt,
                outcome,
            });
        }));
        running
    }
}

/// Threads of the in-process executor. Tasks run here, not on tokio's blocking pool: a
/// task blocks on store I/O that itself needs blocking threads, so thousands of tasks on
/// the blocking pool could starve it (a deadlock seen with 10,000 no-op tasks).
fn threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::env::var("COCOFLOW_INPROCESS_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((2 * cores).max(8))
}

type Work = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking work from one queue; threads end when it is dropped.
struct ThreadPool {
    tx: std::sync::Mutex<Option<std::sync::mpsc::Sender<Work>>>,
}

impl ThreadPool {
    fn new(n: usize) -> ThreadPool {
        let (tx, rx) = std::sync::mpsc::channel::<Work>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("cocoflow-task-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().map(|r| r.recv());
                        match job {
                            Ok(Ok(work)) => work(),
                            _ => break,
                        }
                    }
                });
        }
        ThreadPool {
            tx: std::sync::Mutex::new(Some(tx)),
        }
    }

    fn submit(&self, work: Work) {
        if let Some(tx) = &*self.tx.lock().unwrap() {
            let _ = tx.send(work);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.tx.lock().unwrap().take();
    }
}
