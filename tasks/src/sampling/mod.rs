//! Flow-matching samplers (method-spec §6): σ schedules with time shift, `euler`, `dpm2`.
//!
//! - [`schedule`]: `linspace(1, 1/N, N)` + exponential time shift (μ from the image token
//!   count) + terminal 0; [`SchedulerConfig`] holds the shift settings a model carries.
//! - [`solver`]: the solvers on any velocity field (used directly by the analytic tests).
//! - [`noise`]: per-seed initial noise; [`sampler`]: batched sampling from an `EditPolicy`.

pub mod noise;
pub mod sampler;
pub mod schedule;
pub mod solver;

pub use noise::{batch_noise, sample_noise};
pub use sampler::{Sample, SamplerConfig, SamplingError, sample, stack_x0};
pub use schedule::{SchedulerConfig, shifted_sigmas, time_shift};
pub use solver::{SamplerKind, integrate};
