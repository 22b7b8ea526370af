//! [`RetryPolicy`]: bounded retries with exponential backoff and jitter, shared by every
//! client of a remote service (the judge, the segmenter).

use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Bounded retries with exponential backoff and jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 4).
    pub max_attempts: u32,
    /// Backoff before the first retry (default 500 ms).
    pub initial_backoff_ms: u64,
    /// Cap of one backoff (default 20 000 ms).
    pub max_backoff_ms: u64,
    /// Growth per retry (default 2).
    pub factor: f64,
    /// Seed of the jitter (default: from the clock).
    pub jitter_seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff_ms: 500,
            max_backoff_ms: 20_000,
            factor: 2.0,
            jitter_seed: None,
        }
    }
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
}
