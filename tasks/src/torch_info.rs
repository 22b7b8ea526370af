//! `torch-info`: reports what libtorch sees on the device the task was given and times a
//! matrix multiply there — a smoke test that GPU assignment reaches tch.
//! Inputs: none. Outputs: `info` (JSON). Params: `size` (matmul side, default 256),
//! `repeats` (default 5). Resources: ask for `gpus: 1` to test a GPU.

use crate::device::{select_device, torch_info};
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchInfoParams {
    #[serde(default = "default_size")]
    pub size: i64,
    #[serde(default = "default_repeats")]
    pub repeats: u32,
    /// Seed of the random matrices (the checksum depends on it).
    #[serde(default)]
    pub seed: i64,
}

fn default_size() -> i64 {
    256
}
fn default_repeats() -> u32 {
    5
}

pub struct TorchInfoKind;

impl TaskKind for TorchInfoKind {
    fn name(&self) -> &'static str {
        "torch-info"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "what libtorch sees on the task's device, and a timed matmul there"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<TorchInfoParams>(params)?;
        if !(1..=8192).contains(&p.size) {
            return Err(ParamError {
                path: "size".into(),
                message: format!("must be in 1..=8192, got {}", p.size),
            });
        }
        if p.repeats == 0 {
            return Err(ParamError {
                path: "repeats".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["info".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: TorchInfoParams = ctx.params()?;
        let info = torch_info();
        let ordinals: Vec<usize> = ctx.cuda_ordinals.iter().map(|&o| o as usize).collect();
        let device = select_device(&ordinals);
        ctx.log(format!(
            "{info}; running on {device:?} (granted gpus {:?})",
            ctx.gpus
        ));
        tch::manual_seed(p.seed);
        let a = Tensor::randn([p.size, p.size], (Kind::Float, device));
        let b = Tensor::randn([p.size, p.size], (Kind::Float, device));
        let mut c = a.matmul(&b); // warm-up
        let t = Instant::now();
        for i in 0..p.repeats {
            ctx.check_cancelled()?;
            c = a.matmul(&b);
            ctx.progress(u64::from(i) + 1, u64::from(p.repeats), "matmul");
        }
        let checksum = c.sum(Kind::Double).double_value(&[]);
        let secs = t.elapsed().as_secs_f64() / f64::from(p.repeats);
        let gflops = 2.0 * (p.size as f64).powi(3) / secs / 1e9;
        ctx.metric("gflops", gflops);
        ctx.metric("device", format!("{device:?}"));
        let out = json!({
            "libtorch": info.libtorch_version,
            "cuda_available": info.cuda_available,
            "device_count": info.device_count,
            "device": format!("{device:?}"),
            "gpus": ctx.gpus,
            "matmul_size": p.size,
            "matmul_seconds": secs,
            "gflops": gflops,
            "checksum": checksum,
        });
        ctx.output_bytes(
            "info",
            serde_json::to_vec_pretty(&out).map_err(|e| TaskError::Other(Box::new(e)))?,
        )
    }
}
