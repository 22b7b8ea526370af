//! A whole Qwen-Image-Edit edit as diffusers' `QwenImageEditPipeline.__call__` does it for one
//! RGB source image, given initial noise — and its pieces:
//!
//! - the condition image: the source resized with PIL's Lanczos to
//!   `calculate_dimensions(condition_area, w/h)` (the pipeline's area is 1024²); the prompt
//!   encoder and the VAE both see it;
//! - [`qwen_schedule`]: σ = `linspace(1, 1/N, N)`, the exponential dynamic shift with
//!   μ = `calculate_shift(target tokens)`, then the stretch to `shift_terminal`, all in float32
//!   as the scheduler computes them (`FlowMatchEulerDiscreteScheduler.set_timesteps`);
//! - [`true_cfg`]: `uncond + s·(cond − uncond)`, rescaled per token to the conditional
//!   prediction's norm (the reference's true CFG; the negative prompt is `" "`);
//! - the Euler steps in float32 on the target's packed latents with the source latents
//!   appended, and the decode to [0, 1].
//!
//! [`QwenImageEditPipeline::conditions`] (the encoder and VAE work, cacheable per source image
//! and instruction), [`QwenImageEditPipeline::velocity`] (one transformer call, optionally with
//! true CFG and a LoRA adapter) and [`QwenImageEditPipeline::denoise`] (the sampler) are the
//! pieces of [`QwenImageEditPipeline::edit_latents`].

use super::super::error::ModelError;
use super::super::flux_kontext::config::FlowMatchEulerDiscreteSchedulerConfig;
use super::super::flux_kontext::scheduler::{FlowMatchSchedule, calculate_shift};
use super::super::flux_kontext::vae::{pack_latents, unpack_latents};
use super::config::{ModelIndex, read_config, validate_scheduler};
use super::image::{calculate_dimensions, pil_lanczos_resize, vae_preprocess};
use super::prompt::{PromptEncoding, PromptStyle, QwenVlPromptEncoder};
use super::rope::ImageShape;
use super::transformer::{QwenImageTransformer2DModel, QwenInputs};
use super::vae::AutoencoderKLQwenImage;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub const PIPELINE_CLASS: &str = "QwenImageEditPipeline";
/// Qwen-Image-Edit-2509 and later: the same components, the prompt template with `Picture 1: `
/// ([`super::prompt::PromptStyle::EditPlus`]) and the prompt encoder's image at
/// [`PLUS_CONDITION_AREA`].
pub const PLUS_PIPELINE_CLASS: &str = "QwenImageEditPlusPipeline";

/// `QwenImageEditPlusPipeline`'s `CONDITION_IMAGE_SIZE`: the area of the image the prompt
/// encoder sees (the VAE's is [`CONDITION_AREA`]).
pub const PLUS_CONDITION_AREA: f64 = 384.0 * 384.0;

/// The reference's negative prompt for true CFG.
pub const NEGATIVE_PROMPT: &str = " ";

/// The pipeline's condition area (`calculate_dimensions(1024 * 1024, ratio)`).
pub const CONDITION_AREA: f64 = 1024.0 * 1024.0;

const COMPONENTS: &[(&str, &str)] = &[
    ("transformer", "QwenImageTransformer2DModel"),
    ("vae", "AutoencoderKLQwenImage"),
    ("text_encoder", "Qwen2_5_VLForConditionalGeneration"),
    ("processor", "Qwen2VLProcessor"),
    ("scheduler", "FlowMatchEulerDiscreteScheduler"),
];

/// The prompt style of a repository's pipeline class.
pub fn style_of(index: &ModelIndex) -> PromptStyle {
    if index.class_name == PLUS_PIPELINE_CLASS {
        PromptStyle::EditPlus
    } else {
        PromptStyle::Edit
    }
}

/// The repository's Qwen2.5-VL prompt encoder (`text_encoder` + `processor`) in `style`.
pub fn load_prompt_encoder(
    dir: &Path,
    style: PromptStyle,
    device: Device,
    kind: Kind,
) -> Result<QwenVlPromptEncoder, ModelError> {
    let mut encoder = QwenVlPromptEncoder::load(
        &dir.join("text_encoder"),
        &dir.join("processor"),
        device,
        kind,
    )?;
    encoder.style = style;
    Ok(encoder)
}

