//! The integration tests of `cocoflow-torch`, one test binary (linking libtorch once), one
//! module per area. Goldens and their generator scripts live in `torch/tests/golden/`.
//!
//! Tests that need CUDA are `#[ignore]`d with the reason "needs CUDA": they are reported as
//! ignored here, never as passed, and run with `cargo test -p cocoflow-torch --test it --
//! --ignored cuda` on a GPU machine.

#[path = "../../../tasks/tests/it/common.rs"]
mod common;

/// The kinds the shared workflow runner (`common`) registers: every kind of this crate.
fn register_kinds(r: &mut cocoflow_engine::kind::Registry) {
    cocoflow_torch::register(r);
}

mod benchmarks;
mod edit_cli;
mod flux;
mod flux_bench;
mod flux_cache;
mod flux_lora;
mod judge_real_server;
mod metrics_golden;
mod models;
mod nft_parity;
mod qwen;
mod report_eval;
mod rl;
mod sampling;
