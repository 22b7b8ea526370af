//! `nft-train`: one DiffusionNFT policy update with CoCoEdit's region regularisers
//! (method-spec §4, Alg. 1 lines 11–24).
//!
//! Inputs: `model` (base), `state` (RL state or the base dir at iteration 0), `rollouts`,
//! `rewards`, optional `prompts` (cached prompt encodings, as `rollout` takes them). Output `state`: θ after one AdamW step, θ_old unchanged (`ema` updates it),
//! moments, counters (`step` and `iteration` + 1), reward-normalisation record, banned
//! groups, history.
//!
//! The gradient is [`crate::rl::nft_train::accumulate`]'s; then it is clipped to
//! `max_grad_norm` and AdamW takes one step. The loss terms are reported as metrics.

use super::{bad, check_lora, check_threads};
use crate::nft::{Anchor, Distance, MaskDown, NftConfig, TauMinus};
use crate::rl::{DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK};
use cocoflow_engine::kind::{Input, Kind, ParamError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NftTrainParams {
    /// Seed of the timestep permutations and the training noise.
    pub seed: u64,
    // --- NftConfig (method-spec §4) ---
    pub beta: f64,
    /// The loss's `adv_clip` (policy term × adv_clip/β). It is the same number as the reward
    /// normaliser's `adv_clip` (`Z = adv_clip·(std + 1e−4)`, method-spec §3–4), so by default
    /// (`null`) it is read from the `rewards` input; a value given here must equal it (the
    /// task fails naming both). With the `constant` normaliser it must be given.
    pub adv_clip: Option<f64>,
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
    /// AdamW steps per iteration. 1 (method-spec §4): the gradient of every sample in the loss
    /// is accumulated and one step taken. S > 1: the samples in the loss are dealt, after a
    /// seeded shuffle (stream `nft/<first step>/split`), into S parts of near-equal size, and
    /// each part's accumulated gradient is clipped and stepped in turn (step numbers
    /// `step … step + S − 1`, which also name the noise streams), as the flow-GRPO family of
    /// reference trainers does with `gradient_accumulation_steps = num_batches_per_epoch / S`
    /// (S = 2 there). Same forwards and backwards per iteration, S times the updates; θ_old stays
    /// fixed within the iteration, so later parts are slightly off-policy. The state's `step`
    /// counts optimiser steps, so the EMA's η (`ema`, method-spec §5) grows S times faster per
    /// iteration, as the reference trainers' global step does. Left out of the cache key while 1.
    #[serde(skip_serializing_if = "super::is_one")]
    pub optimizer_steps: usize,
    /// θ's forward with block-wise gradient checkpointing (activations recomputed in the
    /// backward: less memory, one more forward), where the backend has it (FLUX.1 Kontext);
    /// the gradients are the plain forward's. Backends without it (tiny-kontext) run the plain
    /// forward. Left out of the cache key while false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
    /// Data-parallel replicas when the task runs on the CPU (a GPU task has one replica per
    /// granted GPU): the micro-batches are dealt out to this many model replicas, each in its
    /// own thread, and their θ gradients summed before the optimiser step — the same step as
    /// one replica's up to float reordering. Left out of the cache key while 1.
    #[serde(skip_serializing_if = "super::is_one")]
    pub cpu_replicas: usize,
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
            adv_clip: None,
            kl_weight: 1e-4,
            lambda_ner: 0.2,
            lambda_er: 0.2,
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
            optimizer_steps: 1,
            gradient_checkpointing: false,
            cpu_replicas: 1,
            lora_rank: DEFAULT_LORA_RANK,
            lora_alpha: DEFAULT_LORA_ALPHA,
            lora_init_seed: 0,
            threads: 1,
        }
    }
}

impl NftTrainParams {
    /// The loss settings, with `adv_clip` resolved against the reward normaliser that made
    /// the `rewards` input (its `adv_clip` under `global-std`, `None` under `constant`).
    pub fn nft_config(&self, reward_adv_clip: Option<f64>) -> Result<NftConfig, String> {
        let adv_clip = match (self.adv_clip, reward_adv_clip) {
            (None, Some(r)) => r,
            (Some(a), Some(r)) if a == r => a,
            (Some(a), Some(r)) => {
                return Err(format!(
                    "`adv_clip` is {a} but the `rewards` input was normalised with \
                     `normalizer.adv_clip` {r}: they are one parameter (method-spec §3–4); \
                     set it on the `reward` task and leave `adv_clip` unset here"
                ));
            }
            (Some(a), None) => a,
            (None, None) => {
                return Err(
                    "the `rewards` input used the `constant` normaliser, which has no \
                     `adv_clip`: set `adv_clip` (the loss's adv_clip/β factor) explicitly"
                        .into(),
                );
            }
        };
        Ok(NftConfig {
            beta: self.beta,
            adv_clip,
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
        })
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
    super::check_cpu_replicas(p.cpu_replicas)?;
    if let Some(a) = p.adv_clip {
        pos("adv_clip", a)?;
    }
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
    if p.optimizer_steps == 0 || p.optimizer_steps > 1024 {
        return bad(
            "optimizer_steps",
            format!("must be in 1..=1024, got {}", p.optimizer_steps),
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
    const VERSION: u32 = 2;
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
        Input::optional(
            "prompts",
            "cached prompt encodings (`encode-prompts`): the text encoders are not loaded",
        ),
    ]);
    const OUTPUTS: &'static [&'static str] = &["state"];

    fn validate(&self, p: &NftTrainParams) -> Result<(), ParamError> {
        check(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15, fix 6: the loss's adv_clip is the reward normaliser's, not a second number.
    #[test]
    fn adv_clip_is_read_from_the_rewards_and_a_different_one_is_refused() {
        let p = NftTrainParams::default();
        assert_eq!(p.nft_config(Some(3.0)).unwrap().adv_clip, 3.0);
        let p = NftTrainParams {
            adv_clip: Some(5.0),
            ..NftTrainParams::default()
        };
        assert_eq!(p.nft_config(Some(5.0)).unwrap().adv_clip, 5.0);
        let e = p.nft_config(Some(3.0)).unwrap_err();
        assert!(e.contains("`adv_clip` is 5") && e.contains("3"), "{e}");
        assert_eq!(p.nft_config(None).unwrap().adv_clip, 5.0);
        let e = NftTrainParams::default().nft_config(None).unwrap_err();
        assert!(e.contains("constant"), "{e}");
    }

    /// Issue 15, fix 6: the regularisers are on by default, so their weights are not 0 (a
    /// silent no-op); the defaults are the paper's FLUX.1 Kontext values (method-spec §4).
    #[test]
    fn default_regularisers_have_nonzero_weights() {
        let c = NftTrainParams::default().nft_config(Some(5.0)).unwrap();
        assert!(c.ner && c.er);
        assert_eq!((c.lambda_ner, c.lambda_er), (0.2, 0.2));
    }
}
