//! `nft-train`: one DiffusionNFT policy update with CoCoEdit's region regularisers
//! (method-spec §4, Alg. 1 lines 11–24).
//!
//! Inputs: `model` (base), `state` (RL state or the base dir at iteration 0), `rollouts`,
//! `rewards`. Output `state`: θ after one AdamW step, θ_old unchanged (`ema` updates it),
//! moments, counters (`step` and `iteration` + 1), reward-normalisation record, banned
//! groups, history.
//!
//! For every sample in the loss (valid, not banned) and each of `max(1, ⌊timestep_fraction ·
//! steps⌋)` timesteps taken from a seeded permutation of the rollout's own σ schedule
//! (terminal 0 excluded; stream `nft/<step>/perm/<sample>`), with fresh noise ε (stream
//! `nft/<step>/eps/<sample>/<slot>`): `x_t = (1 − t)·x0 + t·ε`; `v_old` (θ_old) and `v_ref`
//! (adapters off) without gradient, `v_θ` with; [`nft_loss`]; the backward of each micro-batch
//! and timestep is scaled by `1/(micro-batches × timesteps)`. Then the gradient is clipped to
//! `max_grad_norm` and AdamW takes one step. The loss terms are reported as metrics.

use super::adamw::{AdamWConfig, clip_grad_norm};
use super::reward::RewardsFile;
use super::state::{self, BannedGroup, NormRecord};
use super::{
    bad, check_input_names, check_lora, check_threads, d_alpha, d_rank, d_threads, device_of, fail,
    lora_config, set_threads,
};
use crate::artifacts::rollouts::{RolloutManifest, RolloutTensors};
use crate::models::random::normal_tensor;
use crate::models::{ActiveAdapter, EditPolicy, THETA, Trainable};
use crate::nft::{
    Anchor, Distance, MaskDown, NftBatch, NftConfig, TauMinus, downsample_mask, nft_loss,
};
use crate::rng::StreamRng;
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NftTrainParams {
    /// Seed of the timestep permutations and the training noise.
    #[serde(default)]
    pub seed: u64,
    // --- NftConfig (method-spec §4) ---
    #[serde(default = "d_beta")]
    pub beta: f64,
    #[serde(default = "d_adv_clip")]
    pub adv_clip: f64,
    #[serde(default = "d_kl")]
    pub kl_weight: f64,
    #[serde(default)]
    pub lambda_ner: f64,
    #[serde(default)]
    pub lambda_er: f64,
    #[serde(default = "d_tau_plus")]
    pub tau_plus: f64,
    /// `{mode: adaptive}` (default) or `{mode: fixed, value: 0.03}`.
    #[serde(default)]
    pub tau_minus: TauMinus,
    #[serde(default)]
    pub distance: Distance,
    #[serde(default)]
    pub anchor: Anchor,
    #[serde(default)]
    pub mask_down: MaskDown,
    #[serde(default = "yes")]
    pub ner: bool,
    #[serde(default = "yes")]
    pub er: bool,
    // --- optimiser ---
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    #[serde(default = "d_clip")]
    pub max_grad_norm: f64,
    /// Fraction of the rollout's steps trained per sample: `max(1, ⌊f·steps⌋)` timesteps.
    #[serde(default = "d_frac")]
    pub timestep_fraction: f64,
    /// Samples per forward/backward.
    #[serde(default = "d_micro")]
    pub micro_batch: usize,
    // --- adapters of a fresh state ---
    #[serde(default = "d_rank")]
    pub lora_rank: i64,
    #[serde(default = "d_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_init_seed: u64,
    #[serde(default = "d_threads")]
    pub threads: usize,
}

