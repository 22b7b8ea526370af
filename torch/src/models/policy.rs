//! The `EditPolicy` backend trait that rollout, NFT training and evaluation use, so that
//! tiny-kontext, FLUX.1 Kontext and Qwen-Image-Edit are interchangeable: a velocity field
//! `v(x_t, t, conditioning)` in latent space, image ↔ latent coding, and LoRA adapter
//! control (θ = adapter `default`, θ_old = adapter `old`, θ_ref = adapters off).

use super::error::ModelError;
use super::lora::{LoraConfig, THETA, THETA_OLD};
use crate::sampling::SchedulerConfig;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Which weights a forward uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActiveAdapter {
    /// The base weights only: θ_ref.
    Off,
    /// The base plus the named LoRA adapter.
    Named(String),
}

impl ActiveAdapter {
    /// θ: adapter `default`.
    pub fn theta() -> ActiveAdapter {
        ActiveAdapter::Named(THETA.into())
    }
    /// θ_old: adapter `old`.
    pub fn theta_old() -> ActiveAdapter {
        ActiveAdapter::Named(THETA_OLD.into())
    }
    pub fn name(&self) -> Option<&str> {
        match self {
            ActiveAdapter::Off => None,
            ActiveAdapter::Named(n) => Some(n),
        }
    }
}

/// Which variables get gradients (`requires_grad`); all others are frozen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trainable {
    /// Every base weight, no adapter (pretraining).
    Base,
    /// Only the named adapter's LoRA matrices (NFT training of θ).
    Adapter(String),
    /// Nothing (rollouts, evaluation, θ_old, θ_ref).
    Nothing,
}

/// What an edit is conditioned on, already encoded for one backend: the source image's
/// latent (Kontext-style in-context conditioning) and the instruction's tokens.
#[derive(Debug)]
pub struct Conditioning {
    /// Source latent `(B, C, h, w)`.
    pub source: Tensor,
    /// Instruction token ids `(B, L)` int64, padded with the backend's pad id.
    pub text_ids: Tensor,
}

impl Conditioning {
    pub fn batch(&self) -> i64 {
        self.source.size()[0]
    }

    /// Each item repeated `n` times in place (`[a, a, b, b]` for `n = 2`): a group of rollout
    /// samples of one prompt.
    pub fn repeat_interleave(&self, n: i64) -> Conditioning {
        Conditioning {
            source: self.source.repeat_interleave_self_int(n, 0, None),
            text_ids: self.text_ids.repeat_interleave_self_int(n, 0, None),
        }
    }

    /// Items `idx` (`(k,)` int64) of the batch.
    pub fn select(&self, idx: &Tensor) -> Conditioning {
        Conditioning {
            source: self.source.index_select(0, idx),
            text_ids: self.text_ids.index_select(0, idx),
        }
    }

    /// Batches concatenated along the batch dimension; shorter token rows are padded with
    /// `pad_id` to the longest.
    pub fn cat(parts: &[&Conditioning], pad_id: i64) -> Conditioning {
        let src: Vec<&Tensor> = parts.iter().map(|c| &c.source).collect();
        let l = parts
            .iter()
            .map(|c| c.text_ids.size()[1])
            .max()
            .unwrap_or(1);
        let ids: Vec<Tensor> = parts
            .iter()
            .map(|c| {
                let extra = l - c.text_ids.size()[1];
                if extra == 0 {
                    c.text_ids.shallow_clone()
                } else {
                    c.text_ids.pad([0, extra], "constant", Some(pad_id as f64))
                }
            })
            .collect();
        Conditioning {
            source: Tensor::cat(&src, 0),
            text_ids: Tensor::cat(&ids, 0),
        }
    }

    pub fn shallow_clone(&self) -> Conditioning {
        Conditioning {
            source: self.source.shallow_clone(),
            text_ids: self.text_ids.shallow_clone(),
        }
    }
}

/// A flow-matching image-editing model with LoRA adapters.
///
/// Conventions (method-spec §4): `x_t = (1 − t)·x0 + t·ε`, the model predicts the velocity
/// `ε − x0`, so `x̂0 = x_t − t·v`. Latents are `(B, C, h, w)`.
pub trait EditPolicy: Send {
    /// Backend name, e.g. `tiny-kontext`.
    fn backend(&self) -> &str;
    fn device(&self) -> Device;
    /// The dtype of latents and velocities.
    fn kind(&self) -> Kind {
        Kind::Float
    }

    /// Images `(B, 3, H, W)` in [0, 1] → latents `(B, C, h, w)`.
    fn encode(&self, images: &Tensor) -> Result<Tensor, ModelError>;
    /// Latents → images `(B, 3, H, W)`, clamped to [0, 1].
    fn decode(&self, latents: &Tensor) -> Result<Tensor, ModelError>;
    /// `(C, h, w)` of the latent of an `H × W` image.
    fn latent_shape(&self, height: i64, width: i64) -> Result<[i64; 3], ModelError>;
    /// Image tokens of a latent of `h × w` (what μ of the time shift depends on).
    fn image_seq_len(&self, latent_h: i64, latent_w: i64) -> u64;
    /// The time-shift part of the model's scheduler config.
    fn scheduler(&self) -> SchedulerConfig;

