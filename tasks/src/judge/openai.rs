//! [`OpenAiJudge`]: the judge over any OpenAI-compatible `/v1/chat/completions` server
//! (vLLM, SGLang, OpenAI).
//!
//! - Images go as base64 PNG data URLs, each after a label line, in the prompt's order:
//!   source, edited (then the mask where the prompt shows one). Not swapped.
//! - The API key is read from the environment variable *named* by `api_key_env` when the judge
//!   is built; it lives only in a sensitive header value. No `Debug`, log line or error
//!   message contains it.
//! - Transport, retries, timeouts, concurrency and the response cache are
//!   [`JsonService`]'s: timeouts, connection errors, HTTP 429 and 5xx, malformed bodies and
//!   unusable answers are retried up to `retry.max_attempts` attempts in all; other 4xx are
//!   not, nor an answer cut at `max_tokens` (`finish_reason: length`) under greedy decoding
//!   (it would be cut again). After the last attempt the sample is [`Invalid`]: it never gets
//!   a made-up score.
//! - With a [`ResponseCache`], validated responses are stored under the key of
//!   [`CacheKeyParts`]; a hit makes no request.

use super::cache::CacheKeyParts;
use super::extract::{self, Answer, AnswerError, Extraction};
use super::prompts::{ImageRole, Prompt};
use super::published::{PublishedPrompt, Reader};
use super::wire::{ChatMessage, ChatRequest, ChatResponse, ContentPart, ImageUrl, MessageContent};
use super::{Invalid, Judge, JudgeError, JudgeRequest, Judgement, ScoreVariant, Verdict};
use crate::net::{
    ClientStats, JsonService, ResponseCache, RetryPolicy, ServiceError, body_excerpt,
};
use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How to reach and ask the judge. Holds the key's variable name, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// Why a judge cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("the judge's API key variable `{var}` is not set or empty")]
    MissingApiKey { var: String },
    #[error("the judge's API key in `{var}` is not a valid header value")]
    BadApiKey { var: String },
    /// The base URL, limits or HTTP client.
    #[error(transparent)]
    Http(#[from] crate::net::ConfigError),
}

/// Counters of the judge's HTTP client.
pub type JudgeStats = ClientStats;

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
    service: JsonService,
}

impl std::fmt::Debug for OpenAiJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiJudge")
            .field("endpoint", &self.service.endpoint())
            .field("model", &self.config.model)
            .field("api_key_env", &self.config.api_key_env)
            .field(
                "api_key",
                &self.config.api_key_env.as_ref().map(|_| "<redacted>"),
            )
            .field("variant", &self.config.variant)
            .field("extraction", &self.config.extraction)
            .field("timeout_ms", &self.config.timeout_ms)
            .field("max_concurrency", &self.config.max_concurrency)
            .field("cache", &self.service.cache().map(|c| c.describe()))
            .finish_non_exhaustive()
    }
}

impl OpenAiJudge {
    /// Checks the config and reads the API key from its variable.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let mut service = JsonService::new(
            "judge",
            &config.base_url,
            endpoint,
            config.timeout_ms,
            &config.retry,
            config.max_concurrency,
        )?;
        if let Some(var) = &config.api_key_env {
            let key = std::env::var(var)
                .ok()
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| ConfigError::MissingApiKey { var: var.clone() })?;
            let v = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
                .map_err(|_| ConfigError::BadApiKey { var: var.clone() })?;
            service = service.with_header(AUTHORIZATION, v);
        }
        Ok(OpenAiJudge { config, service })
    }

    /// Uses this response cache.
    pub fn with_cache(mut self, cache: Arc<dyn ResponseCache>) -> Self {
        self.service = self.service.with_cache(cache);
        self
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    pub fn stats(&self) -> JudgeStats {
        self.service.stats()
    }

    /// The chat request this judge sends for `prompt` about `req`: the system text, then each
    /// image of [`Prompt::images`] after its label line (base64 PNG data URLs, in that order),
    /// then the user text; decoding as configured (`logprobs`/`top_logprobs` only under
    /// `logprobs` extraction).
    pub fn chat_request(
        &self,
        prompt: &Prompt,
        req: &JudgeRequest,
    ) -> Result<ChatRequest, JudgeError> {
        Ok(self.request_and_key(prompt, req)?.0)
    }

    /// The request body and its cache key.
    fn build(&self, prompt: &Prompt, req: &JudgeRequest) -> Result<(Bytes, String), JudgeError> {
        let (body, key) = self.request_and_key(prompt, req)?;
        let body = serde_json::to_vec(&body).expect("a chat request serialises");
        Ok((Bytes::from(body), key))
    }

    fn request_and_key(
        &self,
        prompt: &Prompt,
        req: &JudgeRequest,
    ) -> Result<(ChatRequest, String), JudgeError> {
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
        Ok((body, key.key()))
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
            .and_then(|a| extract::check_boxes(prompt, &a, size.0, size.1).map(|()| a))
            .map_err(|e| match (choice.finish_reason.as_deref(), &e) {
                (_, AnswerError::NoLogprobs | AnswerError::BadBox { .. }) => e,
                // every server names a cut at `max_tokens` "length"; greedy decoding cuts again
                (Some("length"), _) => AnswerError::Truncated {
                    max_tokens: self.config.decoding.max_tokens,
                    greedy: self.config.decoding.temperature == 0.0,
                    error: Box::new(e),
                },
                _ => e,
            });
        match answer {
            Ok(a) => Ok((a, content)),
            Err(e) => Err((JudgeError::Answer(e), Some(content))),
        }
    }

    /// Asks any prompt about one sample, with the cache and retries.
    pub async fn ask(&self, prompt: &Prompt, req: &JudgeRequest) -> Result<Asked, Invalid> {
        // boxes are measured in the source (or, for additions, the edited image: same size)
        let size = (req.source.width(), req.source.height());
        let (body, key) = self.build(prompt, req).map_err(|error| {
            self.service.count_failure();
            Invalid {
                error,
                attempts: 0,
                raw: None,
            }
        })?;
        // the last answer text received, for the audit of an invalid sample
        let mut last_raw = None;
        let called = self
            .service
            .call(&key, &body, |bytes| {
                self.read(prompt, bytes, size).map_err(|(e, raw)| {
                    if raw.is_some() {
                        last_raw = raw;
                    }
                    e
                })
            })
            .await;
        match called {
            Ok(c) => {
                let (answer, raw) = c.value;
                Ok(Asked {
                    answer,
                    raw,
                    cached: c.cached,
                    attempts: c.attempts,
                })
            }
            Err(f) => {
                // the service's own line (warn) has the error; this one names the prompt
                tracing::debug!(
                    prompt = %prompt.key(),
                    attempts = f.attempts,
                    error = %f.error,
                    "judge sample invalid"
                );
                Err(Invalid {
                    error: f.error,
                    attempts: f.attempts,
                    raw: last_raw,
                })
            }
        }
    }
}

