//! [`RedbJournal`]: the journal in redb (`<state>/journal.redb`) behind its write-ahead log
//! (`<state>/journal.wal`, [`super::wal`]). One process at a time holds the journal: an
//! exclusive `flock` on `<state>/journal.lock`. A run writes only the log; redb is opened
//! when something must be read or folded: by the next process that opens the journal (which
//! folds the log a run left behind), by reads, and when the log passes 64 MiB. Opening and
//! closing redb for writing costs fsyncs of its own, so a run that needs nothing from it
//! never opens it.
//!
//! Tables: `runs` (id → run record JSON); `instance_sets` (run → its instance records) and
//! `event_chunks` ((run, n) → events), one value per run and per fold rather than one per
//! record, in the log's binary form ([`wal::encode_instances`]), so folding a 10,000-task
//! run is a handful of inserts and no JSON;
//! `meta` (`wal` → the id of the last log folded in and the offset folded up to). Journals
//! written before the log existed keep `instances` ((run, key) → record) and `events`
//! ((run, n) → event), which are still read.

use super::wal;
use super::{InstanceRecord, Journal, JournalError, JournalEvent, Result, RunRecord};
use redb::{ReadableDatabase, ReadableTable};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const RUNS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("runs");
const INSTANCE_SETS: redb::TableDefinition<&str, &[u8]> =
    redb::TableDefinition::new("instance_sets");
const EVENT_CHUNKS: redb::TableDefinition<(&str, u64), &[u8]> =
    redb::TableDefinition::new("event_chunks");
const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
/// Earlier layout (read only).
const INSTANCES: redb::TableDefinition<(&str, &str), &[u8]> =
    redb::TableDefinition::new("instances");
const EVENTS: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("events");

