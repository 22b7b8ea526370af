//! `reward`: scores rollouts and turns them into optimality probabilities (method-spec §1–§3).
//!
//! Inputs: `rollouts` (from `rollout`), `data` (the dataset the rollouts came from: sources
//! and edit masks, checked against the rollouts' source digests). Output `rewards`: the
//! [`crate::artifacts::rewards`] artifact (the iteration's statistics also as metrics).
//!
//! - r_sim on the keep mask `1 − edit_mask`, between the source and the decoded (8-bit PNG)
//!   sample; an empty keep mask leaves r_sim undefined (never 0).
//! - r_mllm from the judge: `rule` (the synthetic world's [`RuleJudge`], default) or `openai`
//!   (any OpenAI-compatible server; responses cached in the store). More invalid answers than
//!   `max_invalid_fraction` fail the task.
//! - groups keyed by (instruction, source digest); [`crate::rl::reward::mix`] does the rest.

use super::{bad, check_threads};
use crate::rl::reward::{Normalizer, RewardConfig};
use cocoflow_engine::kind::{Input, Kind, ParamError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::judge::spec::JudgeParams;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RewardParams {
    /// Weight of r_mllm in r_raw (default 0.8).
    pub lambda_mllm: f64,
    /// Weight of r_sim in r_raw (default 0.2).
    pub lambda_sim: f64,
    /// SSIM weight in r_sim (method-spec §1: 0.5).
    pub w_s: f64,
    /// PSNR normaliser in dB (40).
    pub tau_db: f64,
    /// `{mode: global-std, adv_clip: 5}` (default) or `{mode: constant, value: Z}`.
    #[serde(alias = "normaliser")]
    pub normalizer: Normalizer,
    /// Groups whose r_raw std is at most this are left out of the loss.
    pub ban_std: f64,
    /// Groups whose r_raw mean is at least this are left out of the loss.
    pub ban_mean: f64,
    pub judge: JudgeParams,
    /// The task fails when more than this fraction of judge answers is invalid.
    pub max_invalid_fraction: f64,
    /// libtorch intra-op threads.
    pub threads: usize,
}

impl Default for RewardParams {
    fn default() -> Self {
        RewardParams {
            lambda_mllm: 0.8,
            lambda_sim: 0.2,
            w_s: 0.5,
            tau_db: 40.0,
            normalizer: Normalizer::default(),
            ban_std: 0.02,
            ban_mean: 0.9,
            judge: JudgeParams::default(),
            max_invalid_fraction: 0.1,
            threads: 1,
        }
    }
}

fn check(p: &RewardParams) -> Result<(), ParamError> {
    let finite_nonneg = |path: &str, v: f64| {
        if !(v.is_finite() && v >= 0.0) {
            bad(path, format!("must be a finite number ≥ 0, got {v}"))
        } else {
            Ok(())
        }
    };
    finite_nonneg("lambda_mllm", p.lambda_mllm)?;
    finite_nonneg("lambda_sim", p.lambda_sim)?;
    if p.lambda_mllm + p.lambda_sim <= 0.0 {
        return bad(
            "lambda_mllm",
            "`lambda_mllm` and `lambda_sim` cannot both be 0",
        );
    }
    if !(0.0..=1.0).contains(&p.w_s) {
        return bad("w_s", format!("must be in [0, 1], got {}", p.w_s));
    }
    if !(p.tau_db.is_finite() && p.tau_db > 0.0) {
        return bad("tau_db", format!("must be positive, got {}", p.tau_db));
    }
    match p.normalizer {
        Normalizer::GlobalStd { adv_clip } if !(adv_clip.is_finite() && adv_clip > 0.0) => {
            return bad(
                "normalizer.adv_clip",
                format!("must be positive, got {adv_clip}"),
            );
        }
        Normalizer::Constant { value } if !(value.is_finite() && value > 0.0) => {
            return bad("normalizer.value", format!("must be positive, got {value}"));
        }
        _ => {}
    }
    if p.ban_std.is_nan() {
        return bad("ban_std", "must be a number");
    }
    if p.ban_mean.is_nan() {
        return bad("ban_mean", "must be a number");
    }
    if !(0.0..=1.0).contains(&p.max_invalid_fraction) {
        return bad(
            "max_invalid_fraction",
            format!("must be in [0, 1], got {}", p.max_invalid_fraction),
        );
    }
    if let JudgeParams::Rule {
        min_area_fraction, ..
    } = p.judge
        && !(0.0..1.0).contains(&min_area_fraction)
    {
        return bad(
            "judge.min_area_fraction",
            format!("must be in [0, 1), got {min_area_fraction}"),
        );
    }
    if let JudgeParams::Openai(cfg) = &p.judge {
        if cfg.base_url.trim().is_empty() {
            return bad("judge.base_url", "must not be empty");
        }
        if cfg.model.trim().is_empty() {
            return bad("judge.model", "must not be empty");
        }
    }
    check_threads(p.threads)
}

impl RewardParams {
    pub fn reward_config(&self) -> RewardConfig {
        RewardConfig {
            lambda_mllm: self.lambda_mllm,
            lambda_sim: self.lambda_sim,
            normalizer: self.normalizer.clone(),
            ban_std: self.ban_std,
            ban_mean: self.ban_mean,
        }
    }
}

pub struct RewardKind;

impl Kind for RewardKind {
    type Params = RewardParams;
    const NAME: &'static str = "reward";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str = "RL rewards: r_sim (masked PSNR/SSIM) + r_mllm (judge), group advantages, optimality probabilities";
    const INPUTS: Option<&'static [Input]> = Some(&[
        Input::required("rollouts", "the `rollout` kind's output"),
        Input::required("data", "the dataset the rollouts came from"),
    ]);
    const OUTPUTS: &'static [&'static str] = &["rewards"];

    fn validate(&self, p: &RewardParams) -> Result<(), ParamError> {
        check(p)
    }
}
