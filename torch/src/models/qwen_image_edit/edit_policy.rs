//! [`QwenImageEdit`]: Qwen-Image-Edit as an [`EditPolicy`], so rollout, `nft-train`, `eval` and
//! `cocoflow edit` run on it as on tiny-kontext and FLUX.1 Kontext.
//!
//! - Latent space: the Qwen VAE's normalised latents `(B, z_dim, H/8, W/8)` (`(z − mean)/std`),
//!   unpacked; the velocity packs them into 2×2 tokens (`in_channels = 4·z_dim`) and unpacks
//!   the result. Image sides must be multiples of 16.
//! - [`Conditioning`]: `source_tokens` (the packed source latent), `prompt_embeds` /
//!   `prompt_mask` (the Qwen2.5-VL states of the instruction templated with the source image,
//!   zero-padded to the batch's longest, mask 1 = token) and `negative_prompt_embeds` /
//!   `negative_prompt_mask` (the same for the reference's negative prompt `" "`). The encoder
//!   runs in [`EditPolicy::condition`] only, once per (instruction, source image) and task: the
//!   policy keeps every encoding it made ([`QwenImageEdit::cached_prompts`]). With an
//!   `encode-prompts` artifact ([`EditPolicy::set_prompt_source`]) the policy is loaded without
//!   the encoder and takes the states from the artifact, keyed by (prompt, digest of the 8-bit
//!   condition image); a pair the artifact lacks is encoded by the encoder loaded on demand
//!   (counted: [`EditPolicy::inline_prompt_encodings`], and said once on stderr).
//! - VAE encode and decode run one image at a time, so an image's latent (and the condition
//!   image decoded from it) does not depend on the batch it came in: the digests that key
//!   cached encodings are the same in `encode-prompts`, rollouts, training and evaluation.
//! - Pipelines: `QwenImageEditPipeline` (Qwen-Image-Edit) and `QwenImageEditPlusPipeline`
//!   (2509 and later: the template's image as `Picture 1: `, the encoder's image at 384² pixels;
//!   one source image per edit), by the repository's `_class_name`.
//! - The condition image: [`EditPolicy::encode_condition`] (what `cocoflow edit` calls) uses
//!   the source pixels, as the pipelines do when the source is already at the VAE's condition
//!   size; [`EditPolicy::condition`] (what the RL kinds call: the rollouts artifact keeps source
//!   *latents*) uses the VAE decode of the source latent, so that rollouts, training forwards
//!   and evaluations see the same conditioning. The VAE encodes it at its own size (the
//!   pipelines first resize it to about 1024² pixels); the prompt encoder sees it at that size
//!   (Edit) or resized to 384² pixels (Plus).
//! - Guidance: the reference's true CFG, applied inside the velocity
//!   ([`EditPolicy::embeds_guidance`] is true: the sampler passes its `guidance` value to every
//!   velocity call instead of mixing velocities itself): with a value > 1 the velocity is
//!   `uncond + s·(cond − uncond)` against the negative prompt, rescaled per token to the
//!   conditional velocity's norm ([`super::pipeline::true_cfg`]); training forwards get no value
//!   ([`EditPolicy::guidance_in_training`] is false) and run the conditional branch only.
//! - t is σ; the transformer gets `(σ·1000 in the model's dtype) / 1000`, as the pipeline.
//! - Schedule: the repository's scheduler config, exponential dynamic shift and the stretch to
//!   `shift_terminal` ([`crate::sampling::SchedulerConfig::shift_terminal`]).
//! - LoRA: adapters on the transformer's linear layers `target_modules` names (PEFT's suffix
//!   rule; default the attention projections `attn.{to_q,to_k,to_v,to_out.0,add_q_proj,
//!   add_k_proj,add_v_proj,to_add_out}` of every block — method-spec §5: q, k, v, out and the
//!   text-stream twins), θ = `default`, θ_old = `old`, saved in the PEFT layout;
//!   [`crate::models::flux_kontext::lora_export`] writes the layout
//!   `QwenImageEditPipeline.load_lora_weights` reads (the same `transformer.` keys).
//! - Weights: float32 on the CPU, bfloat16 on CUDA; the base is frozen (only LoRA trains).
//! - Model cache: the loaded pipeline is leased from the worker's cache
//!   ([`QwenImageEdit::from_leased`], [`crate::models::BaseModel`]) and goes back, adapters
//!   removed, when the policy is dropped.

