//! Content-addressed artifact store on object_store (`file://`, `s3://`, `memory://`).
//!
//! Layout under the store root:
//! `blobs/ab/<blake3>` immutable bytes · `packs/<name>.pack` result manifests, many per
//! file ([`pack`]) · `results/<key>.json` result manifests, one per file (read; written by
//! earlier versions) ·
//! `checkpoints/<key>/<name>` partial state of long tasks · `runs/<id>.json` run summaries ·
//! `pins/<name>.json` · `leases/<run>.json` · `kv/<namespace>/<key>` key-value records.
//!
//! Blobs are written before the manifest that names them, and a manifest becomes visible
//! only once its pack record is complete (checked by hash), so a crash never leaves a
//! half-visible result. Every blob read verifies its digest.

pub mod manifest;
pub mod pack;
mod results;

pub use manifest::{Artifact, InputRef, Lease, Pin, ResultManifest, RunSummary, Tree, TreeEntry};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as OPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not one of the supported forms.
    #[error("unsupported store `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    /// A blob's bytes do not hash to its name (corruption): its producer must run again.
    #[error("blob `{digest}` is corrupt (its bytes hash to `{actual}`)")]
    Corrupt { digest: String, actual: String },
    /// A blob a manifest names is gone.
    #[error("blob `{digest}` is missing from the store")]
    Missing { digest: String },
    #[error("store `{url}`: {source}")]
    Backend {
        url: String,
        source: object_store::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("malformed {what} `{path}`: {source}")]
    Malformed {
        what: &'static str,
        path: String,
        source: serde_json::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The artifact store of a run. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Where this handle records the key-value records it reads or writes (a task's).
    kv_log: Option<KvLog>,
}

/// Locations of the key-value records (`kv/<namespace>/<key>`) a task read (found) or
/// wrote, collected into its result manifest so `gc` knows which records results use.
#[derive(Clone, Default, Debug)]
pub struct KvLog(Arc<Mutex<std::collections::BTreeSet<String>>>);

impl KvLog {
    pub fn locations(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().cloned().collect()
    }

    fn record(&self, location: String) {
        self.0.lock().unwrap().insert(location);
    }
}

/// What [`Store::check_blob`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobCheck {
    Intact {
        size: u64,
    },
    Missing,
    /// The bytes hash to `actual`; `size` is how many there are.
    Corrupt {
        actual: String,
        size: u64,
    },
}

struct Inner {
    os: Arc<dyn ObjectStore>,
    url: String,
    /// Root directory of a `file://` store (blobs can be read in place).
    local_root: Option<PathBuf>,
    /// Where blobs of a remote store are materialised as files (`<state>/cache`).
    cache_dir: PathBuf,
    /// Digests verified by this process (re-hashing a large blob once is enough).
    verified: Mutex<HashSet<String>>,
    /// One materialisation per tree digest at a time in this process.
    tree_locks: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What this process knows of the result packs, and the pack it appends to.
    packs: tokio::sync::Mutex<results::Packs>,
}

/// Makes temporary directory names unique across the threads of one process.
static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Outputs up to this many bytes are stored inline in their result manifest.
pub const INLINE_MAX: usize = 1024;

pub fn blob_path(digest: &str) -> OPath {
    OPath::from(format!(
        "blobs/{}/{}",
        &digest[..2.min(digest.len())],
        digest
    ))
}

pub(crate) fn result_path(key: &str) -> OPath {
    OPath::from(format!("results/{key}.json"))
}

