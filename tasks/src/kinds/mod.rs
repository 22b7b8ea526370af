//! The task kinds, one thin file each: its params (one serde struct, defaults in its
//! `Default`), inputs, outputs and the steps it calls; the work itself lives in the topic
//! modules (`rl`, `models`, `metrics`, `curate`, `report`, ...).

pub mod bench_import;
pub mod correlate;
pub mod curate;
pub mod ema;
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
pub(crate) fn bad<T>(path: &str, message: impl Into<String>) -> Result<T, ParamError> {
    Err(ParamError {
        path: path.into(),
        message: message.into(),
    })
}

/// libtorch's intra-op threads in 1..=256 (CPU results depend on the count).
pub(crate) fn check_threads(threads: usize) -> Result<(), ParamError> {
    if !(1..=256).contains(&threads) {
        return bad("threads", format!("must be in 1..=256, got {threads}"));
    }
    Ok(())
}

/// Sets libtorch's intra-op threads for this task (results on the CPU depend on it).
pub(crate) fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}

/// The device a task runs on: the first granted GPU, else the CPU.
pub(crate) fn device_of(ordinals: &[u32]) -> tch::Device {
    let ids: Vec<usize> = ordinals.iter().map(|&i| i as usize).collect();
    crate::device::select_device(&ids)
}

/// The LoRA config of fresh adapters from a kind's `lora_rank`/`lora_alpha`/`lora_init_seed`.
pub(crate) fn lora_config(rank: i64, alpha: f64, init_seed: u64) -> crate::models::LoraConfig {
    crate::models::LoraConfig {
        r: rank,
        lora_alpha: alpha,
        init_seed,
        ..crate::models::LoraConfig::default()
    }
}

pub(crate) fn check_lora(rank: i64, alpha: f64) -> Result<(), ParamError> {
    if rank <= 0 {
        return bad("lora_rank", format!("must be positive, got {rank}"));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return bad("lora_alpha", format!("must be positive, got {alpha}"));
    }
    Ok(())
}
