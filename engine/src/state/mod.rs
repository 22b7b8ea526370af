//! The run journal: runs, each instance's state, attempts, timings and errors, and an
//! append-only event log — behind the small [`Journal`] trait, stored in redb. Every batch
//! of state changes is appended to the write-ahead log ([`wal`]) before the actions it
//! describes are carried out (a process crash cannot lose it), fsynced in groups, and
//! folded into redb in one durable transaction at the end of the run (or on the next open
//! after a crash).

mod wal;

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
    /// Makes everything recorded so far durable in the journal's main store (the runner
    /// calls it when a run ends). Records are safe from a process crash without it.
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }
}

const RUNS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("runs");
const INSTANCES: redb::TableDefinition<(&str, &str), &[u8]> =
    redb::TableDefinition::new("instances");
const EVENTS: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("events");
/// `wal` → the id of the last write-ahead log folded in and the offset folded up to (2 × u64 LE).
const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");

/// The redb-backed journal (`<state>/journal.redb`) with its write-ahead log
/// (`<state>/journal.wal`).
pub struct RedbJournal {
    db: redb::Database,
    path: String,
    wal_path: std::path::PathBuf,
    sync_ms: u64,
    /// The open log and what it holds that redb does not yet.
    log: std::sync::Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    wal: Option<wal::Wal>,
    pending: Pending,
}

/// Records appended to the log since the last fold, as the JSON values redb stores.
#[derive(Default)]
struct Pending {
    runs: std::collections::HashMap<String, Vec<u8>>,
    events: Vec<(String, Vec<u8>)>,
    /// The latest record of each (run, instance key).
    instances: std::collections::HashMap<(String, String), Vec<u8>>,
    bytes: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.events.is_empty() && self.instances.is_empty()
    }

    fn add(&mut self, e: wal::Entry) {
        match e {
            wal::Entry::Run { id, json } => {
                self.bytes += json.len();
                self.runs.insert(id, json);
            }
            wal::Entry::Record {
                run,
                events,
                updates,
            } => {
                for ev in events {
                    self.bytes += ev.len();
                    self.events.push((run.clone(), ev));
                }
                for (k, v) in updates {
                    self.bytes += v.len();
                    self.instances.insert((run.clone(), k), v);
                }
            }
        }
    }
}

