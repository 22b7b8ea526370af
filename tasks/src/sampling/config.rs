//! What a rollout or evaluation asks of the sampler: the solver and its step count, guidance.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    Euler,
    /// The paper's sampler (default).
    #[default]
    Dpm2,
}

/// Sampler settings of a rollout or evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// `dpm2` (default) or `euler`.
    #[serde(default)]
    pub sampler: SamplerKind,
    /// Number of steps N (method-spec §6: 10).
    #[serde(default = "ten")]
    pub steps: usize,
    /// Classifier-free guidance scale: `v = v_u + g·(v_c − v_u)`; `None` or 1 = off.
    #[serde(default)]
    pub guidance: Option<f64>,
}

fn ten() -> usize {
    10
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            sampler: SamplerKind::Dpm2,
            steps: 10,
            guidance: None,
        }
    }
}