use super::super::checkpoint;
use super::super::error::ModelError;
use super::super::lease::Leased;
use super::super::lora::{AdapterSet, LoraConfig, adapter_shapes, linear_layers};
use super::super::policy::{ActiveAdapter, Conditioning, EditPolicy, PromptSource, Trainable};
use super::image::{calculate_dimensions, pil_lanczos_resize};
use super::pipeline::{
    NEGATIVE_PROMPT, PLUS_CONDITION_AREA, QwenImageEditPipeline, check_repository,
    load_prompt_encoder, style_of, true_cfg,
};
use super::prompt::{PromptStyle, QwenVlPromptEncoder};
use super::transformer::QwenInputs;
use super::vae::AutoencoderKLQwenImage;
use super::{pack_latents, unpack_latents};
use crate::sampling::SchedulerConfig;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tch::{Device, Kind, Tensor};

pub const BACKEND: &str = "qwen-image-edit";
pub const PROMPT_EMBEDS: &str = "prompt_embeds";
pub const PROMPT_MASK: &str = "prompt_mask";
pub const NEGATIVE_PROMPT_EMBEDS: &str = "negative_prompt_embeds";
pub const NEGATIVE_PROMPT_MASK: &str = "negative_prompt_mask";
pub const SOURCE_TOKENS: &str = "source_tokens";

/// One prompt's encoding, unpadded: the states `(L, hidden)` of its L tokens.
type Prompt = Tensor;

/// The part name of a cached Qwen2.5-VL encoding (`(1, L, hidden)`, unpadded).
pub const CACHED_STATES: &str = "prompt_embeds";

/// A Qwen-Image-Edit repository loaded as an editing policy.
pub struct QwenImageEdit {
    /// The loaded pipeline: this policy's own, or leased from the per-worker model cache and
    /// returned to it, adapters removed, on drop.
    pub pipeline: Leased<QwenImageEditPipeline>,
    dir: PathBuf,
    adapters: AdapterSet,
    /// Encodings by (prompt, BLAKE3 of the uint8 condition image): made once per policy.
    prompts: Mutex<HashMap<(String, String), Prompt>>,
    /// Cached encodings (`encode-prompts`), looked up before any encoder runs.
    prompt_source: Option<Box<dyn PromptSource>>,
    /// The prompt encoder loaded on demand, when the pipeline has none and a prompt is missing
    /// from [`Self::prompt_source`].
    late_encoder: Mutex<Option<QwenVlPromptEncoder>>,
    /// Prompts encoded here rather than taken from the prompt source.
    inline: AtomicU64,
}

impl std::fmt::Debug for QwenImageEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenImageEdit")
            .field("pipeline", &self.pipeline)
            .field("adapters", &self.adapters)
            .finish_non_exhaustive()
    }
}

fn input_err(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

/// float32 on the CPU, bfloat16 on CUDA.
fn kind_for(device: Device) -> Kind {
    if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    }
}

impl QwenImageEdit {
    /// Loads every component of the repository `dir` (float32 on the CPU, bfloat16 on CUDA),
    /// everything frozen.
    pub fn load(dir: &Path, device: Device) -> Result<QwenImageEdit, ModelError> {
        Self::from_leased(Leased::owned(Self::load_pipeline(dir, device, true)?), dir)
    }

    /// The pipeline of `dir` as [`QwenImageEdit::load`] loads it (`text_encoder: false`:
    /// without the Qwen2.5-VL prompt encoder, for conditionings from cached encodings), frozen.
    pub fn load_pipeline(
        dir: &Path,
        device: Device,
        text_encoder: bool,
    ) -> Result<QwenImageEditPipeline, ModelError> {
        let p = QwenImageEditPipeline::load_parts(dir, device, kind_for(device), text_encoder)?;
        for v in p.vae.var_store().trainable_variables() {
            let _ = v.set_requires_grad(false);
        }
        for v in p.transformer.var_store().trainable_variables() {
            let _ = v.set_requires_grad(false);
        }
        if let Some(e) = &p.encoder {
            for v in e.variables().values() {
                let _ = v.set_requires_grad(false);
            }
        }
        Ok(p)
    }

