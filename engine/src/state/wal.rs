//! The journal's write-ahead log (`<state>/journal.wal`): every batch of state changes is
//! appended as one framed record with a single `write`, before the runner acts on it. A
//! process crash (kill -9) cannot lose a write that returned (it is in the page cache);
//! `fdatasync` is grouped by time on a background thread (every `COCOFLOW_JOURNAL_SYNC_MS`,
//! default 50 ms; `0` syncs every record before returning, as one fsynced redb transaction
//! per batch used to) and once more when the log is closed. The records are folded into redb
//! in one durable transaction by the next process that opens the journal, before a read, and
//! when the log grows large.
//!
//! File: `cocoflow-wal v1\n` (16 bytes), the log's id (u64 LE), then records
//! `[u32 LE body length][8 bytes of BLAKE3(body)][body]`. Reading stops at the first record
//! that is incomplete or does not hash to its check (a write torn by a crash).
//!
//! Body: `1` + a run record's JSON, or `2` + run id + events + instance records in a
//! compact binary form (strings length-prefixed, integers little-endian): a round's records
//! cost a copy, not a JSON encoding; JSON is written once per fold.

use super::{InstanceRecord, JournalEvent};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const MAGIC: &[u8; 16] = b"cocoflow-wal v1\n";
pub(crate) const HEADER_LEN: u64 = 24;

/// One decoded log record.
#[derive(Debug, PartialEq)]
pub(crate) enum Entry {
    Run {
        id: String,
        json: Vec<u8>,
    },
    Record {
        run: String,
        events: Vec<JournalEvent>,
        updates: Vec<InstanceRecord>,
    },
}

pub(crate) fn encode_run(json: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(json.len() + 1);
    b.push(1);
    b.extend_from_slice(json);
    b
}

struct W(Vec<u8>);

impl W {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: &Option<String>) {
        match s {
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
            None => self.0.push(0),
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.0.push(1);
                self.u64(v);
            }
            None => self.0.push(0),
        }
    }
}

pub(crate) fn encode_record(
    run: &str,
    events: &[JournalEvent],
    updates: &[InstanceRecord],
) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(
        16 + run.len() + 96 * events.len() + 160 * updates.len(),
    ));
    w.0.push(2);
    w.str(run);
    write_events(&mut w, events);
    write_instances(&mut w, updates);
    w.0
}

/// Events in the log's binary form (also how redb stores them): a count, then each.
pub(crate) fn encode_events(events: &[JournalEvent]) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(4 + 96 * events.len()));
    write_events(&mut w, events);
    w.0
}

/// Instance records in the log's binary form (also how redb stores them).
pub(crate) fn encode_instances(records: &[InstanceRecord]) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(4 + 160 * records.len()));
    write_instances(&mut w, records);
    w.0
}

pub(crate) fn decode_events(b: &[u8]) -> Option<Vec<JournalEvent>> {
    let mut r = Reader { b, i: 0 };
    let v = read_events(&mut r)?;
    (r.i == b.len()).then_some(v)
}

pub(crate) fn decode_instances(b: &[u8]) -> Option<Vec<InstanceRecord>> {
    let mut r = Reader { b, i: 0 };
    let v = read_instances(&mut r)?;
    (r.i == b.len()).then_some(v)
}

fn write_events(w: &mut W, events: &[JournalEvent]) {
    w.u32(events.len() as u32);
    for e in events {
        // Destructured, so a new field cannot be left out of the log unnoticed.
        let JournalEvent {
            t_ms,
            key,
            name,
            state,
            attempt,
            error,
        } = e;
        w.u64(*t_ms);
        w.str(key);
        w.str(name);
        w.str(state);
        w.u32(*attempt);
        w.opt_str(error);
    }
}

