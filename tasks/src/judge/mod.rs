//! The MLLM judge (method-spec §2): trait, prompts, OpenAI-compatible client, rule judge, server.
//!
//! - [`Judge`]: scores `(source, edited, instruction[, mask])` → [`Verdict`]: either a
//!   [`Judgement`] (editing effect and visual quality in [0, 1], `r_mllm` their mean; variant
//!   `single`: one 0–5 score / 5; the raw answer kept for audit) or an [`Invalid`] sample
//!   (failed after bounded retries; never a made-up score). [`Judge::judge_batch`] scores many
//!   requests with a concurrency limit; [`Batch::check`] fails a batch whose invalid fraction
//!   exceeds `max_invalid_fraction`.
//! - [`prompts`]: every prompt, versioned (the rendered text enters each cache key).
//! - [`openai::OpenAiJudge`]: any OpenAI-compatible `/v1/chat/completions` server, with
//!   retries, timeouts, a concurrency limit, a response cache ([`cache`]) and counters.
//! - The synthetic world's deterministic judge lives beside the world it knows:
//!   [`crate::synth::RuleJudge`].
//! - [`server`]: `cocoflow judge serve`, any judge (default: the rule judge) behind the OpenAI
//!   endpoint, with fault injection, for end-to-end tests of the client.
//! - [`check`]: `cocoflow judge check`, what a server can do for the configured judge (model,
//!   images, logprobs, latency); [`bench`]: `cocoflow judge bench`, requests/s and latency
//!   per concurrency, to size the `judge` pool.
//!
//! In a task kind: `let n = judge::pool_concurrency(&ctx.pools).unwrap_or(1);` then
//! `ctx.runtime().block_on(judge.judge_batch(&requests, n))` and
//! `batch.check(max_invalid_fraction)?`.

pub mod bench;
pub mod cache;
pub mod check;
pub mod extract;
pub mod image;
pub mod openai;
pub mod prompts;
pub mod published;

pub mod server;
pub mod spec;
pub mod wire;

pub use self::image::JudgeImage;
pub use extract::Extraction;
pub use openai::{Asked, AskedPublished, OpenAiConfig, OpenAiJudge};

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a judge is asked about one sample.
#[derive(Debug, Clone)]
pub struct JudgeRequest {
    pub source: JudgeImage,
    pub edited: JudgeImage,
    pub instruction: String,
    /// The `edit_mask` (white = edited region), for prompts that show it.
    pub mask: Option<JudgeImage>,
    /// Values of extra prompt placeholders (e.g. `edit_type` for the locate prompt).
    pub vars: BTreeMap<String, String>,
}

impl JudgeRequest {
    pub fn new(source: JudgeImage, edited: JudgeImage, instruction: impl Into<String>) -> Self {
        JudgeRequest {
            source,
            edited,
            instruction: instruction.into(),
            mask: None,
            vars: BTreeMap::new(),
        }
    }

    pub fn with_mask(mut self, mask: JudgeImage) -> Self {
        self.mask = Some(mask);
        self
    }

    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// A placeholder's value: `instruction` or one of `vars`.
    pub fn var(&self, name: &str) -> Option<String> {
        match name {
            "instruction" => Some(self.instruction.clone()),
            _ => self.vars.get(name).cloned(),
        }
    }
}

/// Which reward form the judge gives (method-spec §2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreVariant {
    /// Editing effect and visual quality, each normalised; `r_mllm` = their mean.
    #[default]
    Mean,
    /// One 0–5 score; `r_mllm` = score / 5.
    Single,
}

impl ScoreVariant {
    /// The prompt this variant asks.
    pub fn prompt(self) -> &'static prompts::Prompt {
        match self {
            ScoreVariant::Mean => &prompts::REWARD,
            ScoreVariant::Single => &prompts::REWARD_SINGLE,
        }
    }

    /// Reads the variant's scores from an answer of [`ScoreVariant::prompt`].
    pub fn scores(self, answer: &extract::Answer) -> Option<Scores> {
        let get = |k: &str| answer.scores.get(k).map(|s| s.normalized);
        match self {
            ScoreVariant::Mean => Some(Scores::Mean {
                effect: get("editing_effect")?,
                quality: get("visual_quality")?,
            }),
            ScoreVariant::Single => Some(Scores::Single {
                score: get("score")?,
            }),
        }
    }
}