    /// A policy on `pipeline` (loaded from `dir`): its own, or leased from the model cache (it
    /// comes back, without this policy's adapters, when the policy is dropped).
    pub fn from_leased(
        pipeline: Leased<QwenImageEditPipeline>,
        dir: &Path,
    ) -> Result<QwenImageEdit, ModelError> {
        let mut m = QwenImageEdit {
            pipeline,
            dir: dir.to_path_buf(),
            adapters: AdapterSet::new(Trainable::Nothing),
            prompts: Mutex::new(HashMap::new()),
            prompt_source: None,
            late_encoder: Mutex::new(None),
            inline: AtomicU64::new(0),
        };
        m.set_trainable(Trainable::Nothing)?;
        Ok(m)
    }

    fn model_kind(&self) -> Kind {
        self.pipeline.transformer.kind()
    }

    /// How many (prompt, condition image) encodings the policy holds (each was made once).
    pub fn cached_prompts(&self) -> usize {
        self.prompts.lock().expect("not poisoned").len()
    }

    fn adapter_shapes(&self, cfg: &LoraConfig) -> BTreeMap<String, (Vec<i64>, Kind)> {
        let base = self.pipeline.transformer.base_variables();
        adapter_shapes(cfg, linear_layers(&base))
    }

    fn check_size(&self, what: &'static str, height: i64, width: i64) -> Result<(), ModelError> {
        let m = self.pipeline.multiple_of();
        if height <= 0 || width <= 0 || height % m != 0 || width % m != 0 {
            return Err(input_err(
                what,
                format!("{height}×{width} is not a positive multiple of {m} (Qwen-Image-Edit)"),
            ));
        }
        Ok(())
    }

    /// The encoder's states of `prompt` with the condition image `image` (uint8 `(3, H, W)`,
    /// the 8-bit condition image whose digest is `digest`), `(L, hidden)`: from this policy's
    /// cache, the prompt source, or made now.
    fn prompt(&self, prompt: &str, image: &Tensor, digest: &str) -> Result<Prompt, ModelError> {
        let key = (prompt.to_string(), digest.to_string());
        if let Some(p) = self.prompts.lock().expect("not poisoned").get(&key) {
            return Ok(p.shallow_clone());
        }
        let cached = match &self.prompt_source {
            Some(src) => src.lookup_with_image(prompt, digest)?,
            None => None,
        };
        let states = match cached {
            Some(parts) => {
                let t = parts.get(CACHED_STATES).ok_or_else(|| {
                    input_err(
                        "prompt encodings",
                        format!("the cached encoding of {prompt:?} has no `{CACHED_STATES}`"),
                    )
                })?;
                let hidden = self.pipeline.transformer.cfg.joint_attention_dim;
                let sz = t.size();
                if sz.len() != 3 || sz[0] != 1 || sz[2] != hidden {
                    return Err(input_err(
                        "prompt encodings",
                        format!(
                            "the cached encoding of {prompt:?} is {sz:?}, expected (1, L, {hidden})"
                        ),
                    ));
                }
                t.get(0).to_device(self.device()).to_kind(self.model_kind())
            }
            None => {
                let image = encoder_image(self.pipeline.style, image)?;
                let states = match &self.pipeline.encoder {
                    Some(enc) => encode_prompt(enc, prompt, &image)?,
                    None => {
                        let mut late = self.late_encoder.lock().expect("not poisoned");
                        if late.is_none() {
                            let here = made_on(self.device(), self.pipeline.vae.kind());
                            let why = match self.prompt_source.as_ref().and_then(|s| s.made_on()) {
                                Some(there) if there != here => format!(
                                    " (they were made on {there}, this task runs on {here}: \
                                     the condition images differ; give `encode-prompts` the \
                                     same kind of device as the RL tasks)"
                                ),
                                _ => String::new(),
                            };
                            eprintln!(
                                "qwen-image-edit: the prompt {prompt:?} with condition image {} \
                                 is not in the cached prompt encodings{why}; loading the prompt \
                                 encoder of `{}` to encode it (and any other missing one)",
                                &digest[..12.min(digest.len())],
                                self.dir.display()
                            );
                            *late = Some(load_prompt_encoder(
                                &self.dir,
                                self.pipeline.style,
                                self.device(),
                                self.model_kind(),
                            )?);
                        }
                        encode_prompt(late.as_ref().expect("loaded"), prompt, &image)?
                    }
                };
                if self.prompt_source.is_some() {
                    self.inline.fetch_add(1, Ordering::Relaxed);
                }
                states.to_kind(self.model_kind())
            }
        };
        self.prompts
            .lock()
            .expect("not poisoned")
            .insert(key, states.shallow_clone());
        Ok(states)
    }

