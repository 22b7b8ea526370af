//! The run journal: runs, each instance's state, attempts, timings and errors, and an
//! append-only event log — behind the small [`Journal`] trait, stored in redb. Every batch
//! of state changes is appended to the write-ahead log ([`wal`]) before the actions it
//! describes are carried out (a process crash cannot lose it) and fsynced in groups; the
//! next process that opens the journal (the next run, `status`, ...) folds it into redb in
//! one durable transaction ([`db`]).

mod db;
mod wal;

pub use db::RedbJournal;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// Found `running` but its process is gone (killed, crashed).
    Crashed,
}

impl RunStatus {
    pub fn label(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Crashed => "crashed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    pub workflow_name: String,
    /// `--set` overrides, as given.
    pub overrides: Vec<String>,
    pub targets: Vec<String>,
    pub store: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub status: RunStatus,
    pub pid: u32,
    pub host: String,
    pub instances: usize,
    pub cached: usize,
    /// Extra CLI options needed to resume exactly (`--gpus`, `--executor`, ...).
    #[serde(default)]
    pub options: serde_json::Value,
    /// Models the run's attempts loaded from disk (the rest came from a process's cache).
    #[serde(default)]
    pub model_loads: u64,
    /// Worker processes the run started (`workers` executor).
    #[serde(default)]
    pub workers_started: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Position in the plan (topological order), for display.
    #[serde(default)]
    pub seq: usize,
    pub key: String,
    pub name: String,
    pub kind: String,
    pub state: String,
    pub attempts: u32,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub error: Option<String>,
    pub gpus: Vec<u32>,
    pub log: Option<String>,
}

/// One state change, as appended to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEvent {
    pub t_ms: u64,
    pub key: String,
    pub name: String,
    pub state: String,
    pub attempt: u32,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "the run journal `{path}` is in use by another cocoflow process (one run per state directory at a time)"
    )]
    Locked { path: String },
    #[error("run journal `{path}`: {source}")]
    Db { path: String, source: redb::Error },
    #[error("no run `{0}` in the journal")]
    NoSuchRun(String),
    #[error("run journal record is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("run journal log `{path}`: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, JournalError>;

/// Storage of runs and instance states.
pub trait Journal: Send {
    fn put_run(&mut self, run: &RunRecord) -> Result<()>;
    /// Appends events and updates instance records in one durable transaction.
    fn record(
        &mut self,
        run: &str,
        events: &[JournalEvent],
        updates: &[InstanceRecord],
    ) -> Result<()>;
    fn run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// All runs, oldest first.
    fn runs(&self) -> Result<Vec<RunRecord>>;
    fn instances(&self, run: &str) -> Result<Vec<InstanceRecord>>;
    fn events(&self, run: &str) -> Result<Vec<JournalEvent>>;
    /// Folds everything recorded so far into the journal's main store now. Records are
    /// safe from a process crash without it (the write-ahead log holds them).
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Whether a process id is alive on this host.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    pid != 0 && unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: "w.yaml".into(),
            workflow_name: "w".into(),
            overrides: vec![],
            targets: vec![],
            store: "memory://".into(),
            started_ms: 1,
            finished_ms: None,
            status: RunStatus::Running,
            pid: 1,
            host: "h".into(),
            instances: 2,
            cached: 0,
            options: serde_json::Value::Null,
            model_loads: 0,
            workers_started: 0,
        }
    }

    #[test]
    fn records_survive_reopen_and_runs_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let mut j = RedbJournal::open(&path).unwrap();
            assert!(matches!(
                RedbJournal::open(&path),
                Err(JournalError::Locked { .. })
            ));
            j.put_run(&rec("a")).unwrap();
            j.put_run(&rec("b")).unwrap();
            let ev = JournalEvent {
                t_ms: 1,
                key: "k1".into(),
                name: "t".into(),
                state: "running".into(),
                attempt: 1,
                error: None,
            };
            let ir = InstanceRecord {
                seq: 0,
                key: "k1".into(),
                name: "t".into(),
                kind: "noop".into(),
                state: "running".into(),
                attempts: 1,
                started_ms: Some(1),
                finished_ms: None,
                error: None,
                gpus: vec![],
                log: None,
            };
            j.record("a", &[ev.clone(), ev.clone()], &[ir.clone()])
                .unwrap();
            j.record("b", &[ev], &[]).unwrap();
        }
        let j = RedbJournal::open(&path).unwrap();
        assert_eq!(j.runs().unwrap().len(), 2);
        assert_eq!(j.events("a").unwrap().len(), 2);
        assert_eq!(j.events("b").unwrap().len(), 1);
        assert_eq!(j.instances("a").unwrap().len(), 1);
        assert!(j.instances("b").unwrap().is_empty());
    }

    fn event(state: &str) -> JournalEvent {
        JournalEvent {
            t_ms: 1,
            key: "k1".into(),
            name: "t".into(),
            state: state.into(),
            attempt: 1,
            error: None,
        }
    }

    /// A log left behind by a process that died before folding it (kill -9) is replayed on
    /// the next open, exactly once: a log that was folded but not yet removed when the
    /// process died adds nothing again.
    #[test]
    fn a_log_left_by_a_crash_is_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = dir.path().join("crashed");
        std::fs::create_dir_all(&crashed).unwrap();
        let path = dir.path().join("j.redb");
        {
            let mut j = RedbJournal::open(&path).unwrap();
            j.put_run(&rec("a")).unwrap();
            j.record("a", &[event("running")], &[]).unwrap();
            j.checkpoint().unwrap();
            j.record("a", &[event("succeeded")], &[]).unwrap();
            let mut r = rec("a");
            r.status = RunStatus::Succeeded;
            j.put_run(&r).unwrap();
            // The process dies here: the log is on disk, redb holds only the first fold.
            std::fs::copy(&path, crashed.join("j.redb")).unwrap();
            std::fs::copy(path.with_extension("wal"), crashed.join("j.wal")).unwrap();
        }
        let j = RedbJournal::open(&crashed.join("j.redb")).unwrap();
        assert!(
            !crashed.join("j.wal").exists(),
            "the log is removed once folded"
        );
        let states: Vec<String> = j
            .events("a")
            .unwrap()
            .into_iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(states, ["running", "succeeded"]);
        assert_eq!(j.run("a").unwrap().unwrap().status, RunStatus::Succeeded);
        drop(j);

        // Folded, then killed before the log was removed: nothing is applied twice.
        {
            let mut j = RedbJournal::open(&path).unwrap();
            j.record("a", &[event("cached")], &[]).unwrap();
            std::fs::copy(path.with_extension("wal"), dir.path().join("keep.wal")).unwrap();
            j.checkpoint().unwrap();
        }
        std::fs::copy(dir.path().join("keep.wal"), path.with_extension("wal")).unwrap();
        let j = RedbJournal::open(&path).unwrap();
        let states: Vec<String> = j
            .events("a")
            .unwrap()
            .into_iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(states, ["running", "succeeded", "cached"]);
    }
}
