//! [`FluxKontext`]: FLUX.1 Kontext as an [`EditPolicy`], so rollout, `nft-train`, `eval` and
//! `cocoflow edit` run on it as on tiny-kontext.
//!
//! - Latent space: FLUX's normalised VAE latents `(B, 16, H/8, W/8)` (`(z − shift)·scale`),
//!   unpacked; the velocity packs them into 2×2 tokens and unpacks the result, so the sampler
//!   and the NFT loss (masks downsampled to the latent grid) work unchanged.
//! - [`Conditioning`]: `prompt_embeds` (T5, `(B, max_sequence_length, 4096)`),
//!   `pooled_prompt_embeds` (CLIP, `(B, 768)`), `source_tokens` (the packed source latent);
//!   the text encoders run once per distinct instruction, in [`EditPolicy::condition`], never
//!   in the velocity — or not at all when cached encodings are set
//!   ([`EditPolicy::set_prompt_source`]: the `encode-prompts` artifact).
//! - Guidance: the transformer's guidance embedding gets the sampler's `guidance` value in
//!   every velocity call ([`EditPolicy::embeds_guidance`]); t is σ, as the pipeline's
//!   `timestep / 1000`.
//! - LoRA: adapters on the transformer's linear layers that `target_modules` names (PEFT's
//!   suffix rule; default `attn.{to_q,to_k,to_v,to_out.0,add_q_proj,add_k_proj,add_v_proj,
//!   to_add_out}`), saved in the PEFT layout; [`super::lora_export`] writes the layout
//!   diffusers' `load_lora_weights` reads.
//! - Weights: float32 on the CPU, bfloat16 on CUDA (the pipeline's dtype); the base is frozen
//!   (only LoRA trains: [`Trainable::Base`] is refused).

use super::super::checkpoint;
use super::super::error::ModelError;
use super::super::lease::Leased;
use super::super::lora::{AdapterSet, LoraConfig, adapter_shapes, linear_layers};
use super::super::policy::{
    ActiveAdapter, Conditioning, EditPolicy, PromptSource, Trainable, TrainingVelocity,
};
use super::pipeline::FluxKontextPipeline;
use super::rope::{latent_image_ids, text_ids};
use super::scheduler::sampler_config;
use super::transformer::FluxInputs;
use super::vae::{pack_latents, unpack_latents};
use crate::sampling::SchedulerConfig;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub const BACKEND: &str = "flux-kontext";
/// T5 tokens per instruction (the pipeline's default `max_sequence_length`).
pub const MAX_SEQUENCE_LENGTH: usize = 512;
pub const PROMPT_EMBEDS: &str = "prompt_embeds";
pub const POOLED_PROMPT_EMBEDS: &str = "pooled_prompt_embeds";
pub const SOURCE_TOKENS: &str = "source_tokens";
/// The conditioning parts the prompt encoders make (what `encode-prompts` caches).
pub const PROMPT_EMBEDS_KEYS: [&str; 2] = [PROMPT_EMBEDS, POOLED_PROMPT_EMBEDS];

/// A FLUX.1 Kontext repository loaded as an editing policy.
pub struct FluxKontext {
    /// The loaded pipeline: this policy's own, or leased from the per-worker model cache
    /// ([`FluxKontext::from_leased`]) and returned to it, adapters removed, on drop.
    pub pipeline: Leased<FluxKontextPipeline>,
    pub max_sequence_length: usize,
    adapters: AdapterSet,
    /// Cached prompt encodings ([`EditPolicy::set_prompt_source`]); without them the text
    /// encoders run in [`EditPolicy::condition`].
    prompt_source: Option<Box<dyn PromptSource>>,
}