pub fn digest_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl Store {
    /// Opens a store by URL. Relative `file://` paths resolve against `base`;
    /// `cache_dir` holds local copies of remote blobs.
    pub fn open(url: &str, base: &Path, cache_dir: &Path) -> Result<Store> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (os, local_root): (Arc<dyn ObjectStore>, Option<PathBuf>) =
            if let Some(rest) = url.strip_prefix("file://") {
                if rest.is_empty() {
                    return Err(bad(
                        "a `file://` store needs a directory, e.g. `file://.cocoflow/store`",
                    ));
                }
                let root = if Path::new(rest).is_absolute() {
                    PathBuf::from(rest)
                } else {
                    base.join(rest)
                };
                std::fs::create_dir_all(&root).map_err(io(format!(
                    "cannot create store directory `{}`",
                    root.display()
                )))?;
                let root = root
                    .canonicalize()
                    .map_err(io(format!("cannot resolve `{}`", root.display())))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(
                    |source| StoreError::Backend {
                        url: url.to_string(),
                        source,
                    },
                )?;
                (Arc::new(fs), Some(root))
            } else if url == "memory://" || url.starts_with("memory://") {
                (Arc::new(object_store::memory::InMemory::new()), None)
            } else if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad(
                        "an `s3://` store needs a bucket, e.g. `s3://my-bucket/cocoflow`",
                    ));
                }
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                if std::env::var("AWS_REGION").is_err()
                    && std::env::var("AWS_DEFAULT_REGION").is_err()
                {
                    builder = builder.with_region("us-east-1");
                }
                if let Ok(endpoint) =
                    std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT"))
                {
                    builder = builder
                        .with_endpoint(&endpoint)
                        .with_virtual_hosted_style_request(false);
                    if endpoint.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                }
                let s3 = builder.build().map_err(|source| StoreError::Backend {
                    url: url.to_string(),
                    source,
                })?;
                let os: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(
                        s3,
                        prefix.trim_matches('/'),
                    ))
                };
                (os, None)
            } else {
                return Err(bad(
                    "expected `file://DIR`, `s3://BUCKET/PREFIX` or `memory://`",
                ));
            };
        Ok(Store {
            inner: Arc::new(Inner {
                os,
                url: url.to_string(),
                local_root,
                cache_dir: if cache_dir.is_absolute() {
                    cache_dir.to_path_buf()
                } else {
                    base.join(cache_dir)
                },
                verified: Mutex::new(HashSet::new()),
                tree_locks: Mutex::new(Default::default()),
                packs: Default::default(),
            }),
            kv_log: None,
        })
    }

    /// The same store, recording the key-value records read or written through it.
    pub fn with_kv_log(&self, log: KvLog) -> Store {
        Store {
            inner: self.inner.clone(),
            kv_log: Some(log),
        }
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn local_root(&self) -> Option<&Path> {
        self.inner.local_root.as_deref()
    }

    pub(crate) fn backend(&self) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
        move |source| StoreError::Backend {
            url: self.inner.url.clone(),
            source,
        }
    }

    async fn put_if_absent(&self, path: &OPath, bytes: Bytes) -> Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .os
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.backend()(e)),
        }
    }

    /// Stores bytes; returns their artifact. Storing the same bytes twice is a no-op.
    pub async fn put_blob(&self, bytes: Bytes) -> Result<Artifact> {
        let digest = digest_of(&bytes);
        let size = bytes.len() as u64;
        let path = blob_path(&digest);
        let on_disk = self
            .inner
            .local_root
            .as_ref()
            .and_then(|root| std::fs::metadata(root.join(path.as_ref())).ok())
            .map(|m| m.len());
        match on_disk {
            Some(n) if n == size => {}
            // A local blob of the wrong size is corrupt: replace it.
            Some(_) => {
                self.inner
                    .os
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map_err(self.backend())?;
            }
            None => self.put_if_absent(&path, bytes).await?,
        }
        self.inner.verified.lock().unwrap().insert(digest.clone());
        Ok(Artifact {
            digest,
            size,
            tree: false,
            inline: None,
        })
    }

    /// Stores a file (streamed from disk).
    pub async fn put_file(&self, file: &Path) -> Result<Artifact> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(io(format!("cannot read `{}`", file.display())))?;
        self.put_blob(Bytes::from(bytes)).await
    }

    /// Stores a directory as a tree artifact: each file a blob, plus the listing.
    pub async fn put_dir(&self, dir: &Path) -> Result<Artifact> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)
            .map_err(io(format!("cannot list `{}`", dir.display())))?;
        files.sort();
        let mut entries = Vec::new();
        let mut total = 0;
        for rel in files {
            let full = dir.join(&rel);
            let exec = is_executable(&full);
            let a = self.put_file(&full).await?;
            total += a.size;
            entries.push(TreeEntry {
                path: rel,
                digest: a.digest,
                size: a.size,
                exec,
            });
        }
        let listing = serde_json::to_vec(&Tree { entries }).expect("tree serialises");
        let a = self.put_blob(Bytes::from(listing)).await?;
        Ok(Artifact {
            digest: a.digest,
            size: total,
            tree: true,
            inline: None,
        })
    }

    /// Reads a blob and verifies its digest.
    pub async fn get_blob(&self, digest: &str) -> Result<Bytes> {
        let path = blob_path(digest);
        let bytes = match self.inner.os.get(&path).await {
            Ok(r) => r.bytes().await.map_err(self.backend())?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::Missing {
                    digest: digest.to_string(),
                });
            }
            Err(e) => return Err(self.backend()(e)),
        };
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(StoreError::Corrupt {
                digest: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Whether a blob exists (no verification).
    pub async fn has_blob(&self, digest: &str) -> Result<bool> {
        if let Some(root) = &self.inner.local_root {
            return Ok(root.join(blob_path(digest).as_ref()).is_file());
        }
        match self.inner.os.head(&blob_path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend()(e)),
        }
    }

    /// A blob's size in bytes, or `None` when it is missing (no verification).
    pub async fn blob_size(&self, digest: &str) -> Result<Option<u64>> {
        if let Some(root) = &self.inner.local_root {
            return Ok(std::fs::metadata(root.join(blob_path(digest).as_ref()))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()));
        }
        match self.inner.os.head(&blob_path(digest)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend()(e)),
        }
    }

    /// Reads a whole blob and hashes it (streamed, without keeping it in memory).
    pub async fn check_blob(&self, digest: &str) -> Result<BlobCheck> {
        let r = match self.inner.os.get(&blob_path(digest)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(BlobCheck::Missing),
            Err(e) => return Err(self.backend()(e)),
        };
        let mut stream = r.into_stream();
        let mut h = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.backend())?;
            size += chunk.len() as u64;
            h.update(&chunk);
        }
        let actual = h.finalize().to_hex().to_string();
        Ok(if actual == digest {
            BlobCheck::Intact { size }
        } else {
            BlobCheck::Corrupt { actual, size }
        })
    }

    /// A cheap check that an artifact's blobs are all there with their sizes (no hashing of
    /// file blobs; a tree's listing is read and verified). `false` also for a corrupt inline
    /// output or an unreadable tree listing. A blob of the wrong size is corrupt for every
    /// result that names it, so it is deleted (its producer then writes it again).
    pub async fn artifact_present(&self, a: &Artifact) -> Result<bool> {
        if a.inline.is_some() {
            return Ok(self.read_artifact(a).await.is_ok());
        }
        let sized: Vec<(String, u64)> = if a.tree {
            match self.read_tree(&a.digest).await {
                Ok(t) => t.entries.into_iter().map(|e| (e.digest, e.size)).collect(),
                Err(e @ StoreError::Backend { .. }) => return Err(e),
                Err(StoreError::Corrupt { .. }) => {
                    self.delete_blob(&a.digest).await?;
                    return Ok(false);
                }
                Err(_) => return Ok(false),
            }
        } else {
            vec![(a.digest.clone(), a.size)]
        };
        let mut ok = true;
        for (digest, size) in sized {
            match self.blob_size(&digest).await? {
                Some(n) if n == size => {}
                Some(_) => {
                    self.delete_blob(&digest).await?;
                    ok = false;
                }
                None => ok = false,
            }
        }
        Ok(ok)
    }

    /// Removes a blob (after corruption was detected, or by `gc`).
    pub async fn delete_blob(&self, digest: &str) -> Result<()> {
        match self.inner.os.delete(&blob_path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend()(e)),
        }
    }

    /// A local, verified file with the blob's bytes: in place for a `file://` store, else a
    /// copy in the cache directory.
    pub async fn blob_file(&self, digest: &str) -> Result<PathBuf> {
        let already = self.inner.verified.lock().unwrap().contains(digest);
        if let Some(root) = &self.inner.local_root {
            let p = root.join(blob_path(digest).as_ref());
            if !already {
                let bytes = match tokio::fs::read(&p).await {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StoreError::Missing {
                            digest: digest.to_string(),
                        });
                    }
                    Err(e) => return Err(io(format!("cannot read `{}`", p.display()))(e)),
                };
                let actual = digest_of(&bytes);
                if actual != digest {
                    return Err(StoreError::Corrupt {
                        digest: digest.to_string(),
                        actual,
                    });
                }
                self.inner
                    .verified
                    .lock()
                    .unwrap()
                    .insert(digest.to_string());
            }
            return Ok(p);
        }
        let p = self
            .inner
            .cache_dir
            .join("blobs")
            .join(&digest[..2])
            .join(digest);
        if p.is_file()
            && (already
                || std::fs::read(&p)
                    .map(|b| digest_of(&b) == digest)
                    .unwrap_or(false))
        {
            self.inner
                .verified
                .lock()
                .unwrap()
                .insert(digest.to_string());
            return Ok(p);
        }
        let bytes = self.get_blob(digest).await?;
        write_atomic(&p, &bytes).map_err(io(format!("cannot write `{}`", p.display())))?;
        self.inner
            .verified
            .lock()
            .unwrap()
            .insert(digest.to_string());
        Ok(p)
    }

    /// Materialises a tree artifact as a directory in the cache; returns its path.
    ///
    /// Safe under concurrency: tasks of this process wait for one another per digest, and a
    /// directory another process already materialised is checked (every entry present with
    /// its size) and used as it is, never replaced under a reader; only a damaged one is
    /// rebuilt. A new directory is built under a unique temporary name and renamed into place.
    pub async fn tree_dir(&self, digest: &str) -> Result<PathBuf> {
        let dir = self.inner.cache_dir.join("trees").join(digest);
        let tag = format!("tree:{digest}");
        let is_verified = || self.inner.verified.lock().unwrap().contains(&tag);
        if is_verified() && dir.is_dir() {
            return Ok(dir);
        }
        let lock = self
            .inner
            .tree_locks
            .lock()
            .unwrap()
            .entry(digest.to_string())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if is_verified() && dir.is_dir() {
            return Ok(dir);
        }
        let tree = self.read_tree(digest).await?;
        let intact = |d: &Path| {
            tree.entries.iter().all(|e| {
                std::fs::metadata(d.join(&e.path)).is_ok_and(|m| m.is_file() && m.len() == e.size)
            })
        };
        if dir.is_dir() && intact(&dir) {
            self.inner.verified.lock().unwrap().insert(tag);
            return Ok(dir);
        }
        let tmp = self.inner.cache_dir.join("trees").join(format!(
            ".tmp-{digest}-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        for e in &tree.entries {
            let src = self.blob_file(&e.digest).await?;
            let dst = tmp.join(&e.path);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("cannot create `{}`", parent.display())))?;
            }
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst)
                    .map_err(io(format!("cannot copy to `{}`", dst.display())))?;
            }
        }
        std::fs::create_dir_all(&tmp).map_err(io(format!("cannot create `{}`", tmp.display())))?;
        if dir.exists() {
            // Another process may have finished the same tree meanwhile: use it if intact.
            if intact(&dir) {
                let _ = std::fs::remove_dir_all(&tmp);
                self.inner.verified.lock().unwrap().insert(tag);
                return Ok(dir);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            // Lost a race with another process: its directory is as good as ours.
            let _ = std::fs::remove_dir_all(&tmp);
            if !(dir.is_dir() && intact(&dir)) {
                return Err(io(format!("cannot move tree into `{}`", dir.display()))(e));
            }
        }
        self.inner.verified.lock().unwrap().insert(tag);
        Ok(dir)
    }

    pub async fn read_tree(&self, digest: &str) -> Result<Tree> {
        let bytes = self.get_blob(digest).await?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Malformed {
            what: "tree",
            path: digest.to_string(),
            source,
        })
    }

    /// Stores an output: inline in the manifest when small, else as a blob.
    pub async fn put_output(&self, bytes: Bytes) -> Result<Artifact> {
        if bytes.len() <= INLINE_MAX {
            use base64::Engine as _;
            let digest = digest_of(&bytes);
            return Ok(Artifact {
                digest,
                size: bytes.len() as u64,
                tree: false,
                inline: Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
            });
        }
        self.put_blob(bytes).await
    }

    ///
    /// A small (inline) output is also hard-linked into the local blob cache under its digest,
    /// where [`Store::artifact_file`] finds it for the task that reads it next: no second
    /// inode, no second write (a chain of shell tasks made one per task). The link is checked
    /// against the manifest's bytes when it is used.
    pub async fn put_file_output(&self, file: &Path) -> Result<Artifact> {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(io(format!("cannot read `{}`", file.display())))?;
        let a = self.put_output(Bytes::from(bytes)).await?;
        if a.inline.is_some() {
            let p = self.inline_cache_path(&a.digest);
            if !p.exists() {
                if let Some(dir) = p.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                // (a failure, e.g. another file system: the first reader writes a copy)
                let _ = std::fs::hard_link(file, &p);
            }
        }
        Ok(a)
    }

    fn inline_cache_path(&self, digest: &str) -> PathBuf {
        self.inner
            .cache_dir
            .join("blobs")
            .join(&digest[..2])
            .join(digest)
    }

    /// An artifact's bytes (a file artifact), verified.
    pub async fn read_artifact(&self, a: &Artifact) -> Result<Bytes> {
        match &a.inline {
            Some(b64) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                let actual = digest_of(&bytes);
                if actual != a.digest {
                    return Err(StoreError::Corrupt {
                        digest: a.digest.clone(),
                        actual,
                    });
                }
                Ok(Bytes::from(bytes))
            }
            None => self.get_blob(&a.digest).await,
        }
    }

    /// A local path with the artifact's content: a file, or a directory for trees.
    pub async fn artifact_file(&self, a: &Artifact) -> Result<PathBuf> {
        if a.tree {
            return self.tree_dir(&a.digest).await;
        }
        if a.inline.is_some() {
            let p = self.inline_cache_path(&a.digest);
            let bytes = self.read_artifact(a).await?;
            match std::fs::read(&p) {
                Ok(have) if have[..] == bytes[..] => {}
                // A linked output changed after it was stored (or a damaged copy): replace it.
                Ok(_) => write_atomic(&p, &bytes)
                    .map_err(io(format!("cannot write `{}`", p.display())))?,
                Err(_) => {
                    write_new(&p, &bytes).map_err(io(format!("cannot write `{}`", p.display())))?
                }
            }
            return Ok(p);
        }
        self.blob_file(&a.digest).await
    }

    /// Every blob digest an artifact consists of (the tree listing and its files); none for
    /// inline artifacts.
    pub async fn artifact_blobs(&self, a: &Artifact) -> Result<Vec<String>> {
        if a.inline.is_some() {
            return Ok(Vec::new());
        }
        let mut out = vec![a.digest.clone()];
        if a.tree {
            out.extend(
                self.read_tree(&a.digest)
                    .await?
                    .entries
                    .into_iter()
                    .map(|e| e.digest),
            );
        }
        Ok(out)
    }

    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &OPath,
        what: &'static str,
    ) -> Result<Option<T>> {
        match self.inner.os.get(path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(self.backend())?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Malformed {
                        what,
                        path: path.to_string(),
                        source,
                    })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend()(e)),
        }
    }

    async fn put_json<T: serde::Serialize>(&self, path: &OPath, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).expect("serialises");
        self.inner
            .os
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(self.backend())?;
        Ok(())
    }

    /// Writes an object at a location outside the prefixes `gc` manages (e.g.
    /// `studies/<name>/...`): `gc` never deletes it. The write is atomic (a reader sees the
    /// old object, or none, or the whole new one) and durable when it returns: on a local
    /// store the file and its directory are fsynced (a power loss cannot lose an
    /// acknowledged record); an S3 PUT is durable once answered.
    pub async fn put_object(&self, location: &str, bytes: Bytes) -> Result<()> {
        if let Some(root) = self.local_root() {
            let path = root.join(location);
            return tokio::task::spawn_blocking(move || write_durable(&path, &bytes))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(io(format!("cannot write `{location}` in the store")));
        }
        self.inner
            .os
            .put(&OPath::from(location), PutPayload::from(bytes))
            .await
            .map_err(self.backend())?;
        Ok(())
    }

    /// The object at a location, or `None` when there is none.
    pub async fn get_object(&self, location: &str) -> Result<Option<Bytes>> {
        match self.inner.os.get(&OPath::from(location)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(self.backend())?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend()(e)),
        }
    }

    pub async fn put_checkpoint(&self, key: &str, name: &str, bytes: Bytes) -> Result<()> {
        let path = OPath::from(format!("checkpoints/{key}/{name}"));
        self.inner
            .os
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(self.backend())?;
        Ok(())
    }

    pub async fn get_checkpoint(&self, key: &str, name: &str) -> Result<Option<Bytes>> {
        let path = OPath::from(format!("checkpoints/{key}/{name}"));
        match self.inner.os.get(&path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(self.backend())?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend()(e)),
        }
    }

    /// A small key-value cache shared by every run on this store (e.g. judge responses,
    /// keyed by request content). A task's handle ([`Store::with_kv_log`]) records the
    /// records it reads or writes; `gc` keeps those of kept results.
    pub async fn put_kv(&self, namespace: &str, key: &str, bytes: Bytes) -> Result<()> {
        let path = OPath::from(format!("kv/{namespace}/{key}"));
        self.inner
            .os
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(self.backend())?;
        if let Some(log) = &self.kv_log {
            log.record(path.to_string());
        }
        Ok(())
    }

    pub async fn get_kv(&self, namespace: &str, key: &str) -> Result<Option<Bytes>> {
        let path = OPath::from(format!("kv/{namespace}/{key}"));
        match self.inner.os.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(self.backend())?;
                if let Some(log) = &self.kv_log {
                    log.record(path.to_string());
                }
                Ok(Some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend()(e)),
        }
    }

    pub async fn put_run(&self, s: &RunSummary) -> Result<()> {
        self.put_json(&OPath::from(format!("runs/{}.json", s.run_id)), s)
            .await
    }

    pub async fn put_pin(&self, p: &Pin) -> Result<()> {
        self.put_json(&OPath::from(format!("pins/{}.json", p.name)), p)
            .await
    }

    pub async fn delete_pin(&self, name: &str) -> Result<bool> {
        let path = OPath::from(format!("pins/{name}.json"));
        match self.inner.os.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.backend()(e)),
        }
        self.inner.os.delete(&path).await.map_err(self.backend())?;
        Ok(true)
    }

    pub async fn put_lease(&self, l: &Lease) -> Result<()> {
        self.put_json(&OPath::from(format!("leases/{}.json", l.run_id)), l)
            .await
    }

    pub async fn delete_lease(&self, run_id: &str) -> Result<()> {
        match self
            .inner
            .os
            .delete(&OPath::from(format!("leases/{run_id}.json")))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend()(e)),
        }
    }

    /// Every object under a prefix (`blobs`, `results`, `runs`, `pins`, `leases`), with
    /// its last-modified time in ms.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let p = OPath::from(prefix);
        self.inner
            .os
            .list(Some(&p))
            .map_ok(|m| {
                (
                    m.location.to_string(),
                    m.last_modified.timestamp_millis().max(0) as u64,
                )
            })
            .try_collect()
            .await
            .map_err(self.backend())
    }

    pub async fn read_json_at<T: serde::de::DeserializeOwned>(
        &self,
        location: &str,
        what: &'static str,
    ) -> Result<Option<T>> {
        self.get_json(&OPath::from(location), what).await
    }

    pub async fn delete_at(&self, location: &str) -> Result<()> {
        match self.inner.os.delete(&OPath::from(location)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend()(e)),
        }
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            collect_files(root, &path, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Publishes an immutable, content-named file so that readers see either nothing or all of
/// it: an unnamed file (`O_TMPFILE`) in its folder, written, then linked under its name — one
/// directory operation instead of a create and a rename. A file already there under that name
/// is kept. Falls back to [`write_atomic`] where the filesystem has no `O_TMPFILE`.
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o644)
            .open(dir)
    };
    let f = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            match open() {
                Ok(f) => f,
                Err(_) => return write_atomic(path, bytes),
            }
        }
        Err(_) => return write_atomic(path, bytes),
    };
    (&f).write_all(bytes)?;
    let src = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    let dst = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: both arguments are NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    match std::io::Error::last_os_error() {
        e if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        _ => write_atomic(path, bytes),
    }
}

