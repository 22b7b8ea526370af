//! cocoflow's tasks on libtorch (through `tch`): the run functions of the task kinds that
//! need tensors, and the libraries they use. The only crate that links libtorch; the
//! `cocoflow-worker` binary runs it. The torch-free part — every kind's declaration, the kinds
//! that need no tensors, the judge, data, reports — is `cocoflow_tasks`, re-exported here
//! module by module so `crate::data`, `crate::judge`, ... name the whole of each.
//!
//! - [`models`] (the `EditPolicy` backends, LoRA, checkpoints), [`sampling`], [`pretrain`],
//!   [`rl`] (rollouts, the NFT gradient, the RL state, AdamW), [`nft`] (the loss and EMA
//!   maths), [`metrics`] (masked PSNR/SSIM), [`eval`] (the policy's edits);
//! - tensor conversions: [`imageio::tensor`], [`data::RecordTensors`],
//!   [`judge::JudgeImageTensor`]; [`artifacts::rollouts`];
//! - [`kinds`] (run functions; [`register`] lists every kind), [`cli`] (`cocoflow score`,
//!   `bench-metrics`), [`device`] (what libtorch sees), [`error`].

pub mod artifacts;
pub mod cli;
pub mod data;
pub mod device;
pub mod edit;
pub mod error;
pub mod eval;
pub mod imageio;
pub mod judge;
pub mod kinds;
pub mod metrics;
pub mod models;
pub mod nft;
pub mod pretrain;
pub mod rl;
pub mod sampling;

pub use cocoflow_tasks::{benchmarks, curate, net, report, rng, segment, synth};

/// Registers every task kind to run here (the worker binary; tests).
pub fn register(registry: &mut cocoflow_engine::kind::Registry) {
    use kinds::*;
    cocoflow_tasks::register_torch_free(registry);
    registry.register_kind(torch_info::TorchInfoKind, torch_info::run);
    registry.register_kind(rollout::Rollout, rollout::run);
    registry.register_kind(encode_prompts::EncodePrompts, encode_prompts::run);
    registry.register_kind(reward::RewardKind, reward::run);
    registry.register_kind(nft_train::NftTrain, nft_train::run);
    registry.register_kind(ema::EmaKind, ema::run);
    registry.register(pretrain::ByReference(cocoflow_engine::kind::Typed {
        kind: pretrain::Pretrain,
        run: pretrain::run,
    }));
    registry.register_kind(eval::Eval, eval::run);
}

#[cfg(test)]
mod device_tests;
