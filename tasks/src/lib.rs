//! cocoflow's tasks: the ML work a workflow step runs, on libtorch through `tch`.
//!
//! Where things live:
//! - [`kinds`]: one thin file per task kind (params, inputs, outputs, the steps it calls);
//!   [`register`] lists them. The work lives in topic modules:
//! - [`synth`] (the synthetic world, its rule judge and colour segmenter), [`data`]
//!   (manifest datasets), [`imageio`] (every image decode/encode), [`benchmarks`] (published
//!   benchmarks as datasets), [`curate`] (data curation);
//! - [`models`] (the `EditPolicy` backends, LoRA, checkpoints), [`sampling`], [`pretrain`],
//!   [`rl`] (rollouts, reward mixing, NFT gradient, the RL state), [`nft`] (the loss and EMA
//!   maths), [`metrics`] (masked PSNR/SSIM), [`eval`] (evaluation and benchmark protocols);
//! - [`judge`] (the MLLM judge), [`segment`] (box-prompted segmentation), [`net`] (their
//!   shared HTTP client with the one retry loop, response caches, test servers);
//! - [`artifacts`] (formats one kind writes and another reads), [`report`] (tables, plots,
//!   sample grids, the correlation study), [`cli`] (`cocoflow score`, `judge serve`, ...);
//! - [`rng`] (the one random generator), [`error`] (library errors as task errors),
//!   [`device`] (what libtorch sees).

pub mod artifacts;
pub mod benchmarks;
pub mod cli;
pub mod curate;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod imageio;
pub mod judge;
pub mod kinds;
pub mod metrics;
pub mod models;
pub mod net;
pub mod nft;
pub mod pretrain;
pub mod report;
pub mod rl;
pub mod rng;
pub mod sampling;
pub mod segment;
pub mod synth;

/// Registers every task kind of this crate to run here (the worker binary, which links
/// libtorch; tests).
pub fn register(registry: &mut cocoflow_engine::kind::Registry) {
    registry.register_kind(kinds::torch_info::TorchInfoKind);
    registry.register_kind(kinds::synth_data::SynthData);
    registry.register_kind(kinds::rollout::Rollout);
    registry.register_kind(kinds::reward::RewardKind);
    registry.register_kind(kinds::nft_train::NftTrain);
    registry.register_kind(kinds::ema::EmaKind);
    registry.register_kind(kinds::pretrain::Pretrain);
    registry.register_kind(kinds::eval::Eval);
    registry.register_kind(kinds::bench_import::BenchImport);
    registry.register_kind(kinds::report::Report);
    registry.register_kind(kinds::correlate::Correlate);
    registry.register_kind(kinds::curate::Curate);
}

/// Registers every task kind for the torch-free front end (`cocoflow`): the kinds that need
/// no tensors run there; the others are declared (params, inputs, outputs are checked and
/// planned) and run in the worker binary. Nothing reachable from here may call libtorch: the
/// front end must not link it (`tests/it/front_end.rs` checks with `ldd`).
pub fn declare(registry: &mut cocoflow_engine::kind::Registry) {
    registry.register_kind(kinds::synth_data::SynthData);
    registry.register_kind(kinds::bench_import::BenchImport);
    registry.register_kind(kinds::report::Report);
    registry.register_kind(kinds::correlate::Correlate);
    registry.register_kind(kinds::curate::Curate);
    registry.declare_kind(kinds::torch_info::TorchInfoKind);
    registry.declare_kind(kinds::rollout::Rollout);
    registry.declare_kind(kinds::reward::RewardKind);
    registry.declare_kind(kinds::nft_train::NftTrain);
    registry.declare_kind(kinds::ema::EmaKind);
    registry.declare_kind(kinds::pretrain::Pretrain);
    registry.declare_kind(kinds::eval::Eval);
}

#[cfg(test)]
mod device_tests;
