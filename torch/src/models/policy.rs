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

/// One backend-owned encoded conditioning tensor, batch-first.
#[derive(Debug)]
pub struct Encoded {
    pub tensor: Tensor,
    /// The value that pads dimension 1 when batches of different lengths are concatenated
    /// (token ids); `None`: the lengths must agree.
    pub pad: Option<f64>,
}

/// What an edit is conditioned on, already encoded by one backend
/// ([`EditPolicy::condition`] / [`EditPolicy::encode_condition`]): the source image's latent
/// in the policy's latent space (Kontext-style in-context conditioning; the NFT loss's
/// `z_src`), and the backend's encodings of the instructions and source, batch-first by name:
/// tiny-kontext `text_ids` (token ids, encoded inside the forward); FLUX.1 Kontext
/// `prompt_embeds` (T5), `pooled_prompt_embeds` (CLIP) and `source_tokens` (packed source
/// latents; their position ids follow from the latent's size); Qwen-Image-Edit
/// `prompt_embeds` / `prompt_mask` and their `negative_` twins (Qwen2.5-VL) and
/// `source_tokens`.
#[derive(Debug)]
pub struct Conditioning {
    /// Source latent `(B, C, h, w)`.
    pub source: Tensor,
    pub parts: BTreeMap<String, Encoded>,
}

impl Conditioning {
    /// A conditioning on `source` with no encodings yet.
    pub fn new(source: Tensor) -> Conditioning {
        Conditioning {
            source,
            parts: BTreeMap::new(),
        }
    }

    /// Adds encoding `name` (`pad`: see [`Encoded::pad`]).
    pub fn with(mut self, name: &str, tensor: Tensor, pad: Option<f64>) -> Conditioning {
        self.parts.insert(name.to_string(), Encoded { tensor, pad });
        self
    }

    /// Encoding `name`, or an input error naming it.
    pub fn get(&self, name: &str) -> Result<&Tensor, ModelError> {
        self.parts
            .get(name)
            .map(|e| &e.tensor)
            .ok_or_else(|| ModelError::Input {
                what: "conditioning",
                message: format!(
                    "no `{name}` (has {:?}): encoded by another backend?",
                    self.parts.keys().collect::<Vec<_>>()
                ),
            })
    }

