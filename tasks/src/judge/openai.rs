//! [`OpenAiJudge`]: the judge over any OpenAI-compatible `/v1/chat/completions` server
//! (vLLM, SGLang, OpenAI).
//!
//! - Images go as base64 PNG data URLs, each after a label line, in the prompt's order:
//!   source, edited (then the mask where the prompt shows one). Not swapped.
//! - The API key is read from the environment variable *named* by `api_key_env` when the judge
//!   is built; it lives only in a sensitive header value. No `Debug`, log line or error
//!   message contains it.
//! - Each HTTP attempt has its own timeout (`timeout_ms`) and holds one of `max_concurrency`
//!   permits. Timeouts, connection errors, HTTP 429 and 5xx, malformed bodies and unusable
//!   answers are retried up to `retry.max_attempts` attempts in all, with exponential backoff
//!   and jitter (`Retry-After` is honoured up to `max_backoff_ms`); other 4xx are not retried.
//!   After the last attempt the sample is [`Invalid`]: it never gets a made-up score.
//! - With a [`ResponseCache`], validated responses are stored under the key of
//!   [`CacheKeyParts`]; a hit makes no request.

use super::cache::{CacheKeyParts, ResponseCache};
use super::extract::{self, Answer, Extraction};
use super::prompts::{ImageRole, Prompt};
use super::rng::SplitMix64;
use super::wire::{ChatMessage, ChatRequest, ChatResponse, ContentPart, ImageUrl, MessageContent};
use super::{Invalid, Judge, JudgeError, JudgeRequest, Judgement, ScoreVariant, Verdict};
use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How to reach and ask the judge. Holds the key's variable name, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The API root as OpenAI SDKs take it, e.g. `http://127.0.0.1:8000/v1`; requests go
    /// to `{base_url}/chat/completions`.
    pub base_url: String,
    /// The served model name.
    pub model: String,
    /// Name of the environment variable that holds the API key; none: no `Authorization`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `mean` (effect and quality) or `single`.
    #[serde(default)]
    pub variant: ScoreVariant,
    /// `logprobs` (default) or `generate`.
    #[serde(default)]
    pub extraction: Extraction,
    #[serde(default)]
    pub decoding: Decoding,
    /// Per-attempt timeout, connection to last body byte (default 120 000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Most requests in flight from this judge at once (default 8); a batch's own
    /// concurrency (the engine's `judge` pool) is applied on top.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

fn default_timeout_ms() -> u64 {
    120_000
}

fn default_max_concurrency() -> usize {
    8
}

impl OpenAiConfig {
    /// Defaults for everything but the server and model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            variant: ScoreVariant::default(),
            extraction: Extraction::default(),
            decoding: Decoding::default(),
            timeout_ms: default_timeout_ms(),
            retry: RetryPolicy::default(),
            max_concurrency: default_max_concurrency(),
        }
    }
}

/// Decoding parameters (all part of the cache key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decoding {
    /// Default 0 (greedy).
    #[serde(default)]
    pub temperature: f64,
    /// Default 512.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Alternatives per token under `logprobs` extraction (default 10; OpenAI allows ≤ 20).
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u32,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Ask for `response_format: {"type": "json_object"}` (default off; not every server has it).
    #[serde(default)]
    pub json_mode: bool,
}

fn default_max_tokens() -> u32 {
    512
}

fn default_top_logprobs() -> u32 {
    10
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding {
            temperature: 0.0,
            max_tokens: default_max_tokens(),
            top_logprobs: default_top_logprobs(),
            seed: None,
            json_mode: false,
        }
    }
}

/// Bounded retries with exponential backoff and jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 4).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry (default 500 ms).
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Cap of one backoff (default 20 000 ms).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Growth per retry (default 2).
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Seed of the jitter (default: from the clock).
    #[serde(default)]
    pub jitter_seed: Option<u64>,
}

fn default_max_attempts() -> u32 {
    4
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    20_000
}
fn default_factor() -> f64 {
    2.0
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            factor: default_factor(),
            jitter_seed: None,
        }
    }
}

