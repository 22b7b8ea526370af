//! Artifact formats that one kind writes and another reads, each with a format name and a
//! version checked on read: `rollouts` (`rollout` → `reward`, `nft-train`; tensors, so in
//! `cocoflow_torch::artifacts`), [`rewards`]
//! (`reward` → `nft-train`, `report`), [`eval_report`] (`eval` → `report`, `correlate`).

pub mod eval_report;
pub mod rewards;
