//! One DiffusionNFT policy update's gradient (method-spec §4, Alg. 1 lines 11–23): for every
//! sample in the loss (valid, not banned) and each of `max(1, ⌊timestep_fraction · steps⌋)`
//! timesteps taken from a seeded permutation of the rollout's own σ schedule (terminal 0
//! excluded; stream `nft/<step>/perm/<sample>`), with fresh noise ε (stream
//! `nft/<step>/eps/<sample>/<slot>`): `x_t = (1 − t)·x0 + t·ε`; `v_old` (θ_old) and `v_ref`
//! (adapters off) without gradient, `v_θ` with; [`nft_loss`]; the backward of each
//! micro-batch and timestep is scaled by `(samples in it)/(samples in the loss × timesteps)`, so
//! the gradient is the mean over samples whatever the micro-batch size. θ's forward may use
//! gradient checkpointing ([`Settings::gradient_checkpointing`]; FLUX.1 Kontext). The `nft-train`
//! kind ([`crate::kinds::nft_train`]) then clips and steps.

use crate::artifacts::rewards::RewardsFile;
use crate::artifacts::rollouts::{RolloutManifest, RolloutTensors};
use crate::error::fail;
use crate::models::random::normal_tensor;
use crate::models::{ActiveAdapter, EditPolicy, THETA, Trainable};
use crate::nft::{NftBatch, NftConfig, downsample_mask, nft_loss};
use crate::rng::StreamRng;
use crate::sampling::guidance_of;
use cocoflow_engine::kind::TaskError;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Timesteps trained per sample for a rollout of `steps` steps.
pub fn train_timesteps(steps: usize, fraction: f64) -> usize {
    ((fraction * steps as f64).floor() as usize).clamp(1, steps.max(1))
}

/// The first `t` entries of a seeded permutation of `0..steps`.
pub fn timestep_slots(seed: u64, step: u64, sample: usize, steps: usize, t: usize) -> Vec<usize> {
    let mut rng = StreamRng::derive(seed, &format!("nft/{step}/perm/{sample}"));
    let mut idx: Vec<usize> = (0..steps).collect();
    for i in (1..steps).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(t);
    idx
}

/// Running sums of the per-(micro-batch, timestep) terms, each weighted by its micro-batch's
/// sample count (`n` = their total).
#[derive(Debug, Default)]
pub struct TermSums {
    pub n: f64,
    pub loss: f64,
    pub policy: f64,
    pub kl: f64,
    pub ner: f64,
    pub er: f64,
    pub ner_active: f64,
    pub er_active: f64,
}

/// What the accumulation did.
#[derive(Debug)]
pub struct Accumulated {
    pub sums: TermSums,
    /// Samples in the loss.
    pub used: Vec<usize>,
    /// Timesteps per sample.
    pub timesteps: usize,
    pub micro_batches: usize,
}

/// How to accumulate.
pub struct Settings<'a> {
    pub cfg: &'a NftConfig,
    pub seed: u64,
    /// The optimiser step this gradient is for (the noise streams depend on it).
    pub step: u64,
    pub timestep_fraction: f64,
    pub micro_batch: usize,
    pub device: Device,
    /// θ's forward with gradient checkpointing where the backend has it
    /// ([`EditPolicy::velocity_for_training`]); the gradient is the same either way.
    pub gradient_checkpointing: bool,
    /// `(r, n)`: this replica takes micro-batches `r, r + n, r + 2n, …` (data parallelism,
    /// [`accumulate_parallel`]); `(0, 1)`: all of them.
    pub shard: (usize, usize),
    /// Only these samples (a part of [`split_samples`], when an iteration takes several
    /// optimiser steps); `None`: every sample in the loss.
    pub only: Option<&'a [usize]>,
}