/// The HTTP client of the remote-service clients (judge, segmentation): connect timeout at
/// most 10 s, the per-request timeout is applied per attempt.
pub(crate) fn http_client(timeout_ms: u64) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(timeout_ms.min(10_000)))
        .build()
        .map_err(|e| e.to_string())
}

impl RetryPolicy {
    /// The jitter stream: seeded by `jitter_seed` (tests), else by the clock and process id.
    pub fn jitter_rng(&self) -> SplitMix64 {
        SplitMix64::new(self.jitter_seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ std::process::id() as u64
        }))
    }

    /// Backoff before retry `retry` (1-based): `b = min(max, initial·factor^(retry−1))`,
    /// then "equal jitter" `b·(0.5 + 0.5·u)` for `u` in [0, 1); at least `retry_after`
    /// (capped at `max`).
    pub fn backoff(&self, retry: u32, u: f64, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .factor
            .max(1.0)
            .powi(retry.saturating_sub(1).min(64) as i32);
        let base = (self.initial_backoff_ms as f64 * exp).min(self.max_backoff_ms as f64);
        let jittered = Duration::from_secs_f64(base * (0.5 + 0.5 * u.clamp(0.0, 1.0)) / 1000.0);
        match retry_after {
            Some(ra) => jittered.max(ra.min(Duration::from_millis(self.max_backoff_ms))),
            None => jittered,
        }
    }
}

/// Why a judge cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("the judge's API key variable `{var}` is not set or empty")]
    MissingApiKey { var: String },
    #[error("the judge's API key in `{var}` is not a valid header value")]
    BadApiKey { var: String },
    #[error("judge `base_url` `{url}`: {reason}")]
    BadBaseUrl { url: String, reason: String },
    #[error("judge `{field}` must be at least 1")]
    Zero { field: &'static str },
    #[error("cannot build the judge's HTTP client: {0}")]
    Client(String),
}

/// The bearer header; its `Debug` never shows the key.
#[derive(Clone)]
struct ApiKey(HeaderValue);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Counters of one HTTP client (the judge's or the segmenter's), for tests and run summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// HTTP attempts sent.
    pub requests: u64,
    /// Calls answered from the cache.
    pub cache_hits: u64,
    /// Attempts that were followed by another one.
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Calls that ended without a valid answer.
    pub failures: u64,
    /// Calls that got a valid answer over HTTP.
    pub successes: u64,
}

pub type JudgeStats = ClientStats;

/// The live counters behind [`ClientStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) successes: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ClientStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            requests: l(&self.requests),
            cache_hits: l(&self.cache_hits),
            retries: l(&self.retries),
            timeouts: l(&self.timeouts),
            failures: l(&self.failures),
            successes: l(&self.successes),
        }
    }
}

/// What is wrong with a client's common settings (mapped into each client's `ConfigError`).
pub(crate) enum SettingProblem {
    BadBaseUrl(String),
    Zero(&'static str),
}

/// Checks a base URL (http or https) and that the concurrency and attempt limits are ≥ 1.
pub(crate) fn check_http_settings(
    base_url: &str,
    max_concurrency: usize,
    retry: &RetryPolicy,
) -> Result<(), SettingProblem> {
    let url =
        reqwest::Url::parse(base_url).map_err(|e| SettingProblem::BadBaseUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SettingProblem::BadBaseUrl(
            "expected an `http://` or `https://` URL".into(),
        ));
    }
    if max_concurrency == 0 {
        return Err(SettingProblem::Zero("max_concurrency"));
    }
    if retry.max_attempts == 0 {
        return Err(SettingProblem::Zero("retry.max_attempts"));
    }
    Ok(())
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A validated answer to any prompt.
#[derive(Debug, Clone)]
pub struct Asked {
    pub answer: Answer,
    /// The model's answer text.
    pub raw: String,
    pub cached: bool,
    pub attempts: u32,
}

/// The judge over an OpenAI-compatible server.
pub struct OpenAiJudge {
    config: OpenAiConfig,
    endpoint: String,
    api_key: Option<ApiKey>,
    http: reqwest::Client,
    limit: Semaphore,
    cache: Option<Arc<dyn ResponseCache>>,
    counters: Counters,
    jitter: Mutex<SplitMix64>,
}

impl std::fmt::Debug for OpenAiJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiJudge")
            .field("endpoint", &self.endpoint)
            .field("model", &self.config.model)
            .field("api_key_env", &self.config.api_key_env)
            .field("api_key", &self.api_key)
            .field("variant", &self.config.variant)
            .field("extraction", &self.config.extraction)
            .field("timeout_ms", &self.config.timeout_ms)
            .field("max_concurrency", &self.config.max_concurrency)
            .field("cache", &self.cache.as_ref().map(|c| c.describe()))
            .finish_non_exhaustive()
    }
}

