//! Result packs (`packs/<name>.pack`): many result manifests in one file, so publishing a
//! result costs an append, not a file. A run appends each scheduling round's results with
//! one `write` to its own pack (a `file://` store), or puts one pack object per round
//! (`s3://`, `memory://`). Packs are written by one process each and only appended to; `gc`
//! rewrites them.
//!
//! Format: `cocoflow-pack 1\n` (16 bytes), then records:
//! `[u16 LE header length][header][8 bytes of BLAKE3(header)][payload]`, the header being
//! `kind (1 result, 2 tombstone) · u64 LE t_ms · u32 LE payload length ·
//! 8 bytes of BLAKE3(payload) · key`. The payload of a result is its manifest's JSON; a
//! tombstone (a deleted result) has none. A record whose header does not hash to its check
//! ends the pack (a write torn by a crash); one whose payload does not is damaged (its
//! result counts as absent and `verify` reports it).
//!
//! The newest record of a key wins: later in the same pack, else the larger `t_ms`, then
//! the larger pack name.

use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub const MAGIC: &[u8; 16] = b"cocoflow-pack 1\n";
/// Where packs live in a store.
pub const DIR: &str = "packs";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Result = 1,
    Tombstone = 2,
}

fn check(b: &[u8]) -> [u8; 8] {
    blake3::hash(b).as_bytes()[..8].try_into().expect("8 bytes")
}

/// Appends one record to `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, t_ms: u64, key: &str, payload: &[u8]) {
    let mut h = Vec::with_capacity(21 + key.len());
    h.push(kind as u8);
    h.extend_from_slice(&t_ms.to_le_bytes());
    h.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    h.extend_from_slice(&check(payload));
    h.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&check(&h));
    out.extend_from_slice(payload);
}

/// One record as found in a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub t_ms: u64,
    pub key: String,
    /// Byte range of the payload in the pack.
    pub payload: std::ops::Range<usize>,
    /// The payload does not hash to its check.
    pub damaged: bool,
}

/// The records of a pack's bytes from `from` (0 or a record boundary), and the offset
/// after the last complete one. Stops at a record that is cut short or whose header is
/// damaged (`None` for bytes that are not a pack).
pub fn records(bytes: &[u8], from: usize) -> Option<(Vec<Record>, usize)> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut i = from.max(MAGIC.len());
    let mut out = Vec::new();
    loop {
        let Some(hl) = bytes.get(i..i + 2) else { break };
        let hl = u16::from_le_bytes(hl.try_into().expect("2 bytes")) as usize;
        if hl < 21 {
            break;
        }
        let (h0, h1) = (i + 2, i + 2 + hl);
        let (Some(h), Some(hc)) = (bytes.get(h0..h1), bytes.get(h1..h1 + 8)) else {
            break;
        };
        if check(h) != hc {
            break;
        }
        let kind = match h[0] {
            1 => Kind::Result,
            2 => Kind::Tombstone,
            _ => break,
        };
        let t_ms = u64::from_le_bytes(h[1..9].try_into().expect("8 bytes"));
        let n = u32::from_le_bytes(h[9..13].try_into().expect("4 bytes")) as usize;
        let Ok(key) = std::str::from_utf8(&h[21..]) else {
            break;
        };
        let p = h1 + 8..h1 + 8 + n;
        let Some(payload) = bytes.get(p.clone()) else {
            break;
        };
        out.push(Record {
            kind,
            t_ms,
            key: key.to_string(),
            damaged: check(payload) != h[13..21],
            payload: p.clone(),
        });
        i = p.end;
    }
    Some((out, i))
}

/// What the index knows of a key.
#[derive(Debug, Clone)]
pub enum Slot {
    /// The manifest's JSON.
    Result(Bytes),
    Tombstone,
    Damaged,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub slot: Slot,
    pub t_ms: u64,
    /// The pack's location in the store.
    pub pack: Arc<str>,
}

/// The newest record of every key in the packs seen so far.
#[derive(Default)]
pub struct Index {
    pub entries: HashMap<String, Entry>,
    /// Pack location → bytes consumed (a record boundary).
    pub seen: HashMap<Arc<str>, usize>,
}

impl Index {
    /// Takes in the records of `bytes` (a pack, or its bytes from `from` on); returns the
    /// new consumed length.
    pub fn add_pack(&mut self, pack: &str, bytes: &Bytes, from: usize) -> usize {
        let name: Arc<str> = match self.seen.get_key_value(pack) {
            Some((k, _)) => k.clone(),
            None => Arc::from(pack),
        };
        let Some((recs, end)) = records(bytes, from) else {
            self.seen.insert(name, from);
            return from;
        };
        for r in recs {
            let slot = match (r.kind, r.damaged) {
                (_, true) => Slot::Damaged,
                (Kind::Result, false) => Slot::Result(bytes.slice(r.payload.clone())),
                (Kind::Tombstone, false) => Slot::Tombstone,
            };
            self.insert(
                r.key,
                Entry {
                    slot,
                    t_ms: r.t_ms,
                    pack: name.clone(),
                },
            );
        }
        self.seen.insert(name, end);
        end
    }