/// The samples in the loss dealt into `parts` optimiser steps: a seeded shuffle (stream
/// `nft/<step>/split`, `step` = the iteration's first optimiser step), then contiguous parts
/// whose sizes differ by at most one, each sorted. Never more parts than samples; no sample
/// → no part.
pub fn split_samples(seed: u64, step: u64, used: &[usize], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.max(1).min(used.len());
    if parts == 0 {
        return Vec::new();
    }
    let mut rng = StreamRng::derive(seed, &format!("nft/{step}/split"));
    let mut v = used.to_vec();
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    let (q, r) = (v.len() / parts, v.len() % parts);
    let mut out = Vec::with_capacity(parts);
    let mut at = 0;
    for p in 0..parts {
        let n = q + usize::from(p < r);
        let mut part = v[at..at + n].to_vec();
        part.sort_unstable();
        out.push(part);
        at += n;
    }
    out
}

/// Accumulates θ's gradient (adapter `default`) over every sample in the loss and its
/// timesteps; `on_step(done, total, mean loss)` after each (micro-batch, timestep) may cancel.
pub fn accumulate(
    model: &mut dyn EditPolicy,
    m: &RolloutManifest,
    t_all: &RolloutTensors,
    rw: &RewardsFile,
    set: &Settings,
    on_step: &mut dyn FnMut(u64, u64, f64) -> Result<(), TaskError>,
) -> Result<Accumulated, TaskError> {
    let (cfg, device, step) = (set.cfg, set.device, set.step);
    let steps = m.sampler.steps;
    let n_t = train_timesteps(steps, set.timestep_fraction);
    // The embedded guidance the rollouts were sampled with reaches every training forward.
    // (A backend that applies guidance itself when sampling trains its conditional branch.)
    let (_, guidance) = guidance_of(&*model, &m.sampler);
    let guidance = guidance.filter(|_| model.guidance_in_training());
    // Conditioning of every group on the device.
    model
        .set_trainable(Trainable::Adapter(THETA.into()))
        .map_err(fail)?;
    let z_src_all = t_all.source_latents.to_device(device);
    let instr: Vec<&str> = m.groups.iter().map(|g| g.instruction.as_str()).collect();
    let cond_all = model.condition(&z_src_all, &instr).map_err(fail)?;
    let [c, h, w] = m.latent_shape;
    let (edit_w_all, keep_w_all) =
        downsample_mask(&t_all.edit_masks.to_device(device), h, w, cfg.mask_down);
    let x0_all = t_all.x0.to_device(device);
    let sigmas: Vec<Vec<f64>> = (0..m.samples.len())
        .map(|i| Vec::<f64>::try_from(t_all.sigmas.get(i as i64)).map_err(|e| e.to_string()))
        .collect::<Result<_, String>>()
        .map_err(fail)?;

    let used: Vec<usize> = rw
        .samples
        .iter()
        .filter(|s| s.r.is_some())
        .map(|s| s.index)
        .filter(|i| set.only.is_none_or(|o| o.contains(i)))
        .collect();
    let params = model.adapter_variables(THETA).map_err(fail)?;
    for v in params.values() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let all_chunks: Vec<&[usize]> = used.chunks(set.micro_batch).collect();
    let (r_shard, n_shard) = set.shard;
    let chunks: Vec<&[usize]> = all_chunks
        .iter()
        .enumerate()
        .filter(|(c, _)| c % n_shard.max(1) == r_shard)
        .map(|(_, c)| *c)
        .collect();
    // Each micro-batch's loss is a mean over its samples: weighing it by its share of the
    // samples makes the accumulated gradient the mean over all samples, whatever the
    // micro-batch size (a short last micro-batch must not weigh as much as a full one).
    let n_used = used.len().max(1) as f64;
    let slots: BTreeMap<usize, Vec<usize>> = used
        .iter()
        .map(|&i| (i, timestep_slots(set.seed, step, i, steps, n_t)))
        .collect();
    let mut sums = TermSums::default();
    let total = (chunks.len() * n_t) as u64;
    let mut done = 0u64;
    for chunk in &chunks {
        let idx_s: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
        let idx_g: Vec<i64> = chunk.iter().map(|&i| m.samples[i].group as i64).collect();
        let is = Tensor::from_slice(&idx_s).to_device(device);
        let ig = Tensor::from_slice(&idx_g).to_device(device);
        let cond = cond_all.select(&ig);
        let x0 = x0_all.index_select(0, &is);
        let z_src = z_src_all.index_select(0, &ig);
        let edit_w = edit_w_all.index_select(0, &ig);
        let keep_w = keep_w_all.index_select(0, &ig);
        let r_vals: Vec<f64> = chunk
            .iter()
            .map(|&i| rw.samples[i].r.unwrap_or(0.5))
            .collect();
        let r = Tensor::from_slice(&r_vals)
            .to_kind(Kind::Float)
            .to_device(device);
        let valid = Tensor::ones([chunk.len() as i64], (Kind::Float, device));
        let scale = chunk.len() as f64 / (n_used * n_t as f64);
        for j in 0..n_t {
            let tv: Vec<f64> = chunk.iter().map(|&i| sigmas[i][slots[&i][j]]).collect();
            let t = Tensor::from_slice(&tv)
                .to_kind(Kind::Float)
                .to_device(device);
            let eps: Vec<Tensor> = chunk
                .iter()
                .map(|&i| {
                    normal_tensor(
                        &mut StreamRng::derive(set.seed, &format!("nft/{step}/eps/{i}/{j}")),
                        &[c, h, w],
                        Kind::Float,
                        tch::Device::Cpu,
                    )
                })
                .collect();
            let eps = Tensor::stack(&eps, 0).to_device(device);
            let tb = t.view([-1, 1, 1, 1]);
            let x_t = (1.0 - &tb) * &x0 + &tb * &eps;
            let (v_old, v_ref) = tch::no_grad(|| -> Result<(Tensor, Tensor), String> {
                let v_old = model
                    .velocity_with(&x_t, &t, &cond, &ActiveAdapter::theta_old(), guidance)
                    .map_err(|e| e.to_string())?;
                let v_ref = model
                    .velocity_with(&x_t, &t, &cond, &ActiveAdapter::Off, guidance)
                    .map_err(|e| e.to_string())?;
                Ok((v_old, v_ref))
            })
            .map_err(fail)?;
            let fwd = model
                .velocity_for_training(
                    &x_t,
                    &t,
                    &cond,
                    &ActiveAdapter::theta(),
                    guidance,
                    set.gradient_checkpointing,
                )
                .map_err(fail)?;
            let v_theta = fwd.velocity.shallow_clone();
            let terms = nft_loss(
                &NftBatch {
                    x0: &x0,
                    x_t: &x_t,
                    t: &t,
                    v_old: &v_old,
                    v_theta: &v_theta,
                    v_ref: &v_ref,
                    r: &r,
                    valid: &valid,
                    z_src: &z_src,
                    edit_w: &edit_w,
                    keep_w: &keep_w,
                },
                &cfg,
            );
            fwd.backward(&(&terms.loss * scale)).map_err(fail)?;
            // Sums weighted by the micro-batch's samples, as the gradient is.
            let wt = chunk.len() as f64;
            let f = |x: &Tensor| wt * x.double_value(&[]);
            sums.n += wt;
            sums.loss += f(&terms.loss);
            sums.policy += f(&terms.policy);
            sums.kl += f(&terms.kl);
            sums.ner += f(&terms.ner);
            sums.er += f(&terms.er);
            sums.ner_active += wt * terms.ner_active;
            sums.er_active += wt * terms.er_active;
            done += 1;
            on_step(done, total, sums.loss / sums.n)?;
        }
    }

    let micro_batches = chunks.len();
    drop(chunks);
    drop(all_chunks);
    Ok(Accumulated {
        sums,
        used,
        timesteps: n_t,
        micro_batches,
    })
}

