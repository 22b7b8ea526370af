//! The CoCoEdit RL loop's library (method-spec §3–§6); its four task kinds live in
//! [`crate::kinds`]:
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
//! - [`rollout`]: prompts, seeds and sampling shards; [`reward`]: reward mixing and the
//!   optimality probability; [`nft_train`]: one update's gradient; [`state`]: the state
//!   artifact and the old-policy EMA on it; [`adamw`]: AdamW with savable moments.

pub mod adamw;
pub mod nft_train;
pub mod rollout;
pub mod state;

pub use cocoflow_tasks::rl::{DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK, reward};

/// Why an RL state or one of the loop's artifacts cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RlError {
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Ema(#[from] crate::nft::ema::EmaError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A state or artifact that does not fit (the message says what and where).
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for RlError {
    fn from(message: String) -> Self {
        RlError::Invalid(message)
    }
}
