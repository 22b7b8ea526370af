//! `ema`: the old policy as an EMA of the trained one (method-spec §5, Alg. 1 line 25):
//! `θ_old ← η·θ_old + (1−η)·θ`, parameters matched by name, η from the state's `step`.
//!
//! Input `state` (an RL state, or the base model dir: a fresh state with θ_old = θ).
//! Output `state`: the input with θ_old replaced and `ema.last_step`/`last_eta` recorded.
//! Applying it twice after the same step is an error (the input would be an `ema` output).
//! Works on the adapter files alone (no model is loaded for a saved state), on the CPU.

use super::state::{self, LoadedState, STATE_FILE, THETA_DIR, THETA_OLD_DIR};
use super::{bad, check_input_names, check_lora, d_alpha, d_rank, fail, lora_config};
use crate::models::checkpoint;
use crate::models::peft::ADAPTER_WEIGHTS;
use crate::nft::ema::{EmaSchedule, ema_update};
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// How η depends on the step; every field has the spec's default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

impl DecayParams {
    pub fn schedule(&self) -> EmaSchedule {
        match *self {
            DecayParams::LinearCapped { rate, cap } => EmaSchedule::LinearCapped { rate, cap },
            DecayParams::Delayed { delay, rate, cap } => EmaSchedule::Delayed { delay, rate, cap },
            DecayParams::Constant { eta } => EmaSchedule::Constant { eta },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaParams {
    /// `{schedule: linear-capped}` (default), `{schedule: delayed}`, `{schedule: constant, eta}`.
    #[serde(default)]
    pub decay: DecayParams,
    /// Adapters of a fresh state (when `state` is the base model dir).
    #[serde(default = "d_rank")]
    pub lora_rank: i64,
    #[serde(default = "d_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_init_seed: u64,
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

/// Applies the EMA to a state directory in place: θ_old's adapter file and `state.json`.
pub fn apply(dir: &Path, schedule: &EmaSchedule, params_json: Value) -> Result<f64, String> {
    let mut info = state::read_info(dir)?.ok_or("not an RL state")?;
    if info.ema.last_step == Some(info.step) {
        return Err(format!(
            "the EMA was already applied after step {} (is the `state` input an `ema` output?)",
            info.step
        ));
    }
    let eta = schedule.eta(info.step);
    let new_path = dir.join(THETA_DIR).join(ADAPTER_WEIGHTS);
    let old_path = dir.join(THETA_OLD_DIR).join(ADAPTER_WEIGHTS);
    let new = checkpoint::read_safetensors(&new_path).map_err(|e| e.to_string())?;
    let old = checkpoint::read_safetensors(&old_path).map_err(|e| e.to_string())?;
    ema_update(&old, &new, eta).map_err(|e| e.to_string())?;
    checkpoint::write_safetensors(&old_path, &old).map_err(|e| e.to_string())?;
    info.ema.last_step = Some(info.step);
    info.ema.last_eta = Some(eta);
    info.configs.insert("ema".into(), params_json);
    state::write_info(dir, &info)?;
    Ok(eta)
}

pub struct EmaKind;

impl TaskKind for EmaKind {
    fn name(&self) -> &'static str {
        "ema"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "RL old policy: θ_old ← η·θ_old + (1−η)·θ (state → state)"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<EmaParams>(params)?;
        check(&p)?;
        Ok(v)
    }
    fn check_inputs(&self, _params: &Value, inputs: &[&str]) -> Result<(), String> {
        check_input_names("ema", inputs, &["state"])
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["state".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: EmaParams = ctx.params()?;
        super::set_threads(1);
        let input = ctx.input_path("state")?;
        let out = ctx.workdir()?.join("state");
        if state::is_state(&input) {
            state::copy_tree(&input, &out).map_err(fail)?;
        } else {
            // The base model directory: a fresh state (θ_old = θ) from the model in it.
            state::read_info(&input).map_err(fail)?;
            let lora = lora_config(p.lora_rank, p.lora_alpha, p.lora_init_seed);
            let st: LoadedState =
                state::load(&input, &input, tch::Device::Cpu, &lora).map_err(fail)?;
            st.save(&out).map_err(fail)?;
        }
        debug_assert!(out.join(STATE_FILE).is_file());
        let eta = apply(
            &out,
            &p.decay.schedule(),
            serde_json::to_value(&p).map_err(fail)?,
        )
        .map_err(fail)?;
        ctx.metric("eta", eta);
        ctx.output_dir("state", &out)
    }
}
