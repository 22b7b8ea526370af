//! The `prompts` artifact (written by `encode-prompts`, read by `rollout`, `nft-train` and
//! `eval`), format `cocoflow-prompt-encodings` version 1: a backend's encodings of every
//! instruction of some datasets, made once by its text encoders so that the RL tasks need not
//! load them. A directory:
//!
//! ```text
//! prompts.json                 PromptsManifest: backend, model digest, instructions, files
//! encodings/NNNNNN.safetensors one instruction's parts (FLUX.1 Kontext: prompt_embeds
//!                              (1, 512, 4096), pooled_prompt_embeds (1, 768)), in the kind
//!                              the encoders ran in
//! ```
//!
//! One file per instruction, so a task reads only the instructions it conditions on. For a
//! backend that encodes instructions inline (tiny-kontext) the artifact lists no files
//! (`encoded: false`) and the readers encode as before: a pass-through.
//!
//! A backend whose prompt encoder also sees the source image (Qwen-Image-Edit: Qwen2.5-VL)
//! keys each entry by (instruction, condition-image digest): `images[i]` is the digest of the
//! image `instructions[i]` was encoded with, and the same instruction appears once per image
//! (files `prompt_embeds` `(1, L, hidden)` with the prompt's L tokens, unpadded). `images` is
//! absent for backends whose encodings do not depend on the image (FLUX.1 Kontext).

use crate::models::checkpoint;
use crate::models::{ModelError, PromptEncodings, PromptSource};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const MANIFEST_FILE: &str = "prompts.json";
pub const ENCODINGS_DIR: &str = "encodings";
pub const FORMAT: &str = "cocoflow-prompt-encodings";
pub const VERSION: u32 = 1;

/// `prompts.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsManifest {
    pub format: String,
    pub version: u32,
    /// The backend whose encoders made them, e.g. `flux-kontext`.
    pub backend: String,
    /// The content digest of the `model` input (the encoders' weights are part of it).
    pub model_digest: String,
    /// Whether there are encodings: `false` for a backend that encodes inline.
    pub encoded: bool,
    /// Distinct instructions (with `images`: distinct (instruction, image) pairs), sorted;
    /// `files[i]` holds `instructions[i]`'s parts.
    pub instructions: Vec<String>,
    /// Per entry, the digest of the condition image it was encoded with; empty (absent from
    /// the file) for image-independent encodings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// With `images`: the device kind and dtype that made the condition images
    /// (`cpu/Float`, `cuda/BFloat16`); a task on another finds none of its images here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_on: Option<String>,
    pub files: Vec<String>,
}

/// Writes the parts of instructions `first..first + n` (`encodings`, one row each, on any
/// device) to `dir`, one file each; returns their relative paths.
pub fn write_encodings(
    dir: &Path,
    first: usize,
    encodings: &PromptEncodings,
) -> Result<Vec<String>, ModelError> {
    std::fs::create_dir_all(dir.join(ENCODINGS_DIR)).map_err(|source| ModelError::Io {
        op: "create",
        path: dir.join(ENCODINGS_DIR),
        source,
    })?;
    let n = encodings.parts.values().next().map_or(0, |t| t.size()[0]);
    let mut files = Vec::new();
    for i in 0..n {
        let rel = format!("{ENCODINGS_DIR}/{:06}.safetensors", first + i as usize);
        let row: BTreeMap<String, Tensor> = encodings
            .parts
            .iter()
            .map(|(k, t)| (k.clone(), t.narrow(0, i, 1)))
            .collect();
        checkpoint::write_safetensors(&dir.join(&rel), &row)?;
        files.push(rel);
    }
    Ok(files)
}

/// Writes `prompts.json` to `dir`: `files` from [`write_encodings`] (one per instruction), or
/// `None` for a backend that encodes inline (a pass-through artifact).
pub fn write_manifest(
    dir: &Path,
    backend: &str,
    model_digest: &str,
    instructions: &[String],
    files: Option<Vec<String>>,
) -> Result<PromptsManifest, ModelError> {
    write_manifest_with_images(dir, backend, model_digest, instructions, &[], None, files)
}

/// Writes one entry's parts (tensors with a leading batch dimension of 1) as
/// `encodings/NNNNNN.safetensors`; returns its relative path.
pub fn write_entry(
    dir: &Path,
    index: usize,
    parts: &BTreeMap<String, Tensor>,
) -> Result<String, ModelError> {
    std::fs::create_dir_all(dir.join(ENCODINGS_DIR)).map_err(|source| ModelError::Io {
        op: "create",
        path: dir.join(ENCODINGS_DIR),
        source,
    })?;
    let rel = format!("{ENCODINGS_DIR}/{index:06}.safetensors");
    checkpoint::write_safetensors(&dir.join(&rel), parts)?;
    Ok(rel)
}