    /// Records `e` for `key` unless a newer record is known.
    pub fn insert(&mut self, key: String, e: Entry) {
        match self.entries.get(&key) {
            Some(old) if old.pack != e.pack && (old.t_ms, &*old.pack) > (e.t_ms, &*e.pack) => {}
            _ => {
                self.entries.insert(key, e);
            }
        }
    }
}

/// A fresh pack name: sorts by creation time; unique across processes.
pub fn new_name() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = crate::util::now_ms();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = blake3::hash(
        format!(
            "{}-{now}-{seq}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        )
        .as_bytes(),
    )
    .to_hex();
    format!(
        "{DIR}/{now:013}-{}-{seq}-{}.pack",
        std::process::id(),
        &tag[..8]
    )
}

/// The newest result manifest (JSON) of every key in the packs and `results/<key>.json`
/// files of a local store directory: for tools and tests that read a store without the
/// engine's runtime. Deleted and damaged results are left out.
pub fn read_local(root: &Path) -> HashMap<String, Vec<u8>> {
    let mut index = Index::default();
    if let Ok(rd) = std::fs::read_dir(root.join(DIR)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".pack") {
                continue;
            }
            if let Ok(b) = std::fs::read(e.path()) {
                index.add_pack(&format!("{DIR}/{name}"), &Bytes::from(b), 0);
            }
        }
    }
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(root.join("results")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".json")
                && !index.entries.contains_key(key)
                && let Ok(b) = std::fs::read(e.path())
            {
                out.insert(key.to_string(), b);
            }
        }
    }
    for (k, e) in index.entries {
        if let Slot::Result(b) = e.slot {
            out.insert(k, b.to_vec());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(recs: &[(Kind, u64, &str, &[u8])]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        for (k, t, key, p) in recs {
            encode(&mut b, *k, *t, key, p);
        }
        b
    }

    #[test]
    fn records_round_trip_and_torn_or_damaged_ones_are_told_apart() {
        let mut b = pack(&[
            (Kind::Result, 5, "k1", b"{\"a\":1}"),
            (Kind::Tombstone, 6, "k2", b""),
            (Kind::Result, 7, "k3", b"{\"c\":3}"),
        ]);
        let (recs, end) = records(&b, 0).unwrap();
        assert_eq!(end, b.len());
        assert_eq!(
            recs.iter()
                .map(|r| (r.kind, r.t_ms, r.key.as_str()))
                .collect::<Vec<_>>(),
            [
                (Kind::Result, 5, "k1"),
                (Kind::Tombstone, 6, "k2"),
                (Kind::Result, 7, "k3")
            ]
        );
        assert_eq!(&b[recs[0].payload.clone()], b"{\"a\":1}");
        // A damaged payload is attributed to its key; the records after it still count.
        let p = recs[0].payload.start;
        b[p] ^= 1;
        let (recs2, end2) = records(&b, 0).unwrap();
        assert!(recs2[0].damaged && !recs2[2].damaged);
        assert_eq!(end2, b.len());
        // A torn tail ends the pack at the last complete record.
        let cut = b.len() - 2;
        let (recs3, end3) = records(&b[..cut], 0).unwrap();
        assert_eq!(recs3.len(), 2);
        assert_eq!(end3, recs[1].payload.end);
        // Reading on from a boundary gives only what follows.
        assert_eq!(records(&b, end3).unwrap().0.len(), 1);
        assert!(records(b"not a pack", 0).is_none());
    }

    #[test]
    fn the_newest_record_of_a_key_wins() {
        let mut ix = Index::default();
        let a = Bytes::from(pack(&[
            (Kind::Result, 10, "k", b"\"a1\""),
            (Kind::Result, 5, "k", b"\"a2\""), // later in the same pack: wins despite t
            (Kind::Result, 10, "j", b"\"a\""),
        ]));
        ix.add_pack("packs/a.pack", &a, 0);
        let b = Bytes::from(pack(&[
            (Kind::Tombstone, 4, "k", b""),  // older than a's record: loses
            (Kind::Tombstone, 11, "j", b""), // newer: the result is deleted
        ]));
        ix.add_pack("packs/b.pack", &b, 0);
        assert!(matches!(&ix.entries["k"].slot, Slot::Result(v) if &v[..] == b"\"a2\""));
        assert!(matches!(ix.entries["j"].slot, Slot::Tombstone));
    }
}
