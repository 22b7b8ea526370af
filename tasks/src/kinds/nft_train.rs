//! `nft-train`: one DiffusionNFT policy update with CoCoEdit's region regularisers
//! (method-spec §4, Alg. 1 lines 11–24).
//!
//! Inputs: `model` (base), `state` (RL state or the base dir at iteration 0), `rollouts`,
//! `rewards`. Output `state`: θ after one AdamW step, θ_old unchanged (`ema` updates it),
//! moments, counters (`step` and `iteration` + 1), reward-normalisation record, banned
//! groups, history.
//!
//! The gradient is [`crate::rl::nft_train::accumulate`]'s; then it is clipped to
//! `max_grad_norm` and AdamW takes one step. The loss terms are reported as metrics.

use super::{bad, check_lora, check_threads, device_of, lora_config, set_threads};
use crate::artifacts::rewards::RewardsFile;
use crate::artifacts::rollouts::{RolloutManifest, RolloutTensors};
use crate::error::fail;
use crate::models::{EditPolicy, THETA, Trainable};
use crate::nft::{Anchor, Distance, MaskDown, NftConfig, TauMinus};
use crate::rl::adamw::{AdamWConfig, clip_grad_norm};
use crate::rl::nft_train;
use crate::rl::state::{self, BannedGroup, NormRecord};
use crate::rl::{DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK};
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use tch::Tensor;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NftTrainParams {
    /// Seed of the timestep permutations and the training noise.
    pub seed: u64,
    // --- NftConfig (method-spec §4) ---
    pub beta: f64,
    pub adv_clip: f64,
    pub kl_weight: f64,
    pub lambda_ner: f64,
    pub lambda_er: f64,
    pub tau_plus: f64,
    /// `{mode: adaptive}` (default) or `{mode: fixed, value: 0.03}`.
    pub tau_minus: TauMinus,
    pub distance: Distance,
    pub anchor: Anchor,
    pub mask_down: MaskDown,
    pub ner: bool,
    pub er: bool,
    // --- optimiser ---
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    pub max_grad_norm: f64,
    /// Fraction of the rollout's steps trained per sample: `max(1, ⌊f·steps⌋)` timesteps.
    pub timestep_fraction: f64,
    /// Samples per forward/backward.
    pub micro_batch: usize,
    // --- adapters of a fresh state ---
    pub lora_rank: i64,
    pub lora_alpha: f64,
    pub lora_init_seed: u64,
    pub threads: usize,
}

impl Default for NftTrainParams {
    fn default() -> Self {
        NftTrainParams {
            seed: 0,
            beta: 1.0,
            adv_clip: 5.0,
            kl_weight: 1e-4,
            lambda_ner: 0.0,
            lambda_er: 0.0,
            tau_plus: 1e-3,
            tau_minus: TauMinus::default(),
            distance: Distance::default(),
            anchor: Anchor::default(),
            mask_down: MaskDown::default(),
            ner: true,
            er: true,
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 1e-4,
            eps: 1e-8,
            max_grad_norm: 1.0,
            timestep_fraction: 0.99,
            micro_batch: 16,
            lora_rank: DEFAULT_LORA_RANK,
            lora_alpha: DEFAULT_LORA_ALPHA,
            lora_init_seed: 0,
            threads: 1,
        }
    }
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

pub struct NftTrain;

impl Kind for NftTrain {
    type Params = NftTrainParams;
    const NAME: &'static str = "nft-train";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str =
        "RL update: DiffusionNFT loss + region regularisers, one AdamW step on θ (state → state)";
    const INPUTS: Option<&'static [Input]> = Some(&[
        Input::required("model", "the base model directory"),
        Input::required(
            "state",
            "the RL state (or the base model directory at iteration 0)",
        ),
        Input::required("rollouts", "the `rollout` kind's output"),
        Input::required("rewards", "the `reward` kind's output for those rollouts"),
    ]);
    const OUTPUTS: &'static [&'static str] = &["state"];

    fn validate(&self, p: &NftTrainParams) -> Result<(), ParamError> {
        check(p)
    }

    fn run(&self, p: NftTrainParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        set_threads(p.threads);
        let device = device_of(&ctx.cuda_ordinals);
        let model_dir = ctx.input_path("model")?;
        let state_dir = ctx.input_path("state")?;
        let rdir = ctx.input_path("rollouts")?;
        let rewards_path = ctx.input_path("rewards")?;
        let lora = lora_config(p.lora_rank, p.lora_alpha, p.lora_init_seed);
        let mut st = state::load(&model_dir, &state_dir, device, &lora)?;
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
        let cfg = p.nft_config();

        let acc = nft_train::accumulate(
            &mut st.model,
            &m,
            &t_all,
            &rw,
            &nft_train::Settings {
                cfg: &cfg,
                seed: p.seed,
                step,
                timestep_fraction: p.timestep_fraction,
                micro_batch: p.micro_batch,
                device,
            },
            &mut |done, total, loss| {
                ctx.progress(done, total, format!("loss {loss:.4}"));
                ctx.check_cancelled()
            },
        )?;
        let (sums, used, n_t) = (acc.sums, acc.used, acc.timesteps);
        let params = st.model.adapter_variables(THETA)?;

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
            "micro_batches": acc.micro_batches,
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
        st.save(&out)?;
        ctx.output_dir("state", &out)
    }
}
