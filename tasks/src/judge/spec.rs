//! Which judge a task uses, as it appears in workflow params:
//! `judge: {kind: rule}` (default; `min_area_fraction`, `variant`) or
//! `judge: {kind: openai, base_url: http://127.0.0.1:8000/v1, model: Qwen2.5-VL-72B, ...}`
//! (every field of [`OpenAiConfig`]). The OpenAI-compatible judge caches its answers in the
//! engine's store (namespace `judge`), so a re-run never pays twice.

use super::{Judge, OpenAiConfig, OpenAiJudge, ScoreVariant};
use crate::net::StoreCache;
use crate::synth::RuleJudge;
use crate::synth::RuleJudgeConfig;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Which judge gives r_mllm / the benchmark's judge scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum JudgeParams {
    /// The deterministic judge of the synthetic edit world.
    Rule {
        #[serde(default = "d_min_area")]
        min_area_fraction: f64,
        #[serde(default)]
        variant: ScoreVariant,
    },
    /// An OpenAI-compatible `/v1/chat/completions` server (`base_url`, `model`,
    /// `api_key_env`, ...: [`OpenAiConfig`]).
    Openai(OpenAiConfig),
}

fn d_min_area() -> f64 {
    0.0025
}

impl Default for JudgeParams {
    fn default() -> Self {
        JudgeParams::Rule {
            min_area_fraction: d_min_area(),
            variant: ScoreVariant::Mean,
        }
    }
}

impl JudgeParams {
    /// Builds the judge; `store` backs the response cache of remote judges.
    pub fn build(&self, store: &cocoflow_engine::store::Store) -> Result<Arc<dyn Judge>, String> {
        Ok(match self {
            JudgeParams::Rule {
                min_area_fraction,
                variant,
            } => Arc::new(RuleJudge::new(RuleJudgeConfig {
                min_area_fraction: *min_area_fraction,
                variant: *variant,
            })),
            JudgeParams::Openai(cfg) => Arc::new(
                OpenAiJudge::new(cfg.clone())
                    .map_err(|e| format!("`judge`: {e}"))?
                    .with_cache(Arc::new(StoreCache::new(store.clone()))),
            ),
        })
    }
}
