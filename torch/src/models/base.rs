//! Where a task gets its base model: [`BaseModel`] loads it from the model directory, or —
//! given the process's model cache and the directory's digest — builds it on weights loaded
//! once per (digest, device) and shared by every task of the process (a worker of the
//! `workers` executor, or the in-process executor).

use super::error::ModelError;
use super::open::Backend;
use super::policy::EditPolicy;
use super::tiny_kontext::{BACKEND, SharedBase, TinyKontext};
use cocoflow_engine::kind::ModelCache;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Device;

/// A base model directory, and how to load it.
#[derive(Clone)]
pub struct BaseModel {
    dir: PathBuf,
    cache: Option<(Arc<ModelCache>, String)>,
}

impl BaseModel {
    /// Loaded from `dir` every time.
    pub fn uncached(dir: &Path) -> BaseModel {
        BaseModel {
            dir: dir.to_path_buf(),
            cache: None,
        }
    }

    /// Built on the weights `cache` holds for `digest` (the content digest of `dir`: the
    /// store's digest of the `model` input), loading them on first use.
    pub fn cached(dir: &Path, cache: Arc<ModelCache>, digest: &str) -> BaseModel {
        BaseModel {
            dir: dir.to_path_buf(),
            cache: Some((cache, digest.to_string())),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The base model on `device` as its backend's policy ([`super::open()`]).
    /// tiny-kontext weights are shared through the cache; a FLUX.1 Kontext or
    /// Qwen-Image-Edit repository is loaded per call (the cache holds no such weights yet).
    pub fn load(&self, device: Device) -> Result<Box<dyn EditPolicy>, ModelError> {
        match Backend::detect(&self.dir)? {
            Backend::TinyKontext => Ok(Box::new(self.load_tiny(device)?)),
            Backend::FluxKontext | Backend::QwenImageEdit => super::open(&self.dir, device),
        }
    }

    /// The tiny-kontext base model on `device`.
    pub fn load_tiny(&self, device: Device) -> Result<TinyKontext, ModelError> {
        match &self.cache {
            None => TinyKontext::load(&self.dir, device),
            Some((cache, digest)) => {
                let key = format!("{BACKEND}/{digest}/{device:?}");
                let shared = cache.get_or_try_insert_sized(&key, || {
                    let b = SharedBase::load(&self.dir, device)?;
                    let bytes = b.bytes();
                    Ok::<_, ModelError>((b, bytes))
                })?;
                TinyKontext::from_shared(&shared, device)
            }
        }
    }
}