/// Checks that `dir` is a diffusers Qwen-Image-Edit repository: `model_index.json` names
/// `QwenImageEditPipeline` or `QwenImageEditPlusPipeline` and the components cocoflow loads.
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
    if index.class_name != PIPELINE_CLASS && index.class_name != PLUS_PIPELINE_CLASS {
        return Err(bad(format!(
            "not a Qwen-Image-Edit repository: `_class_name` is `{}`, expected `{PIPELINE_CLASS}` \
             or `{PLUS_PIPELINE_CLASS}`",
            index.class_name
        )));
    }
    for (name, class) in COMPONENTS {
        match index.component(name) {
            Some((_, c)) if c == *class => {}
            Some((_, c)) => {
                return Err(bad(format!(
                    "component `{name}` is `{c}`, expected `{class}`"
                )));
            }
            None => return Err(bad(format!("component `{name}` is missing"))),
        }
    }
    Ok(index)
}

/// The σ schedule of `steps` Euler steps for a target of `image_seq_len` packed tokens.
pub fn qwen_schedule(
    cfg: &FlowMatchEulerDiscreteSchedulerConfig,
    steps: usize,
    image_seq_len: u64,
) -> Result<FlowMatchSchedule, ModelError> {
    validate_scheduler(cfg)?;
    if steps == 0 {
        return Err(ModelError::Input {
            what: "num_inference_steps",
            message: "must be at least 1".into(),
        });
    }
    let mu = calculate_shift(cfg, image_seq_len);
    let e = mu.exp() as f32;
    let n = steps as f64;
    let mut sigmas: Vec<f32> = (0..steps)
        .map(|i| {
            // numpy.linspace(1, 1/N, N) in float64, then float32
            let s = if i + 1 == steps {
                1.0 / n
            } else {
                1.0 + i as f64 * ((1.0 / n - 1.0) / (n - 1.0))
            } as f32;
            e / (e + (1.0 / s - 1.0))
        })
        .collect();
    if let Some(term) = cfg.shift_terminal.filter(|t| *t != 0.0) {
        let last = 1.0 - sigmas[steps - 1];
        let scale = last / (1.0 - term) as f32;
        for s in &mut sigmas {
            *s = 1.0 - (1.0 - *s) / scale;
        }
    }
    let k = cfg.num_train_timesteps as f32;
    let timesteps = sigmas.iter().map(|s| s * k).collect();
    sigmas.push(0.0);
    Ok(FlowMatchSchedule {
        mu,
        sigmas,
        timesteps,
    })
}

/// The reference's true CFG on velocities `(B, N, C)`: `comb = uncond + s·(cond − uncond)`,
/// then `comb · ‖cond‖ / ‖comb‖` per token (norms over the channels).
pub fn true_cfg(cond: &Tensor, uncond: &Tensor, scale: f64) -> Tensor {
    let comb = uncond + (cond - uncond) * scale;
    let norm = |t: &Tensor| t.norm_scalaropt_dim(2.0, [-1i64], true);
    let ratio = norm(cond) / norm(&comb);
    comb * ratio
}

/// One edit's settings.
#[derive(Debug)]
pub struct QwenEditRequest<'a> {
    /// The source image, uint8 `(3, H, W)`.
    pub source: &'a Tensor,
    pub prompt: &'a str,
    /// `Some(" ")` for the reference's true CFG (with `true_cfg_scale > 1`).
    pub negative_prompt: Option<&'a str>,
    pub true_cfg_scale: f64,
    /// Initial noise, packed `(1, N, in_channels)` for the target size.
    pub latents: &'a Tensor,
    pub num_inference_steps: usize,
    /// Area of the condition image (the pipeline: [`CONDITION_AREA`]).
    pub condition_area: f64,
    /// Target size; `None`: the condition image's (floored to multiples of 16).
    pub size: Option<(i64, i64)>,
}

pub struct QwenImageEditPipeline {
    pub transformer: QwenImageTransformer2DModel,
    pub vae: AutoencoderKLQwenImage,
    /// The Qwen2.5-VL prompt encoder; `None` when loaded without it
    /// ([`QwenImageEditPipeline::load_parts`]: conditionings from an `encode-prompts` artifact).
    pub encoder: Option<QwenVlPromptEncoder>,
    /// The prompt template and encoder-image size of the repository's pipeline class.
    pub style: PromptStyle,
    pub scheduler: FlowMatchEulerDiscreteSchedulerConfig,
}

impl std::fmt::Debug for QwenImageEditPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenImageEditPipeline")
            .field("transformer", &self.transformer)
            .finish_non_exhaustive()
    }
}

/// What an edit conditions on: the condition image's encodings.
#[derive(Debug)]
pub struct EditConditions {
    /// Condition size `(width, height)`.
    pub condition_size: (i64, i64),
    /// Packed normalised source latents `(1, N_src, in_channels)`.
    pub source_latents: Tensor,
    pub prompt: PromptEncoding,
    pub negative: Option<PromptEncoding>,
}