fn d_beta() -> f64 {
    1.0
}
fn d_adv_clip() -> f64 {
    5.0
}
fn d_kl() -> f64 {
    1e-4
}
fn d_tau_plus() -> f64 {
    1e-3
}
fn yes() -> bool {
    true
}
fn d_lr() -> f64 {
    3e-4
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_wd() -> f64 {
    1e-4
}
fn d_eps() -> f64 {
    1e-8
}
fn d_clip() -> f64 {
    1.0
}
fn d_frac() -> f64 {
    0.99
}
fn d_micro() -> usize {
    16
}

impl NftTrainParams {
    pub fn nft_config(&self) -> NftConfig {
        NftConfig {
            beta: self.beta,
            adv_clip: self.adv_clip,
            kl_weight: self.kl_weight,
            lambda_ner: self.lambda_ner,
            lambda_er: self.lambda_er,
            tau_plus: self.tau_plus,
            tau_minus: self.tau_minus,
            distance: self.distance,
            anchor: self.anchor,
            mask_down: self.mask_down,
            ner: self.ner,
            er: self.er,
        }
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
            eps: self.eps,
        }
    }
}

fn check(p: &NftTrainParams) -> Result<(), ParamError> {
    let pos = |path: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            bad(path, format!("must be positive, got {v}"))
        }
    };
    let nonneg = |path: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            bad(path, format!("must be a finite number ≥ 0, got {v}"))
        }
    };
    pos("beta", p.beta)?;
    pos("adv_clip", p.adv_clip)?;
    nonneg("kl_weight", p.kl_weight)?;
    nonneg("lambda_ner", p.lambda_ner)?;
    nonneg("lambda_er", p.lambda_er)?;
    nonneg("tau_plus", p.tau_plus)?;
    if let TauMinus::Fixed(v) = p.tau_minus {
        nonneg("tau_minus.value", v)?;
    }
    pos("lr", p.lr)?;
    for (k, v) in [("beta1", p.beta1), ("beta2", p.beta2)] {
        if !(0.0..1.0).contains(&v) {
            return bad(k, format!("must be in [0, 1), got {v}"));
        }
    }
    nonneg("weight_decay", p.weight_decay)?;
    pos("eps", p.eps)?;
    pos("max_grad_norm", p.max_grad_norm)?;
    if !(p.timestep_fraction > 0.0 && p.timestep_fraction <= 1.0) {
        return bad(
            "timestep_fraction",
            format!("must be in (0, 1], got {}", p.timestep_fraction),
        );
    }
    if p.micro_batch == 0 {
        return bad("micro_batch", "must be at least 1");
    }
    check_lora(p.lora_rank, p.lora_alpha)?;
    check_threads(p.threads)
}

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

/// Running sums of the per-(micro-batch, timestep) terms.
#[derive(Default)]
struct TermSums {
    n: f64,
    loss: f64,
    policy: f64,
    kl: f64,
    ner: f64,
    er: f64,
    ner_active: f64,
    er_active: f64,
}

pub struct NftTrain;