    pub fn batch(&self) -> i64 {
        self.source.size()[0]
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Conditioning {
        Conditioning {
            source: f(&self.source),
            parts: self
                .parts
                .iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        Encoded {
                            tensor: f(&e.tensor),
                            pad: e.pad,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Each item repeated `n` times in place (`[a, a, b, b]` for `n = 2`): a group of rollout
    /// samples of one prompt.
    pub fn repeat_interleave(&self, n: i64) -> Conditioning {
        self.map(|t| t.repeat_interleave_self_int(n, 0, None))
    }

    /// Items `idx` (`(k,)` int64) of the batch.
    pub fn select(&self, idx: &Tensor) -> Conditioning {
        self.map(|t| t.index_select(0, idx))
    }

    /// Batches concatenated along the batch dimension; encodings with a pad value are padded
    /// along dimension 1 to the longest.
    pub fn cat(parts: &[&Conditioning]) -> Result<Conditioning, ModelError> {
        let first = parts.first().ok_or_else(|| ModelError::Input {
            what: "conditioning",
            message: "nothing to concatenate".into(),
        })?;
        let src: Vec<&Tensor> = parts.iter().map(|c| &c.source).collect();
        let mut out = Conditioning::new(Tensor::cat(&src, 0));
        for (name, e) in &first.parts {
            let ts: Vec<&Tensor> = parts
                .iter()
                .map(|c| c.get(name))
                .collect::<Result<_, _>>()?;
            let joined = match e.pad {
                Some(pad) => {
                    let l = ts.iter().map(|t| t.size()[1]).max().unwrap_or(1);
                    let padded: Vec<Tensor> = ts
                        .iter()
                        .map(|t| {
                            let extra = l - t.size()[1];
                            if extra == 0 {
                                t.shallow_clone()
                            } else {
                                // (0, 0) for every dimension after 1, then (0, extra)
                                let mut spec = vec![0; 2 * t.dim().saturating_sub(2)];
                                spec.extend([0, extra]);
                                t.pad(spec, "constant", Some(pad))
                            }
                        })
                        .collect();
                    Tensor::cat(&padded, 0)
                }
                None => Tensor::cat(&ts, 0),
            };
            out = out.with(name, joined, e.pad);
        }
        Ok(out)
    }

    pub fn shallow_clone(&self) -> Conditioning {
        self.map(Tensor::shallow_clone)
    }
}

/// Instruction encodings made apart from any source image, by a backend with separate text
/// encoders (FLUX.1 Kontext: `prompt_embeds` `(N, L, 4096)` from T5, `pooled_prompt_embeds`
/// `(N, 768)` from CLIP): one row per instruction, by part name. What the `encode-prompts`
/// kind caches, so that RL tasks need not load the text encoders.
#[derive(Debug)]
pub struct PromptEncodings {
    pub parts: BTreeMap<String, Tensor>,
}

impl PromptEncodings {
    /// Rows `idx` (`(k,)` int64) of every part.
    pub fn select(&self, idx: &Tensor) -> PromptEncodings {
        PromptEncodings {
            parts: self
                .parts
                .iter()
                .map(|(k, t)| (k.clone(), t.index_select(0, &idx.to_device(t.device()))))
                .collect(),
        }
    }
}

/// Where a policy takes cached prompt encodings from ([`EditPolicy::set_prompt_source`]): the
/// `encode-prompts` artifact.
pub trait PromptSource: Send {
    /// The encodings of `instructions` (one row each, in order, on the CPU), or an error
    /// naming an instruction that has none.
    fn lookup(&self, instructions: &[&str]) -> Result<PromptEncodings, ModelError>;

    /// The cached parts of one prompt encoded together with a condition image, by the image's
    /// digest (Qwen-Image-Edit: the Qwen2.5-VL states of the templated instruction and image);
    /// `None` when the source holds no such encoding.
    fn lookup_with_image(
        &self,
        prompt: &str,
        image: &str,
    ) -> Result<Option<BTreeMap<String, Tensor>>, ModelError> {
        let _ = (prompt, image);
        Ok(None)
    }

    /// Where image-keyed encodings were made (`cpu/Float`, `cuda/BFloat16`): condition
    /// images — and so their digests — differ between device kinds and dtypes.
    fn made_on(&self) -> Option<String> {
        None
    }
}

/// A backend's text encoders loaded on their own ([`super::open::prompt_encoder`]): what the
/// `encode-prompts` kind runs.
pub trait PromptEncoder: Send {
    fn backend(&self) -> &str;
    /// One row per instruction; each instruction is encoded alone (batch 1), so a row does not
    /// depend on what else was encoded with it, and the cached rows equal what the policy's
    /// inline encoding gives.
    fn encode_prompts(&self, instructions: &[&str]) -> Result<PromptEncodings, ModelError>;
}

/// A backend's own backward of a loss (see [`TrainingVelocity`]).
pub type BackwardFn<'a> = Box<dyn FnOnce(&Tensor) -> Result<(), ModelError> + 'a>;

/// A velocity computed for training and how to back-propagate a loss made from it
/// ([`EditPolicy::velocity_for_training`]): a plain autograd graph (`loss.backward()`), or a
/// backend's own backward (FLUX.1 Kontext's block-wise gradient checkpointing recomputes the
/// blocks there).
pub struct TrainingVelocity<'a> {
    /// `(B, C, h, w)`, with a graph to the trainable variables.
    pub velocity: Tensor,
    backward: Option<BackwardFn<'a>>,
}

impl std::fmt::Debug for TrainingVelocity<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingVelocity")
            .field("velocity", &self.velocity.size())
            .field("checkpointed", &self.backward.is_some())
            .finish()
    }
}

impl<'a> TrainingVelocity<'a> {
    /// A velocity whose graph `loss.backward()` follows.
    pub fn plain(velocity: Tensor) -> TrainingVelocity<'a> {
        TrainingVelocity {
            velocity,
            backward: None,
        }
    }

