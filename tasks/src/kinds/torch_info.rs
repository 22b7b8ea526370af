//! `torch-info`: what libtorch sees on the device the task was given, and a timed matrix
//! multiply there — a smoke test that GPU assignment reaches tch.
//!
//! Inputs: none. Output `info` (JSON): the libtorch version, the matmul size and the product's
//! checksum (deterministic for a device type). Host facts (CUDA availability, device count,
//! the device used, granted GPUs) and timings (seconds per matmul, GFLOP/s) go to the task's
//! metrics and log, never into the output. Resources: ask for `gpus: 1` to test a GPU.

use crate::kinds::bad;
use cocoflow_engine::kind::{Kind, ParamError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TorchInfoParams {
    /// Side of the square matrices (1..=8192).
    pub size: i64,
    /// Timed products (≥ 1).
    pub repeats: u32,
    /// Seed of the random matrices (the checksum depends on it).
    pub seed: i64,
}

impl Default for TorchInfoParams {
    fn default() -> Self {
        TorchInfoParams {
            size: 256,
            repeats: 5,
            seed: 0,
        }
    }
}

pub struct TorchInfoKind;

impl Kind for TorchInfoKind {
    type Params = TorchInfoParams;
    const NAME: &'static str = "torch-info";
    const VERSION: u32 = 2;
    const DESCRIBE: &'static str =
        "what libtorch sees on the task's device, and a timed matmul there";
    const INPUTS: Option<&'static [cocoflow_engine::kind::Input]> = Some(&[]);
    const OUTPUTS: &'static [&'static str] = &["info"];

    fn validate(&self, p: &TorchInfoParams) -> Result<(), ParamError> {
        if !(1..=8192).contains(&p.size) {
            return bad("size", format!("must be in 1..=8192, got {}", p.size));
        }
        if p.repeats == 0 {
            return bad("repeats", "must be at least 1");
        }
        Ok(())
    }
}
