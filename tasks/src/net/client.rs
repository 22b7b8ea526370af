//! [`JsonService`]: one JSON-over-HTTP endpoint with the behaviour every remote-service client
//! of cocoflow shares (the judge's OpenAI-compatible client, the segmentation client), and the
//! **one** retry loop ([`JsonService::call`]).
//!
//! - Each HTTP attempt has its own timeout (`timeout_ms`, connection to last body byte; the
//!   connect timeout is at most 10 s) and holds one of `max_concurrency` permits.
//! - Timeouts, connection errors, HTTP 429 and 5xx, and answers the caller's `read` rejects
//!   are retried up to `retry.max_attempts` attempts in all, with exponential backoff and
//!   jitter ([`RetryPolicy`]; `Retry-After` is honoured up to `max_backoff_ms`); what is not
//!   retryable ([`ServiceError::retryable`], e.g. other 4xx) ends the call at once. After the
//!   last attempt the call fails: a client never invents an answer.
//! - With a [`ResponseCache`], validated response bodies are stored under the caller's key; a
//!   hit makes no request (an unusable cached body is ignored and asked again).
//! - [`ClientStats`] counts attempts, cache hits, retries, timeouts, failures and successes.
//! - Extra headers (an API key) are marked sensitive: no `Debug`, log line or error shows them.

use super::cache::ResponseCache;
use super::retry::RetryPolicy;
use crate::rng::SplitMix64;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Counters of one client, for tests and run summaries.
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

/// The live counters behind [`ClientStats`].
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    cache_hits: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    failures: AtomicU64,
    successes: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> ClientStats {
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

/// Why a client cannot be built; the message names the service (`judge`, `segmentation`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{service} `base_url` `{url}`: {reason}")]
    BadBaseUrl {
        service: &'static str,
        url: String,
        reason: String,
    },
    #[error("{service} `{field}` must be at least 1")]
    Zero {
        service: &'static str,
        field: &'static str,
    },
    #[error("cannot build the {service} HTTP client: {reason}")]
    Client {
        service: &'static str,
        reason: String,
    },
}

/// The errors a client reports for one attempt; [`JsonService::call`] builds the transport
/// ones and asks which are worth retrying.
pub trait ServiceError: std::fmt::Display {
    /// No answer within `timeout_ms`.
    fn timeout(timeout_ms: u64) -> Self;
    /// The connection failed (the message holds the URL and the cause chain, never headers).
    fn connection(message: String) -> Self;
    /// A non-2xx answer with its body.
    fn status(status: u16, body: &[u8]) -> Self;
    /// Whether another attempt could help.
    fn retryable(&self) -> bool;
}

/// A body as text for an error message: trimmed, at most 300 bytes (then `…`).
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() > 300 {
        format!("{}…", &text[..text.floor_char_boundary(300)])
    } else {
        text.to_string()
    }
}

/// A validated answer.
#[derive(Debug, Clone)]
pub struct Called<T> {
    pub value: T,
    /// From the cache (then `attempts` is 0).
    pub cached: bool,
    /// HTTP attempts made.
    pub attempts: u32,
}

/// A call that ended without a valid answer: the last attempt's error.
#[derive(Debug, Clone)]
pub struct CallFailed<E> {
    pub error: E,
    pub attempts: u32,
}

/// One JSON endpoint of a remote service (module docs).
pub struct JsonService {
    /// `judge`, `segmentation`: for log lines.
    what: &'static str,
    endpoint: String,
    http: reqwest::Client,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout_ms: u64,
    retry: RetryPolicy,
    limit: Semaphore,
    jitter: Mutex<SplitMix64>,
    counters: Counters,
    cache: Option<Arc<dyn ResponseCache>>,
}

impl std::fmt::Debug for JsonService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonService")
            .field("what", &self.what)
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.len())
            .field("timeout_ms", &self.timeout_ms)
            .field("retry", &self.retry)
            .field("cache", &self.cache.as_ref().map(|c| c.describe()))
            .finish_non_exhaustive()
    }
}