fn write_instances(w: &mut W, records: &[InstanceRecord]) {
    w.u32(records.len() as u32);
    for r in records {
        let InstanceRecord {
            seq,
            key,
            name,
            kind,
            state,
            attempts,
            started_ms,
            finished_ms,
            error,
            gpus,
            log,
        } = r;
        w.u64(*seq as u64);
        w.str(key);
        w.str(name);
        w.str(kind);
        w.str(state);
        w.u32(*attempts);
        w.opt_u64(*started_ms);
        w.opt_u64(*finished_ms);
        w.opt_str(error);
        w.u32(gpus.len() as u32);
        for g in gpus {
            w.u32(*g);
        }
        w.opt_str(log);
    }
}

fn read_events(r: &mut Reader) -> Option<Vec<JournalEvent>> {
    let n = r.u32()? as usize;
    let mut events = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        events.push(JournalEvent {
            t_ms: r.u64()?,
            key: r.str()?,
            name: r.str()?,
            state: r.str()?,
            attempt: r.u32()?,
            error: r.opt_str()?,
        });
    }
    Some(events)
}

fn read_instances(r: &mut Reader) -> Option<Vec<InstanceRecord>> {
    let n = r.u32()? as usize;
    let mut updates = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        updates.push(InstanceRecord {
            seq: r.u64()? as usize,
            key: r.str()?,
            name: r.str()?,
            kind: r.str()?,
            state: r.str()?,
            attempts: r.u32()?,
            started_ms: r.opt_u64()?,
            finished_ms: r.opt_u64()?,
            error: r.opt_str()?,
            gpus: {
                let g = r.u32()? as usize;
                (0..g).map(|_| r.u32()).collect::<Option<Vec<u32>>>()?
            },
            log: r.opt_str()?,
        });
    }
    Some(updates)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let v = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(v)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            _ => Some(Some(self.str()?)),
        }
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            _ => Some(Some(self.u64()?)),
        }
    }
}

fn decode(body: &[u8]) -> Option<Entry> {
    match body.first()? {
        1 => {
            #[derive(serde::Deserialize)]
            struct Id {
                id: String,
            }
            let id: Id = serde_json::from_slice(&body[1..]).ok()?;
            Some(Entry::Run {
                id: id.id,
                json: body[1..].to_vec(),
            })
        }
        2 => {
            let mut r = Reader { b: body, i: 1 };
            let run = r.str()?;
            let events = read_events(&mut r)?;
            let updates = read_instances(&mut r)?;
            Some(Entry::Record {
                run,
                events,
                updates,
            })
        }
        _ => None,
    }
}

fn check(body: &[u8]) -> [u8; 8] {
    blake3::hash(body).as_bytes()[..8]
        .try_into()
        .expect("8 bytes")
}

/// What a log file holds: its id and the intact records after `from` (a byte offset,
/// [`HEADER_LEN`] for all), each with the offset just past it.
pub(crate) fn read(path: &Path, from: u64) -> std::io::Result<Option<(u64, Vec<(Entry, u64)>)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() < HEADER_LEN as usize || &bytes[..16] != MAGIC {
        // Created but never written (a crash right after `create`): nothing to replay.
        return Ok(Some((0, Vec::new())));
    }
    let id = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let mut out = Vec::new();
    let mut i = from.clamp(HEADER_LEN, bytes.len() as u64) as usize;
    while i + 12 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes")) as usize;
        let Some(body) = bytes.get(i + 12..i + 12 + n) else {
            break;
        };
        if check(body) != bytes[i + 4..i + 12] {
            break;
        }
        let Some(entry) = decode(body) else { break };
        i += 12 + n;
        out.push((entry, i as u64));
    }
    Ok(Some((id, out)))
}

/// An open log, appended to by the journal's owner only (the redb lock holder).
pub(crate) struct Wal {
    file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) id: u64,
    pub(crate) len: u64,
    sync_every_record: bool,
    dirty: Arc<AtomicBool>,
    syncer: Option<Syncer>,
}

