//! A whole FLUX.1 Kontext edit, as diffusers' `FluxKontextPipeline.__call__` with
//! `_auto_resize=False`, inputs of exact size (multiples of `2·vae_scale_factor`), given
//! initial noise, embedded guidance and no true CFG — and its pieces as separate functions:
//! [`FluxKontextPipeline::encode_prompt`], [`FluxKontextPipeline::prepare_source`],
//! [`FluxKontextPipeline::target_ids`], [`FluxKontextPipeline::velocity`] (one transformer call
//! with the source tokens appended), [`FluxKontextPipeline::decode`].
//!
//! Dtypes follow the pipeline: latents in the prompt embedding's kind, each Euler step in
//! float32 and back, the timestep rounded to the latents' kind before `/ 1000`.

use super::super::error::ModelError;
use super::config::{FlowMatchEulerDiscreteSchedulerConfig, ModelIndex, read_config};
use super::prompt_encoder::FluxPromptEncoder;
use super::rope::latent_image_ids;
use super::scheduler::{FlowMatchSchedule, flux_schedule};
use super::transformer::{FluxInputs, FluxTransformer2DModel, check_shape};
use super::vae::{AutoencoderKL, pack_latents, unpack_latents};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub const PIPELINE_CLASS: &str = "FluxKontextPipeline";

/// The prompt conditioning (`encode_prompt`'s outputs).
#[derive(Debug)]
pub struct PromptEmbeds {
    /// T5 states `(B, max_sequence_length, joint_attention_dim)`.
    pub prompt_embeds: Tensor,
    /// CLIP pooled `(B, pooled_projection_dim)`.
    pub pooled_prompt_embeds: Tensor,
    /// `(max_sequence_length, 3)` zeros.
    pub text_ids: Tensor,
}

/// A source image as Kontext conditions on it.
#[derive(Debug)]
pub struct SourceLatents {
    /// Packed normalised latents `(B, N_src, 4·C)`.
    pub packed: Tensor,
    /// `(N_src, 3)`, first coordinate 1.
    pub ids: Tensor,
    /// Latent grid `(h, w)` before packing.
    pub latent_size: (i64, i64),
}

/// One edit's settings (the `__call__` arguments cocoflow uses).
#[derive(Debug)]
pub struct EditRequest<'a> {
    /// Source images `(B, 3, H, W)` in [0, 1], H and W multiples of `2·vae_scale_factor`.
    pub images: &'a Tensor,
    /// One instruction per image.
    pub prompts: &'a [&'a str],
    /// Initial noise, packed `(B, N, 4·C)` for the target size (diffusers' `latents=`).
    pub latents: &'a Tensor,
    /// Target size in pixels (multiples of `2·vae_scale_factor`).
    pub height: i64,
    pub width: i64,
    pub num_inference_steps: usize,
    /// Embedded guidance (FLUX.1 Kontext [dev]: 2.5).
    pub guidance_scale: f64,
    /// T5 tokens (pipeline default 512).
    pub max_sequence_length: usize,
    /// LoRA adapter active in the transformer.
    pub adapter: Option<&'a str>,
}

pub struct FluxKontextPipeline {
    pub transformer: FluxTransformer2DModel,
    pub vae: AutoencoderKL,
    /// CLIP + T5 and their tokenizers; `None` when loaded without them
    /// ([`FluxKontextPipeline::load_without_text_encoders`]: prompt encodings come from an
    /// `encode-prompts` artifact).
    pub prompt_encoder: Option<FluxPromptEncoder>,
    pub scheduler: FlowMatchEulerDiscreteSchedulerConfig,
}

impl std::fmt::Debug for FluxKontextPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluxKontextPipeline")
            .field("transformer", &self.transformer)
            .field("vae", &self.vae)
            .finish_non_exhaustive()
    }
}

