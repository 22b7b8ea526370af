//! cocoflow's tasks: the ML work a workflow step runs, on libtorch through `tch`.

pub mod artifacts;
pub mod benchmarks;

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
pub mod score;
pub mod segment;
pub mod synth;

/// Registers every task kind of this crate.
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

#[cfg(test)]
mod tests;
