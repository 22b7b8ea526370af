//! [`FluxKontext`]: FLUX.1 Kontext as an [`EditPolicy`], so rollout, `nft-train`, `eval` and
//! `cocoflow edit` run on it as on tiny-kontext.
//!
//! - Latent space: FLUX's normalised VAE latents `(B, 16, H/8, W/8)` (`(z − shift)·scale`),
//!   unpacked; the velocity packs them into 2×2 tokens and unpacks the result, so the sampler
//!   and the NFT loss (masks downsampled to the latent grid) work unchanged.
//! - [`Conditioning`]: `prompt_embeds` (T5, `(B, max_sequence_length, 4096)`),
//!   `pooled_prompt_embeds` (CLIP, `(B, 768)`), `source_tokens` (the packed source latent);
//!   the text encoders run once, in [`EditPolicy::condition`], never in the velocity.
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
use super::super::lora::{AdapterSet, LoraConfig, adapter_shapes, linear_layers};
use super::super::policy::{ActiveAdapter, Conditioning, EditPolicy, Trainable};
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

/// A FLUX.1 Kontext repository loaded as an editing policy.
pub struct FluxKontext {
    pub pipeline: FluxKontextPipeline,
    pub max_sequence_length: usize,
    adapters: AdapterSet,
}

fn input_err(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

impl FluxKontext {
    /// Loads every component of the repository `dir` (float32 on the CPU, bfloat16 on CUDA),
    /// base frozen.
    pub fn load(dir: &Path, device: Device) -> Result<FluxKontext, ModelError> {
        let kind = if device.is_cuda() {
            Kind::BFloat16
        } else {
            Kind::Float
        };
        let mut m = FluxKontext {
            pipeline: FluxKontextPipeline::load(dir, device, kind)?,
            max_sequence_length: MAX_SEQUENCE_LENGTH,
            adapters: AdapterSet::new(Trainable::Nothing),
        };
        let p = &m.pipeline;
        for vs in [
            p.vae.var_store(),
            p.text_encoder.var_store(),
            p.text_encoder_2.var_store(),
        ] {
            for v in vs.trainable_variables() {
                let _ = v.set_requires_grad(false);
            }
        }
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
            let p = self
                .pipeline
                .encode_prompt(instructions, self.max_sequence_length)?;
            let source = source_latent.to_device(self.device()).to_kind(Kind::Float);
            let tokens = pack_latents(&source.to_kind(self.model_kind()))?;
            Ok(Conditioning::new(source)
                .with(PROMPT_EMBEDS, p.prompt_embeds, None)
                .with(POOLED_PROMPT_EMBEDS, p.pooled_prompt_embeds, None)
                .with(SOURCE_TOKENS, tokens, None))
        })
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
        let v = self.pipeline.transformer.forward(&FluxInputs {
            hidden_states: &latents,
            source: Some(cond.get(SOURCE_TOKENS)?),
            encoder_hidden_states: prompt,
            pooled_projections: cond.get(POOLED_PROMPT_EMBEDS)?,
            timestep: &t.to_device(dev),
            guidance: g.as_ref(),
            txt_ids: &text_ids(prompt.size()[1], dev),
            img_ids: &self.img_ids((h, w), (src[2], src[3])),
            adapter: adapter.name(),
        })?;
        Ok(unpack_latents(&v, h, w)?.to_kind(x_t.kind()))
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
