//! [`SegmentClient`]: the client of the segmentation protocol ([`super`]).
//!
//! - Requests go to `{base_url}/v1/segment` (`base_url` without `/v1`, e.g.
//!   `http://127.0.0.1:8090`).
//! - Transport, retries, timeouts, concurrency and the response cache are
//!   [`JsonService`]'s (shared with the judge client): timeouts, connection errors, HTTP 429
//!   and 5xx and malformed answers (a body that is not the response JSON, a mask that does
//!   not decode, has the wrong size or is white outside the box, a score outside [0, 1]) are
//!   retried up to `retry.max_attempts` attempts in all. Other 4xx (a bad box, no object in
//!   the box) are not retried. After the last attempt the call fails with [`Failed`]: it
//!   never returns a made-up mask.
//! - With a [`ResponseCache`] (use a separate namespace or directory from the judge's),
//!   validated response bodies are stored under [`cache_key`] (the image's pixel digest,
//!   the box and the `model` name); a hit makes no request.
//! - [`SegmentStats`] counts the HTTP attempts (`requests`), cache hits, retries, timeouts,
//!   failures and successes, so tests can assert that a re-run made no calls.

use super::{BoxPx, SegmentRequest, SegmentResponse, decode_mask};
use crate::judge::JudgeImage;
pub use crate::net::RetryPolicy;
use crate::net::{ClientStats, JsonService, ResponseCache, ServiceError, body_excerpt};
use base64::Engine as _;
use bytes::Bytes;
use image::GrayImage;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How to reach the segmentation server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// The server root, e.g. `http://127.0.0.1:8090`; requests go to `{base_url}/v1/segment`.
    pub base_url: String,
    /// The segmenter behind the server (part of the cache key; default `color`).
    #[serde(default = "default_model")]
    pub model: String,
    /// Per-attempt timeout, connection to last body byte (default 30 000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Most requests in flight from this client at once (default 8).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
}

fn default_model() -> String {
    "color".into()
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_max_concurrency() -> usize {
    8
}

impl SegmentConfig {
    /// Defaults for everything but the server.
    pub fn new(base_url: impl Into<String>) -> Self {
        SegmentConfig {
            base_url: base_url.into(),
            model: default_model(),
            timeout_ms: default_timeout_ms(),
            retry: RetryPolicy::default(),
            max_concurrency: default_max_concurrency(),
        }
    }
}

/// Why a client cannot be built.
pub use crate::net::ConfigError;

/// Why one attempt gave no mask.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl CallError {
    /// Timeouts, connection errors, 429, 5xx and malformed answers.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::Timeout { .. } | CallError::Connection(_) | CallError::Malformed(_) => true,
            CallError::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

/// A call that gave no mask, after `attempts` attempts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no segmentation after {attempts} attempt(s): {error}")]
pub struct Failed {
    pub error: CallError,
    pub attempts: u32,
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmented {
    /// The image's size; 255 = object, 0 = not.
    pub mask: GrayImage,
    pub score: f64,
    pub cached: bool,
    /// HTTP attempts made (0 for a cache hit).
    pub attempts: u32,
}

/// Counters of one client.
pub type SegmentStats = ClientStats;

impl ServiceError for CallError {
    fn timeout(timeout_ms: u64) -> Self {
        CallError::Timeout { timeout_ms }
    }
    fn connection(message: String) -> Self {
        CallError::Connection(message)
    }
    /// The message of an `{"error": {"message": ...}}` body, else the body's text.
    fn status(status: u16, body: &[u8]) -> Self {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body_excerpt(body));
        CallError::Status { status, message }
    }
    fn retryable(&self) -> bool {
        CallError::retryable(self)
    }
}

/// The cache key of a call: BLAKE3 (hex) over the model, the image's pixel digest and the box.
pub fn cache_key(model: &str, image_digest: &str, bx: BoxPx) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"cocoflow-segment-response/1\0");
    let parts = serde_json::json!({"model": model, "image": image_digest, "box": bx.to_array()});
    h.update(parts.to_string().as_bytes());
    h.finalize().to_hex().to_string()
}

/// The segmentation client (module docs).
pub struct SegmentClient {
    config: SegmentConfig,
    service: JsonService,
}

impl std::fmt::Debug for SegmentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentClient")
            .field("endpoint", &self.service.endpoint())
            .field("model", &self.config.model)
            .field("timeout_ms", &self.config.timeout_ms)
            .field("max_concurrency", &self.config.max_concurrency)
            .field("cache", &self.service.cache().map(|c| c.describe()))
            .finish_non_exhaustive()
    }
}

