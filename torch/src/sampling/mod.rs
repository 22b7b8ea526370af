//! Flow-matching samplers (method-spec §6): `euler`, `dpm2`, on the schedules and settings of
//! [`cocoflow_tasks::sampling`] (re-exported here).
//!
//! - [`solver`]: the solvers on any velocity field (used directly by the analytic tests).
//! - [`noise`]: per-seed initial noise; [`sampler`]: batched sampling from an `EditPolicy`.

pub mod noise;
pub mod sampler;
pub mod solver;

pub use cocoflow_tasks::sampling::*;
pub use noise::{batch_noise, sample_noise};
pub use sampler::{
    DEFAULT_EMBEDDED_GUIDANCE, Sample, SamplingError, guidance_of, sample, stack_x0,
};
pub use solver::integrate;
