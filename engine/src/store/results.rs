//! Result manifests: published in batches into packs ([`super::pack`]), found through an
//! index of the packs this process has read (refreshed when a key is not in it), with
//! `results/<key>.json` files (earlier versions) still read. Deleting a result appends a
//! tombstone; `gc` rewrites packs without what it drops.

use super::pack::{self, Index, Kind, Slot};
use super::{Result, ResultManifest, Store, StoreError, io, result_path};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as OPath;
use object_store::{ObjectStoreExt, PutPayload};
use std::collections::HashSet;
use std::io::Write as _;
use std::sync::Arc;

/// This process's view of the packs of one store.
#[derive(Default)]
pub(crate) struct Packs {
    index: Index,
    loaded: bool,
    /// Whether `results/<key>.json` files may exist (a `file://` store is checked).
    legacy: bool,
    /// The pack this process appends to (a `file://` store).
    writer: Option<Writer>,
}

struct Writer {
    file: std::fs::File,
    loc: Arc<str>,
    len: usize,
}

/// A result the store holds, for `gc`.
#[derive(Debug, Clone)]
pub struct ResultInfo {
    pub key: String,
    /// `packs/<name>.pack` or `results/<key>.json`.
    pub location: String,
    /// When it was published (ms since the epoch).
    pub t_ms: u64,
}

