//! Errors of this crate's libraries as task errors (see [`cocoflow_tasks::error`], whose
//! `fail` is re-exported here).

pub use cocoflow_tasks::error::fail;

cocoflow_tasks::task_errors!(
    crate::metrics::MetricsError,
    crate::metrics::files::ScoreError,
    crate::models::ModelError,
    crate::nft::ema::EmaError,
    crate::sampling::sampler::SamplingError,
    crate::rl::RlError,
);
