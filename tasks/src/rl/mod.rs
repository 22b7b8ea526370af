//! The CoCoEdit RL loop as four task kinds (method-spec §3–§6):
//!
//! ```text
//! rollout   (model, state, data)          → rollouts   K samples per prompt from θ_old
//! reward    (rollouts, data)              → rewards    r_sim, r_mllm, mixed r, banned groups
//! nft-train (model, state, rollouts, rewards) → state  DiffusionNFT + regularisers, 1 AdamW step
//! ema       (state)                       → state      θ_old ← η·θ_old + (1−η)·θ
//! ```
//!
//! `ema`'s `state` is the loop carry; its initial value is the base model directory itself
//! (iteration 0: fresh adapters, see [`state`]). Every kind is a pure function of its inputs
//! and params: random draws come from seeded streams keyed by the iteration/step stored in
//! the state, never from libtorch's global generator, and each kind runs libtorch with a
//! fixed number of intra-op threads (`threads`, default 1) so CPU results are bit-identical
//! from run to run. Together with the engine's content-addressed cache this makes a loop
//! killed at any point and re-run end in a byte-identical final state.
//!
//! - [`rollout`], [`reward`], [`nft_train`], [`ema`]: the kinds; [`state`]: the state
//!   artifact; [`adamw`]: AdamW with savable moments.

pub mod adamw;
pub mod ema;
pub mod nft_train;
pub mod reward;
pub mod rollout;
pub mod state;

pub use ema::EmaKind;
pub use nft_train::NftTrain;
pub use reward::RewardKind;

use crate::models::LoraConfig;
use cocoflow_engine::kind::{ParamError, TaskError};
use tch::Device;

/// Default LoRA rank for the tiny model (the paper uses 32 on FLUX/Qwen).
pub const DEFAULT_LORA_RANK: i64 = 8;
/// Default LoRA alpha for the tiny model (the paper uses 64): scaling α/r = 2 as in the paper.
pub const DEFAULT_LORA_ALPHA: f64 = 16.0;

pub(crate) fn fail(e: impl std::fmt::Display) -> TaskError {
    TaskError::Failed(e.to_string())
}

pub(crate) fn bad<T>(path: &str, message: impl Into<String>) -> Result<T, ParamError> {
    Err(ParamError {
        path: path.into(),
        message: message.into(),
    })
}

/// Sets libtorch's intra-op threads for this task (results on the CPU depend on it).
pub(crate) fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}

/// The device a task runs on: the first granted GPU, else the CPU.
pub(crate) fn device_of(ordinals: &[u32]) -> Device {
    let ids: Vec<usize> = ordinals.iter().map(|&i| i as usize).collect();
    crate::device::select_device(&ids)
}

/// Checks that a task gives exactly the inputs a kind takes.
pub(crate) fn check_input_names(kind: &str, given: &[&str], want: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|w| !given.contains(w))
        .collect();
    let unknown: Vec<&str> = given
        .iter()
        .copied()
        .filter(|g| !want.contains(g))
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return Ok(());
    }
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing input(s) {}", list(&missing)));
    }
    if !unknown.is_empty() {
        parts.push(format!("unknown input(s) {}", list(&unknown)));
    }
    Err(format!(
        "`{kind}` takes inputs {}: {}",
        list(want),
        parts.join("; ")
    ))
}

/// The LoRA config of fresh adapters from a kind's `lora_rank`/`lora_alpha`/`lora_init_seed`.
pub(crate) fn lora_config(rank: i64, alpha: f64, init_seed: u64) -> LoraConfig {
    LoraConfig {
        r: rank,
        lora_alpha: alpha,
        init_seed,
        ..LoraConfig::default()
    }
}

pub(crate) fn check_lora(rank: i64, alpha: f64) -> Result<(), ParamError> {
    if rank <= 0 {
        return bad("lora_rank", format!("must be positive, got {rank}"));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return bad("lora_alpha", format!("must be positive, got {alpha}"));
    }
    Ok(())
}

pub(crate) fn check_threads(threads: usize) -> Result<(), ParamError> {
    if !(1..=256).contains(&threads) {
        return bad("threads", format!("must be in 1..=256, got {threads}"));
    }
    Ok(())
}

pub(crate) fn d_threads() -> usize {
    1
}
pub(crate) fn d_rank() -> i64 {
    DEFAULT_LORA_RANK
}
pub(crate) fn d_alpha() -> f64 {
    DEFAULT_LORA_ALPHA
}
