//! The run journal: runs, each instance's state, attempts, timings and errors, and an
//! append-only event log — behind the small [`Journal`] trait, stored in redb. Every batch
//! of state changes is one durable transaction, committed before the actions it describes
//! are carried out.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
}

const RUNS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("runs");
const INSTANCES: redb::TableDefinition<(&str, &str), &[u8]> =
    redb::TableDefinition::new("instances");
const EVENTS: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("events");

/// The redb-backed journal (`<state>/journal.redb`).
pub struct RedbJournal {
    db: redb::Database,
    path: String,
}

impl RedbJournal {
    /// Opens the journal, waiting up to `wait` while it is locked. A process killed a moment
    /// ago can hold the lock a little longer through a child it forked that has not reached
    /// `exec` yet (which closes the descriptor); a live run holds it for good.
    pub fn open_waiting(path: &Path, wait: std::time::Duration) -> Result<RedbJournal> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::open(path) {
                Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => return other,
            }
        }
    }

    pub fn open(path: &Path) -> Result<RedbJournal> {
        let p = path.display().to_string();
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let db = match redb::Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(JournalError::Locked { path: p });
            }
            Err(e) => {
                return Err(JournalError::Db {
                    path: p,
                    source: e.into(),
                });
            }
        };
        let j = RedbJournal { db, path: p };
        // Create the tables so readers never see them missing.
        j.write(|t| {
            t.open_table(RUNS)?;
            t.open_table(INSTANCES)?;
            t.open_table(EVENTS)?;
            Ok(())
        })?;
        Ok(j)
    }

    fn db_err(&self) -> impl Fn(redb::Error) -> JournalError + '_ {
        move |source| JournalError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.db_err()(e.into()))?;
        f(&txn).map_err(self.db_err())?;
        txn.commit().map_err(|e| self.db_err()(e.into()))
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let txn = self.db.begin_read().map_err(|e| self.db_err()(e.into()))?;
        f(&txn).map_err(self.db_err())
    }
}

impl Journal for RedbJournal {
    fn put_run(&mut self, run: &RunRecord) -> Result<()> {
        let bytes = serde_json::to_vec(run)?;
        self.write(|t| {
            t.open_table(RUNS)?
                .insert(run.id.as_str(), bytes.as_slice())?;
            Ok(())
        })
    }

    fn record(
        &mut self,
        run: &str,
        events: &[JournalEvent],
        updates: &[InstanceRecord],
    ) -> Result<()> {
        let ev: Vec<Vec<u8>> = events
            .iter()
            .map(serde_json::to_vec)
            .collect::<std::result::Result<_, _>>()?;
        let up: Vec<(String, Vec<u8>)> = updates
            .iter()
            .map(|u| Ok((u.key.clone(), serde_json::to_vec(u)?)))
            .collect::<std::result::Result<_, serde_json::Error>>()?;
        self.write(|t| {
            let mut events_t = t.open_table(EVENTS)?;
            let mut seq = {
                let mut r = events_t.range((run, 0u64)..=(run, u64::MAX))?;
                r.next_back()
                    .transpose()?
                    .map(|(k, _)| k.value().1 + 1)
                    .unwrap_or(0)
            };
            for e in &ev {
                events_t.insert((run, seq), e.as_slice())?;
                seq += 1;
            }
            let mut inst = t.open_table(INSTANCES)?;
            for (k, v) in &up {
                inst.insert((run, k.as_str()), v.as_slice())?;
            }
            Ok(())
        })
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let bytes = self.read(|t| Ok(t.open_table(RUNS)?.get(id)?.map(|v| v.value().to_vec())))?;
        Ok(match bytes {
            Some(b) => Some(serde_json::from_slice(&b)?),
            None => None,
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>> {
        let all: Vec<Vec<u8>> = self.read(|t| {
            let table = t.open_table(RUNS)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                out.push(item?.1.value().to_vec());
            }
            Ok(out)
        })?;
        let mut runs: Vec<RunRecord> = all
            .iter()
            .map(|b| serde_json::from_slice(b))
            .collect::<std::result::Result<_, _>>()?;
        runs.sort_by(|a, b| (a.started_ms, &a.id).cmp(&(b.started_ms, &b.id)));
        Ok(runs)
    }

    fn instances(&self, run: &str) -> Result<Vec<InstanceRecord>> {
        let all: Vec<Vec<u8>> = self.read(|t| {
            let table = t.open_table(INSTANCES)?;
            let mut out = Vec::new();
            for item in table.range((run, "")..)? {
                let (k, v) = item?;
                if k.value().0 != run {
                    break;
                }
                out.push(v.value().to_vec());
            }
            Ok(out)
        })?;
        let mut v: Vec<InstanceRecord> = all
            .iter()
            .map(|b| serde_json::from_slice(b))
            .collect::<std::result::Result<_, _>>()?;
        v.sort_by_key(|r| r.seq);
        Ok(v)
    }

    fn events(&self, run: &str) -> Result<Vec<JournalEvent>> {
        let all: Vec<Vec<u8>> = self.read(|t| {
            let table = t.open_table(EVENTS)?;
            let mut out = Vec::new();
            for item in table.range((run, 0u64)..=(run, u64::MAX))? {
                out.push(item?.1.value().to_vec());
            }
            Ok(out)
        })?;
        Ok(all
            .iter()
            .map(|b| serde_json::from_slice(b))
            .collect::<std::result::Result<_, _>>()?)
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
}
