//! [`EditPolicy`] for [`TinyKontext`]: the affine latent coding, tokenizing, the velocity
//! with a chosen adapter, LoRA adapters (adding, activating, saving, loading) and which
//! weights train.

use super::super::checkpoint::{self, CONFIG_FILE, WEIGHTS_FILE};
use super::super::error::ModelError;
use super::super::lora::LoraConfig;
use super::super::policy::{ActiveAdapter, Conditioning, EditPolicy, Trainable};
use super::{BACKEND, TinyKontext, input_err};
use crate::sampling::SchedulerConfig;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The name of tiny-kontext's encoding in a [`Conditioning`]: instruction token ids `(B, L)`
/// int64, padded with [`TinyKontext::pad_token_id`] (the text encoder runs in the forward).
pub const TEXT_IDS: &str = "text_ids";

impl TinyKontext {
    /// The id [`TinyKontext::tokenize`] pads with.
    pub fn pad_token_id(&self) -> i64 {
        super::super::tokenizer::PAD_ID
    }

    /// Tokenises instructions for the `text_ids` encoding (`""` is the unconditional one).
    pub fn tokenize(&self, instructions: &[&str]) -> Result<Tensor, ModelError> {
        Ok(self
            .text_encoder
            .tokenizer
            .encode_batch(instructions, self.device()))
    }
}

impl EditPolicy for TinyKontext {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn device(&self) -> Device {
        self.vs.device()
    }

    fn encode(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let s = images.size();
        let p = self.cfg.patch_size;
        if s.len() != 4 || s[1] != 3 || s[2] % p != 0 || s[3] % p != 0 {
            return Err(input_err(
                "images",
                format!("expected (B, 3, H, W) with H and W multiples of {p}, got {s:?}"),
            ));
        }
        if self.cfg.in_channels != 3 {
            return Err(ModelError::InvalidConfig(format!(
                "tiny-kontext codes RGB images as 3-channel latents, but `in_channels` is {}",
                self.cfg.in_channels
            )));
        }
        Ok(images.to_kind(Kind::Float).to_device(self.device()) * 2.0 - 1.0)
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor, ModelError> {
        self.check_latent("latents", latents, None)?;
        Ok(((latents + 1.0) * 0.5).clamp(0.0, 1.0))
    }

    fn latent_shape(&self, height: i64, width: i64) -> Result<[i64; 3], ModelError> {
        let p = self.cfg.patch_size;
        if height <= 0 || width <= 0 || height % p != 0 || width % p != 0 {
            return Err(input_err(
                "image size",
                format!("{height}×{width} is not a positive multiple of {p}"),
            ));
        }
        Ok([self.cfg.in_channels, height, width])
    }

    fn image_seq_len(&self, latent_h: i64, latent_w: i64) -> u64 {
        let p = self.cfg.patch_size;
        ((latent_h / p) * (latent_w / p)).max(0) as u64
    }

    fn scheduler(&self) -> SchedulerConfig {
        self.cfg.scheduler.clone()
    }

    fn condition(
        &self,
        source_latent: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError> {
        if source_latent.size().first() != Some(&(instructions.len() as i64)) {
            return Err(input_err(
                "instructions",
                format!(
                    "{} instructions for a batch of {:?}",
                    instructions.len(),
                    source_latent.size()
                ),
            ));
        }
        Ok(Conditioning::new(source_latent.shallow_clone()).with(
            TEXT_IDS,
            self.tokenize(instructions)?,
            Some(self.pad_token_id() as f64),
        ))
    }

    fn velocity_with(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        adapter: &ActiveAdapter,
        _guidance: Option<f64>,
    ) -> Result<Tensor, ModelError> {
        self.adapters.check_active(adapter)?;
        self.forward(x_t, t, cond, adapter.name())
    }

    fn add_adapter(&mut self, name: &str, cfg: &LoraConfig) -> Result<(), ModelError> {
        self.adapters.check_new(name, cfg)?;
        if self.adapter_shapes(cfg).is_empty() {
            return Err(ModelError::InvalidConfig(format!(
                "LoRA `target_modules` {:?} match no attention projection of tiny-kontext",
                cfg.target_modules
            )));
        }
        let root = self.vs.root();
        for block in &mut self.transformer_blocks {
            for l in block.attn.projections_mut() {
                if cfg.targets(&l.path) {
                    l.add_adapter(&root, name, cfg);
                }
            }
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
        self.adapters.variables(name, self.vs.variables())
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
        self.vs
            .variables()
            .into_iter()
            .filter(|(k, _)| self.base_names.contains(k))
            .collect()
    }

    fn set_trainable(&mut self, which: Trainable) -> Result<(), ModelError> {
        if self.shared_base && which == Trainable::Base {
            return Err(ModelError::InvalidConfig(
                "this model's base weights are shared (the model cache): train a model from \
                 `TinyKontext::load` instead"
                    .into(),
            ));
        }
        self.adapters.set_trainable(which)?;
        for (k, v) in self.vs.variables() {
            let _ = v.set_requires_grad(self.adapters.trains(&k, self.base_names.contains(&k)));
        }
        Ok(())
    }

    fn trainable_variables(&self) -> BTreeMap<String, Tensor> {
        let mut out: BTreeMap<String, Tensor> = self
            .base_variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .collect();
        out.extend(
            self.adapters
                .trainable_variables(|n| self.adapter_variables(n)),
        );
        out
    }

    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        checkpoint::create_dir(dir)?;
        checkpoint::write_safetensors(&dir.join(WEIGHTS_FILE), &self.base_variables())?;
        checkpoint::write_json(&dir.join(CONFIG_FILE), &self.cfg)
    }
}
