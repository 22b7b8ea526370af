//! Sampling edits from an [`EditPolicy`]: per-sample seeds, batched, under `no_grad`,
//! optional classifier-free guidance (the negative = the empty instruction).

use super::SamplerConfig;
use super::noise::batch_noise;
use super::solver::integrate;
use crate::models::{ActiveAdapter, Conditioning, EditPolicy, ModelError};
use tch::Tensor;

/// One generated edit.
#[derive(Debug)]
pub struct Sample {
    pub seed: u64,
    /// The `N + 1` sigmas it was integrated over (the last is 0).
    pub sigmas: Vec<f64>,
    /// The clean latent `(C, h, w)`.
    pub x0: Tensor,
}

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("sampler: {0}")]
    Request(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The `x0` of several samples stacked: `(B, C, h, w)`.
pub fn stack_x0(samples: &[Sample]) -> Tensor {
    Tensor::stack(
        &samples
            .iter()
            .map(|s| s.x0.shallow_clone())
            .collect::<Vec<_>>(),
        0,
    )
}

/// How the sampler's `guidance` setting applies to `policy`: `(classifier-free scale,
/// embedded value)`. A model with a guidance embedding (FLUX.1 [dev]) or its own true CFG
/// (Qwen-Image-Edit) gets the value in every velocity call (default: the model's
/// [`EditPolicy::default_guidance`], else [`DEFAULT_EMBEDDED_GUIDANCE`]) and no
/// classifier-free mixing here; other
/// models get classifier-free guidance unless the scale is absent or 1.
pub fn guidance_of(policy: &dyn EditPolicy, cfg: &SamplerConfig) -> (Option<f64>, Option<f64>) {
    if policy.embeds_guidance() {
        (
            None,
            Some(
                cfg.guidance
                    .or(policy.default_guidance())
                    .unwrap_or(DEFAULT_EMBEDDED_GUIDANCE),
            ),
        )
    } else {
        (cfg.guidance.filter(|g| *g != 1.0), None)
    }
}

/// The embedded guidance when a sampler config sets none: `FluxKontextPipeline`'s default
/// `guidance_scale`.
pub const DEFAULT_EMBEDDED_GUIDANCE: f64 = 3.5;

/// Generates one edit per seed: sample `i` starts from the noise of `seeds[i]` and is
/// conditioned on item `i` of `cond`; the target latent has the source latent's shape.
pub fn sample(
    policy: &dyn EditPolicy,
    cond: &Conditioning,
    seeds: &[u64],
    cfg: &SamplerConfig,
    adapter: &ActiveAdapter,
) -> Result<Vec<Sample>, SamplingError> {
    let b = cond.batch();
    if seeds.len() as i64 != b {
        return Err(SamplingError::Request(format!(
            "{} seeds for a batch of {b}",
            seeds.len()
        )));
    }
    if cfg.steps == 0 {
        return Err(SamplingError::Request("`steps` must be at least 1".into()));
    }
    let shape = cond.source.size();
    if shape.len() != 4 {
        return Err(SamplingError::Request(format!(
            "source latent must be (B, C, h, w), got {shape:?}"
        )));
    }
    let sigmas = policy
        .scheduler()
        .sigmas(cfg.steps, policy.image_seq_len(shape[2], shape[3]));
    let kind = policy.kind();
    let device = policy.device();
    let (guidance, embedded) = guidance_of(policy, cfg);
    let x0 = tch::no_grad(|| -> Result<Tensor, SamplingError> {
        let noise = batch_noise(seeds, &shape[1..], kind, device);
        let both = match guidance {
            Some(_) => Some(Conditioning::cat(&[cond, &policy.unconditional(cond)?])?),
            None => None,
        };
        integrate(
            cfg.sampler,
            noise,
            &sigmas,
            |x, s| -> Result<Tensor, SamplingError> {
                Ok(match (guidance, &both) {
                    (Some(g), Some(both)) => {
                        let xx = Tensor::cat(&[x, x], 0);
                        let t = Tensor::full([2 * b], s, (kind, device));
                        let v = policy.velocity_with(&xx, &t, both, adapter, embedded)?;
                        let (vc, vu) = (v.narrow(0, 0, b), v.narrow(0, b, b));
                        &vu + (&vc - &vu) * g
                    }
                    _ => policy.velocity_with(
                        x,
                        &Tensor::full([b], s, (kind, device)),
                        cond,
                        adapter,
                        embedded,
                    )?,
                })
            },
        )
    })?;
    Ok(seeds
        .iter()
        .enumerate()
        .map(|(i, &seed)| Sample {
            seed,
            sigmas: sigmas.clone(),
            x0: x0.get(i as i64),
        })
        .collect())
}
