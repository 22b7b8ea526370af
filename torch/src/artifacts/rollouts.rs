//! The `rollouts` artifact (written by `rollout`, read by `reward` and `nft-train`), format
//! `cocoflow-rollouts` version 1. A directory:
//!
//! ```text
//! rollouts.json         RolloutManifest: iteration, seeds, sampler, groups (record key,
//!                       instruction, source digest, edit type), samples (group, k, seed, image)
//! tensors.safetensors   x0 (N, C, h, w) f32 · source_latents (G, C, h, w) f32 ·
//!                       edit_masks (G, 1, H, W) f32 · sigmas (N, steps + 1) f64
//! images/gGGG_kKK.png   decoded samples (8-bit RGB)
//! ```

use crate::models::checkpoint;
use crate::sampling::SamplerConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

pub const MANIFEST_FILE: &str = "rollouts.json";
pub const TENSORS_FILE: &str = "tensors.safetensors";
pub const IMAGES_DIR: &str = "images";
pub const FORMAT: &str = "cocoflow-rollouts";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub index: usize,
    /// The dataset record's key.
    pub record: String,
    pub instruction: String,
    /// Pixel digest of the source image ([`crate::judge::JudgeImage::digest`]).
    pub source_digest: String,
    #[serde(default)]
    pub edit_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleEntry {
    pub index: usize,
    pub group: usize,
    pub k: usize,
    pub seed: u64,
    /// Relative path of the decoded image.
    pub image: String,
}

/// `rollouts.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutManifest {
    pub format: String,
    pub version: u32,
    /// 0-based RL iteration these rollouts belong to (the state's `iteration`).
    pub iteration: u64,
    /// Digest of the θ_old that sampled them (`fresh` at iteration 0).
    pub theta_old: String,
    pub base_model_digest: String,
    pub seed: u64,
    pub sampler: SamplerConfig,
    /// `[H, W]` of the images.
    pub image_size: [i64; 2],
    /// `[C, h, w]` of a latent.
    pub latent_shape: [i64; 3],
    pub k: usize,
    pub groups: Vec<GroupEntry>,
    pub samples: Vec<SampleEntry>,
}

impl RolloutManifest {
    pub fn read(dir: &Path) -> Result<RolloutManifest, String> {
        let m: RolloutManifest =
            checkpoint::read_json(&dir.join(MANIFEST_FILE)).map_err(|e| e.to_string())?;
        if m.format != FORMAT {
            return Err(format!(
                "`{}` is not a rollouts manifest (format `{}`)",
                dir.join(MANIFEST_FILE).display(),
                m.format
            ));
        }
        Ok(m)
    }
}

/// The tensors of a rollouts directory (CPU).
pub struct RolloutTensors {
    pub x0: Tensor,
    pub source_latents: Tensor,
    pub edit_masks: Tensor,
    pub sigmas: Tensor,
}

impl RolloutTensors {
    pub fn read(dir: &Path, m: &RolloutManifest) -> Result<RolloutTensors, String> {
        let path = dir.join(TENSORS_FILE);
        let mut t = checkpoint::read_safetensors(&path).map_err(|e| e.to_string())?;
        let mut take = |name: &str, shape: Vec<i64>| -> Result<Tensor, String> {
            let x = t
                .remove(name)
                .ok_or_else(|| format!("`{}` has no tensor `{name}`", path.display()))?;
            if x.size() != shape {
                return Err(format!(
                    "`{}`: `{name}` has shape {:?}, expected {shape:?}",
                    path.display(),
                    x.size()
                ));
            }
            Ok(x)
        };
        let (n, g) = (m.samples.len() as i64, m.groups.len() as i64);
        let [c, h, w] = m.latent_shape;
        let [hh, ww] = m.image_size;
        Ok(RolloutTensors {
            x0: take("x0", vec![n, c, h, w])?,
            source_latents: take("source_latents", vec![g, c, h, w])?,
            edit_masks: take("edit_masks", vec![g, 1, hh, ww])?,
            sigmas: take("sigmas", vec![n, m.sampler.steps as i64 + 1])?,
        })
    }
}

impl RolloutTensors {
    /// Writes `tensors.safetensors` (x0 and source latents as float32).
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let tensors: BTreeMap<String, Tensor> = [
            ("x0".to_string(), self.x0.to_kind(Kind::Float)),
            (
                "source_latents".to_string(),
                self.source_latents.to_kind(Kind::Float),
            ),
            ("edit_masks".to_string(), self.edit_masks.shallow_clone()),
            ("sigmas".to_string(), self.sigmas.shallow_clone()),
        ]
        .into();
        checkpoint::write_safetensors(&dir.join(TENSORS_FILE), &tensors).map_err(|e| e.to_string())
    }
}