impl JsonService {
    /// Checks the settings (an `http(s)://` base URL, limits ≥ 1) and builds the client;
    /// requests go to `endpoint`.
    pub fn new(
        what: &'static str,
        base_url: &str,
        endpoint: String,
        timeout_ms: u64,
        retry: &RetryPolicy,
        max_concurrency: usize,
    ) -> Result<Self, ConfigError> {
        let bad_url = |reason: String| ConfigError::BadBaseUrl {
            service: what,
            url: base_url.to_string(),
            reason,
        };
        let url = reqwest::Url::parse(base_url).map_err(|e| bad_url(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_url("expected an `http://` or `https://` URL".into()));
        }
        let zero = |field| ConfigError::Zero {
            service: what,
            field,
        };
        if max_concurrency == 0 {
            return Err(zero("max_concurrency"));
        }
        if retry.max_attempts == 0 {
            return Err(zero("retry.max_attempts"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(timeout_ms.min(10_000)))
            .build()
            .map_err(|e| ConfigError::Client {
                service: what,
                reason: e.to_string(),
            })?;
        Ok(JsonService {
            what,
            endpoint,
            http,
            headers: Vec::new(),
            timeout_ms,
            retry: retry.clone(),
            limit: Semaphore::new(max_concurrency),
            jitter: Mutex::new(retry.jitter_rng()),
            counters: Counters::default(),
            cache: None,
        })
    }

    /// Sends this header with every request; its value is marked sensitive.
    pub fn with_header(mut self, name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        self.headers.push((name, value));
        self
    }

    /// Uses this response cache.
    pub fn with_cache(mut self, cache: Arc<dyn ResponseCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn cache(&self) -> Option<&Arc<dyn ResponseCache>> {
        self.cache.as_ref()
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    pub fn stats(&self) -> ClientStats {
        self.counters.snapshot()
    }

    /// Counts a call that failed before any request (e.g. its body could not be built).
    pub fn count_failure(&self) {
        bump(&self.counters.failures);
    }

    /// Posts `body` and returns `read`'s value of the first answer it accepts, from the cache
    /// under `key` or over HTTP with bounded retries (module docs).
    pub async fn call<T, E: ServiceError>(
        &self,
        key: &str,
        body: &Bytes,
        mut read: impl FnMut(&[u8]) -> Result<T, E>,
    ) -> Result<Called<T>, CallFailed<E>> {
        if let Some(cache) = &self.cache {
            match cache.get(key).await {
                Ok(Some(bytes)) => match read(&bytes) {
                    Ok(value) => {
                        bump(&self.counters.cache_hits);
                        return Ok(Called {
                            value,
                            cached: true,
                            attempts: 0,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(service = self.what, key, error = %e, "ignoring an unusable cached response")
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(service = self.what, error = %e, "cache read failed"),
            }
        }
        let max = self.retry.max_attempts;
        for attempt in 1..=max {
            tracing::debug!(service = self.what, endpoint = %self.endpoint, attempt, "request");
            let (error, retry_after) = match self.attempt::<E>(body).await {
                Ok(bytes) => match read(&bytes) {
                    Ok(value) => {
                        if let Some(cache) = &self.cache
                            && let Err(e) = cache.put(key, bytes).await
                        {
                            tracing::warn!(service = self.what, error = %e, "cache write failed");
                        }
                        bump(&self.counters.successes);
                        return Ok(Called {
                            value,
                            cached: false,
                            attempts: attempt,
                        });
                    }
                    Err(e) => (e, None),
                },
                Err(e) => e,
            };
            if !error.retryable() || attempt == max {
                bump(&self.counters.failures);
                tracing::warn!(service = self.what, attempts = attempt, error = %error, "no valid answer");
                return Err(CallFailed {
                    error,
                    attempts: attempt,
                });
            }
            bump(&self.counters.retries);
            let u = self.jitter.lock().unwrap().next_f64();
            let delay = self.retry.backoff(attempt, u, retry_after);
            tracing::debug!(
                service = self.what,
                attempt,
                max_attempts = max,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// One HTTP attempt: the body of a 2xx answer, or the error and any `Retry-After`.
    async fn attempt<E: ServiceError>(&self, body: &Bytes) -> Result<Bytes, (E, Option<Duration>)> {
        let _permit = self
            .limit
            .acquire()
            .await
            .expect("the semaphore is never closed");
        bump(&self.counters.requests);
        let mut rb = self
            .http
            .post(&self.endpoint)
            .timeout(Duration::from_millis(self.timeout_ms))
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        for (name, value) in &self.headers {
            rb = rb.header(name, value.clone());
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
            return Err((E::status(status.as_u16(), &bytes), retry_after));
        }
        Ok(bytes)
    }

    fn classify<E: ServiceError>(&self, e: reqwest::Error) -> E {
        if e.is_timeout() {
            bump(&self.counters.timeouts);
            return E::timeout(self.timeout_ms);
        }
        // The error chain names the URL and the cause; headers (a key) never appear.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        E::connection(msg)
    }
}
