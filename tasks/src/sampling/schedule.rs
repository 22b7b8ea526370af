//! σ schedules for flow-matching samplers (method-spec §6): `linspace(1, 1/N, N)`, the
//! exponential time shift with μ from the image token count (FLUX's linear interpolation
//! between `(base_image_seq_len, base_shift)` and `(max_image_seq_len, max_shift)`), then a
//! terminal 0.

use serde::{Deserialize, Serialize};

/// The time-shift part of a model's scheduler config. Field names are those of diffusers'
/// `FlowMatchEulerDiscreteScheduler` `scheduler_config.json`; defaults are FLUX.1's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Image token count at which μ = `base_shift`.
    #[serde(default = "base_seq")]
    pub base_image_seq_len: u64,
    /// Image token count at which μ = `max_shift`.
    #[serde(default = "max_seq")]
    pub max_image_seq_len: u64,
    /// μ at `base_image_seq_len`.
    #[serde(default = "base_shift")]
    pub base_shift: f64,
    /// μ at `max_image_seq_len`.
    #[serde(default = "max_shift")]
    pub max_shift: f64,
    /// With `false`, μ = 0: no shift at all.
    #[serde(default = "yes")]
    pub use_dynamic_shifting: bool,
    /// The shifted σ stretched so that the last step's σ is this value (diffusers'
    /// `stretch_shift_to_terminal`; Qwen-Image: 0.02); absent or 0: no stretch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_terminal: Option<f64>,
}

fn base_seq() -> u64 {
    256
}
fn max_seq() -> u64 {
    4096
}
fn base_shift() -> f64 {
    0.5
}
fn max_shift() -> f64 {
    1.15
}
fn yes() -> bool {
    true
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            base_image_seq_len: base_seq(),
            max_image_seq_len: max_seq(),
            base_shift: base_shift(),
            max_shift: max_shift(),
            use_dynamic_shifting: true,
            shift_terminal: None,
        }
    }
}

impl SchedulerConfig {
    /// μ for an image of `image_seq_len` tokens (diffusers' `calculate_shift`, a straight
    /// line through the two configured points, extrapolated outside them).
    pub fn mu(&self, image_seq_len: u64) -> f64 {
        if !self.use_dynamic_shifting {
            return 0.0;
        }
        let (x0, x1) = (
            self.base_image_seq_len as f64,
            self.max_image_seq_len as f64,
        );
        let slope = if x1 == x0 {
            0.0
        } else {
            (self.max_shift - self.base_shift) / (x1 - x0)
        };
        // μ = m·L + b, b = base_shift − m·base_seq_len
        self.base_shift + slope * (image_seq_len as f64 - x0)
    }

    /// `steps + 1` sigmas: the shifted `linspace(1, 1/N, N)`, then 0.
    pub fn sigmas(&self, steps: usize, image_seq_len: u64) -> Vec<f64> {
        let mut s = shifted_sigmas(steps, self.mu(image_seq_len));
        if let Some(term) = self.shift_terminal.filter(|t| *t != 0.0) {
            // 1 − (1 − σ)/k with k = (1 − σ_last)/(1 − terminal): σ_last becomes `terminal`;
            // the final 0 stays 0. One step (σ_last = 1) has nothing to stretch (diffusers
            // divides 0 by 0 there).
            let n = s.len() - 1;
            let k = (1.0 - s[n - 1]) / (1.0 - term);
            if k > 0.0 {
                for v in &mut s[..n] {
                    *v = 1.0 - (1.0 - *v) / k;
                }
            }
        }
        s
    }
}

/// The exponential time shift `σ' = e^μ / (e^μ + (1/σ − 1))`; σ = 0 stays 0, σ = 1 stays 1.
pub fn time_shift(mu: f64, sigma: f64) -> f64 {
    if sigma <= 0.0 {
        return 0.0;
    }
    let e = mu.exp();
    e / (e + (1.0 / sigma - 1.0))
}

/// `linspace(1, 1/N, N)` shifted by μ, then a terminal 0 (`N + 1` values, decreasing).
pub fn shifted_sigmas(steps: usize, mu: f64) -> Vec<f64> {
    let n = steps.max(1);
    let mut s: Vec<f64> = (0..n)
        .map(|i| {
            // linspace(1, 1/N, N) has step (1 − 1/N)/(N − 1) = 1/N: value 1 − i/N
            time_shift(mu, 1.0 - i as f64 / n as f64)
        })
        .collect();
    s.push(0.0);
    s
}