/// Writes a file so that readers see either nothing or all of it.
/// A temporary name beside `path`, unique to this process and thread.
fn tmp_path(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}.tmp-{}-{:?}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        std::thread::current().id()
    ))
}

/// [`write_atomic`], with the file fsynced before the rename and the directory after it.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = tmp_path(path);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(parent)?.sync_all()
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small output file is linked into the blob cache (same inode, no copy); a link whose
    /// file changed after it was stored is replaced by the stored bytes when read.
    #[tokio::test]
    async fn small_file_outputs_are_linked_into_the_cache_and_checked_when_used() {
        use std::os::unix::fs::MetadataExt as _;
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("file://{}", d.path().join("store").display()),
            d.path(),
            &d.path().join("cache"),
        )
        .unwrap();
        let out = d.path().join("o.txt");
        std::fs::write(&out, b"42\n").unwrap();
        let a = store.put_file_output(&out).await.unwrap();
        assert!(a.inline.is_some());
        let p = store.artifact_file(&a).await.unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().ino(),
            std::fs::metadata(&out).unwrap().ino()
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"42\n");
        // The task's file is written again after the fact (a stray background process).
        std::fs::write(&out, b"43\n").unwrap();
        let p = store.artifact_file(&a).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"42\n");
        assert_eq!(std::fs::read(&out).unwrap(), b"43\n");
    }

    fn mem() -> Store {
        Store::open(
            "memory://",
            Path::new("."),
            &std::env::temp_dir().join("cocoflow-test-cache"),
        )
        .unwrap()
    }

    /// A content-named file is published whole, once; a second publication keeps the first.
    #[test]
    fn write_new_publishes_whole_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ab").join("cd");
        write_new(&p, b"first").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        write_new(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn blobs_round_trip_and_dedupe() {
        let s = mem();
        let a = s.put_blob(Bytes::from_static(b"hello")).await.unwrap();
        let b = s.put_blob(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest, blake3::hash(b"hello").to_hex().to_string());
        assert_eq!(&s.get_blob(&a.digest).await.unwrap()[..], b"hello");
        assert!(matches!(
            s.get_blob(&"0".repeat(64)).await,
            Err(StoreError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn corrupt_blob_is_detected_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            &format!("file://{}", dir.path().join("st").display()),
            dir.path(),
            &dir.path().join("cache"),
        )
        .unwrap();
        let a = s.put_blob(Bytes::from_static(b"payload")).await.unwrap();
        let file = dir.path().join("st").join(blob_path(&a.digest).as_ref());
        std::fs::write(&file, b"tampered").unwrap();
        let fresh = Store::open(
            &format!("file://{}", dir.path().join("st").display()),
            dir.path(),
            &dir.path().join("cache"),
        )
        .unwrap();
        assert!(matches!(
            fresh.get_blob(&a.digest).await,
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            fresh.blob_file(&a.digest).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn trees_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"A").unwrap();
        std::fs::write(src.join("sub/b.txt"), b"BB").unwrap();
        let s = Store::open("memory://", dir.path(), &dir.path().join("cache")).unwrap();
        let t = s.put_dir(&src).await.unwrap();
        assert!(t.tree);
        assert_eq!(t.size, 3);
        let out = s.tree_dir(&t.digest).await.unwrap();
        assert_eq!(std::fs::read(out.join("sub/b.txt")).unwrap(), b"BB");
        assert_eq!(s.artifact_blobs(&t).await.unwrap().len(), 3);
    }

    /// Many tasks (threads of one process, and a second process) reading the same tree at
    /// once all see it complete; a directory another process made is reused, not replaced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_tree_materialisation_is_safe() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..200 {
            std::fs::write(src.join(format!("f{i}.bin")), vec![i as u8; 1000 + i]).unwrap();
        }
        let url = format!("file://{}", dir.path().join("store").display());
        let cache = dir.path().join("cache");
        let s = Store::open(&url, dir.path(), &cache).unwrap();
        let t = s.put_dir(&src).await.unwrap();
        let mut handles = Vec::new();
        for k in 0..8 {
            // Two independent store handles stand for two processes.
            let s = if k % 2 == 0 {
                s.clone()
            } else {
                Store::open(&url, dir.path(), &cache).unwrap()
            };
            let digest = t.digest.clone();
            handles.push(tokio::spawn(async move {
                let d = s.tree_dir(&digest).await.unwrap();
                for i in 0..200 {
                    let got = std::fs::read(d.join(format!("f{i}.bin"))).unwrap();
                    assert_eq!(got.len(), 1000 + i, "file {i} incomplete");
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let leftovers: Vec<_> = std::fs::read_dir(cache.join("trees"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary directories left: {leftovers:?}"
        );
    }
}