impl OpenAiJudge {
    /// Checks the config and reads the API key from its variable.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        check_http_settings(&config.base_url, config.max_concurrency, &config.retry).map_err(
            |e| match e {
                SettingProblem::BadBaseUrl(reason) => ConfigError::BadBaseUrl {
                    url: config.base_url.clone(),
                    reason,
                },
                SettingProblem::Zero(field) => ConfigError::Zero { field },
            },
        )?;
        let api_key = match &config.api_key_env {
            None => None,
            Some(var) => {
                let key = std::env::var(var)
                    .ok()
                    .filter(|k| !k.trim().is_empty())
                    .ok_or_else(|| ConfigError::MissingApiKey { var: var.clone() })?;
                let mut v = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
                    .map_err(|_| ConfigError::BadApiKey { var: var.clone() })?;
                v.set_sensitive(true);
                Some(ApiKey(v))
            }
        };
        let http = http_client(config.timeout_ms).map_err(ConfigError::Client)?;
        let jitter = Mutex::new(config.retry.jitter_rng());
        Ok(OpenAiJudge {
            endpoint: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            limit: Semaphore::new(config.max_concurrency),
            config,
            api_key,
            http,
            cache: None,
            counters: Counters::default(),
            jitter,
        })
    }

    /// Uses this response cache.
    pub fn with_cache(mut self, cache: Arc<dyn ResponseCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    pub fn stats(&self) -> JudgeStats {
        self.counters.snapshot()
    }

    /// The request body and its cache key.
    fn build(&self, prompt: &Prompt, req: &JudgeRequest) -> Result<(Bytes, String), JudgeError> {
        let user = prompt.render_user(|n| req.var(n))?;
        let mut key = CacheKeyParts::new(&self.config.model, prompt);
        let mut parts = Vec::with_capacity(2 * prompt.images.len() + 1);
        for &role in prompt.images {
            let img = match role {
                ImageRole::Source => Some(&req.source),
                ImageRole::Edited => Some(&req.edited),
                ImageRole::Mask => req.mask.as_ref(),
            }
            .ok_or_else(|| JudgeError::MissingImage {
                prompt: prompt.key(),
                role,
            })?;
            key.images.push((role, img.digest()));
            parts.push(ContentPart::Text {
                text: role.label().to_string(),
            });
            parts.push(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: img.data_url(),
                },
            });
        }
        parts.push(ContentPart::Text { text: user.clone() });
        let d = &self.config.decoding;
        let logprobs = self.config.extraction == Extraction::Logprobs;
        let body = ChatRequest {
            model: self.config.model.clone(),
            messages: vec![
                ChatMessage {
                    role: "system".into(),
                    content: MessageContent::Text(prompt.system.to_string()),
                },
                ChatMessage {
                    role: "user".into(),
                    content: MessageContent::Parts(parts),
                },
            ],
            temperature: Some(d.temperature),
            max_tokens: Some(d.max_tokens),
            logprobs: logprobs.then_some(true),
            top_logprobs: logprobs.then_some(d.top_logprobs),
            seed: d.seed,
            response_format: d
                .json_mode
                .then(|| serde_json::json!({"type": "json_object"})),
        };
        key.user = &user;
        key.instruction = &req.instruction;
        key.decoding = serde_json::json!({
            "temperature": d.temperature,
            "max_tokens": d.max_tokens,
            "logprobs": logprobs,
            "top_logprobs": if logprobs { Some(d.top_logprobs) } else { None },
            "seed": d.seed,
            "json_mode": d.json_mode,
        });
        let key = key.key();
        let body = serde_json::to_vec(&body).expect("a chat request serialises");
        Ok((Bytes::from(body), key))
    }

    /// Validates a response body; on failure also returns the answer text, if any.
    fn read(
        &self,
        prompt: &Prompt,
        body: &[u8],
        size: (u32, u32),
    ) -> Result<(Answer, String), (JudgeError, Option<String>)> {
        let resp: ChatResponse = serde_json::from_slice(body)
            .map_err(|e| (JudgeError::MalformedResponse(e.to_string()), None))?;
        let choice = resp
            .choices
            .into_iter()
            .next()
            .ok_or((JudgeError::Answer(extract::AnswerError::NoChoices), None))?;
        let content = choice.message.content.unwrap_or_default();
        let tokens = choice.logprobs.and_then(|l| l.content);
        let answer = extract::extract(prompt, &content, tokens.as_deref(), self.config.extraction)
            .and_then(|a| extract::check_boxes(prompt, &a, size.0, size.1).map(|()| a));
        match answer {
            Ok(a) => Ok((a, content)),
            Err(e) => Err((JudgeError::Answer(e), Some(content))),
        }
    }

    /// One HTTP attempt: the body of a 2xx answer, or the error and any `Retry-After`.
    async fn attempt(&self, body: &Bytes) -> Result<Bytes, (JudgeError, Option<Duration>)> {
        let _permit = self
            .limit
            .acquire()
            .await
            .expect("the semaphore is never closed");
        bump(&self.counters.requests);
        let mut rb = self
            .http
            .post(&self.endpoint)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(ApiKey(v)) = &self.api_key {
            rb = rb.header(AUTHORIZATION, v.clone());
        }
        let resp = rb.send().await.map_err(|e| (self.classify(e), None))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let bytes = resp.bytes().await.map_err(|e| (self.classify(e), None))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            let body = if text.len() > 300 {
                format!("{}…", &text[..text.floor_char_boundary(300)])
            } else {
                text.to_string()
            };
            return Err((
                JudgeError::Status {
                    status: status.as_u16(),
                    body,
                },
                retry_after,
            ));
        }
        Ok(bytes)
    }

    fn classify(&self, e: reqwest::Error) -> JudgeError {
        if e.is_timeout() {
            bump(&self.counters.timeouts);
            return JudgeError::Timeout {
                timeout_ms: self.config.timeout_ms,
            };
        }
        // The error chain names the URL and the cause; headers (the key) never appear.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        JudgeError::Connection(msg)
    }

    /// Asks any prompt about one sample, with the cache and retries.
    pub async fn ask(&self, prompt: &Prompt, req: &JudgeRequest) -> Result<Asked, Invalid> {
        // boxes are measured in the source (or, for additions, the edited image: same size)
        let size = (req.source.width(), req.source.height());
        let (body, key) = self.build(prompt, req).map_err(|error| {
            bump(&self.counters.failures);
            Invalid {
                error,
                attempts: 0,
                raw: None,
            }
        })?;
        if let Some(cache) = &self.cache {
            match cache.get(&key).await {
                Ok(Some(bytes)) => match self.read(prompt, &bytes, size) {
                    Ok((answer, raw)) => {
                        bump(&self.counters.cache_hits);
                        return Ok(Asked {
                            answer,
                            raw,
                            cached: true,
                            attempts: 0,
                        });
                    }
                    Err((e, _)) => {
                        tracing::warn!(key = %key, error = %e, "ignoring an unusable cached judge response")
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "judge cache read failed"),
            }
        }
        let max = self.config.retry.max_attempts;
        let mut last_raw = None;
        for attempt in 1..=max {
            tracing::debug!(model = %self.config.model, prompt = %prompt.key(), attempt, "judge request");
            let outcome = match self.attempt(&body).await {
                Ok(bytes) => match self.read(prompt, &bytes, size) {
                    Ok((answer, raw)) => {
                        if let Some(cache) = &self.cache
                            && let Err(e) = cache.put(&key, bytes).await
                        {
                            tracing::warn!(error = %e, "judge cache write failed");
                        }
                        bump(&self.counters.successes);
                        return Ok(Asked {
                            answer,
                            raw,
                            cached: false,
                            attempts: attempt,
                        });
                    }
                    Err((e, raw)) => {
                        last_raw = raw.or(last_raw);
                        (e, None)
                    }
                },
                Err(e) => e,
            };
            let (error, retry_after) = outcome;
            if !error.retryable() || attempt == max {
                bump(&self.counters.failures);
                tracing::warn!(attempts = attempt, error = %error, "judge sample invalid");
                return Err(Invalid {
                    error,
                    attempts: attempt,
                    raw: last_raw,
                });
            }
            bump(&self.counters.retries);
            let u = self.jitter.lock().unwrap().next_f64();
            let delay = self.config.retry.backoff(attempt, u, retry_after);
            tracing::warn!(
                attempt,
                max_attempts = max,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "judge request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
        unreachable!("the loop returns on its last attempt")
    }
}

impl Judge for OpenAiJudge {
    fn ask<'a>(
        &'a self,
        prompt: &'a Prompt,
        request: &'a JudgeRequest,
    ) -> BoxFuture<'a, Result<Asked, Invalid>> {
        OpenAiJudge::ask(self, prompt, request).boxed()
    }

    fn describe(&self) -> String {
        format!(
            "openai(endpoint={}, model={}, prompt={}, extraction={:?})",
            self.endpoint,
            self.config.model,
            self.config.variant.prompt().key(),
            self.config.extraction
        )
    }

    fn judge<'a>(&'a self, request: &'a JudgeRequest) -> BoxFuture<'a, Verdict> {
        async move {
            let variant = self.config.variant;
            let prompt = variant.prompt();
            let asked = self.ask(prompt, request).await?;
            let scores = variant
                .scores(&asked.answer)
                .expect("a validated answer has every score field of its prompt");
            Ok(Judgement {
                scores,
                raw: asked.raw,
                prompt: prompt.key(),
                cached: asked.cached,
                attempts: asked.attempts,
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            factor: 2.0,
            jitter_seed: None,
        };
        let ms = |r, u| p.backoff(r, u, None).as_millis();
        assert_eq!((ms(1, 0.0), ms(1, 1.0)), (50, 100));
        assert_eq!((ms(2, 0.0), ms(3, 1.0)), (100, 400));
        assert_eq!(ms(10, 1.0), 1000);
        assert_eq!(
            p.backoff(1, 0.0, Some(Duration::from_millis(700)))
                .as_millis(),
            700
        );
        assert_eq!(
            p.backoff(1, 0.0, Some(Duration::from_secs(60))).as_millis(),
            1000
        );
    }

    #[test]
    fn config_errors_name_the_variable_not_the_key() {
        let mut c = OpenAiConfig::new("http://127.0.0.1:1/v1", "m");
        c.api_key_env = Some("COCOFLOW_TEST_UNSET_KEY_VAR_93".into());
        assert_eq!(
            OpenAiJudge::new(c).unwrap_err().to_string(),
            "the judge's API key variable `COCOFLOW_TEST_UNSET_KEY_VAR_93` is not set or empty"
        );
        let c = OpenAiConfig::new("ftp://x", "m");
        assert_eq!(
            OpenAiJudge::new(c).unwrap_err().to_string(),
            "judge `base_url` `ftp://x`: expected an `http://` or `https://` URL"
        );
        let mut c = OpenAiConfig::new("http://x/v1", "m");
        c.max_concurrency = 0;
        assert_eq!(
            OpenAiJudge::new(c).unwrap_err().to_string(),
            "judge `max_concurrency` must be at least 1"
        );
    }

    #[test]
    fn config_rejects_unknown_keys_and_fills_defaults() {
        let c: OpenAiConfig =
            serde_json::from_value(serde_json::json!({"base_url": "http://x/v1", "model": "m"}))
                .unwrap();
        assert_eq!(c, OpenAiConfig::new("http://x/v1", "m"));
        let err = serde_json::from_value::<OpenAiConfig>(
            serde_json::json!({"base_url": "http://x/v1", "model": "m", "api_key": "k"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `api_key`"), "{err}");
    }
}
