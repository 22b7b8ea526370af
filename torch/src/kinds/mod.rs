//! The run functions of the task kinds that need libtorch, one file each next to its
//! declaration in [`cocoflow_tasks::kinds`] (re-exported here, with the torch-free kinds).

pub mod ema;
pub mod encode_prompts;
pub mod eval;
pub mod nft_train;
pub mod pretrain;
pub mod reward;
pub mod rollout;
pub mod torch_info;

pub use cocoflow_tasks::kinds::{
    bad, bench_import, check_lora, check_threads, correlate, curate, report, synth_data,
};

/// Sets libtorch's intra-op threads for this task (results on the CPU depend on it).
pub fn set_threads(n: usize) {
    tch::set_num_threads(n.max(1) as i32);
}

/// The device a task runs on: the first granted GPU, else the CPU.
pub fn device_of(ordinals: &[u32]) -> tch::Device {
    let ids: Vec<usize> = ordinals.iter().map(|&i| i as usize).collect();
    crate::device::select_device(&ids)
}

/// The devices of a task's data-parallel replicas: one per granted GPU when it has several
/// (and CUDA is there), else `cpu_replicas` on the CPU, else its one device.
pub fn replica_devices(ordinals: &[u32], cpu_replicas: usize) -> Vec<tch::Device> {
    if ordinals.len() > 1 && tch::Cuda::is_available() {
        return ordinals
            .iter()
            .map(|&o| tch::Device::Cuda(o as usize))
            .collect();
    }
    match device_of(ordinals) {
        tch::Device::Cpu => vec![tch::Device::Cpu; cpu_replicas.max(1)],
        d => vec![d],
    }
}

/// The LoRA config of fresh adapters from a kind's `lora_rank`/`lora_alpha`/`lora_init_seed`.
pub fn lora_config(rank: i64, alpha: f64, init_seed: u64) -> crate::models::LoraConfig {
    crate::models::LoraConfig {
        r: rank,
        lora_alpha: alpha,
        init_seed,
        ..crate::models::LoraConfig::default()
    }
}

/// The directory of the task's `model` input: the input itself, or the directory a
/// `model_ref.json` names (weights by reference, [`cocoflow_tasks::weights`]), checked against
/// its recorded digest.
pub fn model_dir(
    ctx: &cocoflow_engine::kind::TaskCtx,
) -> Result<std::path::PathBuf, cocoflow_engine::kind::TaskError> {
    resolved_input(ctx, "model")
}

/// Input `name` resolved as [`model_dir`] resolves `model` (an RL loop's carry starts as the
/// base model, possibly a reference).
pub fn resolved_input(
    ctx: &cocoflow_engine::kind::TaskCtx,
    name: &str,
) -> Result<std::path::PathBuf, cocoflow_engine::kind::TaskError> {
    let dir = ctx.input_path(name)?;
    cocoflow_tasks::weights::resolve(&dir)
        .map_err(|m| cocoflow_engine::kind::TaskError::Failed(format!("input `{name}`: {m}")))
}

/// The task's `model` input (at `dir`) as a [`crate::models::BaseModel`] shared through the
/// process's model cache (keyed by the input's content digest): a worker loads a base once
/// however many tasks use it. With a `prompts` input that holds encodings (`encode-prompts`
/// on a backend with separate text encoders), policies condition on them and are loaded
/// without their text encoders; a pass-through `prompts` (tiny-kontext) changes nothing.
pub fn base_model(
    ctx: &cocoflow_engine::kind::TaskCtx,
    dir: &std::path::Path,
) -> Result<crate::models::BaseModel, cocoflow_engine::kind::TaskError> {
    use cocoflow_engine::kind::TaskError;
    let items = ctx.input_items("model")?;
    let digest = &items
        .first()
        .ok_or_else(|| TaskError::Params("input `model` is empty".into()))?
        .artifact
        .digest;
    let base = crate::models::BaseModel::cached(dir, ctx.models().clone(), digest);
    if ctx.input_items("prompts").is_err() {
        return Ok(base);
    }
    let pdir = ctx.input_path("prompts")?;
    let table = crate::artifacts::prompts::PromptTable::open(&pdir)
        .map_err(|e| TaskError::Failed(format!("input `prompts`: {e}")))?;
    if &table.manifest.model_digest != digest {
        return Err(TaskError::Failed(format!(
            "input `prompts` (`{}`) was encoded from model {}, but the `model` input is {digest}",
            pdir.display(),
            table.manifest.model_digest
        )));
    }
    if !table.encoded() {
        return Ok(base);
    }
    ctx.log(format!(
        "prompts: {} cached encodings ({}); the text encoders are not loaded",
        table.manifest.instructions.len(),
        table.manifest.backend
    ));
    Ok(base.with_prompts(std::sync::Arc::new(move || Box::new(table.clone()))))
}
