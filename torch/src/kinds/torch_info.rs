//! The work of `torch-info` (declared in [`cocoflow_tasks::kinds::torch_info`]): the run function the
//! worker binary registers.

use crate::device::{select_device, torch_info};
use cocoflow_engine::kind::{TaskCtx, TaskError};
use serde_json::json;
use std::time::Instant;
use tch::Tensor;

pub use cocoflow_tasks::kinds::torch_info::*;

pub fn run(_: &TorchInfoKind, p: TorchInfoParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
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
