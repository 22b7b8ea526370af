//! Sampler settings (method-spec §6), torch-free: [`SamplerConfig`] (solver, steps, guidance)
//! and [`schedule`] (`linspace(1, 1/N, N)` + exponential time shift (μ from the image token
//! count) + terminal 0; [`SchedulerConfig`] holds the shift settings a model carries). The
//! solvers and batched sampling from an `EditPolicy` are `cocoflow_torch::sampling`.

mod config;
pub mod schedule;

pub use config::{SamplerConfig, SamplerKind};
pub use schedule::{SchedulerConfig, shifted_sigmas, time_shift};
