//! Where a task gets its base model: [`BaseModel`] loads it from the model directory, or —
//! given the process's model cache and the directory's digest — builds it on weights loaded
//! once per (digest, device) and shared by every task of the process (a worker of the
//! `workers` executor, or the in-process executor).
//!
//! tiny-kontext shares its base tensors between live models ([`SharedBase`]). A FLUX.1 Kontext
//! pipeline holds its weights inside its layers (with LoRA added in place), so the cache holds
//! the loaded pipeline in a [`Slot`]: a task leases it ([`Leased`]) and gives it back, adapters
//! removed, when its policy is dropped; a second task of the same process running at the same
//! time on the same device gets a second slot (loaded once, then cached as well). Keys:
//! `flux-kontext/<digest>/<device>/<full | no-text-encoders>/<slot>`. Qwen-Image-Edit is
//! cached the same way: `qwen-image-edit/<digest>/<device>/<full | no-text-encoders>/<slot>`.

use super::error::ModelError;
use super::flux_kontext::{FluxKontext, FluxKontextPipeline};
use super::lease::{Leased, Slot};
use super::open::Backend;
use super::policy::{EditPolicy, PromptSource};
use super::qwen_image_edit::{QwenImageEdit, QwenImageEditPipeline};
use super::tiny_kontext::{BACKEND, SharedBase, TinyKontext};
use cocoflow_engine::kind::ModelCache;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Device;

/// Slots per (model, device, parts): concurrent tasks of one process skip the slots in use;
/// past this many, a task loads its own copy.
const MAX_SLOTS: usize = 16;

/// Makes the cached prompt encodings a policy conditions on ([`BaseModel::with_prompts`]).
pub type PromptSourceFn = Arc<dyn Fn() -> Box<dyn PromptSource> + Send + Sync>;

/// A base model directory, and how to load it.
#[derive(Clone)]
pub struct BaseModel {
    dir: PathBuf,
    cache: Option<(Arc<ModelCache>, String)>,
    prompts: Option<PromptSourceFn>,
}

impl BaseModel {
    /// Loaded from `dir` every time.
    pub fn uncached(dir: &Path) -> BaseModel {
        BaseModel {
            dir: dir.to_path_buf(),
            cache: None,
            prompts: None,
        }
    }

    /// Built on the weights `cache` holds for `digest` (the content digest of `dir`: the
    /// store's digest of the `model` input), loading them on first use.
    pub fn cached(dir: &Path, cache: Arc<ModelCache>, digest: &str) -> BaseModel {
        BaseModel {
            dir: dir.to_path_buf(),
            cache: Some((cache, digest.to_string())),
            prompts: None,
        }
    }

    /// Policies condition on the prompt encodings `source` makes (the `encode-prompts`
    /// artifact) and are loaded without their text encoders (FLUX.1 Kontext's CLIP and T5,
    /// Qwen-Image-Edit's Qwen2.5-VL); backends that encode inline (tiny-kontext) load and run
    /// as before.
    pub fn with_prompts(mut self, source: PromptSourceFn) -> BaseModel {
        self.prompts = Some(source);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The base model on `device` as its backend's policy ([`super::open()`]), through the
    /// model cache when there is one (tiny-kontext: shared weights; FLUX.1 Kontext: a leased
    /// pipeline; Qwen-Image-Edit: a leased pipeline).
    /// With [`Self::with_prompts`], without the text encoders and on the cached encodings.
    pub fn load(&self, device: Device) -> Result<Box<dyn EditPolicy>, ModelError> {
        let Some(prompts) = &self.prompts else {
            return self.load_with(device, true);
        };
        let mut model = self.load_with(device, false)?;
        model.set_prompt_source(prompts());
        Ok(model)
    }

    /// [`Self::load`]; `text_encoders: false` leaves out a backend's separate text encoders
    /// (FLUX.1 Kontext's CLIP and T5) for a task whose prompt encodings come from an
    /// `encode-prompts` artifact. Backends that encode instructions inline ignore it.
    pub fn load_with(
        &self,
        device: Device,
        text_encoders: bool,
    ) -> Result<Box<dyn EditPolicy>, ModelError> {
        match Backend::detect(&self.dir)? {
            Backend::TinyKontext => Ok(Box::new(self.load_tiny(device)?)),
            Backend::FluxKontext => Ok(Box::new(self.load_flux(device, text_encoders)?)),
            Backend::QwenImageEdit => Ok(Box::new(self.load_qwen(device, text_encoders)?)),
        }
    }

    /// The Qwen-Image-Edit pipeline on `device`: leased from the cache (loaded on first use),
    /// or loaded for this task alone without one.
    pub fn load_qwen(
        &self,
        device: Device,
        text_encoder: bool,
    ) -> Result<QwenImageEdit, ModelError> {
        let dir = &self.dir;
        let Some((cache, digest)) = &self.cache else {
            let p = QwenImageEdit::load_pipeline(dir, device, text_encoder)?;
            return QwenImageEdit::from_leased(Leased::owned(p), dir);
        };
        self.leased(
            cache,
            &format!("{}/{digest}", super::qwen_image_edit::BACKEND),
            device,
            text_encoder,
            || QwenImageEdit::load_pipeline(dir, device, text_encoder),
            QwenImageEditPipeline::bytes,
            |p| QwenImageEdit::from_leased(p, dir),
        )
    }

    /// A pipeline leased from slot `<prefix>/<device>/<parts>/<n>` of `cache`: the first slot
    /// no concurrent task of this process holds (loaded on first use); past [`MAX_SLOTS`] a
    /// task loads its own copy.
    #[allow(clippy::too_many_arguments)]
    fn leased<P: Send + 'static, M>(
        &self,
        cache: &Arc<ModelCache>,
        prefix: &str,
        device: Device,
        text_encoders: bool,
        load: impl Fn() -> Result<P, ModelError>,
        bytes: impl Fn(&P) -> u64,
        wrap: impl FnOnce(Leased<P>) -> Result<M, ModelError>,
    ) -> Result<M, ModelError> {
        let parts = if text_encoders {
            "full"
        } else {
            "no-text-encoders"
        };
        for n in 0..MAX_SLOTS {
            let key = format!("{prefix}/{device:?}/{parts}/{n}");
            let slot: Arc<Slot<P>> = cache.get_or_try_insert_sized(&key, || {
                let p = load()?;
                let b = bytes(&p);
                Ok::<_, ModelError>((Slot::new(p, b), b))
            })?;
            if let Some(p) = slot.take() {
                return wrap(Leased::from_slot(p, slot));
            }
        }
        wrap(Leased::owned(load()?))
    }

    /// The FLUX.1 Kontext pipeline on `device`: leased from the cache (loaded on first use),
    /// or loaded for this task alone without one.
    pub fn load_flux(
        &self,
        device: Device,
        text_encoders: bool,
    ) -> Result<FluxKontext, ModelError> {
        let Some((cache, digest)) = &self.cache else {
            let p = FluxKontext::load_pipeline(&self.dir, device, text_encoders)?;
            return FluxKontext::from_leased(Leased::owned(p));
        };
        let dir = &self.dir;
        self.leased(
            cache,
            &format!("{}/{digest}", super::flux_kontext::BACKEND),
            device,
            text_encoders,
            || FluxKontext::load_pipeline(dir, device, text_encoders),
            FluxKontextPipeline::bytes,
            FluxKontext::from_leased,
        )
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