fn input_err(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

impl FluxKontext {
    /// Loads every component of the repository `dir` (float32 on the CPU, bfloat16 on CUDA),
    /// base frozen.
    pub fn load(dir: &Path, device: Device) -> Result<FluxKontext, ModelError> {
        Self::from_leased(Leased::owned(Self::load_pipeline(dir, device, true)?))
    }

    /// The pipeline of `dir` as [`FluxKontext::load`] loads it (`text_encoders: false`: without
    /// CLIP and T5, for conditionings from cached prompt encodings), frozen.
    pub fn load_pipeline(
        dir: &Path,
        device: Device,
        text_encoders: bool,
    ) -> Result<FluxKontextPipeline, ModelError> {
        let kind = if device.is_cuda() {
            Kind::BFloat16
        } else {
            Kind::Float
        };
        let p = if text_encoders {
            FluxKontextPipeline::load(dir, device, kind)?
        } else {
            FluxKontextPipeline::load_without_text_encoders(dir, device, kind)?
        };
        let mut stores = vec![p.transformer.var_store(), p.vae.var_store()];
        if let Some(e) = &p.prompt_encoder {
            stores.extend([e.text_encoder.var_store(), e.text_encoder_2.var_store()]);
        }
        for vs in stores {
            for v in vs.trainable_variables() {
                let _ = v.set_requires_grad(false);
            }
        }
        Ok(p)
    }

    /// A policy on `pipeline`: its own, or leased from the model cache (it comes back,
    /// without this policy's adapters, when the policy is dropped).
    pub fn from_leased(pipeline: Leased<FluxKontextPipeline>) -> Result<FluxKontext, ModelError> {
        let mut m = FluxKontext {
            pipeline,
            max_sequence_length: MAX_SEQUENCE_LENGTH,
            adapters: AdapterSet::new(Trainable::Nothing),
            prompt_source: None,
        };
        m.set_trainable(Trainable::Nothing)?;
        Ok(m)
    }

    fn model_kind(&self) -> Kind {
        self.pipeline.transformer.kind()
    }

    /// `(shape, kind)` of every LoRA matrix adapter `cfg` would add, by PEFT key.
    fn adapter_shapes(&self, cfg: &LoraConfig) -> BTreeMap<String, (Vec<i64>, Kind)> {
        let base = self.pipeline.transformer.base_variables();
        adapter_shapes(cfg, linear_layers(&base))
    }

    /// Checks a velocity call's inputs and hands the transformer's inputs (and the latent
    /// grid `(h, w)`) to `f`: the plain and the checkpointed forward share them.
    fn with_inputs<R>(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        adapter: &ActiveAdapter,
        guidance: Option<f64>,
        f: impl FnOnce(&FluxInputs, (i64, i64)) -> Result<R, ModelError>,
    ) -> Result<R, ModelError> {
        self.adapters.check_active(adapter)?;
        let s = x_t.size();
        if s.len() != 4 || s[0] != cond.batch() {
            return Err(input_err(
                "x_t",
                format!("expected ({}, C, h, w), got {s:?}", cond.batch()),
            ));
        }
        let (b, h, w) = (s[0], s[2], s[3]);
        let src = cond.source.size();
        let dev = self.device();
        let t = match t.size().as_slice() {
            [] | [1] => t.reshape([1]).expand([b], false),
            [n] if *n == b => t.shallow_clone(),
            other => return Err(input_err("t", format!("expected ({b},), got {other:?}"))),
        };
        let g = guidance.map(|g| Tensor::full([b], g, (Kind::Float, dev)));
        let prompt = cond.get(PROMPT_EMBEDS)?;
        let latents = pack_latents(&x_t.to_device(dev).to_kind(self.model_kind()))?;
        f(
            &FluxInputs {
                hidden_states: &latents,
                source: Some(cond.get(SOURCE_TOKENS)?),
                encoder_hidden_states: prompt,
                pooled_projections: cond.get(POOLED_PROMPT_EMBEDS)?,
                timestep: &t.to_device(dev),
                guidance: g.as_ref(),
                txt_ids: &text_ids(prompt.size()[1], dev),
                img_ids: &self.img_ids((h, w), (src[2], src[3])),
                adapter: adapter.name(),
            },
            (h, w),
        )
    }

    /// Packed-token position ids of a target `(h, w)` then a source `(hs, ws)` latent.
    fn img_ids(&self, (h, w): (i64, i64), (hs, ws): (i64, i64)) -> Tensor {
        let dev = self.device();
        Tensor::cat(
            &[
                latent_image_ids(h / 2, w / 2, 0.0, dev),
                latent_image_ids(hs / 2, ws / 2, 1.0, dev),
            ],
            0,
        )
    }
}

impl EditPolicy for FluxKontext {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn device(&self) -> Device {
        self.pipeline.device()
    }

    fn encode(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let kind = self.model_kind();
        let x = self.pipeline.preprocess(images, kind)?;
        let vae = &self.pipeline.vae;
        Ok(vae
            .normalize(&vae.encode_mean(&x.to_kind(vae.kind()))?)
            .to_kind(Kind::Float))
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor, ModelError> {
        let s = latents.size();
        let c = self.pipeline.vae.cfg.latent_channels;
        if s.len() != 4 || s[1] != c {
            return Err(input_err(
                "latents",
                format!("expected (B, {c}, h, w), got {s:?}"),
            ));
        }
        let vae = &self.pipeline.vae;
        let z = vae.denormalize(&latents.to_device(self.device()).to_kind(Kind::Float));
        let image = vae.decode(&z.to_kind(vae.kind()))?;
        Ok((image * 0.5 + 0.5).clamp(0.0, 1.0).to_kind(Kind::Float))
    }

    fn latent_shape(&self, height: i64, width: i64) -> Result<[i64; 3], ModelError> {
        let (_, (h, w)) = self.pipeline.target_ids(height, width)?;
        Ok([self.pipeline.vae.cfg.latent_channels, h, w])
    }

    fn image_seq_len(&self, latent_h: i64, latent_w: i64) -> u64 {
        ((latent_h / 2) * (latent_w / 2)).max(0) as u64
    }

    fn scheduler(&self) -> SchedulerConfig {
        sampler_config(&self.pipeline.scheduler)
    }

    fn condition(
        &self,
        source_latent: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError> {
        let s = source_latent.size();
        if s.len() != 4 || s[0] != instructions.len() as i64 {
            return Err(input_err(
                "instructions",
                format!("{} instructions for a batch of {s:?}", instructions.len()),
            ));
        }
        tch::no_grad(|| {
            let (dev, kind) = (self.device(), self.model_kind());
            let mut p = match &self.prompt_source {
                Some(cached) => cached.lookup(instructions)?,
                None => self.pipeline.prompt_encoder()?.encode_each(
                    instructions,
                    self.max_sequence_length,
                    dev,
                )?,
            };
            let mut part = |name: &str| {
                p.parts
                    .remove(name)
                    .map(|t| t.to_device(dev).to_kind(kind))
                    .ok_or_else(|| input_err("prompt encodings", format!("no `{name}`")))
            };
            let (embeds, pooled) = (part(PROMPT_EMBEDS)?, part(POOLED_PROMPT_EMBEDS)?);
            let source = source_latent.to_device(dev).to_kind(Kind::Float);
            let tokens = pack_latents(&source.to_kind(kind))?;
            Ok(Conditioning::new(source)
                .with(PROMPT_EMBEDS, embeds, None)
                .with(POOLED_PROMPT_EMBEDS, pooled, None)
                .with(SOURCE_TOKENS, tokens, None))
        })
    }

    fn separate_prompt_encoding(&self) -> bool {
        true
    }

    fn set_prompt_source(&mut self, source: Box<dyn PromptSource>) {
        self.prompt_source = Some(source);
    }

    fn embeds_guidance(&self) -> bool {
        self.pipeline.transformer.cfg.guidance_embeds
    }

    fn velocity_with(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        adapter: &ActiveAdapter,
        guidance: Option<f64>,
    ) -> Result<Tensor, ModelError> {
        self.with_inputs(x_t, t, cond, adapter, guidance, |inp, (h, w)| {
            let v = self.pipeline.transformer.forward(inp)?;
            Ok(unpack_latents(&v, h, w)?.to_kind(x_t.kind()))
        })
    }

    fn supports_gradient_checkpointing(&self) -> bool {
        true
    }

    /// With `checkpointing`, the transformer's block-wise gradient checkpointing
    /// ([`super::checkpointing`]): only each block's inputs are kept, and the backward
    /// recomputes the blocks one at a time.
    fn velocity_for_training(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        adapter: &ActiveAdapter,
        guidance: Option<f64>,
        checkpointing: bool,
    ) -> Result<TrainingVelocity<'_>, ModelError> {
        if !checkpointing {
            let v = self.velocity_with(x_t, t, cond, adapter, guidance)?;
            return Ok(TrainingVelocity::plain(v));
        }
        self.with_inputs(x_t, t, cond, adapter, guidance, |inp, (h, w)| {
            let ck = self.pipeline.transformer.forward_checkpointed(inp)?;
            let v = unpack_latents(&ck.output, h, w)?.to_kind(x_t.kind());
            Ok(TrainingVelocity::with_backward(v, move |loss: &Tensor| {
                ck.backward(loss)
            }))
        })
    }

    fn add_adapter(&mut self, name: &str, cfg: &LoraConfig) -> Result<(), ModelError> {
        self.adapters.check_new(name, cfg)?;
        if self.pipeline.transformer.add_lora(name, cfg) == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "LoRA `target_modules` {:?} match no linear layer of the FLUX transformer",
                cfg.target_modules
            )));
        }
        self.adapters.insert(name, cfg);
        self.set_trainable(self.adapters.trainable().clone())
    }

    fn adapter_names(&self) -> Vec<String> {
        self.adapters.names()
    }

    fn adapter_config(&self, name: &str) -> Result<LoraConfig, ModelError> {
        self.adapters.config(name)
    }

    fn set_adapter(&mut self, adapter: ActiveAdapter) -> Result<(), ModelError> {
        self.adapters.set_active(adapter)
    }

    fn active_adapter(&self) -> ActiveAdapter {
        self.adapters.active()
    }

    fn adapter_variables(&self, name: &str) -> Result<BTreeMap<String, Tensor>, ModelError> {
        self.adapters
            .variables(name, self.pipeline.transformer.var_store().variables())
    }

    fn save_adapter(&self, name: &str, dir: &Path) -> Result<(), ModelError> {
        self.adapters
            .save(name, dir, &self.adapter_variables(name)?)
    }

    fn load_adapter(&mut self, dir: &Path, name: &str) -> Result<(), ModelError> {
        let imp = self
            .adapters
            .read(dir, name, |cfg| self.adapter_shapes(cfg))?;
        self.add_adapter(name, &imp.config)?;
        checkpoint::copy_all(&self.adapter_variables(name)?, &imp.tensors)
    }

    fn base_variables(&self) -> BTreeMap<String, Tensor> {
        self.pipeline.transformer.base_variables()
    }

    fn set_trainable(&mut self, which: Trainable) -> Result<(), ModelError> {
        if which == Trainable::Base {
            return Err(ModelError::InvalidConfig(
                "FLUX.1 Kontext trains LoRA adapters only, not its base weights".into(),
            ));
        }
        self.adapters.set_trainable(which)?;
        for (k, v) in self.pipeline.transformer.var_store().variables() {
            let _ = v.set_requires_grad(self.adapters.trains(&k, false));
        }
        Ok(())
    }

    fn trainable_variables(&self) -> BTreeMap<String, Tensor> {
        self.adapters
            .trainable_variables(|n| self.adapter_variables(n))
    }

    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        Err(ModelError::InvalidConfig(format!(
            "saving a FLUX.1 Kontext base to `{}` is not supported: its repository is used by \
             reference",
            dir.display()
        )))
    }
}

impl Drop for FluxKontext {
    /// A cached pipeline goes back without this policy's adapters (and their gradients).
    fn drop(&mut self) {
        if self.pipeline.is_cached() {
            self.pipeline.transformer.clear_lora();
        }
    }
}
