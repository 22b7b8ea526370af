//! Artifact formats that one kind writes and another reads, each with a format name and a
//! version checked on read: [`rollouts`] (`rollout` → `reward`, `nft-train`), [`rewards`]
//! (`reward` → `nft-train`, `report`), [`eval_report`] (`eval` → `report`, `correlate`).

pub mod eval_report;
pub mod rewards;
pub mod rollouts;
