//! `MetricsConfig`: the weights of r_sim, the PSNR normaliser, the mask rule and the backend.

use serde::{Deserialize, Serialize};

/// Settings of the masked pixel metrics (method-spec §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Weight of SSIM in `r_sim = w_s·SSIM_K + (1 − w_s)·PSNR̄`, in [0, 1] (default 0.5, the
    /// paper; the reference code uses 0.35).
    #[serde(default = "default_w_s")]
    pub w_s: f64,
    /// PSNR normaliser: `PSNR̄ = clip(PSNR / tau_db, 0, 1)`, > 0 (default 40 dB).
    #[serde(default = "default_tau_db")]
    pub tau_db: f64,
    /// What a `keep_mask` value strictly between 0 and 1 means (default: threshold at 0.5).
    #[serde(default)]
    pub mask_rule: MaskRule,
    /// Which implementation computes SSIM (default: the fused CPU kernel on CPU tensors, tch
    /// ops in float64 elsewhere). All backends implement the same formulas.
    #[serde(default)]
    pub backend: Backend,
}

fn default_w_s() -> f64 {
    0.5
}
fn default_tau_db() -> f64 {
    40.0
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            w_s: default_w_s(),
            tau_db: default_tau_db(),
            mask_rule: MaskRule::default(),
            backend: Backend::default(),
        }
    }
}

/// How a `keep_mask` is made binary. Values must lie in [0, 1] under either rule.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum MaskRule {
    /// A value ≥ 0.5 keeps the pixel, a value < 0.5 does not (anti-aliased or resampled masks;
    /// the same rule as the mask loader's grey ≥ 128 of 255).
    #[default]
    Threshold,
    /// Any value other than exactly 0 or 1 is an error.
    Strict,
}

/// Which implementation computes the metrics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// `native` for CPU tensors, `torch-f64` for any other device.
    #[default]
    Auto,
    /// The fused, multi-threaded CPU kernel: float64 arithmetic throughout (CPU tensors only).
    Native,
    /// tch ops on the inputs' device in float64.
    TorchF64,
    /// tch ops on the inputs' device in float32 (final sums in float64); faster on GPUs. SSIM_K
    /// within ~2e-5 of float64 on natural images; single S values within ~1e-3 in flat regions,
    /// where σ² = G*(a²K)/A − μ² cancels in float32 (measured on the golden fixtures).
    TorchF32,
}
