//! The integration tests of `cocoflow-tasks`, one test binary (linking libtorch once), one
//! module per area. Goldens and their generator scripts live in `tasks/tests/golden/`.
//!
//! Tests that need CUDA are `#[ignore]`d with the reason "needs CUDA": they are reported as
//! ignored here, never as passed, and run with `cargo test -p cocoflow-tasks --test it --
//! --ignored cuda` on a GPU machine.

mod common;

mod benchmarks;
mod curate;
mod flux;
mod judge_curation;
mod judge_http;
mod judge_real_server;
mod metrics_golden;
mod models;
mod nft_parity;
mod report;
mod rl;
mod sam2_server;
mod sampling;
mod segment_http;
