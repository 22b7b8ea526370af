//! The artifact formats of [`cocoflow_tasks::artifacts`] (re-exported here) and [`rollouts`]
//! (`rollout` → `reward`, `nft-train`), which holds tensors.

pub use cocoflow_tasks::artifacts::*;

pub mod rollouts;
