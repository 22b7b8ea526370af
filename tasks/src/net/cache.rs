//! Response caches of the remote-service clients ([`super::JsonService`]): re-runs never pay
//! for the same question twice. Each client computes its own key from everything that decides
//! an answer (the judge: [`crate::judge::cache::CacheKeyParts`]; the segmenter:
//! [`crate::segment::client::cache_key`]); only validated responses are stored, the value is
//! the raw response body.
use bytes::Bytes;
use cocoflow_engine::store::Store;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// A cache read or write failed (the client then goes on without the cache).
#[derive(Debug, Clone, thiserror::Error)]
#[error("response cache `{cache}`: {reason}")]
pub struct CacheError {
    pub cache: String,
    pub reason: String,
}

/// Where service responses are kept.
pub trait ResponseCache: Send + Sync {
    /// One line for logs and `Debug`.
    fn describe(&self) -> String;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, CacheError>>;
    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<(), CacheError>>;
}

/// The artifact store's key-value cache (`kv/<namespace>/<key>`), shared by every run on the
/// store. Built on a task's `ctx.store()`, the entries it reads or writes are listed in the
/// task's result, and `gc` keeps them while that result is kept.
#[derive(Clone)]
pub struct StoreCache {
    store: Store,
    namespace: String,
}

impl StoreCache {
    /// Namespace `judge`.
    pub fn new(store: Store) -> Self {
        Self::with_namespace(store, "judge")
    }

    pub fn with_namespace(store: Store, namespace: impl Into<String>) -> Self {
        StoreCache {
            store,
            namespace: namespace.into(),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> CacheError {
        CacheError {
            cache: self.describe(),
            reason: e.to_string(),
        }
    }
}

impl ResponseCache for StoreCache {
    fn describe(&self) -> String {
        format!("{}/kv/{}", self.store.url(), self.namespace)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, CacheError>> {
        async move {
            self.store
                .get_kv(&self.namespace, key)
                .await
                .map_err(|e| self.err(e))
        }
        .boxed()
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<(), CacheError>> {
        async move {
            self.store
                .put_kv(&self.namespace, key, value)
                .await
                .map_err(|e| self.err(e))
        }
        .boxed()
    }
}

/// Files `<dir>/<key[..2]>/<key>.json`, written atomically (temp file and rename).
#[derive(Debug, Clone)]
pub struct DirCache {
    dir: PathBuf,
}

impl DirCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirCache { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(&key[..2.min(key.len())])
            .join(format!("{key}.json"))
    }

    fn err(&self, e: impl std::fmt::Display) -> CacheError {
        CacheError {
            cache: self.describe(),
            reason: e.to_string(),
        }
    }
}

impl ResponseCache for DirCache {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, CacheError>> {
        async move {
            match std::fs::read(self.path(key)) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.err(e)),
            }
        }
        .boxed()
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<(), CacheError>> {
        async move {
            let path = self.path(key);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| self.err(e))?;
            }
            cocoflow_engine::store::write_atomic(&path, &value).map_err(|e| self.err(e))
        }
        .boxed()
    }
}

/// In memory, for tests and one-process use.
#[derive(Debug, Default)]
pub struct MemoryCache {
    map: Mutex<HashMap<String, Bytes>>,
}

impl MemoryCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ResponseCache for MemoryCache {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, CacheError>> {
        let v = self.map.lock().unwrap().get(key).cloned();
        async move { Ok(v) }.boxed()
    }

    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<(), CacheError>> {
        self.map.lock().unwrap().insert(key.to_string(), value);
        async move { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dir_and_memory_caches_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let caches: Vec<Box<dyn ResponseCache>> = vec![
            Box::new(DirCache::new(dir.path())),
            Box::new(MemoryCache::new()),
        ];
        for c in caches {
            assert_eq!(c.get("abcd").await.unwrap(), None);
            c.put("abcd", Bytes::from_static(b"{}")).await.unwrap();
            assert_eq!(c.get("abcd").await.unwrap().as_deref(), Some(&b"{}"[..]));
        }
        assert!(dir.path().join("ab/abcd.json").is_file());
    }

    #[tokio::test]
    async fn store_cache_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("memory://", dir.path(), dir.path()).unwrap();
        let c = StoreCache::new(store);
        assert_eq!(c.get("k1").await.unwrap(), None);
        c.put("k1", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(c.get("k1").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(c.describe(), "memory:///kv/judge");
    }
}
