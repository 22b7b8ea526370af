//! Rollouts (method-spec §6, Alg. 1 lines 3–5): which prompts an iteration samples, the
//! seed of every sample, the rollout policy (θ_old), and sampling shards of samples on one
//! device each. The `rollout` kind ([`crate::kinds::rollout`]) writes the result as the
//! [`crate::artifacts::rollouts`] artifact.
//!
//! The prompts of iteration i are the first `groups` of a permutation of the eligible records
//! drawn from `(seed, rollout/select/i)` (no prompt twice in one iteration); sample (g, k)
//! starts from the noise of its own seed `(seed, rollout/i/g/k)`, so a rollout does not depend
//! on how samples are sharded or batched.

use super::state;
use crate::data::{Dataset, Record};
use crate::models::{ActiveAdapter, BaseModel, EditPolicy, THETA_OLD, Trainable};
use crate::rng::StreamRng;
use crate::sampling::{SamplerConfig, sample, stack_x0};
use std::path::Path;
use tch::{Device, Tensor};

/// Records usable for rollouts: those with an edit mask, in manifest order.
pub fn eligible(ds: &Dataset) -> Vec<&Record> {
    ds.records
        .iter()
        .filter(|r| r.edit_mask.is_some())
        .collect()
}

/// Indices (into `n` eligible records) of iteration `iteration`'s prompts: the first
/// `groups` of a seeded Fisher–Yates permutation.
pub fn select_prompts(seed: u64, iteration: u64, n: usize, groups: usize) -> Vec<usize> {
    let mut rng = StreamRng::derive(seed, &format!("rollout/select/{iteration}"));
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(groups);
    idx
}

/// The noise seed of sample `k` of group `g` in iteration `iteration`.
pub fn sample_seed(seed: u64, iteration: u64, g: usize, k: usize) -> u64 {
    StreamRng::derive(seed, &format!("rollout/{iteration}/{g}/{k}")).next_u64()
}

/// Loads the rollout policy (θ_old) on `device`: the base with adapter `old` from a saved
/// state, or the base alone (adapters off) for a base-directory state, where θ_old has B = 0
/// and gives exactly the base model's outputs.
pub fn load_rollout_policy(
    base: &BaseModel,
    state_dir: &Path,
    device: Device,
) -> Result<(Box<dyn EditPolicy>, ActiveAdapter), String> {
    if state::is_state(state_dir) {
        crate::models::open::check_adapter(base.dir(), &state_dir.join(state::THETA_OLD_DIR))
            .map_err(|e| e.to_string())?;
    }
    let mut model = base.load(device).map_err(|e| e.to_string())?;
    model
        .set_trainable(Trainable::Nothing)
        .map_err(|e| e.to_string())?;
    if state::is_state(state_dir) {
        model
            .load_adapter(&state_dir.join(state::THETA_OLD_DIR), THETA_OLD)
            .map_err(|e| e.to_string())?;
        Ok((model, ActiveAdapter::theta_old()))
    } else {
        Ok((model, ActiveAdapter::Off))
    }
}

/// Samples `samples` (global indices; sample n is group n / k) on one device; x0 on the CPU.
#[allow(clippy::too_many_arguments)]
pub fn sample_shard(
    base: &BaseModel,
    state_dir: &Path,
    device: Device,
    sources: &Tensor,
    instructions: &[String],
    samples: &[usize],
    k: usize,
    seeds: &[u64],
    cfg: &SamplerConfig,
    batch: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Tensor, String> {
    let (model, adapter) = load_rollout_policy(base, state_dir, device)?;
    let latents = model.encode(sources).map_err(|e| e.to_string())?;
    let instr: Vec<&str> = instructions.iter().map(String::as_str).collect();
    let cond = model
        .condition(&latents, &instr)
        .map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    for chunk in samples.chunks(batch) {
        let groups: Vec<i64> = chunk.iter().map(|&n| (n / k) as i64).collect();
        let idx = Tensor::from_slice(&groups).to_device(device);
        let c = cond.select(&idx);
        let s: Vec<u64> = chunk.iter().map(|&n| seeds[n]).collect();
        let out = sample(&*model, &c, &s, cfg, &adapter).map_err(|e| e.to_string())?;
        parts.push(stack_x0(&out).to_device(Device::Cpu));
        progress(chunk.len());
    }
    Ok(Tensor::cat(&parts, 0))
}