    /// The id [`EditPolicy::tokenize`] pads with.
    fn pad_token_id(&self) -> i64;
    /// Tokenises instructions for [`Conditioning::text_ids`] (`""` is the unconditional one).
    fn tokenize(&self, instructions: &[&str]) -> Result<Tensor, ModelError>;
    /// The conditioning of an edit: source latent `(B, C, h, w)` and its instructions.
    fn condition(
        &self,
        source_latent: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError> {
        if source_latent.size().first() != Some(&(instructions.len() as i64)) {
            return Err(ModelError::Input {
                what: "instructions",
                message: format!(
                    "{} instructions for a batch of {:?}",
                    instructions.len(),
                    source_latent.size()
                ),
            });
        }
        Ok(Conditioning {
            source: source_latent.shallow_clone(),
            text_ids: self.tokenize(instructions)?,
        })
    }
    /// The same conditioning with empty instructions (classifier-free guidance's negative).
    fn unconditional(&self, cond: &Conditioning) -> Result<Conditioning, ModelError> {
        let b = cond.batch() as usize;
        Ok(Conditioning {
            source: cond.source.shallow_clone(),
            text_ids: self.tokenize(&vec![""; b])?,
        })
    }

    /// The velocity `v(x_t, t, c)` under `adapter`: `x_t` `(B, C, h, w)`, `t` `(B,)` in
    /// [0, 1] → `(B, C, h, w)`. Builds an autograd graph unless called under `no_grad`.
    fn velocity_with(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        adapter: &ActiveAdapter,
    ) -> Result<Tensor, ModelError>;
    /// The velocity under the active adapter.
    fn velocity(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
    ) -> Result<Tensor, ModelError> {
        self.velocity_with(x_t, t, cond, &self.active_adapter())
    }

    // --- adapters ---

    /// Adds a fresh adapter (`B = 0`: the adapted model equals the base). Its matrices
    /// follow the current [`Trainable`] setting.
    fn add_adapter(&mut self, name: &str, cfg: &LoraConfig) -> Result<(), ModelError>;
    /// Names of the adapters, sorted.
    fn adapter_names(&self) -> Vec<String>;
    fn adapter_config(&self, name: &str) -> Result<LoraConfig, ModelError>;
    fn set_adapter(&mut self, adapter: ActiveAdapter) -> Result<(), ModelError>;
    fn active_adapter(&self) -> ActiveAdapter;
    /// The LoRA matrices of adapter `name` by PEFT module key without the adapter name
    /// (`transformer_blocks.0.attn.to_q.lora_A.weight`), so that θ and θ_old match by name.
    /// The tensors are the live variables (shallow clones): update them under `no_grad`.
    fn adapter_variables(&self, name: &str) -> Result<BTreeMap<String, Tensor>, ModelError>;
    /// Copies adapter `from`'s matrices into adapter `to` (same config), e.g. θ_old ← θ.
    fn copy_adapter(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        let src = self.adapter_variables(from)?;
        let dst = self.adapter_variables(to)?;
        let diff = super::checkpoint::compare(&src, &dst);
        if !diff.is_empty() {
            return Err(ModelError::AdapterMismatch {
                from: from.into(),
                to: to.into(),
                diff,
            });
        }
        tch::no_grad(|| {
            for (k, d) in &dst {
                let mut d = d.shallow_clone();
                d.copy_(&src[k]);
            }
        });
        Ok(())
    }
    /// Writes adapter `name` to `dir` in the PEFT layout (`adapter_model.safetensors`,
    /// `adapter_config.json`).
    fn save_adapter(&self, name: &str, dir: &Path) -> Result<(), ModelError>;
    /// Reads a PEFT-layout adapter from `dir` as adapter `name` (which must not exist yet).
    fn load_adapter(&mut self, dir: &Path, name: &str) -> Result<(), ModelError>;

    // --- weights ---

    /// Every base (non-LoRA) weight by checkpoint key.
    fn base_variables(&self) -> BTreeMap<String, Tensor>;
    /// Sets `requires_grad` for training (a new model starts as [`Trainable::Base`]).
    fn set_trainable(&mut self, which: Trainable) -> Result<(), ModelError>;
    /// The variables that currently require grad, by name (base keys, or PEFT-style adapter
    /// keys as in [`EditPolicy::adapter_variables`]).
    fn trainable_variables(&self) -> BTreeMap<String, Tensor>;
    /// Writes the base model (weights and config) to `dir`.
    fn save(&self, dir: &Path) -> Result<(), ModelError>;
}
