//! cocoflow's tasks: the ML work a workflow step runs, on libtorch through `tch`.

pub mod data;
pub mod device;
pub mod judge;
pub mod metrics;
pub mod models;
pub mod nft;
pub mod reward;
pub mod sampling;
pub mod score;
pub mod synth_data;
pub mod torch_info;

/// Registers every task kind of this crate.
pub fn register(registry: &mut cocoflow_engine::kind::Registry) {
    registry.register(torch_info::TorchInfoKind);
    registry.register(synth_data::SynthData);
}

#[cfg(test)]
mod tests;
