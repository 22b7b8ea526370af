//! Loaded models (or anything costly) shared by the tasks of one process: the in-process
//! executor's, or one worker's across every task it runs.
//!
//! Entries are keyed by what identifies them (a backend, the digest of its weights, a device)
//! and carry the bytes they hold. The cache keeps at most `max_bytes` (the
//! `COCOFLOW_MODEL_CACHE_MB` environment variable, default 32768 MiB): inserting past it
//! evicts the least recently used entries first. An evicted entry that a running task still
//! holds stays alive until that task drops it; the cache only forgets it. It counts what it
//! had to build ([`ModelCache::loads`]): the run summary adds up the loads of every worker.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The environment variable that sets the cache's size in MiB.
pub const LIMIT_ENV: &str = "COCOFLOW_MODEL_CACHE_MB";
/// The default size: 32 GiB (a FLUX.1 Kontext transformer in bf16 is 24 GB).
pub const DEFAULT_LIMIT_MB: u64 = 32 * 1024;

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    bytes: u64,
    /// When it was last used (a counter, not a clock).
    used: u64,
}

#[derive(Default)]
struct Inner {
    items: HashMap<String, Entry>,
    tick: u64,
    /// One lock per key being built: a second task asking for it waits for the first build.
    building: HashMap<String, Arc<Mutex<()>>>,
}

pub struct ModelCache {
    inner: Mutex<Inner>,
    max_bytes: u64,
    loads: AtomicU64,
    evictions: AtomicU64,
}

impl Default for ModelCache {
    /// A cache of the size `COCOFLOW_MODEL_CACHE_MB` asks (default 32 GiB).
    fn default() -> Self {
        let mb = std::env::var(LIMIT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_LIMIT_MB);
        ModelCache::with_limit(mb.saturating_mul(1 << 20))
    }
}

impl ModelCache {
    /// A cache that holds at most `max_bytes` (as its entries report them).
    pub fn with_limit(max_bytes: u64) -> ModelCache {
        ModelCache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            loads: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Returns the cached value for `key`, building it on first use (an entry of 0 bytes).
    pub fn get_or_try_insert<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        self.get_or_try_insert_sized(key, || build().map(|v| (v, 0)))
    }

    /// Returns the cached value for `key`, building it on first use; `build` also says how
    /// many bytes the value holds. Tasks asking for a key being built wait for that build
    /// (other keys are served meanwhile); if it fails, the next one builds.
    pub fn get_or_try_insert_sized<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<(T, u64), E>,
    ) -> Result<Arc<T>, E> {
        if let Some(t) = self.lookup::<T>(key) {
            return Ok(t);
        }
        let gate = self
            .inner
            .lock()
            .unwrap()
            .building
            .entry(key.to_string())
            .or_default()
            .clone();
        let _building = gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.lookup::<T>(key) {
            return Ok(t);
        }
        tracing::info!(key, "model cache loads");
        let built = build();
        let (v, bytes) = match built {
            Ok(b) => b,
            Err(e) => {
                self.inner.lock().unwrap().building.remove(key);
                return Err(e);
            }
        };
        let v = Arc::new(v);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap();
        inner.tick += 1;
        let tick = inner.tick;
        inner.items.remove(key);
        // Make room: least recently used first, until the new entry fits (an entry larger
        // than the whole cache is used once and not kept).
        let mut held: u64 = inner.items.values().map(|e| e.bytes).sum();
        while held + bytes > self.max_bytes {
            let Some(oldest) = inner
                .items
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let e = inner.items.remove(&oldest).expect("present");
            held -= e.bytes;
            self.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(key = %oldest, bytes = e.bytes, "model cache evicts");
        }
        inner.building.remove(key);
        if held + bytes <= self.max_bytes {
            inner.items.insert(
                key.to_string(),
                Entry {
                    value: v.clone(),
                    bytes,
                    used: tick,
                },
            );
        }
        Ok(v)
    }

    /// The cached value of `key`, marked as just used.
    fn lookup<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let mut inner = self.inner.lock().unwrap();
        inner.tick += 1;
        let tick = inner.tick;
        let e = inner.items.get_mut(key)?;
        let t = e.value.clone().downcast::<T>().ok()?;
        e.used = tick;
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the entries.
    pub fn bytes(&self) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .items
            .values()
            .map(|e| e.bytes)
            .sum()
    }

    /// Values built (loaded) so far; every other request was served from the cache.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Entries evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &ModelCache, key: &str, bytes: u64) -> Arc<String> {
        c.get_or_try_insert_sized(key, || Ok::<_, ()>((key.to_string(), bytes)))
            .unwrap()
    }

    #[test]
    fn builds_once_and_counts_loads() {
        let c = ModelCache::with_limit(100);
        assert_eq!(*get(&c, "a", 10), "a");
        assert_eq!(*get(&c, "a", 10), "a");
        assert_eq!((c.loads(), c.len(), c.bytes()), (1, 1, 10));
        let e: Result<Arc<String>, &str> = c.get_or_try_insert("b", || Err("no"));
        assert_eq!(e.unwrap_err(), "no");
        assert_eq!(c.loads(), 1);
    }

    #[test]
    fn evicts_least_recently_used_past_the_limit() {
        let c = ModelCache::with_limit(100);
        get(&c, "a", 40);
        get(&c, "b", 40);
        get(&c, "a", 40); // a is now more recent than b
        get(&c, "c", 40); // 120 > 100: b goes
        assert_eq!((c.len(), c.bytes(), c.evictions()), (2, 80, 1));
        get(&c, "a", 40);
        assert_eq!(c.loads(), 3, "a stayed");
        get(&c, "b", 40);
        assert_eq!(c.loads(), 4, "b was rebuilt");
        // Larger than the whole cache: built, returned, not kept.
        let big = get(&c, "huge", 1000);
        assert_eq!(*big, "huge");
        assert!(c.bytes() <= 100);
    }

    #[test]
    fn concurrent_requests_for_one_key_build_it_once() {
        let c = Arc::new(ModelCache::with_limit(1 << 20));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    c.get_or_try_insert_sized("k", || {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>((1u32, 4))
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(*t.join().unwrap(), 1);
        }
        assert_eq!(c.loads(), 1);
    }
}
