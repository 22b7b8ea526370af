//! cocoflow's tasks without libtorch: every task kind's declaration (params, inputs, outputs,
//! checked and planned by the torch-free `cocoflow` front end), the kinds that need no tensors,
//! and the libraries they use. The kinds that run on libtorch are run by `cocoflow-torch`
//! (the only crate that links tch), in the `cocoflow-worker` binary.
//!
//! Where things live:
//! - [`kinds`]: one thin file per task kind (params, inputs, outputs, the steps it calls);
//!   [`declare`] lists them. The work lives in topic modules:
//! - [`synth`] (the synthetic world, its rule judge and colour segmenter), [`data`]
//!   (manifest datasets), [`imageio`] (every image decode/encode), [`benchmarks`] (published
//!   benchmarks as datasets), [`curate`] (data curation);
//! - settings the front end checks: [`sampling`], [`nft`], [`metrics`], [`models`] (model
//!   configs), [`pretrain`], [`rl`] (reward mixing), [`eval`] (protocols, judging a chunk);
//! - [`judge`] (the MLLM judge), [`segment`] (box-prompted segmentation), [`net`] (their
//!   shared HTTP client with the one retry loop, response caches, test servers);
//! - [`artifacts`] (formats one kind writes and another reads), [`report`] (tables, plots,
//!   sample grids, the correlation study), [`cli`] (`cocoflow judge serve`, ...);
//! - [`rng`] (the one random generator), [`error`] (library errors as task errors).

pub mod artifacts;
pub mod benchmarks;
pub mod cli;
pub mod curate;
pub mod data;
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
pub mod study;
pub mod synth;
pub mod ui;
pub mod weights;

/// Registers the task kinds for the torch-free front end (`cocoflow`): the kinds that need no
/// tensors run here; the others are declared (params, inputs, outputs are checked and
/// planned) and run in the worker binary (`cocoflow_torch::register`).
pub fn declare(registry: &mut cocoflow_engine::kind::Registry) {
    register_torch_free(registry);
    registry.declare_kind(kinds::torch_info::TorchInfoKind);
    registry.declare_kind(kinds::rollout::Rollout);
    registry.declare_kind(kinds::encode_prompts::EncodePrompts);
    registry.declare_kind(kinds::reward::RewardKind);
    registry.declare_kind(kinds::nft_train::NftTrain);
    registry.declare_kind(kinds::ema::EmaKind);
    registry.register(kinds::pretrain::ByReference(
        cocoflow_engine::kind::Declared(kinds::pretrain::Pretrain),
    ));
    registry.declare_kind(kinds::eval::Eval);
}

/// Registers the kinds that need no tensors, to run in this process.
pub fn register_torch_free(registry: &mut cocoflow_engine::kind::Registry) {
    use kinds::*;
    registry.register_kind(synth_data::SynthData, synth_data::SynthData::run);
    registry.register_kind(bench_import::BenchImport, bench_import::BenchImport::run);
    registry.register_kind(report::Report, report::Report::run);
    registry.register_kind(correlate::Correlate, correlate::Correlate::run);
    registry.register_kind(curate::Curate, curate::Curate::run);
}