/// The components a Kontext repository must have, with the classes diffusers saves.
const COMPONENTS: [(&str, &[&str]); 7] = [
    ("transformer", &["FluxTransformer2DModel"]),
    ("vae", &["AutoencoderKL"]),
    ("text_encoder", &["CLIPTextModel"]),
    ("text_encoder_2", &["T5EncoderModel"]),
    ("tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"]),
    ("tokenizer_2", &["T5TokenizerFast", "T5Tokenizer"]),
    ("scheduler", &["FlowMatchEulerDiscreteScheduler"]),
];

/// Checks that `dir` is a diffusers FLUX.1 Kontext repository (`model_index.json` names
/// `FluxKontextPipeline` and the components above).
pub fn check_repository(dir: &Path) -> Result<ModelIndex, ModelError> {
    let path = dir.join("model_index.json");
    if !path.exists() {
        return Err(ModelError::Config {
            path,
            message: "missing: not a diffusers pipeline directory".into(),
        });
    }
    let index: ModelIndex = read_config(&path)?;
    let bad = |message: String| ModelError::Config {
        path: path.clone(),
        message,
    };
    if index.class_name != PIPELINE_CLASS {
        return Err(bad(format!(
            "not a FLUX.1 Kontext repository: `_class_name` is `{}`, expected `{PIPELINE_CLASS}`",
            index.class_name
        )));
    }
    for (name, classes) in COMPONENTS {
        match index.component(name) {
            Some((_, class)) if classes.contains(&class.as_str()) => {}
            Some((_, class)) => {
                return Err(bad(format!(
                    "component `{name}` is `{class}`, expected {}",
                    classes
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )));
            }
            None => return Err(bad(format!("component `{name}` is missing"))),
        }
    }
    Ok(index)
}

/// Opens every component's weight files (single file, or index + shards) and reads their
/// headers, before any weights are allocated: a missing shard or an index that does not match
/// its shards is reported (naming both files) before a device holds anything.
pub fn check_weight_files(dir: &Path) -> Result<(), ModelError> {
    use super::weights::{Checkpoint, DIFFUSERS_STEM, TRANSFORMERS_STEM};
    for (sub, stem) in [
        ("transformer", DIFFUSERS_STEM),
        ("vae", DIFFUSERS_STEM),
        ("text_encoder", TRANSFORMERS_STEM),
        ("text_encoder_2", TRANSFORMERS_STEM),
    ] {
        Checkpoint::open(&dir.join(sub), stem)?;
    }
    Ok(())
}