impl TaskKind for NftTrain {
    fn name(&self) -> &'static str {
        "nft-train"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "RL update: DiffusionNFT loss + region regularisers, one AdamW step on θ (state → state)"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<NftTrainParams>(params)?;
        check(&p)?;
        Ok(v)
    }
    fn check_inputs(&self, _params: &Value, inputs: &[&str]) -> Result<(), String> {
        check_input_names(
            "nft-train",
            inputs,
            &["model", "state", "rollouts", "rewards"],
        )
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["state".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: NftTrainParams = ctx.params()?;
        set_threads(p.threads);
        let device = device_of(&ctx.cuda_ordinals);
        let model_dir = ctx.input_path("model")?;
        let state_dir = ctx.input_path("state")?;
        let rdir = ctx.input_path("rollouts")?;
        let rewards_path = ctx.input_path("rewards")?;
        let lora = lora_config(p.lora_rank, p.lora_alpha, p.lora_init_seed);
        let mut st = state::load(&model_dir, &state_dir, device, &lora).map_err(fail)?;
        let m = RolloutManifest::read(&rdir).map_err(fail)?;
        let rw = RewardsFile::read(&rewards_path).map_err(fail)?;

        // The inputs must belong together.
        if m.iteration != st.info.iteration {
            return Err(fail(format!(
                "the rollouts are from iteration {} but the state is at iteration {}",
                m.iteration, st.info.iteration
            )));
        }
        let theta_old = state::theta_old_digest(&state_dir).map_err(fail)?;
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
        let steps = m.sampler.steps;
        let n_t = train_timesteps(steps, p.timestep_fraction);
        let step = st.info.step;
        let cfg = p.nft_config();

        // Conditioning of every group on the device.
        let model = &mut st.model;
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
            .collect();
        let params = model.adapter_variables(THETA).map_err(fail)?;
        for v in params.values() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let chunks: Vec<&[usize]> = used.chunks(p.micro_batch).collect();
        let scale = 1.0 / (chunks.len().max(1) * n_t) as f64;
        let slots: BTreeMap<usize, Vec<usize>> = used
            .iter()
            .map(|&i| (i, timestep_slots(p.seed, step, i, steps, n_t)))
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
            for j in 0..n_t {
                ctx.check_cancelled()?;
                let tv: Vec<f64> = chunk.iter().map(|&i| sigmas[i][slots[&i][j]]).collect();
                let t = Tensor::from_slice(&tv)
                    .to_kind(Kind::Float)
                    .to_device(device);
                let eps: Vec<Tensor> = chunk
                    .iter()
                    .map(|&i| {
                        normal_tensor(
                            &mut StreamRng::derive(p.seed, &format!("nft/{step}/eps/{i}/{j}")),
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
                        .velocity_with(&x_t, &t, &cond, &ActiveAdapter::theta_old())
                        .map_err(|e| e.to_string())?;
                    let v_ref = model
                        .velocity_with(&x_t, &t, &cond, &ActiveAdapter::Off)
                        .map_err(|e| e.to_string())?;
                    Ok((v_old, v_ref))
                })
                .map_err(fail)?;
                let v_theta = model
                    .velocity_with(&x_t, &t, &cond, &ActiveAdapter::theta())
                    .map_err(fail)?;
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
                (&terms.loss * scale).backward();
                let f = |x: &Tensor| x.double_value(&[]);
                sums.n += 1.0;
                sums.loss += f(&terms.loss);
                sums.policy += f(&terms.policy);
                sums.kl += f(&terms.kl);
                sums.ner += f(&terms.ner);
                sums.er += f(&terms.er);
                sums.ner_active += terms.ner_active;
                sums.er_active += terms.er_active;
                done += 1;
                ctx.progress(done, total, format!("loss {:.4}", sums.loss / sums.n));
            }
        }

        // Clip and step (no step when nothing is in the loss).
        let grads: BTreeMap<String, Tensor> = params
            .iter()
            .map(|(k, v)| {
                let g = v.grad();
                (k.clone(), if g.defined() { g } else { v.zeros_like() })
            })
            .collect();
        let updated = !used.is_empty();
        let (norm, coef) = if updated {
            clip_grad_norm(&grads, p.max_grad_norm)
        } else {
            (0.0, 1.0)
        };
        st.optimizer.cfg = p.adamw();
        if updated {
            st.optimizer.step(&params, &grads);
        } else {
            ctx.log(format!(
                "iteration {}: no sample in the loss ({} samples, {} banned groups); no optimiser step",
                m.iteration,
                m.samples.len(),
                rw.banned.len()
            ));
        }
        for v in params.values() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        st.model.set_trainable(Trainable::Nothing).map_err(fail)?;

        let mean = |x: f64| if sums.n > 0.0 { x / sums.n } else { 0.0 };
        let stats = json!({
            "iteration": m.iteration,
            "step": step + 1,
            "samples": m.samples.len(),
            "used": used.len(),
            "timesteps": n_t,
            "micro_batches": chunks.len(),
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
        info.step = step + 1;
        info.iteration = m.iteration + 1;
        let out = ctx.workdir()?.join("state");
        st.save(&out).map_err(fail)?;
        ctx.output_dir("state", &out)
    }
}