    /// A velocity whose loss is back-propagated by `backward(loss)`.
    pub fn with_backward(
        velocity: Tensor,
        backward: impl FnOnce(&Tensor) -> Result<(), ModelError> + 'a,
    ) -> TrainingVelocity<'a> {
        TrainingVelocity {
            velocity,
            backward: Some(Box::new(backward)),
        }
    }

    /// Whether the backward recomputes activations (gradient checkpointing).
    pub fn is_checkpointed(&self) -> bool {
        self.backward.is_some()
    }

    /// Back-propagates `loss` (a scalar computed from [`Self::velocity`]) into the trainable
    /// variables' `.grad`.
    pub fn backward(self, loss: &Tensor) -> Result<(), ModelError> {
        match self.backward {
            Some(f) => f(loss),
            None => Ok(loss.f_backward()?),
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

    /// The conditioning of an edit from its source latent `(B, C, h, w)` (what
    /// [`EditPolicy::encode`] gives) and one instruction per item (`""` is the unconditional
    /// one): the backend's encodings ([`Conditioning`]).
    fn condition(
        &self,
        source_latent: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError>;
    /// The conditioning of an edit from source pixels `(B, 3, H, W)` in [0, 1].
    fn encode_condition(
        &self,
        source_images: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError> {
        let latent = self.encode(source_images)?;
        self.condition(&latent, instructions)
    }
    /// Whether instructions are encoded by separate text encoders whose outputs can be cached
    /// (`encode-prompts`); `false` (the default, tiny-kontext): the instructions are encoded
    /// inside [`EditPolicy::condition`] / the velocity, and there is nothing to cache.
    fn separate_prompt_encoding(&self) -> bool {
        false
    }
    /// Cached prompt encodings for [`EditPolicy::condition`] to use instead of running text
    /// encoders (which then need not be loaded). Backends without separate text encoders
    /// ignore it (the default).
    fn set_prompt_source(&mut self, source: Box<dyn PromptSource>) {
        let _ = source;
    }
    /// How many prompt encodings the policy made itself although it had a prompt source (a
    /// (prompt, image) pair the `encode-prompts` artifact lacks); 0 without a source.
    fn inline_prompt_encodings(&self) -> u64 {
        0
    }

    /// The same conditioning with empty instructions (classifier-free guidance's negative).
    fn unconditional(&self, cond: &Conditioning) -> Result<Conditioning, ModelError> {
        let b = cond.batch() as usize;
        self.condition(&cond.source, &vec![""; b])
    }

    /// Whether the model takes the guidance value itself — FLUX.1 [dev]'s guidance embedding,
    /// or Qwen-Image-Edit's true CFG applied inside the velocity: then the sampler's `guidance`
    /// setting is passed to every velocity call (and to training forwards when
    /// [`EditPolicy::guidance_in_training`]) instead of mixing two velocities (classifier-free
    /// guidance).
    fn embeds_guidance(&self) -> bool {
        false
    }

    /// Whether the training forwards (`nft-train`'s θ, θ_old and reference velocities) get the
    /// sampler's guidance value as well: yes for a guidance embedding (the value is part of
    /// the model's input), no for a backend that applies guidance inside the velocity when
    /// sampling (Qwen-Image-Edit's true CFG: training forwards are its conditional branch).
    fn guidance_in_training(&self) -> bool {
        self.embeds_guidance()
    }

    /// The guidance value the model's pipeline uses when none is set (for a model that
    /// [`EditPolicy::embeds_guidance`]); `None`: FLUX's 3.5
    /// ([`crate::sampling::DEFAULT_EMBEDDED_GUIDANCE`]).
    fn default_guidance(&self) -> Option<f64> {
        None
    }

    /// The velocity `v(x_t, t, c)` under `adapter`: `x_t` `(B, C, h, w)`, `t` `(B,)` in
    /// [0, 1] → `(B, C, h, w)`. `guidance` is the embedded guidance value (see
    /// [`EditPolicy::embeds_guidance`]; backends without a guidance embedding ignore it).
    /// Builds an autograd graph unless called under `no_grad`.
    fn velocity_with(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        adapter: &ActiveAdapter,
        guidance: Option<f64>,
    ) -> Result<Tensor, ModelError>;
    /// Whether [`EditPolicy::velocity_for_training`] can checkpoint (recompute activations in
    /// the backward instead of keeping them).
    fn supports_gradient_checkpointing(&self) -> bool {
        false
    }

    /// [`EditPolicy::velocity_with`] for a training step, with how to back-propagate a loss
    /// made from it. `checkpointing` asks for gradient checkpointing where the backend has it
    /// ([`EditPolicy::supports_gradient_checkpointing`]); the gradients are those of the plain
    /// forward either way (up to float summation order). The default is the plain forward.
    fn velocity_for_training(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        adapter: &ActiveAdapter,
        guidance: Option<f64>,
        checkpointing: bool,
    ) -> Result<TrainingVelocity<'_>, ModelError> {
        let _ = checkpointing;
        Ok(TrainingVelocity::plain(
            self.velocity_with(x_t, t, cond, adapter, guidance)?,
        ))
    }

    /// The velocity under the active adapter.
    fn velocity(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        guidance: Option<f64>,
    ) -> Result<Tensor, ModelError> {
        self.velocity_with(x_t, t, cond, &self.active_adapter(), guidance)
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