/// An answer to a benchmark's own prompt, read by its script's rules.
#[derive(Debug, Clone)]
pub struct AskedPublished<T> {
    /// What the reader made of the answer.
    pub value: T,
    /// The model's answer text.
    pub raw: String,
    pub cached: bool,
    pub attempts: u32,
}

impl OpenAiJudge {
    /// Asks a benchmark's own prompt ([`super::published`]) about one sample, as the
    /// benchmark's script sends it: one user message, the rendered text first, then the
    /// prompt's images (no system message, no label lines, no logprobs). `read` reads the
    /// answer text the way the benchmark's script does; an answer it cannot read is retried
    /// like any unusable answer. Cached under the rendered text, the template's digest, the
    /// images and the decoding.
    pub async fn ask_published<T>(
        &self,
        prompt: &PublishedPrompt,
        req: &JudgeRequest,
        read: impl Fn(&str) -> Result<T, String>,
    ) -> Result<AskedPublished<T>, Invalid> {
        let user = prompt.render(&req.instruction);
        let mut key = CacheKeyParts {
            model: &self.config.model,
            prompt: format!("published/{}", prompt.name),
            prompt_digest: prompt.digest(),
            system: "",
            user: &user,
            instruction: &req.instruction,
            images: Vec::new(),
            decoding: serde_json::Value::Null,
        };
        let mut parts = vec![ContentPart::Text { text: user.clone() }];
        for &role in prompt.images {
            let img = match role {
                ImageRole::Source => &req.source,
                ImageRole::Edited => &req.edited,
                ImageRole::Mask => req.mask.as_ref().ok_or_else(|| Invalid {
                    error: JudgeError::MissingImage {
                        prompt: prompt.name.clone(),
                        role,
                    },
                    attempts: 0,
                    raw: None,
                })?,
            };
            key.images.push((role, img.digest()));
            parts.push(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: img.data_url(),
                },
            });
        }
        let d = &self.config.decoding;
        let body = ChatRequest {
            model: self.config.model.clone(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: MessageContent::Parts(parts),
            }],
            temperature: Some(d.temperature),
            max_tokens: Some(d.max_tokens),
            logprobs: None,
            top_logprobs: None,
            seed: d.seed,
            response_format: None,
        };
        key.decoding = serde_json::json!({
            "temperature": d.temperature,
            "max_tokens": d.max_tokens,
            "seed": d.seed,
        });
        let key = key.key();
        let body = Bytes::from(serde_json::to_vec(&body).expect("a chat request serialises"));
        let reader = match prompt.reader {
            Reader::Viescore => "VIEScore's mllm_output_to_dict",
            Reader::Imgedit => "ImgEdit's step1_get_avgscore.py",
        };
        let mut last_raw = None;
        let called = self
            .service
            .call(&key, &body, |bytes| {
                let resp: ChatResponse = serde_json::from_slice(bytes)
                    .map_err(|e| JudgeError::MalformedResponse(e.to_string()))?;
                let choice = resp
                    .choices
                    .into_iter()
                    .next()
                    .ok_or(JudgeError::Answer(AnswerError::NoChoices))?;
                let content = choice.message.content.unwrap_or_default();
                last_raw = Some(content.clone());
                match read(&content) {
                    Ok(v) => Ok((v, content)),
                    Err(reason) => {
                        let e = AnswerError::Unparsed { reader, reason };
                        Err(JudgeError::Answer(match choice.finish_reason.as_deref() {
                            Some("length") => AnswerError::Truncated {
                                max_tokens: d.max_tokens,
                                greedy: d.temperature == 0.0,
                                error: Box::new(e),
                            },
                            _ => e,
                        }))
                    }
                }
            })
            .await;
        match called {
            Ok(c) => {
                let (value, raw) = c.value;
                Ok(AskedPublished {
                    value,
                    raw,
                    cached: c.cached,
                    attempts: c.attempts,
                })
            }
            Err(f) => Err(Invalid {
                error: f.error,
                attempts: f.attempts,
                raw: last_raw,
            }),
        }
    }
}

impl ServiceError for JudgeError {
    fn timeout(timeout_ms: u64) -> Self {
        JudgeError::Timeout { timeout_ms }
    }
    fn connection(message: String) -> Self {
        JudgeError::Connection(message)
    }
    fn status(status: u16, body: &[u8]) -> Self {
        JudgeError::Status {
            status,
            body: body_excerpt(body),
        }
    }
    fn retryable(&self) -> bool {
        JudgeError::retryable(self)
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
            self.service.endpoint(),
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