/// Normalised judge scores, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "variant", rename_all = "kebab-case")]
pub enum Scores {
    Mean { effect: f64, quality: f64 },
    Single { score: f64 },
}

impl Scores {
    /// `r_mllm`: the mean of effect and quality, or the single score.
    pub fn r_mllm(&self) -> f64 {
        match *self {
            Scores::Mean { effect, quality } => 0.5 * (effect + quality),
            Scores::Single { score } => score,
        }
    }
}

/// A valid judge answer for one sample.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    pub scores: Scores,
    /// The judge's answer as received (model text, or the rule judge's findings), for audit.
    pub raw: String,
    /// `id@version` of the prompt asked.
    pub prompt: String,
    /// Whether the answer came from the response cache.
    pub cached: bool,
    /// HTTP attempts made for this sample (0 when cached or local).
    pub attempts: u32,
}

impl Judgement {
    pub fn r_mllm(&self) -> f64 {
        self.scores.r_mllm()
    }
}

/// Why one attempt to judge a sample failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("the server answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("malformed response body: {0}")]
    MalformedResponse(String),
    #[error("unusable answer: {0}")]
    Answer(#[from] extract::AnswerError),
    #[error(transparent)]
    Prompt(#[from] prompts::MissingVar),
    #[error("prompt `{prompt}` shows the {role:?} image, which the request does not give")]
    MissingImage {
        prompt: String,
        role: prompts::ImageRole,
    },
    #[error("the rule judge cannot judge this sample: {0}")]
    Rule(String),
    #[error("judge `{judge}` does not answer prompt `{prompt}`")]
    Unsupported { judge: String, prompt: String },
}

impl JudgeError {
    /// Retried: timeouts, connection errors, HTTP 429 and 5xx, malformed bodies and unusable
    /// answers (bounded). Not retried: other 4xx, missing inputs, servers without logprobs.
    pub fn retryable(&self) -> bool {
        match self {
            JudgeError::Timeout { .. }
            | JudgeError::Connection(_)
            | JudgeError::MalformedResponse(_) => true,
            JudgeError::Status { status, .. } => *status == 429 || *status >= 500,
            JudgeError::Answer(a) => a.retryable(),
            JudgeError::Prompt(_)
            | JudgeError::MissingImage { .. }
            | JudgeError::Rule(_)
            | JudgeError::Unsupported { .. } => false,
        }
    }
}

/// A sample the judge could not score: left out of the loss and counted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no valid judge answer after {attempts} attempt(s): {error}")]
pub struct Invalid {
    /// The last attempt's error.
    pub error: JudgeError,
    pub attempts: u32,
    /// The last answer text received, if any.
    pub raw: Option<String>,
}

/// One sample's outcome.
pub type Verdict = Result<Judgement, Invalid>;

/// A judge of image edits.
pub trait Judge: Send + Sync {
    /// One line naming the judge and its settings (never secrets).
    fn describe(&self) -> String;

    /// Scores one sample.
    fn judge<'a>(&'a self, request: &'a JudgeRequest) -> BoxFuture<'a, Verdict>;

    /// Asks any prompt of [`prompts`] about one sample and returns the validated answer
    /// (parsed by [`extract::extract`]; box fields also checked against the image size). The
    /// curation pipeline asks [`prompts::LOCATE`], [`prompts::REFINE`] and
    /// [`prompts::FILTER`] this way. Default: the prompt is not supported.
    fn ask<'a>(
        &'a self,
        prompt: &'a prompts::Prompt,
        request: &'a JudgeRequest,
    ) -> BoxFuture<'a, Result<Asked, Invalid>> {
        let _ = request;
        let error = JudgeError::Unsupported {
            judge: self.describe(),
            prompt: prompt.key(),
        };
        async move {
            Err(Invalid {
                error,
                attempts: 0,
                raw: None,
            })
        }
        .boxed()
    }

    /// Scores many samples, at most `concurrency` at a time; verdicts keep the input order.
    fn judge_batch<'a>(
        &'a self,
        requests: &'a [JudgeRequest],
        concurrency: usize,
    ) -> BoxFuture<'a, Batch> {
        async move {
            let futs: Vec<BoxFuture<'a, Verdict>> =
                requests.iter().map(|r| self.judge(r)).collect();
            let verdicts = futures::stream::iter(futs)
                .buffered(concurrency.max(1))
                .collect()
                .await;
            Batch { verdicts }
        }
        .boxed()
    }
}