    /// The conditioning of source latents `(B, C, h, w)` whose condition images are `images`
    /// (uint8 `(B, 3, H, W)`).
    fn conditioning(
        &self,
        source: &Tensor,
        images: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError> {
        let s = source.size();
        if s.len() != 4 || s[0] != instructions.len() as i64 {
            return Err(input_err(
                "instructions",
                format!("{} instructions for a batch of {s:?}", instructions.len()),
            ));
        }
        let z = self.pipeline.vae.cfg.z_dim;
        if s[1] != z || s[2] % 2 != 0 || s[3] % 2 != 0 {
            return Err(input_err(
                "source latent",
                format!("expected (B, {z}, h, w) with h and w even, got {s:?}"),
            ));
        }
        tch::no_grad(|| {
            let images = images.to_device(Device::Cpu);
            let mut pos = Vec::new();
            let mut neg = Vec::new();
            for (i, ins) in instructions.iter().enumerate() {
                let img = images.get(i as i64).contiguous();
                let digest = image_digest(&img)
                    .map_err(|e| input_err("source image", format!("item {i}: {e}")))?;
                pos.push(self.prompt(ins, &img, &digest)?);
                neg.push(self.prompt(NEGATIVE_PROMPT, &img, &digest)?);
            }
            let (pe, pm) = pad_prompts(&pos, self.device());
            let (ne, nm) = pad_prompts(&neg, self.device());
            let source = source.to_device(self.device()).to_kind(Kind::Float);
            let tokens = pack_latents(&source.to_kind(self.model_kind()))?;
            Ok(Conditioning::new(source)
                .with(SOURCE_TOKENS, tokens, None)
                .with(PROMPT_EMBEDS, pe, Some(0.0))
                .with(PROMPT_MASK, pm, Some(0.0))
                .with(NEGATIVE_PROMPT_EMBEDS, ne, Some(0.0))
                .with(NEGATIVE_PROMPT_MASK, nm, Some(0.0)))
        })
    }
}

/// Prompt states `(L_i, hidden)` → zero-padded `(B, L, hidden)` and the int64 mask `(B, L)`.
fn pad_prompts(rows: &[Prompt], device: Device) -> (Tensor, Tensor) {
    let l = rows.iter().map(|r| r.size()[0]).max().unwrap_or(0);
    let mut embeds = Vec::new();
    let mut masks = Vec::new();
    for r in rows {
        let n = r.size()[0];
        embeds.push(r.pad([0, 0, 0, l - n], "constant", Some(0.0)));
        masks.push(Tensor::cat(
            &[
                Tensor::ones([n], (Kind::Int64, device)),
                Tensor::zeros([l - n], (Kind::Int64, device)),
            ],
            0,
        ));
    }
    (Tensor::stack(&embeds, 0), Tensor::stack(&masks, 0))
}

/// `[0, 1]` images → uint8, as 8-bit files hold them.
fn to_u8(images: &Tensor) -> Tensor {
    (images.to_device(Device::Cpu).to_kind(Kind::Float) * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
}

/// `cpu/Float`, `cuda/BFloat16`: what the condition images depend on besides the weights.
fn made_on(device: Device, kind: Kind) -> String {
    let d = if device.is_cuda() { "cuda" } else { "cpu" };
    format!("{d}/{kind:?}")
}

/// The key of a condition image: BLAKE3 of its shape and bytes (uint8 `(3, H, W)`).
pub fn image_digest(img: &Tensor) -> Result<String, ModelError> {
    let img = img.to_device(Device::Cpu).contiguous();
    if img.kind() != Kind::Uint8 {
        return Err(input_err(
            "condition image",
            format!("expected uint8, got {:?}", img.kind()),
        ));
    }
    let bytes = Vec::<u8>::try_from(img.reshape([-1]))
        .map_err(|e| input_err("condition image", e.to_string()))?;
    let mut h = blake3::Hasher::new();
    h.update(format!("{:?}", img.size()).as_bytes());
    h.update(&bytes);
    Ok(h.finalize().to_hex().to_string())
}

/// The image the prompt encoder sees of a condition image: itself (`QwenImageEditPipeline`
/// at the source's size), or for `QwenImageEditPlusPipeline` its Lanczos resize to
/// [`PLUS_CONDITION_AREA`] (the pipeline's `CONDITION_IMAGE_SIZE`).
fn encoder_image(style: PromptStyle, image: &Tensor) -> Result<Tensor, ModelError> {
    match style {
        PromptStyle::Edit => Ok(image.shallow_clone()),
        PromptStyle::EditPlus => {
            let s = image.size();
            let (w, h) = calculate_dimensions(PLUS_CONDITION_AREA, s[2] as f64 / s[1] as f64);
            pil_lanczos_resize(image, w, h)
        }
    }
}

/// The states `(L, hidden)` of `prompt`'s L tokens with `image` (what the encoder sees).
fn encode_prompt(
    encoder: &QwenVlPromptEncoder,
    prompt: &str,
    image: &Tensor,
) -> Result<Prompt, ModelError> {
    let e = encoder.encode(&[prompt], &[image])?;
    let n = e.mask.sum(Kind::Int64).int64_value(&[]);
    Ok(e.embeds.get(0).narrow(0, 0, n))
}

/// `[0, 1]` images `(B, 3, H, W)` → normalised latents, one image at a time (a latent does not
/// depend on its batch).
fn vae_encode(
    vae: &AutoencoderKLQwenImage,
    images: &Tensor,
    device: Device,
) -> Result<Tensor, ModelError> {
    let mut out = Vec::new();
    for i in 0..images.size()[0] {
        let x = images
            .get(i)
            .unsqueeze(0)
            .to_device(device)
            .to_kind(Kind::Float)
            * 2.0
            - 1.0;
        out.push(
            vae.normalize(&vae.encode_mean(&x.to_kind(vae.kind()))?)
                .to_kind(Kind::Float),
        );
    }
    Ok(Tensor::cat(&out, 0))
}

/// Normalised latents `(B, z_dim, h, w)` → images in [0, 1], one at a time.
fn vae_decode(
    vae: &AutoencoderKLQwenImage,
    latents: &Tensor,
    device: Device,
) -> Result<Tensor, ModelError> {
    let mut out = Vec::new();
    for i in 0..latents.size()[0] {
        let z = vae.denormalize(
            &latents
                .get(i)
                .unsqueeze(0)
                .to_device(device)
                .to_kind(Kind::Float),
        );
        let image = vae.decode(&z.to_kind(vae.kind()))?;
        out.push((image.to_kind(Kind::Float) / 2.0 + 0.5).clamp(0.0, 1.0));
    }
    Ok(Tensor::cat(&out, 0))
}

/// What `encode-prompts` runs for Qwen-Image-Edit: the VAE and the Qwen2.5-VL prompt encoder
/// of a repository (not its transformer), making the encodings [`QwenImageEdit`] looks up.
pub struct QwenConditionEncoder {
    vae: AutoencoderKLQwenImage,
    encoder: QwenVlPromptEncoder,
    style: PromptStyle,
    device: Device,
}

impl QwenConditionEncoder {
    /// The VAE and prompt encoder of `dir` on `device` (float32 on the CPU, bfloat16 on CUDA).
    pub fn load(dir: &Path, device: Device) -> Result<QwenConditionEncoder, ModelError> {
        let index = check_repository(dir)?;
        let kind = kind_for(device);
        let style = style_of(&index);
        Ok(QwenConditionEncoder {
            vae: AutoencoderKLQwenImage::load(&dir.join("vae"), device, kind)?,
            encoder: load_prompt_encoder(dir, style, device, kind)?,
            style,
            device,
        })
    }

    /// The device kind and dtype of the condition images (`cpu/Float`, `cuda/BFloat16`).
    pub fn made_on(&self) -> String {
        made_on(self.device, self.vae.kind())
    }

    /// The condition image the RL kinds derive from a source image `(3, H, W)` in [0, 1] (the
    /// VAE decode of its latent, 8-bit: see the module documentation) and its digest.
    pub fn condition_image(&self, source: &Tensor) -> Result<(Tensor, String), ModelError> {
        let s = source.size();
        let m = self.vae.scale_factor() * 2;
        if s.len() != 3 || s[0] != 3 || s[1] % m != 0 || s[2] % m != 0 {
            return Err(input_err(
                "source image",
                format!("expected (3, H, W) with H and W multiples of {m}, got {s:?}"),
            ));
        }
        tch::no_grad(|| {
            let z = vae_encode(&self.vae, &source.unsqueeze(0), self.device)?;
            let img = to_u8(&vae_decode(&self.vae, &z, self.device)?).get(0);
            let digest = image_digest(&img)?;
            Ok((img, digest))
        })
    }

    /// The states `(1, L, hidden)` of `prompt` with the condition image `image` (from
    /// [`Self::condition_image`]), on the CPU: a [`CACHED_STATES`] entry.
    pub fn encode(&self, prompt: &str, image: &Tensor) -> Result<Tensor, ModelError> {
        tch::no_grad(|| {
            let shown = encoder_image(self.style, image)?;
            Ok(encode_prompt(&self.encoder, prompt, &shown)?
                .unsqueeze(0)
                .to_device(Device::Cpu))
        })
    }
}

impl EditPolicy for QwenImageEdit {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn device(&self) -> Device {
        self.pipeline.transformer.device()
    }

    fn encode(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let s = images.size();
        if s.len() != 4 || s[1] != 3 {
            return Err(input_err(
                "images",
                format!("expected (B, 3, H, W), got {s:?}"),
            ));
        }
        self.check_size("images", s[2], s[3])?;
        vae_encode(&self.pipeline.vae, images, self.device())
    }

    fn decode(&self, latents: &Tensor) -> Result<Tensor, ModelError> {
        let s = latents.size();
        let z = self.pipeline.vae.cfg.z_dim;
        if s.len() != 4 || s[1] != z {
            return Err(input_err(
                "latents",
                format!("expected (B, {z}, h, w), got {s:?}"),
            ));
        }
        vae_decode(&self.pipeline.vae, latents, self.device())
    }

    fn latent_shape(&self, height: i64, width: i64) -> Result<[i64; 3], ModelError> {
        self.check_size("image size", height, width)?;
        let f = self.pipeline.vae.scale_factor();
        Ok([self.pipeline.vae.cfg.z_dim, height / f, width / f])
    }

    fn image_seq_len(&self, latent_h: i64, latent_w: i64) -> u64 {
        ((latent_h / 2) * (latent_w / 2)).max(0) as u64
    }

    fn scheduler(&self) -> SchedulerConfig {
        let s = &self.pipeline.scheduler;
        SchedulerConfig {
            base_image_seq_len: s.base_image_seq_len,
            max_image_seq_len: s.max_image_seq_len,
            base_shift: s.base_shift,
            max_shift: s.max_shift,
            use_dynamic_shifting: s.use_dynamic_shifting,
            shift_terminal: s.shift_terminal.filter(|t| *t != 0.0),
        }
    }

    /// The condition image is the VAE decode of `source_latent` (see the module documentation).
    fn condition(
        &self,
        source_latent: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError> {
        let images = tch::no_grad(|| self.decode(source_latent))?;
        self.conditioning(source_latent, &to_u8(&images), instructions)
    }

    /// The condition image is the source itself (8-bit), as the pipeline's.
    fn encode_condition(
        &self,
        source_images: &Tensor,
        instructions: &[&str],
    ) -> Result<Conditioning, ModelError> {
        let latent = tch::no_grad(|| self.encode(source_images))?;
        self.conditioning(&latent, &to_u8(source_images), instructions)
    }

    /// The negative prompt `" "` of the same sources (what true CFG mixes against).
    fn unconditional(&self, cond: &Conditioning) -> Result<Conditioning, ModelError> {
        let mut out = Conditioning::new(cond.source.shallow_clone());
        for (from, to) in [
            (NEGATIVE_PROMPT_EMBEDS, PROMPT_EMBEDS),
            (NEGATIVE_PROMPT_MASK, PROMPT_MASK),
            (NEGATIVE_PROMPT_EMBEDS, NEGATIVE_PROMPT_EMBEDS),
            (NEGATIVE_PROMPT_MASK, NEGATIVE_PROMPT_MASK),
            (SOURCE_TOKENS, SOURCE_TOKENS),
        ] {
            let pad = cond.parts.get(from).and_then(|e| e.pad);
            out = out.with(to, cond.get(from)?.shallow_clone(), pad);
        }
        Ok(out)
    }

    fn set_prompt_source(&mut self, source: Box<dyn PromptSource>) {
        self.prompt_source = Some(source);
    }

    fn inline_prompt_encodings(&self) -> u64 {
        self.inline.load(Ordering::Relaxed)
    }

    fn embeds_guidance(&self) -> bool {
        true
    }

    fn guidance_in_training(&self) -> bool {
        false
    }

    /// The pipeline's `true_cfg_scale` default.
    fn default_guidance(&self) -> Option<f64> {
        Some(4.0)
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
        let z = self.pipeline.vae.cfg.z_dim;
        if s.len() != 4 || s[0] != cond.batch() || s[1] != z || s[2] % 2 != 0 || s[3] % 2 != 0 {
            return Err(input_err(
                "x_t",
                format!(
                    "expected ({}, {z}, h, w) with h and w even, got {s:?}",
                    cond.batch()
                ),
            ));
        }
        let (b, h, w) = (s[0], s[2], s[3]);
        let src = cond.source.size();
        let (kind, dev) = (self.model_kind(), self.device());
        let t = match t.size().as_slice() {
            [] | [1] => t.reshape([1]).expand([b], false),
            [n] if *n == b => t.shallow_clone(),
            other => return Err(input_err("t", format!("expected ({b},), got {other:?}"))),
        };
        // the pipeline's `(timestep = σ·1000).to(dtype) / 1000`
        let timestep = (t.to_device(dev).to_kind(Kind::Float) * 1000.0).to_kind(kind) / 1000.0;
        let latents = pack_latents(&x_t.to_device(dev).to_kind(kind))?;
        let shapes = [(1, h / 2, w / 2), (1, src[2] / 2, src[3] / 2)];
        let source = cond.get(SOURCE_TOKENS)?;
        let run = |embeds: &Tensor, mask: &Tensor| {
            let padded = mask.eq(0).any().int64_value(&[]) != 0;
            self.pipeline.transformer.forward(&QwenInputs {
                hidden_states: &latents,
                source: Some(source),
                encoder_hidden_states: embeds,
                encoder_hidden_states_mask: padded.then_some(mask),
                timestep: &timestep,
                img_shapes: &shapes,
                adapter: adapter.name(),
            })
        };
        let v = run(cond.get(PROMPT_EMBEDS)?, cond.get(PROMPT_MASK)?)?;
        let v = match guidance {
            Some(g) if g > 1.0 => {
                let u = run(
                    cond.get(NEGATIVE_PROMPT_EMBEDS)?,
                    cond.get(NEGATIVE_PROMPT_MASK)?,
                )?;
                true_cfg(&v, &u, g)
            }
            _ => v,
        };
        Ok(unpack_latents(&v, h, w)?.to_kind(x_t.kind()))
    }

    fn add_adapter(&mut self, name: &str, cfg: &LoraConfig) -> Result<(), ModelError> {
        self.adapters.check_new(name, cfg)?;
        if self.pipeline.transformer.add_lora(name, cfg) == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "LoRA `target_modules` {:?} match no linear layer of the Qwen-Image transformer",
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
                "Qwen-Image-Edit trains LoRA adapters only, not its base weights".into(),
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
            "saving a Qwen-Image-Edit base to `{}` is not supported: its repository is used by \
             reference",
            dir.display()
        )))
    }
}

impl Drop for QwenImageEdit {
    /// A cached pipeline goes back without this policy's adapters (and their gradients).
    fn drop(&mut self) {
        if self.pipeline.is_cached() {
            self.pipeline.transformer.clear_lora();
        }
    }
}
