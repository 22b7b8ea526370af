//! The σ schedule of `FluxKontextPipeline` with `FlowMatchEulerDiscreteScheduler`, computed
//! as diffusers does: `sigmas = linspace(1, 1/N, N)` (float64, then float32),
//! μ = `calculate_shift(image_seq_len)` (a line through `(base_image_seq_len, base_shift)` and
//! `(max_image_seq_len, max_shift)`; the image token count is the *target*'s packed sequence
//! length), the exponential time shift `σ' = e^μ / (e^μ + (1/σ − 1))` in float32, timesteps
//! `σ'·1000`, and a terminal σ = 0. The same schedule as
//! [`crate::sampling::SchedulerConfig::sigmas`] (which works in float64).

use super::super::error::ModelError;
use super::config::FlowMatchEulerDiscreteSchedulerConfig;
use crate::sampling::SchedulerConfig;

/// A whole sampling schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatchSchedule {
    /// μ of the time shift.
    pub mu: f64,
    /// `N + 1` values, decreasing, the last 0 (`scheduler.sigmas`).
    pub sigmas: Vec<f32>,
    /// `N` values `σ·num_train_timesteps` (`scheduler.timesteps`).
    pub timesteps: Vec<f32>,
}

/// diffusers' `calculate_shift`: `μ = L·m + b`, `m = (max_shift − base_shift) /
/// (max_seq − base_seq)`, `b = base_shift − m·base_seq`.
pub fn calculate_shift(cfg: &FlowMatchEulerDiscreteSchedulerConfig, image_seq_len: u64) -> f64 {
    let (x0, x1) = (cfg.base_image_seq_len as f64, cfg.max_image_seq_len as f64);
    let m = (cfg.max_shift - cfg.base_shift) / (x1 - x0);
    let b = cfg.base_shift - m * x0;
    image_seq_len as f64 * m + b
}

/// `numpy.linspace(start, stop, n)` in float64.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// The schedule of `steps` Euler steps for a target of `image_seq_len` packed tokens.
pub fn flux_schedule(
    cfg: &FlowMatchEulerDiscreteSchedulerConfig,
    steps: usize,
    image_seq_len: u64,
) -> Result<FlowMatchSchedule, ModelError> {
    cfg.validate()?;
    if steps == 0 {
        return Err(ModelError::Input {
            what: "num_inference_steps",
            message: "must be at least 1".into(),
        });
    }
    let mu = calculate_shift(cfg, image_seq_len);
    let e = mu.exp() as f32;
    let mut sigmas: Vec<f32> = linspace(1.0, 1.0 / steps as f64, steps)
        .into_iter()
        .map(|s| {
            let s = s as f32;
            e / (e + (1.0 / s - 1.0))
        })
        .collect();
    let n = cfg.num_train_timesteps as f32;
    let timesteps = sigmas.iter().map(|s| s * n).collect();
    sigmas.push(0.0);
    Ok(FlowMatchSchedule {
        mu,
        sigmas,
        timesteps,
    })
}

/// The shift settings as the samplers of [`crate::sampling`] take them.
pub fn sampler_config(cfg: &FlowMatchEulerDiscreteSchedulerConfig) -> SchedulerConfig {
    SchedulerConfig {
        base_image_seq_len: cfg.base_image_seq_len,
        max_image_seq_len: cfg.max_image_seq_len,
        base_shift: cfg.base_shift,
        max_shift: cfg.max_shift,
        use_dynamic_shifting: cfg.use_dynamic_shifting,
        shift_terminal: None,
    }
}