struct Syncer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Wal {
    /// Starts a new log (replacing a stale one), with a background syncer every
    /// `sync_ms` ms, or syncing every record when `sync_ms` is 0.
    pub(crate) fn create(path: &Path, sync_ms: u64) -> std::io::Result<Wal> {
        let id = u64::from_le_bytes(
            blake3::hash(
                format!(
                    "{}-{}-{:?}",
                    std::process::id(),
                    crate::util::now_ms(),
                    std::time::Instant::now()
                )
                .as_bytes(),
            )
            .as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&id.to_le_bytes());
        f.write_all(&header)?;
        let file = Arc::new(f);
        let dirty = Arc::new(AtomicBool::new(true));
        let syncer = (sync_ms > 0).then(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let (file, dirty, stop2) = (file.clone(), dirty.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name("cocoflow-wal-sync".into())
                .spawn(move || {
                    let every = std::time::Duration::from_millis(sync_ms);
                    while !stop2.load(Ordering::Acquire) {
                        std::thread::park_timeout(every);
                        if dirty.swap(false, Ordering::AcqRel) {
                            let _ = file.sync_data();
                        }
                    }
                })
                .expect("spawn the journal's sync thread");
            Syncer { stop, thread }
        });
        Ok(Wal {
            file,
            path: path.to_path_buf(),
            id,
            len: HEADER_LEN,
            sync_every_record: sync_ms == 0,
            dirty,
            syncer,
        })
    }

    /// Appends one record with a single write (two when syncing every record).
    pub(crate) fn append(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(body.len() + 12);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&check(body));
        frame.extend_from_slice(body);
        (&*self.file).write_all(&frame)?;
        self.len += frame.len() as u64;
        if self.sync_every_record {
            self.file.sync_data()?;
        } else {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Stops the syncer and removes the file (its records are folded into redb).
    pub(crate) fn remove(mut self) -> std::io::Result<()> {
        self.stop_syncer();
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn stop_syncer(&mut self) {
        if let Some(s) = self.syncer.take() {
            s.stop.store(true, Ordering::Release);
            s.thread.thread().unpark();
            let _ = s.thread.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_syncer();
        if self.dirty.load(Ordering::Acquire) {
            let _ = self.file.sync_data();
        }
    }
}

/// The sync interval: `COCOFLOW_JOURNAL_SYNC_MS` (0 = every record), default 50 ms.
pub(crate) fn sync_ms() -> u64 {
    std::env::var("COCOFLOW_JOURNAL_SYNC_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> JournalEvent {
        JournalEvent {
            t_ms: 7,
            key: "k1".into(),
            name: "t[x=1]".into(),
            state: "failed".into(),
            attempt: 2,
            error: Some("exit 1: é".into()),
        }
    }

    fn instance() -> InstanceRecord {
        InstanceRecord {
            seq: 3,
            key: "k1".into(),
            name: "t[x=1]".into(),
            kind: "shell".into(),
            state: "running".into(),
            attempts: 2,
            started_ms: Some(5),
            finished_ms: None,
            error: None,
            gpus: vec![0, 3],
            log: Some("logs/r/t.2.log".into()),
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.wal");
        let mut w = Wal::create(&p, 0).unwrap();
        w.append(&encode_run(br#"{"id":"r1","x":1}"#)).unwrap();
        w.append(&encode_record("r1", &[event()], &[instance()]))
            .unwrap();
        let id = w.id;
        let len = w.len;
        drop(w);
        let (got_id, entries) = read(&p, HEADER_LEN).unwrap().unwrap();
        assert_eq!(got_id, id);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].1, len);
        assert_eq!(
            entries[1].0,
            Entry::Record {
                run: "r1".into(),
                events: vec![event()],
                updates: vec![instance()]
            }
        );
        // From an offset: only what follows.
        let (_, rest) = read(&p, entries[0].1).unwrap().unwrap();
        assert_eq!(rest.len(), 1);
        // A torn last record (cut short, then garbage) is not replayed; the rest is.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p, 0).unwrap().unwrap().1.len(), 1);
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        bytes.extend_from_slice(&[0; 40]);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p, 0).unwrap().unwrap().1.len(), 1);
    }
}
