//! cocoflow's tasks: the ML work a workflow step runs, on libtorch through `tch`.

pub mod data;
pub mod device;
pub mod judge;
pub mod metrics;
pub mod models;
pub mod reward;
pub mod sampling;
pub mod torch_info;

/// Registers every task kind of this crate.
pub fn register(registry: &mut cocoflow_engine::kind::Registry) {
    registry.register(torch_info::TorchInfoKind);
}

#[cfg(test)]
mod tests;