/// The verdicts of a batch, in request order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub verdicts: Vec<Verdict>,
}

/// A batch with more invalid samples than allowed (method-spec §2).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{invalid} of {total} judge answers are invalid, more than `max_invalid_fraction` {max_invalid_fraction} allows; first: {first}"
)]
pub struct TooManyInvalid {
    pub invalid: usize,
    pub total: usize,
    pub max_invalid_fraction: f64,
    pub first: String,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.verdicts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }

    pub fn invalid_count(&self) -> usize {
        self.verdicts.iter().filter(|v| v.is_err()).count()
    }

    /// Invalid samples / all samples (0 for an empty batch).
    pub fn invalid_fraction(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.invalid_count() as f64 / self.len() as f64
        }
    }

    /// `r_mllm` per sample; `None` for invalid samples.
    pub fn r_mllm(&self) -> Vec<Option<f64>> {
        self.verdicts
            .iter()
            .map(|v| v.as_ref().ok().map(Judgement::r_mllm))
            .collect()
    }

    /// Fails when the invalid fraction is strictly above `max_invalid_fraction`.
    pub fn check(&self, max_invalid_fraction: f64) -> Result<(), TooManyInvalid> {
        if self.invalid_fraction() > max_invalid_fraction {
            let first = self
                .verdicts
                .iter()
                .find_map(|v| v.as_ref().err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(TooManyInvalid {
                invalid: self.invalid_count(),
                total: self.len(),
                max_invalid_fraction,
                first,
            });
        }
        Ok(())
    }
}

/// The judge concurrency the engine granted: the `judge` pool's units, if any.
pub fn pool_concurrency(pools: &BTreeMap<String, u32>) -> Option<usize> {
    pools
        .get("judge")
        .copied()
        .filter(|&n| n > 0)
        .map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(effect: f64, quality: f64) -> Verdict {
        Ok(Judgement {
            scores: Scores::Mean { effect, quality },
            raw: String::new(),
            prompt: "reward@1".into(),
            cached: false,
            attempts: 1,
        })
    }

    fn bad() -> Verdict {
        Err(Invalid {
            error: JudgeError::Status {
                status: 500,
                body: "boom".into(),
            },
            attempts: 3,
            raw: None,
        })
    }

    #[test]
    fn r_mllm_is_the_mean_or_the_single_score() {
        assert_eq!(
            Scores::Mean {
                effect: 0.2,
                quality: 0.6
            }
            .r_mllm(),
            0.4
        );
        assert_eq!(Scores::Single { score: 0.8 }.r_mllm(), 0.8);
    }

    #[test]
    fn batch_check_fails_only_strictly_past_the_limit() {
        let b = Batch {
            verdicts: vec![ok(1.0, 0.5), bad(), ok(0.0, 0.0), ok(1.0, 1.0)],
        };
        assert_eq!(b.invalid_count(), 1);
        assert_eq!(b.invalid_fraction(), 0.25);
        assert_eq!(b.r_mllm(), vec![Some(0.75), None, Some(0.0), Some(1.0)]);
        assert!(b.check(0.25).is_ok());
        let err = b.check(0.2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 of 4 judge answers are invalid, more than `max_invalid_fraction` 0.2 allows; \
             first: no valid judge answer after 3 attempt(s): the server answered HTTP 500: boom"
        );
        assert!(Batch { verdicts: vec![] }.check(0.0).is_ok());
    }

    #[test]
    fn retry_classification() {
        let s = |status| JudgeError::Status {
            status,
            body: String::new(),
        };
        assert!(s(429).retryable());
        assert!(s(500).retryable());
        assert!(s(503).retryable());
        assert!(!s(400).retryable());
        assert!(!s(401).retryable());
        assert!(!s(404).retryable());
        assert!(JudgeError::Timeout { timeout_ms: 1 }.retryable());
        assert!(JudgeError::Connection("reset".into()).retryable());
        assert!(JudgeError::MalformedResponse("eof".into()).retryable());
        assert!(!JudgeError::Answer(extract::AnswerError::NoLogprobs).retryable());
        assert!(JudgeError::Answer(extract::AnswerError::Empty).retryable());
    }

    #[test]
    fn pool_units_give_the_concurrency() {
        let mut pools = BTreeMap::new();
        assert_eq!(pool_concurrency(&pools), None);
        pools.insert("judge".to_string(), 8);
        assert_eq!(pool_concurrency(&pools), Some(8));
    }
}
