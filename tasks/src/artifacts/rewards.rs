//! The `rewards` artifact (written by `reward`, read by `nft-train` and `report`), format
//! `cocoflow-rewards` version 1: one JSON file with per sample the raw scores (r_mllm with the
//! judge's two scores or its error, r_sim with masked PSNR/SSIM or "undefined"), r_raw, the
//! advantage, r and why it is excluded; the banned groups; the iteration's statistics.

use crate::rl::reward::{Exclusion, GroupKey, RewardConfig, RewardStats};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const REWARDS_FILE: &str = "rewards.json";
pub const FORMAT: &str = "cocoflow-rewards";
pub const VERSION: u32 = 1;

/// One sample's scores and mixed reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleReward {
    pub index: usize,
    pub group: usize,
    pub seed: u64,
    pub r_mllm: Option<f64>,
    /// The judge's normalised scores (`{variant: mean, effect, quality}` or `{variant: single, score}`).
    pub judge_scores: Option<Value>,
    /// Why the judge gave no score.
    pub judge_error: Option<String>,
    pub r_sim: Option<f64>,
    /// Masked PSNR in dB (`null` when infinite or undefined).
    pub psnr_db: Option<f64>,
    pub ssim: Option<f64>,
    pub r_raw: Option<f64>,
    pub advantage: Option<f64>,
    /// Optimality probability in [0, 1]; `None`: out of the loss.
    pub r: Option<f64>,
    pub excluded: Option<Exclusion>,
}

/// `rewards.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardsFile {
    pub format: String,
    pub version: u32,
    pub iteration: u64,
    /// The rollouts' θ_old digest (ties the rewards to their rollouts).
    pub theta_old: String,
    pub judge: String,
    pub config: RewardConfig,
    pub samples: Vec<SampleReward>,
    pub banned: Vec<GroupKey>,
    pub stats: RewardStats,
}

impl RewardsFile {
    pub fn read(path: &std::path::Path) -> Result<RewardsFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let r: RewardsFile = serde_json::from_str(&text)
            .map_err(|e| format!("bad JSON in `{}`: {e}", path.display()))?;
        if r.format != FORMAT {
            return Err(format!("`{}` is not a rewards file", path.display()));
        }
        Ok(r)
    }
}
