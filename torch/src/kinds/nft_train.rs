//! The work of `nft-train` (declared in [`cocoflow_tasks::kinds::nft_train`]): the run function the
//! worker binary registers.

use super::{base_model, device_of, lora_config, set_threads};
use crate::artifacts::rewards::RewardsFile;
use crate::artifacts::rollouts::{RolloutManifest, RolloutTensors};
use crate::error::fail;
use crate::models::{THETA, Trainable};
use crate::rl::adamw::{AdamWConfig, clip_grad_norm};
use crate::rl::nft_train;
use crate::rl::reward::Normalizer;
use crate::rl::state::{self, BannedGroup, NormRecord};
use cocoflow_engine::kind::{TaskCtx, TaskError};
use serde_json::json;
use std::collections::BTreeMap;
use tch::Tensor;

pub use cocoflow_tasks::kinds::nft_train::*;

/// Copies θ (the adapter being trained) of `from` into `to` (a data-parallel replica, maybe on
/// another device), so every replica starts the next optimiser step of the iteration from it.
fn sync_theta(
    from: &dyn crate::models::EditPolicy,
    to: &mut dyn crate::models::EditPolicy,
) -> Result<(), TaskError> {
    let src = from.adapter_variables(THETA).map_err(fail)?;
    let dst = to.adapter_variables(THETA).map_err(fail)?;
    tch::no_grad(|| {
        for (k, v) in &src {
            let mut d = dst
                .get(k)
                .ok_or_else(|| fail(format!("data-parallel: a replica has no `{k}`")))?
                .shallow_clone();
            d.copy_(&v.to_device(d.device()));
        }
        Ok(())
    })
}

/// The optimiser settings of the params.
pub fn adamw(p: &NftTrainParams) -> AdamWConfig {
    AdamWConfig {
        lr: p.lr,
        beta1: p.beta1,
        beta2: p.beta2,
        weight_decay: p.weight_decay,
        eps: p.eps,
    }
}