impl SegmentClient {
    pub fn new(config: SegmentConfig) -> Result<Self, ConfigError> {
        let endpoint = format!("{}/v1/segment", config.base_url.trim_end_matches('/'));
        let service = JsonService::new(
            "segmentation",
            &config.base_url,
            endpoint,
            config.timeout_ms,
            &config.retry,
            config.max_concurrency,
        )?;
        Ok(SegmentClient { config, service })
    }

    /// Uses this response cache.
    pub fn with_cache(mut self, cache: Arc<dyn ResponseCache>) -> Self {
        self.service = self.service.with_cache(cache);
        self
    }

    pub fn config(&self) -> &SegmentConfig {
        &self.config
    }

    pub fn stats(&self) -> SegmentStats {
        self.service.stats()
    }

    /// HTTP attempts sent so far.
    pub fn calls(&self) -> u64 {
        self.service.stats().requests
    }

    /// Validates a response body against the request.
    fn read(
        &self,
        image: &JudgeImage,
        bx: BoxPx,
        body: &[u8],
    ) -> Result<(GrayImage, f64), CallError> {
        let resp: SegmentResponse =
            serde_json::from_slice(body).map_err(|e| CallError::Malformed(e.to_string()))?;
        let mask = decode_mask(&resp.mask).map_err(CallError::Malformed)?;
        if mask.dimensions() != (image.width(), image.height()) {
            return Err(CallError::Malformed(format!(
                "mask is {}×{}, the image {}×{}",
                mask.width(),
                mask.height(),
                image.width(),
                image.height()
            )));
        }
        if let Some((x, y, _)) = mask
            .enumerate_pixels()
            .find(|(x, y, p)| p.0[0] != 0 && !bx.contains(*x, *y))
        {
            return Err(CallError::Malformed(format!(
                "mask is white at ({x}, {y}), outside the box"
            )));
        }
        if !(resp.score.is_finite() && (0.0..=1.0).contains(&resp.score)) {
            return Err(CallError::Malformed(format!(
                "score {} is not in [0, 1]",
                resp.score
            )));
        }
        Ok((mask, resp.score))
    }

    /// The mask of the object in `bx`, from the cache or the server (module docs).
    pub async fn segment(&self, image: &JudgeImage, bx: BoxPx) -> Result<Segmented, Failed> {
        let key = cache_key(&self.config.model, image.digest(), bx);
        let req = SegmentRequest {
            image: base64::engine::general_purpose::STANDARD.encode(image.png()),
            bbox: bx.to_array().iter().map(|&v| v.into()).collect(),
        };
        let body = Bytes::from(serde_json::to_vec(&req).expect("a segment request serialises"));
        match self
            .service
            .call(&key, &body, |bytes| self.read(image, bx, bytes))
            .await
        {
            Ok(c) => {
                let (mask, score) = c.value;
                Ok(Segmented {
                    mask,
                    score,
                    cached: c.cached,
                    attempts: c.attempts,
                })
            }
            Err(f) => Err(Failed {
                error: f.error,
                attempts: f.attempts,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_and_keys() {
        let c = SegmentConfig::new("ftp://x");
        assert_eq!(
            SegmentClient::new(c).unwrap_err().to_string(),
            "segmentation `base_url` `ftp://x`: expected an `http://` or `https://` URL"
        );
        let mut c = SegmentConfig::new("http://x");
        c.max_concurrency = 0;
        assert_eq!(
            SegmentClient::new(c).unwrap_err().to_string(),
            "segmentation `max_concurrency` must be at least 1"
        );
        let k = cache_key("color", "d", BoxPx::new(0, 0, 2, 2));
        assert_eq!(k, cache_key("color", "d", BoxPx::new(0, 0, 2, 2)));
        assert_ne!(k, cache_key("color", "d", BoxPx::new(0, 0, 2, 3)));
        assert_ne!(k, cache_key("color", "e", BoxPx::new(0, 0, 2, 2)));
        assert_ne!(k, cache_key("sam", "d", BoxPx::new(0, 0, 2, 2)));
        let c: SegmentConfig =
            serde_json::from_value(serde_json::json!({"base_url": "http://x"})).unwrap();
        assert_eq!(c, SegmentConfig::new("http://x"));
    }
}
