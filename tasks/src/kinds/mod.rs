//! The task kinds, one thin file each: its params (one serde struct, defaults in its
//! `Default`), inputs and outputs — what the front end checks and plans — and, for the kinds
//! that need no tensors, the steps `run` calls. The kinds that run on libtorch (`rollout`,
//! `encode-prompts`, `reward`, `nft-train`, `ema`, `pretrain`, `eval`, `torch-info`) are declared here and run by
//! `cocoflow_torch::kinds`. The work itself lives in the topic modules.

pub mod bench_import;
pub mod correlate;
pub mod curate;
pub mod ema;
pub mod encode_prompts;
pub mod eval;
pub mod nft_train;
pub mod pretrain;
pub mod report;
pub mod reward;
pub mod rollout;
pub mod synth_data;
pub mod torch_info;

use cocoflow_engine::kind::ParamError;

/// A param error at `path` (key path, e.g. `decay.rate`).
pub fn bad<T>(path: &str, message: impl Into<String>) -> Result<T, ParamError> {
    Err(ParamError {
        path: path.into(),
        message: message.into(),
    })
}

/// libtorch's intra-op threads in 1..=256 (CPU results depend on the count).
pub fn check_threads(threads: usize) -> Result<(), ParamError> {
    if !(1..=256).contains(&threads) {
        return bad("threads", format!("must be in 1..=256, got {threads}"));
    }
    Ok(())
}

/// `cpu_replicas` (data-parallel replicas on the CPU): 1..=64.
pub fn check_cpu_replicas(n: usize) -> Result<(), ParamError> {
    if !(1..=64).contains(&n) {
        return bad("cpu_replicas", format!("must be in 1..=64, got {n}"));
    }
    Ok(())
}

/// `skip_serializing_if` of `cpu_replicas`: left out of the canonical params (and so of the
/// cache key) while 1.
pub fn is_one(n: &usize) -> bool {
    *n == 1
}

pub fn check_lora(rank: i64, alpha: f64) -> Result<(), ParamError> {
    if rank <= 0 {
        return bad("lora_rank", format!("must be positive, got {rank}"));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return bad("lora_alpha", format!("must be positive, got {alpha}"));
    }
    Ok(())
}