fn lock_nb(f: &std::fs::File) -> bool {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl Store {
    /// Reads the packs that are new or grew since the last look (all of them when one went
    /// away, i.e. `gc` rewrote packs).
    async fn refresh(&self, st: &mut Packs) -> Result<()> {
        if let Some(root) = self.local_root() {
            let dir = root.join(pack::DIR);
            let mut present: Vec<(String, u64)> = Vec::new();
            match std::fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.ends_with(".pack") && !name.starts_with('.') {
                            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                            present.push((format!("{}/{name}", pack::DIR), len));
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("cannot list `{}`", dir.display()))(e)),
            }
            let names: HashSet<&str> = present.iter().map(|(n, _)| n.as_str()).collect();
            if st.index.seen.keys().any(|p| !names.contains(&**p)) {
                st.index = Index::default();
            }
            for (loc, len) in &present {
                let from = st.index.seen.get(loc.as_str()).copied().unwrap_or(0);
                if from > 0 && *len as usize <= from {
                    continue;
                }
                match std::fs::read(root.join(loc)) {
                    Ok(b) => {
                        st.index.add_pack(loc, &Bytes::from(b), from);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(format!("cannot read `{loc}`"))(e)),
                }
            }
            st.legacy = root.join("results").is_dir();
        } else {
            let prefix = OPath::from(pack::DIR);
            let locs: Vec<String> = self
                .inner
                .os
                .list(Some(&prefix))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .map_err(self.backend())?;
            let names: HashSet<&str> = locs.iter().map(String::as_str).collect();
            if st.index.seen.keys().any(|p| !names.contains(&**p)) {
                st.index = Index::default();
            }
            let new: Vec<&String> = locs
                .iter()
                .filter(|l| l.ends_with(".pack") && !st.index.seen.contains_key(l.as_str()))
                .collect();
            let got: Vec<(String, Option<Bytes>)> =
                futures::stream::iter(new.into_iter().map(|l| async move {
                    match self.inner.os.get(&OPath::from(l.as_str())).await {
                        Ok(r) => Ok((l.clone(), Some(r.bytes().await.map_err(self.backend())?))),
                        Err(object_store::Error::NotFound { .. }) => Ok((l.clone(), None)),
                        Err(e) => Err(self.backend()(e)),
                    }
                }))
                .buffered(32)
                .try_collect()
                .await?;
            // Oldest first, so ties in time resolve the same way in every process.
            let mut got = got;
            got.sort_by(|a, b| a.0.cmp(&b.0));
            for (loc, bytes) in got {
                if let Some(b) = bytes {
                    st.index.add_pack(&loc, &b, 0);
                }
            }
            st.legacy = true;
        }
        st.loaded = true;
        Ok(())
    }

    async fn packs(&self) -> Result<tokio::sync::MutexGuard<'_, Packs>> {
        let mut st = self.inner.packs.lock().await;
        if !st.loaded {
            self.refresh(&mut st).await?;
        }
        Ok(st)
    }

    /// The result manifest of an instance key, if it finished before. A damaged or
    /// malformed manifest counts as absent: the instance runs again.
    pub async fn get_result(&self, key: &str) -> Result<Option<ResultManifest>> {
        match self.read_result(key).await {
            Err(StoreError::Malformed { .. }) => Ok(None),
            other => other,
        }
    }

    /// Like [`Store::get_result`], but a damaged or malformed manifest is an error
    /// ([`StoreError::Malformed`], naming where it is).
    pub async fn read_result(&self, key: &str) -> Result<Option<ResultManifest>> {
        let mut st = self.packs().await?;
        let slot = match st.index.entries.get(key) {
            Some(e) => Some((e.slot.clone(), e.pack.clone())),
            None => None,
        };
        let slot = match slot {
            Some(s) => Some(s),
            None => {
                if st.legacy
                    && let Some(m) = self
                        .get_json::<ResultManifest>(&result_path(key), "result manifest")
                        .await?
                {
                    return Ok(Some(m));
                }
                self.refresh(&mut st).await?;
                st.index
                    .entries
                    .get(key)
                    .map(|e| (e.slot.clone(), e.pack.clone()))
            }
        };
        match slot {
            None | Some((Slot::Tombstone, _)) => Ok(None),
            Some((Slot::Result(b), p)) => {
                serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|source| StoreError::Malformed {
                        what: "result manifest",
                        path: format!("{p} (record of `{key}`)"),
                        source,
                    })
            }
            Some((Slot::Damaged, p)) => Err(StoreError::Malformed {
                what: "result manifest",
                path: format!("{p} (record of `{key}`)"),
                source: serde::de::Error::custom("its bytes do not match their checksum"),
            }),
        }
    }

    /// Whether a result manifest exists (cheap: no parsing).
    pub async fn has_result(&self, key: &str) -> Result<bool> {
        let live = |st: &Packs| {
            st.index
                .entries
                .get(key)
                .map(|e| !matches!(e.slot, Slot::Tombstone))
        };
        let mut st = self.packs().await?;
        if let Some(b) = live(&st) {
            return Ok(b);
        }
        if st.legacy && self.has_legacy(key).await? {
            return Ok(true);
        }
        // Another process may have published it since this one last looked.
        self.refresh(&mut st).await?;
        Ok(live(&st).unwrap_or(false))
    }

    async fn has_legacy(&self, key: &str) -> Result<bool> {
        if let Some(root) = self.local_root() {
            return Ok(root.join(result_path(key).as_ref()).is_file());
        }
        match self.inner.os.head(&result_path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend()(e)),
        }
    }

    /// Checks many result keys at once: one look at the packs, then the `results/` files of
    /// the rest (bounded concurrency for remote stores).
    pub async fn have_results(&self, keys: &[String]) -> Result<Vec<bool>> {
        let (mut out, legacy) = {
            let mut st = self.inner.packs.lock().await;
            self.refresh(&mut st).await?;
            let out: Vec<Option<bool>> = keys
                .iter()
                .map(|k| {
                    st.index
                        .entries
                        .get(k)
                        .map(|e| !matches!(e.slot, Slot::Tombstone))
                })
                .collect();
            (out, st.legacy)
        };
        if legacy {
            let unknown: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
            let found: Vec<bool> =
                futures::stream::iter(unknown.iter().map(|&i| self.has_legacy(&keys[i])))
                    .buffered(64)
                    .try_collect()
                    .await?;
            for (&i, f) in unknown.iter().zip(found) {
                out[i] = Some(f);
            }
        }
        Ok(out.into_iter().map(|o| o.unwrap_or(false)).collect())
    }

    /// Publishes a result: call only after every blob it names is stored.
    pub async fn put_result(&self, m: &ResultManifest) -> Result<()> {
        self.put_results(&[m]).await
    }

    /// Publishes results together: one append to this process's pack (`file://`) or one
    /// pack object (remote stores). Call only after every blob they name is stored.
    pub async fn put_results(&self, ms: &[&ResultManifest]) -> Result<()> {
        if ms.is_empty() {
            return Ok(());
        }
        let items: Vec<(&str, Vec<u8>)> = ms
            .iter()
            .map(|m| {
                (
                    m.key.as_str(),
                    serde_json::to_vec(m).expect("manifest serialises"),
                )
            })
            .collect();
        let mut st = self.packs().await?;
        self.append(&mut st, Kind::Result, &items).await
    }

    /// Appends records (results or tombstones) and enters them in the index.
    async fn append(&self, st: &mut Packs, kind: Kind, items: &[(&str, Vec<u8>)]) -> Result<()> {
        let now = crate::util::now_ms();
        let mut buf = Vec::with_capacity(
            items
                .iter()
                .map(|(k, p)| p.len() + k.len() + 40)
                .sum::<usize>()
                + pack::MAGIC.len(),
        );
        let loc = match (self.local_root(), &st.writer) {
            (Some(_), Some(w)) => w.loc.clone(),
            _ => {
                buf.extend_from_slice(pack::MAGIC);
                Arc::from(pack::new_name())
            }
        };
        let mut placed = Vec::with_capacity(items.len());
        for (key, payload) in items {
            // Newer than what it replaces, whatever the clocks of other writers said.
            let t = match st.index.entries.get(*key) {
                Some(e) if e.pack != loc => now.max(e.t_ms + 1),
                _ => now,
            };
            pack::encode(&mut buf, kind, t, key, payload);
            placed.push((t, buf.len() - payload.len()..buf.len()));
        }
        let bytes = Bytes::from(buf);
        if let Some(root) = self.local_root() {
            let full = root.join(&*loc);
            if st.writer.is_none() {
                let dir = root.join(pack::DIR);
                std::fs::create_dir_all(&dir)
                    .map_err(io(format!("cannot create `{}`", dir.display())))?;
                let file = std::fs::OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&full)
                    .map_err(io(format!("cannot create `{}`", full.display())))?;
                // Held while this process may append: `gc` leaves a locked pack alone.
                lock_nb(&file);
                st.writer = Some(Writer {
                    file,
                    loc: loc.clone(),
                    len: 0,
                });
            }
            let w = st.writer.as_mut().expect("writer");
            if let Err(e) = (&w.file).write_all(&bytes) {
                // A partial record may end the pack: later results go to a new one.
                st.writer = None;
                return Err(io(format!("cannot append to `{}`", full.display()))(e));
            }
            w.len += bytes.len();
            let len = w.len;
            st.index.seen.insert(loc.clone(), len);
        } else {
            self.inner
                .os
                .put(&OPath::from(&*loc), PutPayload::from(bytes.clone()))
                .await
                .map_err(self.backend())?;
            st.index.seen.insert(loc.clone(), bytes.len());
        }
        for ((key, _), (t, range)) in items.iter().zip(placed) {
            let slot = match kind {
                Kind::Result => Slot::Result(bytes.slice(range)),
                Kind::Tombstone => Slot::Tombstone,
            };
            st.index.insert(
                key.to_string(),
                pack::Entry {
                    slot,
                    t_ms: t,
                    pack: loc.clone(),
                },
            );
        }
        Ok(())
    }

    pub async fn delete_result(&self, key: &str) -> Result<()> {
        self.delete_results(&[key.to_string()]).await
    }

    /// Removes results: their `results/<key>.json` files, and a tombstone for those in
    /// packs.
    pub async fn delete_results(&self, keys: &[String]) -> Result<()> {
        let mut st = self.inner.packs.lock().await;
        self.refresh(&mut st).await?;
        if st.legacy {
            for k in keys {
                match self.inner.os.delete(&result_path(k)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.backend()(e)),
                }
            }
        }
        let packed: Vec<(&str, Vec<u8>)> = keys
            .iter()
            .filter(|k| {
                st.index
                    .entries
                    .get(k.as_str())
                    .is_some_and(|e| !matches!(e.slot, Slot::Tombstone))
            })
            .map(|k| (k.as_str(), Vec::new()))
            .collect();
        if !packed.is_empty() {
            self.append(&mut st, Kind::Tombstone, &packed).await?;
        }
        Ok(())
    }

    /// Every result the store holds (damaged ones included, deleted ones not).
    pub async fn results(&self) -> Result<Vec<ResultInfo>> {
        let mut out = Vec::new();
        let mut packed = HashSet::new();
        {
            let mut st = self.inner.packs.lock().await;
            self.refresh(&mut st).await?;
            for (k, e) in &st.index.entries {
                packed.insert(k.clone());
                if !matches!(e.slot, Slot::Tombstone) {
                    out.push(ResultInfo {
                        key: k.clone(),
                        location: e.pack.to_string(),
                        t_ms: e.t_ms,
                    });
                }
            }
        }
        for (loc, mtime) in self.list("results").await? {
            let key = loc
                .trim_start_matches("results/")
                .trim_end_matches(".json")
                .to_string();
            if !packed.contains(&key) {
                out.push(ResultInfo {
                    key,
                    location: loc,
                    t_ms: mtime,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// `gc`: removes the results `drop` names from the store — `results/<key>.json` files
    /// are deleted; packs are rewritten into one without them (and without deleted or
    /// superseded records). Packs a live process still appends to are left alone (a
    /// tombstone covers what they hold of a dropped key). Returns how many of `drop` were
    /// held.
    pub async fn remove_results(&self, drop: &HashSet<String>) -> Result<usize> {
        let mut st = self.inner.packs.lock().await;
        self.refresh(&mut st).await?;
        let mut removed = 0;
        if st.legacy {
            for (loc, _) in self.list("results").await? {
                let key = loc.trim_start_matches("results/").trim_end_matches(".json");
                if drop.contains(key) {
                    self.delete_at(&loc).await?;
                    if !st.index.entries.contains_key(key) {
                        removed += 1;
                    }
                }
            }
        }
        // Which packs can be rewritten: all remote ones (immutable objects); local ones
        // that no live process holds (its lock).
        let mut locked: HashSet<Arc<str>> = HashSet::new();
        let mut _held = Vec::new();
        if let Some(root) = self.local_root() {
            for loc in st.index.seen.keys() {
                if st.writer.as_ref().is_some_and(|w| w.loc == *loc) {
                    locked.insert(loc.clone());
                    continue;
                }
                match std::fs::File::open(root.join(&**loc)) {
                    Ok(f) if lock_nb(&f) => _held.push(f),
                    _ => {
                        locked.insert(loc.clone());
                    }
                }
            }
        }
        // Keys the packs left alone hold a record of (whatever record wins).
        let mut in_locked: HashSet<String> = HashSet::new();
        if let Some(root) = self.local_root() {
            for loc in &locked {
                if let Ok(b) = std::fs::read(root.join(&**loc))
                    && let Some((recs, _)) = pack::records(&b, 0)
                {
                    in_locked.extend(recs.into_iter().map(|r| r.key));
                }
            }
        }
        let rewrite: Vec<Arc<str>> = st
            .index
            .seen
            .keys()
            .filter(|p| !locked.contains(*p))
            .cloned()
            .collect();
        let damaged_kept = st.index.entries.iter().any(|(k, e)| {
            matches!(e.slot, Slot::Damaged) && !drop.contains(k) && !locked.contains(&e.pack)
        });
        let mut keep: Vec<(u64, &str, Option<&Bytes>)> = Vec::new();
        let mut dropping = 0;
        let mut tombstones = 0;
        for (k, e) in &st.index.entries {
            if locked.contains(&e.pack) {
                if drop.contains(k) && !matches!(e.slot, Slot::Tombstone) {
                    dropping += 1;
                }
                continue;
            }
            let gone = drop.contains(k) || matches!(e.slot, Slot::Tombstone);
            if gone {
                if matches!(e.slot, Slot::Tombstone) {
                    tombstones += 1;
                } else {
                    dropping += 1;
                }
                if in_locked.contains(k) {
                    keep.push((e.t_ms, k.as_str(), None));
                }
            } else if let Slot::Result(b) = &e.slot {
                keep.push((e.t_ms, k.as_str(), Some(b)));
            }
        }
        removed += dropping;
        // Drops of keys whose newest record sits in a locked pack: a tombstone.
        let dead_in_locked: Vec<(&str, Vec<u8>)> = st
            .index
            .entries
            .iter()
            .filter(|(k, e)| {
                locked.contains(&e.pack) && drop.contains(*k) && !matches!(e.slot, Slot::Tombstone)
            })
            .map(|(k, _)| (k.as_str(), Vec::new()))
            .collect();
        let worth = !damaged_kept && (dropping > 0 || tombstones > 0 || rewrite.len() > 1);
        if worth && !rewrite.is_empty() {
            keep.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let mut buf = pack::MAGIC.to_vec();
            for (t, k, b) in &keep {
                match b {
                    Some(b) => pack::encode(&mut buf, Kind::Result, *t, k, b),
                    None => pack::encode(&mut buf, Kind::Tombstone, *t, k, &[]),
                }
            }
            let name = pack::new_name();
            if keep.is_empty() {
                // Nothing left to keep: the old packs just go.
            } else if let Some(root) = self.local_root() {
                let tmp = root.join(pack::DIR).join(format!(
                    ".tmp-{}",
                    name.trim_start_matches(&format!("{}/", pack::DIR))
                ));
                std::fs::write(&tmp, &buf)
                    .map_err(io(format!("cannot write `{}`", tmp.display())))?;
                std::fs::rename(&tmp, root.join(&name))
                    .map_err(io(format!("cannot write `{name}`")))?;
            } else {
                self.inner
                    .os
                    .put(&OPath::from(name.as_str()), PutPayload::from(buf))
                    .await
                    .map_err(self.backend())?;
            }
            for loc in &rewrite {
                self.delete_at(loc).await?;
            }
        }
        let dead: Vec<(String, Vec<u8>)> = dead_in_locked
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        std::mem::drop(_held);
        st.index = Index::default();
        st.loaded = false;
        if !dead.is_empty() {
            self.refresh(&mut st).await?;
            let items: Vec<(&str, Vec<u8>)> =
                dead.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            self.append(&mut st, Kind::Tombstone, &items).await?;
        }
        Ok(removed)
    }
}