impl FluxKontextPipeline {
    /// Loads every component of a diffusers `FluxKontextPipeline` directory, weights in
    /// `kind` on `device` (T5's `wo` stays float32 in float16, as transformers keeps it).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        Self::load_components(dir, device, kind, true)
    }

    /// [`Self::load`] without the text encoders and tokenizers: [`Self::encode_prompt`] then
    /// fails, and conditionings are built from cached prompt encodings.
    pub fn load_without_text_encoders(
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        Self::load_components(dir, device, kind, false)
    }

    /// Every component's config and safetensors header is checked before any weights are read
    /// (a mis-shaped tensor, a wrong dtype, a missing shard or key of any component is reported
    /// with its file and key first); then the weights are read, one file at a time.
    fn load_components(
        dir: &Path,
        device: Device,
        kind: Kind,
        text_encoders: bool,
    ) -> Result<Self, ModelError> {
        check_repository(dir)?;
        check_weight_files(dir)?;
        let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
        let scheduler: FlowMatchEulerDiscreteSchedulerConfig = read_config(&scheduler_path)?;
        scheduler.validate()?;
        let (transformer, w_tf) =
            FluxTransformer2DModel::unloaded(&dir.join("transformer"), device, kind)?;
        let (vae, w_vae) = AutoencoderKL::unloaded(&dir.join("vae"), device, kind)?;
        let mut pending = vec![w_tf, w_vae];
        let prompt_encoder = if text_encoders {
            let (enc, w) = FluxPromptEncoder::unloaded(dir, device, kind)?;
            pending.extend(w);
            Some(enc)
        } else {
            None
        };
        for p in &pending {
            p.validate()?;
        }
        for p in pending {
            p.load()?;
        }
        Ok(FluxKontextPipeline {
            transformer,
            vae,
            prompt_encoder,
            scheduler,
        })
    }

    /// Bytes every loaded component's weights hold (what the model cache counts).
    pub fn bytes(&self) -> u64 {
        let vars = |vs: &tch::nn::VarStore| -> u64 {
            vs.variables()
                .into_values()
                .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
                .sum()
        };
        vars(self.transformer.var_store())
            + vars(self.vae.var_store())
            + self.prompt_encoder.as_ref().map_or(0, |e| e.bytes())
    }

    /// The text encoders, or an error saying they were not loaded.
    pub fn prompt_encoder(&self) -> Result<&FluxPromptEncoder, ModelError> {
        self.prompt_encoder.as_ref().ok_or_else(|| {
            ModelError::InvalidConfig(
                "the FLUX text encoders are not loaded (the pipeline was opened for cached \
                 prompt encodings): an instruction has no cached encoding"
                    .into(),
            )
        })
    }

    pub fn device(&self) -> Device {
        self.transformer.device()
    }

    /// Pixels per side of one packed token: `2·vae_scale_factor` (FLUX: 16).
    pub fn multiple_of(&self) -> i64 {
        2 * self.vae.scale_factor()
    }

    /// CLIP pooled + T5 states of `prompts` (no true-CFG negatives).
    pub fn encode_prompt(
        &self,
        prompts: &[&str],
        max_sequence_length: usize,
    ) -> Result<PromptEmbeds, ModelError> {
        self.prompt_encoder()?
            .encode(prompts, max_sequence_length, self.device())
    }

    fn check_size(&self, what: &'static str, h: i64, w: i64) -> Result<(), ModelError> {
        let m = self.multiple_of();
        if h <= 0 || w <= 0 || h % m != 0 || w % m != 0 {
            return Err(ModelError::Input {
                what,
                message: format!("{h}×{w} is not a positive multiple of {m} on each side"),
            });
        }
        Ok(())
    }

    /// `VaeImageProcessor.preprocess` of exact-size images: `[0, 1]` → `[−1, 1]`, in `kind`.
    pub fn preprocess(&self, images: &Tensor, kind: Kind) -> Result<Tensor, ModelError> {
        let s = check_shape("images", images, &[None, Some(3), None, None])?;
        self.check_size("images", s[2], s[3])?;
        Ok((images.to_device(self.device()).to_kind(Kind::Float) * 2.0 - 1.0).to_kind(kind))
    }

    /// The Kontext source: preprocess, VAE posterior mean, `(z − shift)·scale`, pack, ids
    /// `(1, row, col)`. `kind` is the latents' kind (the prompt embeddings').
    pub fn prepare_source(&self, images: &Tensor, kind: Kind) -> Result<SourceLatents, ModelError> {
        let x = self.preprocess(images, kind)?;
        let z = self.vae.normalize(&self.vae.encode_mean(&x)?).to_kind(kind);
        let (_, _, h, w) = z.size4()?;
        Ok(SourceLatents {
            packed: pack_latents(&z)?,
            ids: latent_image_ids(h / 2, w / 2, 1.0, self.device()),
            latent_size: (h, w),
        })
    }

    /// Packed target token ids `(0, row, col)` for an image of `height × width` pixels, and
    /// the latent grid `(h, w)`.
    pub fn target_ids(&self, height: i64, width: i64) -> Result<(Tensor, (i64, i64)), ModelError> {
        self.check_size("target size", height, width)?;
        let f = self.vae.scale_factor();
        let (h, w) = (height / f, width / f);
        Ok((latent_image_ids(h / 2, w / 2, 0.0, self.device()), (h, w)))
    }

    /// One transformer call: the velocity of the target tokens `latents (B, N, 4·C)` at
    /// `timestep (B,)` = σ (already as the pipeline passes it: `t / 1000`), with the source
    /// tokens appended when given.
    #[allow(clippy::too_many_arguments)]
    pub fn velocity(
        &self,
        latents: &Tensor,
        target_ids: &Tensor,
        source: Option<&SourceLatents>,
        prompt: &PromptEmbeds,
        timestep: &Tensor,
        guidance: Option<&Tensor>,
        adapter: Option<&str>,
    ) -> Result<Tensor, ModelError> {
        let img_ids = match source {
            Some(s) => Tensor::cat(&[target_ids, &s.ids], 0),
            None => target_ids.shallow_clone(),
        };
        self.transformer.forward(&FluxInputs {
            hidden_states: latents,
            source: source.map(|s| &s.packed),
            encoder_hidden_states: &prompt.prompt_embeds,
            pooled_projections: &prompt.pooled_prompt_embeds,
            timestep,
            guidance,
            txt_ids: &prompt.text_ids,
            img_ids: &img_ids,
            adapter,
        })
    }

    /// Unpack `(B, N, 4·C)` latents of a `height × width` image, `z / scale + shift`, VAE
    /// decode, `(x·0.5 + 0.5).clamp(0, 1)` → `(B, 3, height, width)` float32 in [0, 1].
    pub fn decode(&self, latents: &Tensor, height: i64, width: i64) -> Result<Tensor, ModelError> {
        let (_, (h, w)) = self.target_ids(height, width)?;
        let z = self.vae.denormalize(&unpack_latents(latents, h, w)?);
        let image = self.vae.decode(&z.to_kind(self.vae.kind()))?;
        Ok((image * 0.5 + 0.5).clamp(0.0, 1.0).to_kind(Kind::Float))
    }

    /// The schedule the pipeline uses for `steps` steps on a target of `n_tokens` tokens.
    pub fn schedule(&self, steps: usize, n_tokens: i64) -> Result<FlowMatchSchedule, ModelError> {
        flux_schedule(&self.scheduler, steps, n_tokens.max(0) as u64)
    }

    /// A whole edit, without gradients. Returns `(B, 3, height, width)` in [0, 1].
    pub fn edit(&self, req: &EditRequest) -> Result<Tensor, ModelError> {
        tch::no_grad(|| {
            self.edit_latents(req)
                .and_then(|x| self.decode(&x, req.height, req.width))
        })
    }

    /// [`Self::edit`] up to the final packed latents `(B, N, 4·C)` (`output_type="latent"`).
    pub fn edit_latents(&self, req: &EditRequest) -> Result<Tensor, ModelError> {
        let b = req.prompts.len() as i64;
        check_shape("images", req.images, &[Some(b), Some(3), None, None])?;
        let prompt = self.encode_prompt(req.prompts, req.max_sequence_length)?;
        let kind = prompt.prompt_embeds.kind();
        let source = self.prepare_source(req.images, kind)?;
        let (ids, (h, w)) = self.target_ids(req.height, req.width)?;
        let n = (h / 2) * (w / 2);
        let c4 = 4 * self.vae.cfg.latent_channels;
        check_shape("latents", req.latents, &[Some(b), Some(n), Some(c4)])?;
        let mut x = req.latents.to_device(self.device()).to_kind(kind);
        let schedule = self.schedule(req.num_inference_steps, n)?;
        let guidance = Tensor::full([b], req.guidance_scale, (Kind::Float, self.device()));
        for (i, &t) in schedule.timesteps.iter().enumerate() {
            // `t.expand(B).to(latents.dtype) / 1000`
            let timestep =
                Tensor::full([b], t as f64, (Kind::Float, self.device())).to_kind(kind) / 1000.0;
            let v = self.velocity(
                &x,
                &ids,
                Some(&source),
                &prompt,
                &timestep,
                Some(&guidance),
                req.adapter,
            )?;
            // Euler as the scheduler's `step`: x in float32 + dt·v, back to v's kind. `dt` is a
            // 0-dim float32 tensor there, which torch rounds to v's kind before multiplying.
            let dt = Tensor::from(schedule.sigmas[i + 1] - schedule.sigmas[i])
                .to_kind(v.kind())
                .double_value(&[]);
            x = (x.to_kind(Kind::Float) + &v * dt).to_kind(v.kind());
        }
        Ok(x)
    }
}
