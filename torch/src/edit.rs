//! One edit from a model directory, as one diffusers pipeline call makes it: what
//! `cocoflow edit` runs, for every backend ([`crate::models::open()`]).
//!
//! The initial noise is given ([`Noise::Latents`]) or drawn from a seed as rollouts draw it
//! ([`crate::sampling::sample_noise`]). A given tensor is one of
//! - the policy's latent layout `(1, C, h, w)` (or `(C, h, w)`): FLUX's normalised VAE latents
//!   unpacked, `h = H/8`, `w = W/8`; or
//! - for FLUX.1 Kontext and Qwen-Image-Edit, diffusers' packed layout `(1, (h/2)·(w/2), 4·C)`
//!   — what `FluxKontextPipeline(latents=...)` / `QwenImageEditPipeline(latents=...)` take —
//!   unpacked here (Qwen: `C` = the VAE's `z_dim`, `h = H/8`, `w = W/8`, the VAE's
//!   normalised latents `(z − latents_mean)/latents_std`).
//!
//! The schedule is the model's shifted σ schedule for the target's image tokens; the solver is
//! `euler` (the pipeline's `FlowMatchEulerDiscreteScheduler`) unless `dpm2` is asked for.
//! Guidance: the embedded value for models with a guidance embedding (FLUX.1 [dev]), the
//! true-CFG scale for Qwen-Image-Edit (applied inside its velocity against the negative
//! prompt `" "`), classifier-free guidance otherwise ([`crate::sampling::guidance_of`]).

use crate::models::flux_kontext::vae::unpack_latents;
use crate::models::{ActiveAdapter, EditPolicy, ModelError, THETA};
use crate::sampling::{SamplerConfig, SamplerKind, guidance_of, integrate, sample_noise};
use std::path::Path;
use tch::{Kind, Tensor};

/// The initial noise of an edit.
#[derive(Debug)]
pub enum Noise {
    /// Drawn from this seed (as a rollout sample's noise).
    Seed(u64),
    /// Given, in the layouts the module documentation lists.
    Latents(Tensor),
}

/// One edit's settings.
#[derive(Debug)]
pub struct EditSettings<'a> {
    /// Source image `(3, H, W)` in [0, 1].
    pub image: &'a Tensor,
    pub instruction: &'a str,
    /// Target size (default: the source's).
    pub height: Option<i64>,
    pub width: Option<i64>,
    pub steps: usize,
    /// Embedded guidance or classifier-free scale (see the module documentation).
    pub guidance: Option<f64>,
    pub sampler: SamplerKind,
    pub noise: Noise,
}

/// What an edit gives.
#[derive(Debug)]
pub struct Edited {
    /// `(3, H, W)` in [0, 1] on the CPU.
    pub image: Tensor,
    /// The final latents `(1, C, h, w)` (the policy's layout) on the CPU.
    pub latents: Tensor,
}

fn input(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

/// Loads a LoRA adapter (PEFT or diffusers layout) as θ and activates it.
pub fn load_lora(policy: &mut dyn EditPolicy, dir: &Path) -> Result<(), ModelError> {
    policy.load_adapter(dir, THETA)?;
    policy.set_adapter(ActiveAdapter::theta())
}

/// The initial latents `(1, C, h, w)` of an edit with latent shape `[c, h, w]`.
fn initial(
    policy: &dyn EditPolicy,
    noise: &Noise,
    [c, h, w]: [i64; 3],
) -> Result<Tensor, ModelError> {
    let (kind, dev) = (policy.kind(), policy.device());
    let t = match noise {
        Noise::Seed(s) => return Ok(sample_noise(*s, &[c, h, w], kind, dev).unsqueeze(0)),
        Noise::Latents(t) => t.to_kind(kind).to_device(dev),
    };
    let s = t.size();
    // FLUX.1 Kontext and Qwen-Image-Edit pack 2×2 latent cells into one token alike
    let flux = [
        crate::models::flux_kontext::BACKEND,
        crate::models::qwen_image_edit::BACKEND,
    ]
    .contains(&policy.backend());
    let t = match s.as_slice() {
        [cc, hh, ww] if [*cc, *hh, *ww] == [c, h, w] => t.unsqueeze(0),
        [1, cc, hh, ww] if [*cc, *hh, *ww] == [c, h, w] => t,
        [1, n, c4] if flux && *n == (h / 2) * (w / 2) && *c4 == 4 * c => unpack_latents(&t, h, w)?,
        _ => {
            let packed = if flux {
                format!(" or packed (1, {}, {})", (h / 2) * (w / 2), 4 * c)
            } else {
                String::new()
            };
            return Err(input(
                "latents",
                format!("expected (1, {c}, {h}, {w}){packed} for this size, got {s:?}"),
            ));
        }
    };
    Ok(t)
}

/// Runs one edit without gradients.
pub fn edit(policy: &dyn EditPolicy, s: &EditSettings) -> Result<Edited, ModelError> {
    let src = s.image.size();
    if src.len() != 3 || src[0] != 3 {
        return Err(input("image", format!("expected (3, H, W), got {src:?}")));
    }
    if s.steps == 0 {
        return Err(input("steps", "must be at least 1".into()));
    }
    let (height, width) = (s.height.unwrap_or(src[1]), s.width.unwrap_or(src[2]));
    let shape = policy.latent_shape(height, width)?;
    tch::no_grad(|| {
        let cond = policy.encode_condition(&s.image.unsqueeze(0), &[s.instruction])?;
        let x = initial(policy, &s.noise, shape)?;
        let cfg = SamplerConfig {
            sampler: s.sampler,
            steps: s.steps,
            guidance: s.guidance,
        };
        let (scale, embedded) = guidance_of(policy, &cfg);
        let both = match scale {
            Some(_) => Some(crate::models::Conditioning::cat(&[
                &cond,
                &policy.unconditional(&cond)?,
            ])?),
            None => None,
        };
        let sigmas = policy
            .scheduler()
            .sigmas(s.steps, policy.image_seq_len(shape[1], shape[2]));
        let adapter = policy.active_adapter();
        let (kind, dev) = (policy.kind(), policy.device());
        let x0 = integrate(s.sampler, x, &sigmas, |x, sigma| match (scale, &both) {
            (Some(g), Some(both)) => {
                let xx = Tensor::cat(&[x, x], 0);
                let t = Tensor::full([2], sigma, (kind, dev));
                let v = policy.velocity_with(&xx, &t, both, &adapter, embedded)?;
                let (vc, vu) = (v.narrow(0, 0, 1), v.narrow(0, 1, 1));
                Ok::<_, ModelError>(&vu + (&vc - &vu) * g)
            }
            _ => policy.velocity_with(
                x,
                &Tensor::full([1], sigma, (kind, dev)),
                &cond,
                &adapter,
                embedded,
            ),
        })?;
        let image = policy.decode(&x0)?;
        Ok(Edited {
            image: image
                .get(0)
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float),
            latents: x0.to_device(tch::Device::Cpu),
        })
    })
}