/// A table of a read transaction; `None` until a fold first wrote to it.
fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    t: &redb::ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> std::result::Result<Option<redb::ReadOnlyTable<K, V>>, redb::Error> {
    match t.open_table(def) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The redb-backed journal with its write-ahead log. When it is dropped, its log stays for
/// the next process that opens the journal to fold (the log's own drop syncs it): a run
/// then never pays redb's fsyncs of opening, committing and closing for itself.
pub struct RedbJournal {
    /// Opened on first use.
    db: std::sync::OnceLock<redb::Database>,
    db_path: PathBuf,
    /// Held (flock) while this value lives.
    _lock: std::fs::File,
    path: String,
    wal_path: PathBuf,
    sync_ms: u64,
    /// The open log and what it holds that redb does not yet.
    log: std::sync::Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    wal: Option<wal::Wal>,
    pending: Pending,
}

/// Records appended to the log since the last fold.
#[derive(Default)]
struct Pending {
    /// Run id → run record JSON.
    runs: HashMap<String, Vec<u8>>,
    events: HashMap<String, Vec<JournalEvent>>,
    /// Run id → instance key → its latest record.
    instances: HashMap<String, HashMap<String, InstanceRecord>>,
    /// Roughly how much this holds.
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
            } => self.add_record(&run, events, updates.into_iter()),
        }
    }

    fn add_record(
        &mut self,
        run: &str,
        events: Vec<JournalEvent>,
        updates: impl Iterator<Item = InstanceRecord>,
    ) {
        self.bytes += 100 * events.len();
        if !events.is_empty() {
            match self.events.get_mut(run) {
                Some(v) => v.extend(events),
                None => {
                    self.events.insert(run.to_string(), events);
                }
            }
        }
        let mut updates = updates.peekable();
        if updates.peek().is_none() {
            return;
        }
        if !self.instances.contains_key(run) {
            self.instances.insert(run.to_string(), HashMap::new());
        }
        let map = self.instances.get_mut(run).expect("inserted");
        for u in updates {
            self.bytes += 150;
            map.insert(u.key.clone(), u);
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

    /// Whether a journal was ever opened at `path` (redb is created only once something is
    /// folded into it; a run leaves its log and lock file first).
    pub fn exists(path: &Path) -> bool {
        path.exists() || path.with_extension("wal").exists() || path.with_extension("lock").exists()
    }

    /// Opens (or creates) the journal and folds a log an earlier process left behind.
    pub fn open(path: &Path) -> Result<RedbJournal> {
        let p = path.display().to_string();
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| JournalError::Log {
                path: lock_path.display().to_string(),
                source: e,
            })?;
        use std::os::fd::AsRawFd as _;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(JournalError::Locked { path: p });
        }
        let j = RedbJournal {
            db: std::sync::OnceLock::new(),
            db_path: path.to_path_buf(),
            _lock: lock,
            path: p,
            wal_path: path.with_extension("wal"),
            sync_ms: wal::sync_ms(),
            log: Default::default(),
        };
        j.recover()?;
        Ok(j)
    }

    /// redb, opened (or created) on first use.
    fn db(&self) -> Result<&redb::Database> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let db = match redb::Database::create(&self.db_path) {
            Ok(db) => db,
            // An earlier cocoflow, which locked redb itself, holds it.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(JournalError::Locked {
                    path: self.path.clone(),
                });
            }
            Err(e) => {
                return Err(JournalError::Db {
                    path: self.path.clone(),
                    source: e.into(),
                });
            }
        };
        Ok(self.db.get_or_init(|| db))
    }

    fn db_err(&self) -> impl Fn(redb::Error) -> JournalError + '_ {
        move |source| JournalError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, table: &str, run: &str) -> JournalError {
        JournalError::Log {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("table `{table}` holds an unreadable value for run `{run}`"),
            ),
        }
    }

    fn io_err(&self, e: std::io::Error) -> JournalError {
        JournalError::Log {
            path: self.wal_path.display().to_string(),
            source: e,
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        let txn = self
            .db()?
            .begin_write()
            .map_err(|e| self.db_err()(e.into()))?;
        f(&txn).map_err(self.db_err())?;
        txn.commit().map_err(|e| self.db_err()(e.into()))
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let txn = self
            .db()?
            .begin_read()
            .map_err(|e| self.db_err()(e.into()))?;
        f(&txn).map_err(self.db_err())
    }

    /// Replays a log left by a process that ended without folding it (a crash), then
    /// removes it. A log folded before the crash (its id and end in `meta`) is not applied
    /// twice.
    fn recover(&self) -> Result<()> {
        let Some((id, _)) = wal::read(&self.wal_path, u64::MAX).map_err(|e| self.io_err(e))? else {
            return Ok(());
        };
        let from = self
            .read(|t| {
                let Some(meta) = table(t, META)? else {
                    return Ok(None);
                };
                Ok(meta.get("wal")?.map(|v| {
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
            self.fold(pending, Some((id, end)))?;
        }
        match std::fs::remove_file(&self.wal_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io_err(e)),
            _ => Ok(()),
        }
    }

    /// Writes pending records into redb in one durable transaction, with how far into
    /// which log that reaches.
    fn fold(&self, p: Pending, log_pos: Option<(u64, u64)>) -> Result<()> {
        // Encode outside the transaction; merge with what earlier folds stored.
        let mut sets: Vec<(String, Vec<u8>)> = Vec::with_capacity(p.instances.len());
        for (run, updates) in p.instances {
            let mut all: HashMap<String, InstanceRecord> = self
                .stored_instances(&run)?
                .into_iter()
                .map(|r| (r.key.clone(), r))
                .collect();
            all.extend(updates);
            let mut v: Vec<InstanceRecord> = all.into_values().collect();
            v.sort_by(|a, b| (a.seq, &a.key).cmp(&(b.seq, &b.key)));
            sets.push((run, wal::encode_instances(&v)));
        }
        let chunks: Vec<(String, Vec<u8>)> = p
            .events
            .into_iter()
            .map(|(run, events)| (run, wal::encode_events(&events)))
            .collect();
        self.write(|t| {
            let mut runs_t = t.open_table(RUNS)?;
            for (id, v) in &p.runs {
                runs_t.insert(id.as_str(), v.as_slice())?;
            }
            let mut sets_t = t.open_table(INSTANCE_SETS)?;
            for (run, v) in &sets {
                sets_t.insert(run.as_str(), v.as_slice())?;
            }
            let mut chunks_t = t.open_table(EVENT_CHUNKS)?;
            for (run, v) in &chunks {
                let next = chunks_t
                    .range((run.as_str(), 0u64)..=(run.as_str(), u64::MAX))?
                    .next_back()
                    .transpose()?
                    .map(|(k, _)| k.value().1 + 1)
                    .unwrap_or(0);
                chunks_t.insert((run.as_str(), next), v.as_slice())?;
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
    fn append(&self, body: &[u8], add: impl FnOnce(&mut Pending)) -> Result<()> {
        let mut log = self.log.lock().unwrap();
        if log.wal.is_none() {
            let w = wal::Wal::create(&self.wal_path, self.sync_ms).map_err(|e| self.io_err(e))?;
            log.wal = Some(w);
        }
        let w = log.wal.as_mut().expect("log open");
        w.append(body).map_err(|e| self.io_err(e))?;
        add(&mut log.pending);
        if log.pending.bytes > FOLD_BYTES {
            self.fold_log(&mut log)?;
        }
        Ok(())
    }

    /// Folds the open log into redb and removes it.
    fn fold_log(&self, log: &mut LogState) -> Result<()> {
        if let Some(w) = log.wal.take() {
            let pending = std::mem::take(&mut log.pending);
            if !pending.is_empty() {
                self.fold(pending, Some((w.id, w.len)))?;
            }
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

    /// Instance records as redb holds them (old rows, then the run's set over them).
    fn stored_instances(&self, run: &str) -> Result<Vec<InstanceRecord>> {
        let (rows, set): (Vec<Vec<u8>>, Option<Vec<u8>>) = self.read(|t| {
            let mut rows = Vec::new();
            if let Some(old) = table(t, INSTANCES)? {
                for item in old.range((run, "")..)? {
                    let (k, v) = item?;
                    if k.value().0 != run {
                        break;
                    }
                    rows.push(v.value().to_vec());
                }
            }
            let set = match table(t, INSTANCE_SETS)? {
                Some(sets) => sets.get(run)?.map(|v| v.value().to_vec()),
                None => None,
            };
            Ok((rows, set))
        })?;
        let mut v: Vec<InstanceRecord> = rows
            .iter()
            .map(|b| serde_json::from_slice(b))
            .collect::<std::result::Result<_, _>>()?;
        if let Some(set) = set {
            let set =
                wal::decode_instances(&set).ok_or_else(|| self.corrupt("instance_sets", run))?;
            if v.is_empty() {
                v = set;
            } else {
                let mut by_key: HashMap<String, InstanceRecord> =
                    v.into_iter().map(|r| (r.key.clone(), r)).collect();
                by_key.extend(set.into_iter().map(|r| (r.key.clone(), r)));
                v = by_key.into_values().collect();
            }
        }
        v.sort_by(|a, b| (a.seq, &a.key).cmp(&(b.seq, &b.key)));
        Ok(v)
    }
}

impl Journal for RedbJournal {
    fn put_run(&mut self, run: &RunRecord) -> Result<()> {
        let json = serde_json::to_vec(run)?;
        let body = wal::encode_run(&json);
        let id = run.id.clone();
        self.append(&body, move |p| {
            p.bytes += json.len();
            p.runs.insert(id, json);
        })
    }

    fn record(
        &mut self,
        run: &str,
        events: &[JournalEvent],
        updates: &[InstanceRecord],
    ) -> Result<()> {
        let body = wal::encode_record(run, events, updates);
        self.append(&body, |p| {
            p.add_record(run, events.to_vec(), updates.iter().cloned())
        })
    }

    fn checkpoint(&mut self) -> Result<()> {
        let mut log = self.log.lock().unwrap();
        self.fold_log(&mut log)
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.settle()?;
        let bytes = self.read(|t| match table(t, RUNS)? {
            Some(runs) => Ok(runs.get(id)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        })?;
        Ok(match bytes {
            Some(b) => Some(serde_json::from_slice(&b)?),
            None => None,
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>> {
        self.settle()?;
        let all: Vec<Vec<u8>> = self.read(|t| {
            let mut out = Vec::new();
            if let Some(runs) = table(t, RUNS)? {
                for item in runs.iter()? {
                    out.push(item?.1.value().to_vec());
                }
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
        self.stored_instances(run)
    }

    fn events(&self, run: &str) -> Result<Vec<JournalEvent>> {
        self.settle()?;
        let (rows, chunks): (Vec<Vec<u8>>, Vec<Vec<u8>>) = self.read(|t| {
            let mut rows = Vec::new();
            if let Some(old) = table(t, EVENTS)? {
                for item in old.range((run, 0u64)..=(run, u64::MAX))? {
                    rows.push(item?.1.value().to_vec());
                }
            }
            let mut chunks = Vec::new();
            if let Some(c) = table(t, EVENT_CHUNKS)? {
                for item in c.range((run, 0u64)..=(run, u64::MAX))? {
                    chunks.push(item?.1.value().to_vec());
                }
            }
            Ok((rows, chunks))
        })?;
        let mut out: Vec<JournalEvent> = rows
            .iter()
            .map(|b| serde_json::from_slice(b))
            .collect::<std::result::Result<_, _>>()?;
        for c in chunks {
            out.extend(wal::decode_events(&c).ok_or_else(|| self.corrupt("event_chunks", run))?);
        }
        Ok(out)
    }
}
