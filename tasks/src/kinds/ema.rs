//! `ema`: the old policy as an EMA of the trained one (method-spec §5, Alg. 1 line 25):
//! `θ_old ← η·θ_old + (1−η)·θ`, parameters matched by name, η from the state's `step`.
//!
//! Input `state` (an RL state, or the base model dir: a fresh state with θ_old = θ).
//! Output `state`: the input with θ_old replaced and `ema.last_step`/`last_eta` recorded.
//! Applying it twice after the same step is an error (the input would be an `ema` output).
//! Works on the adapter files alone (no model is loaded for a saved state), on the CPU.

use super::{bad, check_lora};
use crate::rl::{DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK};
use cocoflow_engine::kind::{Input, Kind, ParamError};
use serde::{Deserialize, Serialize};

/// How η depends on the step; every field has the spec's default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "schedule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DecayParams {
    /// η = min(rate·step, cap): default rate 0.001, cap 0.5.
    LinearCapped {
        #[serde(default = "d_lin_rate")]
        rate: f64,
        #[serde(default = "d_lin_cap")]
        cap: f64,
    },
    /// 0 for `delay` steps, then rate·(step − delay), capped: 75, 0.0075, 0.999.
    Delayed {
        #[serde(default = "d_delay")]
        delay: u64,
        #[serde(default = "d_del_rate")]
        rate: f64,
        #[serde(default = "d_del_cap")]
        cap: f64,
    },
    Constant {
        eta: f64,
    },
}

fn d_lin_rate() -> f64 {
    0.001
}
fn d_lin_cap() -> f64 {
    0.5
}
fn d_delay() -> u64 {
    75
}
fn d_del_rate() -> f64 {
    0.0075
}
fn d_del_cap() -> f64 {
    0.999
}

impl Default for DecayParams {
    fn default() -> Self {
        DecayParams::LinearCapped {
            rate: d_lin_rate(),
            cap: d_lin_cap(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EmaParams {
    /// `{schedule: linear-capped}` (default), `{schedule: delayed}`, `{schedule: constant, eta}`.
    pub decay: DecayParams,
    /// Adapters of a fresh state (when `state` is the base model dir).
    pub lora_rank: i64,
    pub lora_alpha: f64,
    pub lora_init_seed: u64,
}

impl Default for EmaParams {
    fn default() -> Self {
        EmaParams {
            decay: DecayParams::default(),
            lora_rank: DEFAULT_LORA_RANK,
            lora_alpha: DEFAULT_LORA_ALPHA,
            lora_init_seed: 0,
        }
    }
}

fn check(p: &EmaParams) -> Result<(), ParamError> {
    let unit = |path: &str, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            bad(path, format!("must be in [0, 1], got {v}"))
        }
    };
    match p.decay {
        DecayParams::LinearCapped { rate, cap } | DecayParams::Delayed { rate, cap, .. } => {
            if !(rate.is_finite() && rate >= 0.0) {
                return bad(
                    "decay.rate",
                    format!("must be a finite number ≥ 0, got {rate}"),
                );
            }
            unit("decay.cap", cap)?;
        }
        DecayParams::Constant { eta } => unit("decay.eta", eta)?,
    }
    check_lora(p.lora_rank, p.lora_alpha)
}

pub struct EmaKind;

impl Kind for EmaKind {
    type Params = EmaParams;
    const NAME: &'static str = "ema";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str = "RL old policy: θ_old ← η·θ_old + (1−η)·θ (state → state)";
    const INPUTS: Option<&'static [Input]> = Some(&[Input::required(
        "state",
        "the RL state after `nft-train` (or the base model directory)",
    )]);
    const OUTPUTS: &'static [&'static str] = &["state"];

    fn validate(&self, p: &EmaParams) -> Result<(), ParamError> {
        check(p)
    }
}
