//! The judge's response cache: re-runs never pay for the same question twice.
//!
//! The key is BLAKE3 over the canonical JSON of everything that decides the server's answer:
//! the model, the prompt (`id@version` and its digest), the rendered system and user text
//! (which holds the instruction), the image digests in the order sent with their roles, and
//! the decoding parameters (temperature, max tokens, logprobs, top_logprobs, seed, JSON mode).
//! The base URL is not part of it: the same model behind another server answers the same.
//! Only responses that passed validation are stored; the value is the raw response body.

use super::prompts::{ImageRole, Prompt};
use bytes::Bytes;
use cocoflow_engine::store::Store;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// A cache read or write failed (the judge then goes on without the cache).
#[derive(Debug, Clone, thiserror::Error)]
#[error("judge cache `{cache}`: {reason}")]
pub struct CacheError {
    pub cache: String,
    pub reason: String,
}

/// Where judge responses are kept.
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

/// Everything that decides a judge response (module docs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheKeyParts<'a> {
    pub model: &'a str,
    pub prompt: String,
    pub prompt_digest: String,
    pub system: &'a str,
    pub user: &'a str,
    pub instruction: &'a str,
    /// `(role, pixel digest)` in the order sent.
    pub images: Vec<(ImageRole, &'a str)>,
    pub decoding: serde_json::Value,
}

impl<'a> CacheKeyParts<'a> {
    pub fn new(model: &'a str, prompt: &Prompt) -> Self {
        CacheKeyParts {
            model,
            prompt: prompt.key(),
            prompt_digest: prompt.digest(),
            system: prompt.system,
            user: "",
            instruction: "",
            images: Vec::new(),
            decoding: serde_json::Value::Null,
        }
    }

    /// The cache key: BLAKE3 (hex) over the canonical JSON of the parts.
    pub fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"cocoflow-judge-response/1\0");
        h.update(&serde_json::to_vec(self).expect("key parts serialise"));
        h.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::prompts::{REWARD, REWARD_SINGLE};
    use super::*;

    fn parts() -> CacheKeyParts<'static> {
        let mut p = CacheKeyParts::new("m", &REWARD);
        p.user = "u";
        p.instruction = "i";
        p.images = vec![(ImageRole::Source, "a"), (ImageRole::Edited, "b")];
        p.decoding = serde_json::json!({"temperature": 0.0});
        p
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = parts().key();
        assert_eq!(base, parts().key());
        assert_eq!(base.len(), 64);
        let mut variants = Vec::new();
        let mut p = parts();
        p.model = "m2";
        variants.push(p.key());
        let mut p = parts();
        p.prompt = REWARD_SINGLE.key();
        variants.push(p.key());
        let mut p = parts();
        p.user = "u2";
        variants.push(p.key());
        let mut p = parts();
        p.instruction = "i2";
        variants.push(p.key());
        let mut p = parts();
        p.images.swap(0, 1);
        variants.push(p.key());
        let mut p = parts();
        p.images[1].1 = "c";
        variants.push(p.key());
        let mut p = parts();
        p.decoding = serde_json::json!({"temperature": 0.5});
        variants.push(p.key());
        for v in &variants {
            assert_ne!(v, &base);
        }
    }

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