pub fn run(_: &NftTrain, p: NftTrainParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
    set_threads(p.threads);
    let device = device_of(&ctx.cuda_ordinals);
    let model_dir = super::model_dir(ctx)?;
    let state_dir = super::resolved_input(ctx, "state")?;
    let rdir = ctx.input_path("rollouts")?;
    let rewards_path = ctx.input_path("rewards")?;
    let lora = lora_config(p.lora_rank, p.lora_alpha, p.lora_init_seed);
    let mut st = state::load(&base_model(ctx, &model_dir)?, &state_dir, device, &lora)?;
    let m = RolloutManifest::read(&rdir).map_err(fail)?;
    let rw = RewardsFile::read(&rewards_path).map_err(fail)?;

    // The inputs must belong together.
    if m.iteration != st.info.iteration {
        return Err(fail(format!(
            "the rollouts are from iteration {} but the state is at iteration {}",
            m.iteration, st.info.iteration
        )));
    }
    let theta_old = state::theta_old_digest(&state_dir)?;
    if m.theta_old != theta_old {
        return Err(fail(
            "the rollouts were not sampled from this state's θ_old (digest differs)",
        ));
    }
    if rw.iteration != m.iteration
        || rw.theta_old != m.theta_old
        || rw.samples.len() != m.samples.len()
        || rw
            .samples
            .iter()
            .zip(&m.samples)
            .any(|(a, b)| a.seed != b.seed)
    {
        return Err(fail(
            "the `rewards` input does not score the `rollouts` input (iteration, θ_old or seeds differ)",
        ));
    }
    let t_all = RolloutTensors::read(&rdir, &m).map_err(fail)?;
    let step = st.info.step;
    let reward_adv_clip = match rw.config.normalizer {
        Normalizer::GlobalStd { adv_clip } => Some(adv_clip),
        Normalizer::Constant { .. } => None,
    };
    let cfg = p
        .nft_config(reward_adv_clip)
        .map_err(|e| TaskError::Params(e))?;

    // Data parallelism: one replica per granted GPU (several), or `cpu_replicas` on the CPU;
    // replica 0 is the state's model, the others copies of it on their devices.
    let devices = super::replica_devices(&ctx.cuda_ordinals, p.cpu_replicas);
    let base = base_model(ctx, &model_dir)?;
    let mut others = Vec::new();
    for &d in &devices[1..] {
        others.push(state::load(&base, &state_dir, d, &lora)?.model);
    }
    if !others.is_empty() {
        ctx.log(format!(
            "nft-train: data-parallel over {} replicas ({:?})",
            devices.len(),
            devices
        ));
    }
    // The samples in the loss, dealt into `optimizer_steps` parts (one part: all of them, in
    // the order and with the noise streams of a single-step iteration).
    let in_loss: Vec<usize> = rw
        .samples
        .iter()
        .filter(|s| s.r.is_some())
        .map(|s| s.index)
        .collect();
    let parts: Vec<Option<Vec<usize>>> = if p.optimizer_steps <= 1 || in_loss.is_empty() {
        vec![None]
    } else {
        nft_train::split_samples(p.seed, step, &in_loss, p.optimizer_steps)
            .into_iter()
            .map(Some)
            .collect()
    };
    let progress = ctx.progress_sink();
    let cancel = ctx.cancel_flag();
    let n_parts = parts.len() as u64;
    let mut sums = nft_train::TermSums::default();
    let (mut used, mut n_t, mut micro_batches) = (Vec::new(), 0, 0);
    let (mut norms, mut coefs, mut updates) = (Vec::new(), Vec::new(), 0u64);
    let mut inline_others: u64 = 0;
    st.optimizer.cfg = adamw(&p);
    for (j, part) in parts.iter().enumerate() {
        let settings: Vec<nft_train::Settings> = devices
            .iter()
            .enumerate()
            .map(|(r, &d)| nft_train::Settings {
                cfg: &cfg,
                seed: p.seed,
                step: step + j as u64,
                timestep_fraction: p.timestep_fraction,
                micro_batch: p.micro_batch,
                device: d,
                gradient_checkpointing: p.gradient_checkpointing,
                shard: (r, devices.len()),
                only: part.as_deref(),
            })
            .collect();
        let acc = {
            let mut replicas: Vec<&mut dyn crate::models::EditPolicy> = vec![st.model.as_mut()];
            for o in others.iter_mut() {
                replicas.push(o.as_mut());
            }
            nft_train::accumulate_parallel(
                &mut replicas,
                &m,
                &t_all,
                &rw,
                &settings,
                &mut |done, total, loss| {
                    progress(cocoflow_engine::kind::Progress {
                        done: j as u64 * total + done,
                        total: n_parts * total,
                        message: if n_parts == 1 {
                            format!("loss {loss:.4}")
                        } else {
                            format!("step {}/{n_parts}: loss {loss:.4}", j + 1)
                        },
                    });
                    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                        Err(TaskError::Cancelled)
                    } else {
                        Ok(())
                    }
                },
            )?
        };
        sums.add(&acc.sums);
        used.extend(acc.used.iter().copied());
        n_t = acc.timesteps;
        micro_batches += acc.micro_batches;
        let params = st.model.adapter_variables(THETA)?;
        // Clip and step (no step when nothing is in the loss).
        let grads: BTreeMap<String, Tensor> = params
            .iter()
            .map(|(k, v)| {
                let g = v.grad();
                (k.clone(), if g.defined() { g } else { v.zeros_like() })
            })
            .collect();
        if !acc.used.is_empty() {
            let (norm, coef) = clip_grad_norm(&grads, p.max_grad_norm);
            st.optimizer.step(&params, &grads);
            norms.push(norm);
            coefs.push(coef);
            updates += 1;
        }
        for v in params.values() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        // The other replicas take θ's new values before the next part.
        if j + 1 < parts.len() && !others.is_empty() {
            for o in others.iter_mut() {
                sync_theta(st.model.as_ref(), o.as_mut())?;
            }
        }
    }
    inline_others += others
        .iter()
        .map(|o| o.inline_prompt_encodings())
        .sum::<u64>();
    drop(others);
    used.sort_unstable();
    let updated = updates > 0;
    if !updated {
        ctx.log(format!(
            "iteration {}: no sample in the loss ({} samples, {} banned groups); no optimiser step",
            m.iteration,
            m.samples.len(),
            rw.banned.len()
        ));
    }
    let inline = st.model.inline_prompt_encodings() + inline_others;
    if inline > 0 {
        ctx.log(format!(
            "prompts: {inline} encodings were not in the `prompts` input and were made here"
        ));
    }
    // One step: its norm and clip coefficient (as before); several: their means.
    let mean_of = |v: &[f64], none: f64| {
        if v.is_empty() {
            none
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let (norm, coef) = (mean_of(&norms, 0.0), mean_of(&coefs, 1.0));
    st.model.set_trainable(Trainable::Nothing).map_err(fail)?;

    let mean = |x: f64| if sums.n > 0.0 { x / sums.n } else { 0.0 };
    let stats = json!({
        "iteration": m.iteration,
        "step": step + updates.max(1),
        "samples": m.samples.len(),
        "used": used.len(),
        "timesteps": n_t,
        "micro_batches": micro_batches,
        "updated": updated,
        "loss": mean(sums.loss),
        "policy": mean(sums.policy),
        "kl": mean(sums.kl),
        "ner": mean(sums.ner),
        "er": mean(sums.er),
        "ner_active": mean(sums.ner_active),
        "er_active": mean(sums.er_active),
        "grad_norm": norm,
        "clip_coef": coef,
        "r_raw_mean": rw.stats.r_raw.mean,
        "r_mllm_mean": rw.stats.r_mllm.mean,
        "r_sim_mean": rw.stats.r_sim.mean,
    });
    let mut stats = stats;
    if p.optimizer_steps > 1 {
        // (absent with one step per iteration: the states of kind version ≤ 3 stay as they were)
        stats["optimizer_steps"] = json!(updates);
    }
    for key in [
        "loss",
        "policy",
        "kl",
        "ner",
        "er",
        "ner_active",
        "er_active",
        "grad_norm",
        "clip_coef",
        "used",
        "step",
        "iteration",
    ] {
        ctx.metric(key, stats[key].clone());
    }
    ctx.metric("updated", updated);
    ctx.log(format!("nft-train {stats}"));

    let info = &mut st.info;
    info.reward_norm.push(NormRecord {
        iteration: m.iteration,
        z: rw.stats.z,
        r_raw_mean: rw.stats.r_raw.mean,
        r_raw_std: rw.stats.r_raw.std,
    });
    info.banned_groups
        .extend(rw.banned.iter().map(|g| BannedGroup {
            iteration: m.iteration,
            group: g.clone(),
        }));
    info.history.push(stats);
    info.configs
        .insert("nft-train".into(), serde_json::to_value(&p).map_err(fail)?);
    info.rng.nft_seed = Some(p.seed);
    info.step = step + updates.max(1);
    info.iteration = m.iteration + 1;
    let out = ctx.workdir()?.join("state");
    st.save(&out)?;
    ctx.output_dir("state", &out)
}
