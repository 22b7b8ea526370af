//! The artifact formats of [`cocoflow_tasks::artifacts`] (re-exported here), and those that
//! hold tensors: [`rollouts`] (`rollout` → `reward`, `nft-train`) and [`prompts`]
//! (`encode-prompts` → `rollout`, `nft-train`, `eval`).

pub use cocoflow_tasks::artifacts::*;

pub mod prompts;
pub mod rollouts;
