//! `rollout`: K samples per prompt from θ_old (method-spec §6, Alg. 1 lines 3–5).
//!
//! Inputs: `model` (base model dir), `state` (RL state, or the base model dir at iteration
//! 0), `data` (dataset in the manifest format; records need an `edit_mask`), optional `prompts`
//! (the `encode-prompts` artifact: instructions conditioned on its encodings, the model loaded
//! without its text encoders).
//! Output `rollouts`: the [`crate::artifacts::rollouts`] artifact. The iteration index comes
//! from the state; prompts and per-sample seeds from [`crate::rl::rollout`]. Shards the
//! samples across the granted GPUs (one model copy each). Resources: `gpus` (optional).

use super::{bad, check_threads};
use crate::sampling::{SamplerConfig, SamplerKind};
use cocoflow_engine::kind::{Input, Kind, ParamError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutParams {
    /// Seed of prompt selection and sample noise.
    pub seed: u64,
    /// Prompts (groups) per iteration (paper: 24).
    pub groups: usize,
    /// Samples per prompt (paper: 12).
    pub k: usize,
    /// `dpm2` (default) or `euler`.
    pub sampler: SamplerKind,
    /// Sampler steps N (paper: 10).
    pub steps: usize,
    /// Classifier-free guidance scale (none = off; the tiny model has no guidance).
    pub guidance: Option<f64>,
    /// Samples per forward batch.
    pub batch: usize,
    /// libtorch intra-op threads (CPU determinism depends on it).
    pub threads: usize,
    /// Data-parallel replicas when the task runs on the CPU (a GPU task has one replica per
    /// granted GPU): the samples are split into contiguous shards (multiples of `batch`, so
    /// every sampler batch holds the same samples as with one replica), one model replica
    /// and thread each; per-sample seeds make the rollouts the same bytes as one replica's.
    /// Left out of the cache key while 1.
    #[serde(skip_serializing_if = "super::is_one")]
    pub cpu_replicas: usize,
}

impl Default for RolloutParams {
    fn default() -> Self {
        RolloutParams {
            seed: 0,
            groups: 24,
            k: 12,
            sampler: SamplerKind::default(),
            steps: 10,
            guidance: None,
            batch: 32,
            threads: 1,
            cpu_replicas: 1,
        }
    }
}

impl RolloutParams {
    pub fn sampler_config(&self) -> SamplerConfig {
        SamplerConfig {
            sampler: self.sampler,
            steps: self.steps,
            guidance: self.guidance,
        }
    }
}

pub struct Rollout;

impl Kind for Rollout {
    type Params = RolloutParams;
    const NAME: &'static str = "rollout";
    const VERSION: u32 = 2;
    const DESCRIBE: &'static str =
        "RL rollouts: K samples per prompt from θ_old (x0, σ schedule, seeds, decoded images)";
    const INPUTS: Option<&'static [Input]> = Some(&[
        Input::required("model", "the base model directory"),
        Input::required(
            "state",
            "the RL state (or the base model directory at iteration 0)",
        ),
        Input::required("data", "a dataset whose records have an `edit_mask`"),
        Input::optional(
            "prompts",
            "cached prompt encodings (`encode-prompts`): the text encoders are not loaded",
        ),
    ]);
    const OUTPUTS: &'static [&'static str] = &["rollouts"];

    fn validate(&self, p: &RolloutParams) -> Result<(), ParamError> {
        if p.groups == 0 {
            return bad("groups", "must be at least 1");
        }
        super::check_cpu_replicas(p.cpu_replicas)?;
        if p.k == 0 {
            return bad("k", "must be at least 1");
        }
        if !(1..=1000).contains(&p.steps) {
            return bad("steps", format!("must be in 1..=1000, got {}", p.steps));
        }
        if p.batch == 0 {
            return bad("batch", "must be at least 1");
        }
        if let Some(g) = p.guidance
            && !(g.is_finite() && g > 0.0)
        {
            return bad("guidance", format!("must be a positive number, got {g}"));
        }
        check_threads(p.threads)
    }
}