/// Folds the log once it holds this much, so a crash never leaves much to replay.
const FOLD_BYTES: usize = 64 << 20;

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
        let j = RedbJournal {
            db,
            path: p,
            wal_path: path.with_extension("wal"),
            sync_ms: wal::sync_ms(),
            log: Default::default(),
        };
        // Create the tables once, so readers never see them missing.
        let fresh = j.read(|t| match t.open_table(META) {
            Ok(_) => Ok(false),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(true),
            Err(e) => Err(e.into()),
        })?;
        if fresh {
            j.write(|t| {
                t.open_table(RUNS)?;
                t.open_table(INSTANCES)?;
                t.open_table(EVENTS)?;
                t.open_table(META)?;
                Ok(())
            })?;
        }
        j.recover()?;
        Ok(j)
    }

    fn io_err(&self, e: std::io::Error) -> JournalError {
        JournalError::Log {
            path: self.wal_path.display().to_string(),
            source: e,
        }
    }

    /// Replays a log left by a process that ended without folding it (a crash), then
    /// removes it. A log folded before the crash (its id and end in `meta`) is not
    /// applied twice.
    fn recover(&self) -> Result<()> {
        let Some((id, _)) = wal::read(&self.wal_path, u64::MAX).map_err(|e| self.io_err(e))? else {
            return Ok(());
        };
        let from = self
            .read(|t| {
                Ok(t.open_table(META)?.get("wal")?.map(|v| {
                    let b = v.value();
                    (
                        u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                        u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
                    )
                }))
            })?
            .filter(|(done_id, _)| *done_id == id)
            .map(|(_, offset)| offset)
            .unwrap_or(0);
        let (_, entries) = wal::read(&self.wal_path, from)
            .map_err(|e| self.io_err(e))?
            .unwrap_or_default();
        if let Some(end) = entries.last().map(|(_, end)| *end) {
            let mut pending = Pending::default();
            for (e, _) in entries {
                pending.add(e);
            }
            self.fold(&pending, Some((id, end)))?;
        }
        match std::fs::remove_file(&self.wal_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io_err(e)),
            _ => Ok(()),
        }
    }

    /// Writes pending records into redb in one durable transaction, with how far into
    /// which log that reaches.
    fn fold(&self, p: &Pending, log_pos: Option<(u64, u64)>) -> Result<()> {
        self.write(|t| {
            let mut runs_t = t.open_table(RUNS)?;
            for (id, v) in &p.runs {
                runs_t.insert(id.as_str(), v.as_slice())?;
            }
            let mut events_t = t.open_table(EVENTS)?;
            let mut next: std::collections::HashMap<&str, u64> = Default::default();
            for (run, e) in &p.events {
                let seq = match next.get(run.as_str()) {
                    Some(&s) => s,
                    None => {
                        let mut r =
                            events_t.range((run.as_str(), 0u64)..=(run.as_str(), u64::MAX))?;
                        r.next_back()
                            .transpose()?
                            .map(|(k, _)| k.value().1 + 1)
                            .unwrap_or(0)
                    }
                };
                events_t.insert((run.as_str(), seq), e.as_slice())?;
                next.insert(run.as_str(), seq + 1);
            }
            let mut inst = t.open_table(INSTANCES)?;
            for ((run, k), v) in &p.instances {
                inst.insert((run.as_str(), k.as_str()), v.as_slice())?;
            }
            if let Some((id, offset)) = log_pos {
                let mut b = id.to_le_bytes().to_vec();
                b.extend_from_slice(&offset.to_le_bytes());
                t.open_table(META)?.insert("wal", b.as_slice())?;
            }
            Ok(())
        })
    }

    /// Appends one record to the log (starting a log if none is open).
    fn append(&self, body: &[u8], entry: wal::Entry) -> Result<()> {
        let mut log = self.log.lock().unwrap();
        if log.wal.is_none() {
            let w = wal::Wal::create(&self.wal_path, self.sync_ms).map_err(|e| self.io_err(e))?;
            log.wal = Some(w);
        }
        let w = log.wal.as_mut().expect("log open");
        w.append(body).map_err(|e| self.io_err(e))?;
        log.pending.add(entry);
        if log.pending.bytes > FOLD_BYTES {
            self.fold_log(&mut log)?;
        }
        Ok(())
    }

    /// Folds the open log into redb and removes it.
    fn fold_log(&self, log: &mut LogState) -> Result<()> {
        if let Some(w) = log.wal.take() {
            if !log.pending.is_empty() {
                self.fold(&log.pending, Some((w.id, w.len)))?;
            }
            log.pending = Pending::default();
            w.remove().map_err(|e| self.io_err(e))?;
        }
        Ok(())
    }

    /// Makes reads see every record appended so far.
    fn settle(&self) -> Result<()> {
        let mut log = self.log.lock().unwrap();
        if !log.pending.is_empty() {
            self.fold_log(&mut log)?;
        }
        Ok(())
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
        let json = serde_json::to_vec(run)?;
        let body = wal::encode_run(&json);
        self.append(
            &body,
            wal::Entry::Run {
                id: run.id.clone(),
                json,
            },
        )
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
        let up: Vec<(&str, Vec<u8>)> = updates
            .iter()
            .map(|u| Ok((u.key.as_str(), serde_json::to_vec(u)?)))
            .collect::<std::result::Result<_, serde_json::Error>>()?;
        let body = wal::encode_record(run, &ev, &up);
        let entry = wal::Entry::Record {
            run: run.to_string(),
            events: ev,
            updates: up.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        self.append(&body, entry)
    }

    fn checkpoint(&mut self) -> Result<()> {
        let mut log = self.log.lock().unwrap();
        self.fold_log(&mut log)
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.settle()?;
        let bytes = self.read(|t| Ok(t.open_table(RUNS)?.get(id)?.map(|v| v.value().to_vec())))?;
        Ok(match bytes {
            Some(b) => Some(serde_json::from_slice(&b)?),
            None => None,
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>> {
        self.settle()?;
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
        self.settle()?;
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
        self.settle()?;
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

impl Drop for RedbJournal {
    /// Folds what is left (best effort; a crash leaves it for the next open).
    fn drop(&mut self) {
        if let Ok(mut log) = self.log.lock() {
            let _ = self.fold_log(&mut log);
        }
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
