//! The torch-free part of the CoCoEdit RL loop (method-spec §3–§6): [`reward`] (reward
//! mixing and the optimality probability) and the loop's LoRA defaults. Rollouts, the NFT
//! gradient, the state and AdamW are `cocoflow_torch::rl`.

pub mod reward;

/// Default LoRA rank for the tiny model (the paper uses 32 on FLUX/Qwen).
pub const DEFAULT_LORA_RANK: i64 = 8;
/// Default LoRA alpha for the tiny model (the paper uses 64): scaling α/r = 2 as in the paper.
pub const DEFAULT_LORA_ALPHA: f64 = 16.0;