impl QwenImageEditPipeline {
    /// Loads every component of a diffusers `QwenImageEditPipeline` directory.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        Self::load_parts(dir, device, kind, true)
    }

    /// [`Self::load`]; `text_encoder: false` leaves out the Qwen2.5-VL prompt encoder (by far
    /// the largest component after the transformer) for tasks whose prompt encodings come from
    /// an `encode-prompts` artifact.
    pub fn load_parts(
        dir: &Path,
        device: Device,
        kind: Kind,
        text_encoder: bool,
    ) -> Result<Self, ModelError> {
        let index = check_repository(dir)?;
        let scheduler: FlowMatchEulerDiscreteSchedulerConfig =
            read_config(&dir.join("scheduler").join("scheduler_config.json"))?;
        validate_scheduler(&scheduler).map_err(|e| ModelError::Config {
            path: dir.join("scheduler").join("scheduler_config.json"),
            message: e.to_string(),
        })?;
        let style = style_of(&index);
        let encoder = if text_encoder {
            Some(load_prompt_encoder(dir, style, device, kind)?)
        } else {
            None
        };
        Ok(QwenImageEditPipeline {
            transformer: QwenImageTransformer2DModel::load(&dir.join("transformer"), device, kind)?,
            vae: AutoencoderKLQwenImage::load(&dir.join("vae"), device, kind)?,
            encoder,
            style,
            scheduler,
        })
    }

    /// The prompt encoder, or an error saying it was not loaded.
    pub fn encoder(&self) -> Result<&QwenVlPromptEncoder, ModelError> {
        self.encoder.as_ref().ok_or_else(|| {
            ModelError::InvalidConfig(
                "this Qwen-Image-Edit pipeline was loaded without its prompt encoder \
                 (`text_encoder`): its prompts come from an `encode-prompts` artifact"
                    .into(),
            )
        })
    }

    /// Bytes of every loaded weight (what the model cache charges for it).
    pub fn bytes(&self) -> u64 {
        let vars = |vs: &tch::nn::VarStore| -> u64 {
            vs.variables()
                .into_values()
                .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
                .sum()
        };
        vars(self.transformer.var_store())
            + vars(self.vae.var_store())
            + self.encoder.as_ref().map_or(0, |e| {
                e.variables()
                    .values()
                    .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
                    .sum()
            })
    }

    /// `vae_scale_factor · 2`: target sides are floored to multiples of it.
    pub fn multiple_of(&self) -> i64 {
        self.vae.scale_factor() * 2
    }

    /// Encodes the condition image of `source` (Lanczos to `area`): the packed normalised
    /// latents and the prompt (and negative prompt) states.
    pub fn conditions(
        &self,
        source: &Tensor,
        prompt: &str,
        negative_prompt: Option<&str>,
        area: f64,
    ) -> Result<EditConditions, ModelError> {
        let s = source.size();
        if s.len() != 3 || s[0] != 3 || source.kind() != Kind::Uint8 {
            return Err(ModelError::Input {
                what: "source",
                message: format!(
                    "expected a uint8 RGB image (3, H, W), got {s:?} {:?}",
                    source.kind()
                ),
            });
        }
        let (cw, ch) = calculate_dimensions(area, s[2] as f64 / s[1] as f64);
        let cond = pil_lanczos_resize(source, cw, ch)?;
        let z = self.vae.encode_mean(&vae_preprocess(&cond))?;
        let source_latents = pack_latents(&self.vae.normalize(&z))?;
        let encoder = self.encoder()?;
        let prompt = encoder.encode(&[prompt], &[&cond])?;
        let negative = negative_prompt
            .map(|n| encoder.encode(&[n], &[&cond]))
            .transpose()?;
        Ok(EditConditions {
            condition_size: (cw, ch),
            source_latents,
            prompt,
            negative,
        })
    }

    /// The packed grids of the target (`width × height`, floored to [`Self::multiple_of`]) and
    /// of the condition image, in token order (the pipeline's `img_shapes[0]`), and the
    /// target's size.
    pub fn img_shapes(
        &self,
        c: &EditConditions,
        size: Option<(i64, i64)>,
    ) -> ([ImageShape; 2], (i64, i64)) {
        let (cw, ch) = c.condition_size;
        let (w, h) = size.unwrap_or((cw, ch));
        let mo = self.multiple_of();
        let (w, h) = (w / mo * mo, h / mo * mo);
        let vsf = self.vae.scale_factor();
        (
            [
                (1, h / vsf / 2, w / vsf / 2),
                (1, ch / vsf / 2, cw / vsf / 2),
            ],
            (w, h),
        )
    }

    /// One velocity of the target tokens `(1, N, in_channels)` at σ-timestep `t` (the
    /// scheduler's `σ·1000`), with true CFG against `c.negative` when `true_cfg_scale > 1`.
    pub fn velocity(
        &self,
        c: &EditConditions,
        latents: &Tensor,
        t: f32,
        img_shapes: &[ImageShape],
        true_cfg_scale: f64,
        adapter: Option<&str>,
    ) -> Result<Tensor, ModelError> {
        let (kind, dev) = (self.transformer.kind(), self.transformer.device());
        // `t.expand(B).to(latents.dtype)`, then `/ 1000`
        let timestep = Tensor::from_slice(&[t]).to_device(dev).to_kind(kind) / 1000.0;
        let timestep = timestep.expand([latents.size()[0]], false);
        let velocity = |p: &PromptEncoding| {
            self.transformer.forward(&QwenInputs {
                hidden_states: latents,
                source: Some(&c.source_latents),
                encoder_hidden_states: &p.embeds,
                encoder_hidden_states_mask: p.pipeline_mask(),
                timestep: &timestep,
                img_shapes,
                adapter,
            })
        };
        let v = velocity(&c.prompt)?;
        match &c.negative {
            Some(neg) if true_cfg_scale > 1.0 => Ok(true_cfg(&v, &velocity(neg)?, true_cfg_scale)),
            _ => Ok(v),
        }
    }

    /// The Euler sampler from `latents` (packed `(1, N, in_channels)` noise) on encoded
    /// conditions: the edited latents and the target size `(width, height)`.
    pub fn denoise(
        &self,
        c: &EditConditions,
        latents: &Tensor,
        num_inference_steps: usize,
        true_cfg_scale: f64,
        size: Option<(i64, i64)>,
    ) -> Result<(Tensor, (i64, i64)), ModelError> {
        let (img_shapes, (w, h)) = self.img_shapes(c, size);
        let n = img_shapes[0].1 * img_shapes[0].2;
        let kind = self.transformer.kind();
        let ls = latents.size();
        let ch = self.transformer.cfg.in_channels;
        if ls.len() != 3 || ls[0] != 1 || ls[1] != n || ls[2] != ch {
            return Err(ModelError::Input {
                what: "latents",
                message: format!("expected (1, {n}, {ch}) for a {w}×{h} target, got {ls:?}"),
            });
        }
        let sched = qwen_schedule(&self.scheduler, num_inference_steps, n as u64)?;
        let mut x = latents.to_device(self.transformer.device()).to_kind(kind);
        for (i, t) in sched.timesteps.iter().enumerate() {
            let v = self.velocity(c, &x, *t, &img_shapes, true_cfg_scale, None)?;
            let dt = sched.sigmas[i + 1] - sched.sigmas[i];
            x = (x.to_kind(Kind::Float) + v.to_kind(Kind::Float) * dt as f64).to_kind(kind);
        }
        Ok((x, (w, h)))
    }

    /// The edited latents (packed, `(1, N, in_channels)`) and the target size `(width, height)`:
    /// [`Self::conditions`] then [`Self::denoise`].
    pub fn edit_latents(&self, req: &QwenEditRequest) -> Result<(Tensor, (i64, i64)), ModelError> {
        let c = self.conditions(
            req.source,
            req.prompt,
            req.negative_prompt,
            req.condition_area,
        )?;
        self.denoise(
            &c,
            req.latents,
            req.num_inference_steps,
            req.true_cfg_scale,
            req.size,
        )
    }

    /// Packed latents of a `width × height` target → images `(B, 3, H, W)` in [0, 1].
    pub fn decode(&self, latents: &Tensor, width: i64, height: i64) -> Result<Tensor, ModelError> {
        let vsf = self.vae.scale_factor();
        let z = unpack_latents(latents, height / vsf, width / vsf)?;
        let x = self.vae.decode(&self.vae.denormalize(&z))?;
        Ok((x.to_kind(Kind::Float) / 2.0 + 0.5).clamp(0.0, 1.0))
    }

    /// A whole edit: images `(1, 3, H, W)` in [0, 1].
    pub fn edit(&self, req: &QwenEditRequest) -> Result<Tensor, ModelError> {
        let (latents, (w, h)) = self.edit_latents(req)?;
        self.decode(&latents, w, h)
    }
}
