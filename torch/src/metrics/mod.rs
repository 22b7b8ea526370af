//! Masked pixel metrics (method-spec §1): masked PSNR, masked SSIM, r_sim.
//!
//! The same functions serve the training reward (batched, on the training device) and the
//! benchmark's consistency metric (per sample, in dB and [0, 1]):
//!
//! ```text
//! MSE_K  = Σ_p K_p Σ_c (a − b)² / (C·Σ_p K_p)            PSNR = 10·log10(1/MSE_K), +∞ at 0
//! PSNR̄   = clip(PSNR/τ_db, 0, 1)                          τ_db = 40
//! A = G*K, μ_a = G*(a⊙K)/A, σ_a² = G*(a²⊙K)/A − μ_a², σ_ab = G*(ab⊙K)/A − μ_aμ_b
//! S      = (2μ_aμ_b + C1)(2σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))
//! SSIM_K = mean over channels of Σ_p S_p K_p / Σ_p K_p   G: 11×11 Gaussian σ = 1.5, zero padding
//! r_sim  = w_s·SSIM_K + (1 − w_s)·PSNR̄                    w_s = 0.5
//! ```
//!
//! Unlike the public reference code, MSE divides by the channel count C, and SSIM's local
//! moments are normalised by the Gaussian weights of the keep pixels (A), not a box count.
//!
//! - [`masked_metrics`] → per sample `Result<SampleMetrics, Undefined>`;
//!   [`masked_metrics_tensors`] → `(B,)` tensors with a `defined` mask, for training code;
//!   [`masked_psnr`], [`masked_ssim`], [`ssim_map`] (the full map, for tests and figures).
//! - Backends ([`Backend`]): a fused multi-threaded float64 CPU kernel (`native`, the default
//!   on CPU) and tch ops on any device (`torch-f64`, the default on CUDA; `torch-f32`).
//! - [`files`]: scoring PNG/JPEG files on disk (`cocoflow score`); [`bench`]: throughput
//!   against a NumPy/SciPy baseline (`cocoflow bench-metrics`).

pub mod bench;
mod error;
pub mod files;
mod native;
mod pixel;
mod torch_ops;
mod validate;
pub mod window;

pub use cocoflow_tasks::metrics::{Backend, MaskRule, MetricsConfig};
pub use error::{Input, MetricsError, Undefined};
pub use native::CHUNK_ROWS;
pub use pixel::{
    MetricTensors, SampleMetrics, SampleResult, SsimMap, masked_metrics, masked_metrics_tensors,
    masked_psnr, masked_ssim, psnr_db, psnr_norm, r_sim, ssim_map,
};
pub use validate::RANGE_TOLERANCE;

#[cfg(test)]
mod tests;