/// [`write_manifest`] for encodings keyed by (instruction, condition-image digest):
/// `images[i]` goes with `instructions[i]` (empty: image-independent encodings), made on
/// `made_on` ([`PromptsManifest::made_on`]).
pub fn write_manifest_with_images(
    dir: &Path,
    backend: &str,
    model_digest: &str,
    instructions: &[String],
    images: &[String],
    made_on: Option<&str>,
    files: Option<Vec<String>>,
) -> Result<PromptsManifest, ModelError> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let m = PromptsManifest {
        format: FORMAT.into(),
        version: VERSION,
        backend: backend.into(),
        model_digest: model_digest.into(),
        encoded: files.is_some(),
        instructions: instructions.to_vec(),
        images: images.to_vec(),
        made_on: made_on.map(str::to_string),
        files: files.unwrap_or_default(),
    };
    checkpoint::write_json(&dir.join(MANIFEST_FILE), &m)?;
    Ok(m)
}

/// A `prompts` artifact opened for lookups (the files are read on demand).
#[derive(Debug, Clone)]
pub struct PromptTable {
    dir: PathBuf,
    pub manifest: PromptsManifest,
    index: HashMap<String, usize>,
    /// (instruction, image digest) → entry, for image-keyed encodings.
    by_image: HashMap<(String, String), usize>,
}

impl PromptTable {
    /// Opens `dir`, checking its format.
    pub fn open(dir: &Path) -> Result<PromptTable, ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let m: PromptsManifest = checkpoint::read_json(&path)?;
        let bad = |message: String| ModelError::Config {
            path: path.clone(),
            message,
        };
        if m.format != FORMAT || m.version != VERSION {
            return Err(bad(format!(
                "format `{}` version {}, expected `{FORMAT}` version {VERSION}",
                m.format, m.version
            )));
        }
        if m.encoded && m.files.len() != m.instructions.len() {
            return Err(bad(format!(
                "{} instructions but {} files",
                m.instructions.len(),
                m.files.len()
            )));
        }
        if !m.images.is_empty() && m.images.len() != m.instructions.len() {
            return Err(bad(format!(
                "{} instructions but {} image digests",
                m.instructions.len(),
                m.images.len()
            )));
        }
        let (index, by_image) = if m.images.is_empty() {
            let index = m
                .instructions
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i))
                .collect();
            (index, HashMap::new())
        } else {
            let by_image = m
                .instructions
                .iter()
                .zip(&m.images)
                .enumerate()
                .map(|(i, (s, d))| ((s.clone(), d.clone()), i))
                .collect();
            (HashMap::new(), by_image)
        };
        Ok(PromptTable {
            dir: dir.to_path_buf(),
            manifest: m,
            index,
            by_image,
        })
    }

    /// Whether it holds encodings (not a pass-through).
    pub fn encoded(&self) -> bool {
        self.manifest.encoded
    }
}

impl PromptSource for PromptTable {
    fn made_on(&self) -> Option<String> {
        self.manifest.made_on.clone()
    }

    fn lookup_with_image(
        &self,
        prompt: &str,
        image: &str,
    ) -> Result<Option<BTreeMap<String, Tensor>>, ModelError> {
        if !self.manifest.encoded {
            return Ok(None);
        }
        match self.by_image.get(&(prompt.to_string(), image.to_string())) {
            None => Ok(None),
            Some(&i) => Ok(Some(checkpoint::read_safetensors(
                &self.dir.join(&self.manifest.files[i]),
            )?)),
        }
    }

    fn lookup(&self, instructions: &[&str]) -> Result<PromptEncodings, ModelError> {
        let mut parts: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
        let mut read: HashMap<usize, BTreeMap<String, Tensor>> = HashMap::new();
        for s in instructions {
            let i = *self.index.get(*s).ok_or_else(|| ModelError::Input {
                what: "prompt encodings",
                message: format!(
                    "`{}` has no image-independent encoding of the instruction {s:?} (it \
                     encodes {} entries{})",
                    self.dir.join(MANIFEST_FILE).display(),
                    self.manifest.instructions.len(),
                    if self.manifest.images.is_empty() {
                        ""
                    } else {
                        ", each keyed by a condition image"
                    }
                ),
            })?;
            if let std::collections::hash_map::Entry::Vacant(e) = read.entry(i) {
                e.insert(checkpoint::read_safetensors(
                    &self.dir.join(&self.manifest.files[i]),
                )?);
            }
            for (k, t) in &read[&i] {
                parts.entry(k.clone()).or_default().push(t.shallow_clone());
            }
        }
        Ok(PromptEncodings {
            parts: parts
                .into_iter()
                .map(|(k, ts)| (k, Tensor::cat(&ts, 0)))
                .collect(),
        })
    }
}
