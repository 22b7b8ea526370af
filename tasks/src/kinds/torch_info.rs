//! `torch-info`: what libtorch sees on the device the task was given, and a timed matrix
//! multiply there — a smoke test that GPU assignment reaches tch.
//!
//! Inputs: none. Output `info` (JSON): the libtorch version, the matmul size and the product's
//! checksum (deterministic for a device type). Host facts (CUDA availability, device count,
//! the device used, granted GPUs) and timings (seconds per matmul, GFLOP/s) go to the task's
//! metrics and log, never into the output. Resources: ask for `gpus: 1` to test a GPU.

use crate::device::{select_device, torch_info};
use crate::kinds::bad;
use cocoflow_engine::kind::{Kind, ParamError, TaskCtx, TaskError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;
use tch::Tensor;

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

    fn run(&self, p: TorchInfoParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let info = torch_info();
        let ordinals: Vec<usize> = ctx.cuda_ordinals.iter().map(|&o| o as usize).collect();
        let device = select_device(&ordinals);
        ctx.log(format!(
            "{info}; running on {device:?} (granted gpus {:?})",
            ctx.gpus
        ));
        tch::manual_seed(p.seed);
        let a = Tensor::randn([p.size, p.size], (tch::Kind::Float, device));
        let b = Tensor::randn([p.size, p.size], (tch::Kind::Float, device));
        let mut c = a.matmul(&b); // warm-up
        let t = Instant::now();
        for i in 0..p.repeats {
            ctx.check_cancelled()?;
            c = a.matmul(&b);
            ctx.progress(u64::from(i) + 1, u64::from(p.repeats), "matmul");
        }
        let checksum = c.sum(tch::Kind::Double).double_value(&[]);
        let secs = t.elapsed().as_secs_f64() / f64::from(p.repeats);
        let gflops = 2.0 * (p.size as f64).powi(3) / secs / 1e9;
        ctx.log(format!(
            "matmul {0}×{0}: {secs:.6} s each, {gflops:.1} GFLOP/s",
            p.size
        ));
        ctx.metric("gflops", gflops);
        ctx.metric("matmul_seconds", secs);
        ctx.metric("device", format!("{device:?}"));
        ctx.metric("cuda_available", info.cuda_available);
        ctx.metric("device_count", info.device_count as u64);
        let out = json!({
            "libtorch": info.libtorch_version,
            "matmul_size": p.size,
            "seed": p.seed,
            "checksum": checksum,
        });
        ctx.output_bytes(
            "info",
            serde_json::to_vec_pretty(&out).map_err(|e| TaskError::Other(Box::new(e)))?,
        )
    }
}
