//! The backend seam: [`open`] picks a model directory's backend from what the directory holds
//! and returns it as a boxed [`EditPolicy`]; [`weights_digest`] names a directory's weights.
//!
//! - `model_index.json` (a diffusers repository as `save_pretrained` writes it), by its
//!   `_class_name`: `FluxKontextPipeline` → [`Backend::FluxKontext`], `QwenImageEditPipeline`
//!   or `QwenImageEditPlusPipeline` (2509 and later) → [`Backend::QwenImageEdit`]; any other
//!   pipeline is an error naming it.
//! - `config.json` + `model.safetensors` (what `pretrain` writes): [`Backend::TinyKontext`].
//!
//! A trait object rather than an enum: rollout, training and evaluation only use the trait,
//! and a new backend then touches this file and its own folder only.

use super::error::ModelError;
use super::policy::EditPolicy;
use super::tiny_kontext::TinyKontext;
use std::path::{Path, PathBuf};
use tch::Device;

/// The backends a model directory can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    TinyKontext,
    FluxKontext,
    QwenImageEdit,
}

impl Backend {
    /// What `dir` holds, or an error naming the file that is missing or wrong.
    pub fn detect(dir: &Path) -> Result<Backend, ModelError> {
        let bad = |path: PathBuf, message: String| ModelError::Config { path, message };
        if !dir.is_dir() {
            return Err(bad(dir.to_path_buf(), "not a directory".into()));
        }
        let index = dir.join("model_index.json");
        if index.is_file() {
            let v: serde_json::Value = super::checkpoint::read_json(&index)?;
            let flux = super::flux_kontext::pipeline::PIPELINE_CLASS;
            let qwen = super::qwen_image_edit::pipeline::PIPELINE_CLASS;
            let qwen_plus = super::qwen_image_edit::pipeline::PLUS_PIPELINE_CLASS;
            return match v.get("_class_name").and_then(|c| c.as_str()) {
                Some(c) if c == flux => {
                    super::flux_kontext::pipeline::check_repository(dir)?;
                    Ok(Backend::FluxKontext)
                }
                Some(c) if c == qwen || c == qwen_plus => {
                    super::qwen_image_edit::pipeline::check_repository(dir)?;
                    Ok(Backend::QwenImageEdit)
                }
                Some(c) => Err(bad(
                    index,
                    format!(
                        "a diffusers `{c}` repository: cocoflow runs `{flux}` (FLUX.1 Kontext), \
                         `{qwen}` and `{qwen_plus}` (Qwen-Image-Edit) repositories"
                    ),
                )),
                None => Err(bad(
                    index,
                    "no `_class_name`: not a diffusers pipeline index".into(),
                )),
            };
        }
        let config = dir.join(super::checkpoint::CONFIG_FILE);
        if config.is_file() {
            let v: serde_json::Value = super::checkpoint::read_json(&config)?;
            if let Some(class) = v.get("_class_name").and_then(|c| c.as_str()) {
                return Err(bad(
                    config,
                    format!(
                        "a diffusers `{class}` component, not a model: pass the repository \
                         root (the directory with `model_index.json`)"
                    ),
                ));
            }
            if dir.join(super::checkpoint::WEIGHTS_FILE).is_file() {
                return Ok(Backend::TinyKontext);
            }
            return Err(bad(
                dir.join(super::checkpoint::WEIGHTS_FILE),
                "missing (a tiny-kontext model directory has `config.json` + `model.safetensors`)"
                    .into(),
            ));
        }
        Err(bad(
            dir.to_path_buf(),
            "not a model directory: expected `model_index.json` (a diffusers FLUX.1 Kontext or \
             Qwen-Image-Edit repository) or `config.json` + `model.safetensors` (tiny-kontext)"
                .into(),
        ))
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::TinyKontext => super::tiny_kontext::BACKEND,
            Backend::FluxKontext => super::flux_kontext::BACKEND,
            Backend::QwenImageEdit => super::qwen_image_edit::BACKEND,
        }
    }
}

/// The model in `dir` on `device`, its base frozen, as its backend's [`EditPolicy`].
pub fn open(dir: &Path, device: Device) -> Result<Box<dyn EditPolicy>, ModelError> {
    Ok(match Backend::detect(dir)? {
        Backend::TinyKontext => Box::new(TinyKontext::load(dir, device)?),
        Backend::FluxKontext => Box::new(super::flux_kontext::FluxKontext::load(dir, device)?),
        Backend::QwenImageEdit => {
            Box::new(super::qwen_image_edit::QwenImageEdit::load(dir, device)?)
        }
    })
}

/// The text encoders of the model in `dir` on `device`, loaded on their own, for a backend that
/// encodes instructions apart from the source ([`EditPolicy::separate_prompt_encoding`]):
/// FLUX.1 Kontext's CLIP + T5. `None` for a backend that encodes them inline (tiny-kontext).
pub fn prompt_encoder(
    dir: &Path,
    device: Device,
) -> Result<Option<Box<dyn super::policy::PromptEncoder>>, ModelError> {
    Ok(match Backend::detect(dir)? {
        // Qwen-Image-Edit's Qwen2.5-VL encodes the instruction with the source image:
        // `encode-prompts` runs its own path (`QwenConditionEncoder`), keyed by both.
        Backend::TinyKontext | Backend::QwenImageEdit => None,
        Backend::FluxKontext => {
            let kind = if device.is_cuda() {
                tch::Kind::BFloat16
            } else {
                tch::Kind::Float
            };
            Some(Box::new(super::flux_kontext::FluxPromptEncoder::load(
                dir, device, kind,
            )?))
        }
    })
}

/// Checks the LoRA adapter directory `adapter` against the model in `dir` before the model is
/// loaded, where that saves a costly load: a FLUX.1 Kontext adapter's matrices against the
/// transformer's safetensors headers (an adapter for another model is reported with its file
/// and keys). tiny-kontext loads in milliseconds and, like Qwen-Image-Edit (not yet
/// pre-checked), checks in `load_adapter`.
pub fn check_adapter(dir: &Path, adapter: &Path) -> Result<(), ModelError> {
    match Backend::detect(dir)? {
        Backend::TinyKontext | Backend::QwenImageEdit => Ok(()),
        Backend::FluxKontext => super::flux_kontext::preflight::check_adapter(dir, adapter),
    }
}

/// A file's BLAKE3 ([`cocoflow_tasks::weights::file_digest`]: hashed once per (path, size,
/// mtime) and machine).
pub fn file_digest(path: &Path) -> Result<String, ModelError> {
    cocoflow_tasks::weights::file_digest(path).map_err(|source| ModelError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

/// The digest of a model directory's weights: tiny-kontext, BLAKE3 of `model.safetensors`;
/// a FLUX.1 Kontext or Qwen-Image-Edit repository, [`cocoflow_tasks::weights::dir_digest`]
/// (every file, by reference: nothing is copied).
pub fn weights_digest(dir: &Path) -> Result<String, ModelError> {
    match Backend::detect(dir)? {
        Backend::TinyKontext => file_digest(&dir.join(super::checkpoint::WEIGHTS_FILE)),
        Backend::FluxKontext | Backend::QwenImageEdit => cocoflow_tasks::weights::dir_digest(dir)
            .map_err(|source| ModelError::Io {
                op: "read",
                path: dir.to_owned(),
                source,
            }),
    }
}