impl TermSums {
    /// Adds another replica's sums.
    pub fn add(&mut self, o: &TermSums) {
        self.n += o.n;
        self.loss += o.loss;
        self.policy += o.policy;
        self.kl += o.kl;
        self.ner += o.ner;
        self.er += o.er;
        self.ner_active += o.ner_active;
        self.er_active += o.er_active;
    }
}

/// [`accumulate`] data-parallel over `models` (replicas with the same adapters, each on its
/// device): replica r takes micro-batches r, r + R, …, in its own thread; the other replicas'
/// θ gradients are then added into `models[0]`'s (copied to its device), so `models[0]` holds
/// the gradient one replica would have accumulated (up to float reordering), and the sums are
/// those of all micro-batches. A replica that fails fails the whole call (after every thread
/// has ended). `on_step` sees the progress of all replicas.
pub fn accumulate_parallel(
    models: &mut [&mut dyn EditPolicy],
    m: &RolloutManifest,
    t_all: &RolloutTensors,
    rw: &RewardsFile,
    sets: &[Settings],
    on_step: &mut (dyn FnMut(u64, u64, f64) -> Result<(), TaskError> + Send),
) -> Result<Accumulated, TaskError> {
    let n = models.len();
    if n == 1 {
        return accumulate(&mut *models[0], m, t_all, rw, &sets[0], on_step);
    }
    let progress = std::sync::Mutex::new((on_step, vec![(0u64, 0u64, 0.0f64, 0.0f64); n]));
    // A replica that fails stops the others at their next step.
    let abort = std::sync::atomic::AtomicBool::new(false);
    const STOPPED: &str = "stopped: another data-parallel replica failed";
    let results: Vec<Result<Accumulated, TaskError>> = std::thread::scope(|s| {
        let handles: Vec<_> = models
            .iter_mut()
            .zip(sets)
            .enumerate()
            .map(|(r, (model, set))| {
                let (progress, abort) = (&progress, &abort);
                // Tensors are not `Sync`: each replica reads its own handles of them.
                let t_r = RolloutTensors {
                    x0: t_all.x0.shallow_clone(),
                    source_latents: t_all.source_latents.shallow_clone(),
                    edit_masks: t_all.edit_masks.shallow_clone(),
                    sigmas: t_all.sigmas.shallow_clone(),
                };
                s.spawn(move || {
                    let mut report = |done: u64, total: u64, mean: f64| {
                        if abort.load(std::sync::atomic::Ordering::Relaxed) {
                            return Err(TaskError::Failed(STOPPED.into()));
                        }
                        let mut g = progress.lock().unwrap_or_else(|p| p.into_inner());
                        g.1[r] = (done, total, mean * done as f64, done as f64);
                        let (d, t, l, w) = g.1.iter().fold((0, 0, 0.0, 0.0), |a, x| {
                            (a.0 + x.0, a.1 + x.1, a.2 + x.2, a.3 + x.3)
                        });
                        (g.0)(d, t.max(d), if w > 0.0 { l / w } else { 0.0 })
                    };
                    let r = accumulate(&mut **model, m, &t_r, rw, set, &mut report);
                    if r.is_err() {
                        abort.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(TaskError::Failed("a data-parallel replica panicked".into()))
                })
            })
            .collect()
    });
    // The first replica's own error (not one stopped because another failed).
    let stopped = |e: &TaskError| matches!(e, TaskError::Failed(m) if m == STOPPED);
    if let Some((r, e)) = results
        .iter()
        .enumerate()
        .find_map(|(r, x)| x.as_ref().err().filter(|e| !stopped(e)).map(|e| (r, e)))
    {
        return Err(match e {
            TaskError::Failed(msg) => {
                TaskError::Failed(format!("data-parallel replica {r} of {n}: {msg}"))
            }
            TaskError::Cancelled => TaskError::Cancelled,
            other => TaskError::Failed(format!("data-parallel replica {r} of {n}: {other}")),
        });
    }
    let mut accs = Vec::with_capacity(n);
    for res in results {
        accs.push(res?);
    }
    // The all-reduce: every replica's θ gradient into replica 0's.
    let main = models[0].adapter_variables(THETA).map_err(fail)?;
    tch::no_grad(|| -> Result<(), TaskError> {
        for model in models[1..].iter() {
            let vars = model.adapter_variables(THETA).map_err(fail)?;
            for (k, v) in &main {
                let g = vars.get(k).map(|o| o.grad()).filter(|g| g.defined());
                let Some(g) = g else { continue };
                let mut mg = v.grad();
                if mg.defined() {
                    let _ = mg.g_add_(&g.to_device(v.device()));
                } else {
                    return Err(fail(format!(
                        "data-parallel: replica 0 has no gradient for `{k}`"
                    )));
                }
            }
        }
        Ok(())
    })?;
    let mut out = accs.remove(0);
    for a in &accs {
        out.sums.add(&a.sums);
        out.micro_batches += a.micro_batches;
    }
    Ok(out)
}
