//! Fault injection for the test servers (`cocoflow judge serve`, `cocoflow segment serve`):
//! which faults exist ([`FaultKind`]), when to inject them ([`FaultPlan`]), the draw
//! ([`Deliveries::draw`]) and the command-line flags ([`FaultArgs`]).
//!
//! Each request is faulty with probability `rate` (or, with `first`, exactly its first N
//! deliveries: deliveries are counted per distinct request body), the kind drawn uniformly
//! from `kinds`. The draws come from the seed, the body's digest and its delivery count, so
//! they reproduce whatever the interleaving of concurrent requests.

use super::serve::{DropConnection, Reply, json_reply};
use crate::rng::{SplitMix64, combine};
use hyper::StatusCode;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A fault a server can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum FaultKind {
    /// HTTP 429 Too Many Requests.
    #[value(name = "429")]
    TooManyRequests,
    /// HTTP 500 Internal Server Error.
    #[value(name = "500")]
    ServerError,
    /// HTTP 200 with a truncated JSON body.
    #[value(name = "malformed")]
    Malformed,
    /// The normal answer, after `delay`.
    #[value(name = "delay")]
    Delay,
    /// The connection is closed without an answer.
    #[value(name = "drop")]
    Drop,
    /// HTTP 400 (never retried by the clients); only when forced.
    #[value(name = "400")]
    BadRequest,
}

impl FaultKind {
    /// The kinds drawn from by default (all but 400).
    pub const DEFAULT: [FaultKind; 5] = [
        FaultKind::TooManyRequests,
        FaultKind::ServerError,
        FaultKind::Malformed,
        FaultKind::Delay,
        FaultKind::Drop,
    ];
}

/// When and how to misbehave.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Probability that a request is faulty (ignored when `first` is set).
    pub rate: f64,
    /// Exactly the first N deliveries of each distinct request body are faulty.
    pub first: Option<u32>,
    /// Kinds drawn from, uniformly.
    pub kinds: Vec<FaultKind>,
    /// How long a `delay` fault holds its answer.
    pub delay: Duration,
    pub seed: u64,
}

impl Default for FaultPlan {
    /// No faults.
    fn default() -> Self {
        FaultPlan {
            rate: 0.0,
            first: None,
            kinds: FaultKind::DEFAULT.to_vec(),
            delay: Duration::from_secs(10),
            seed: 0,
        }
    }
}

/// Deliveries per distinct request body, for [`Deliveries::draw`].
#[derive(Debug, Default)]
pub struct Deliveries(Mutex<HashMap<[u8; 32], u32>>);

impl Deliveries {
    /// Counts this delivery of `body` and says whether it is faulty, and how.
    pub fn draw(&self, plan: &FaultPlan, body: &[u8]) -> Option<FaultKind> {
        if plan.kinds.is_empty() || (plan.first.is_none() && plan.rate <= 0.0) {
            return None;
        }
        let digest = *blake3::hash(body).as_bytes();
        let n = {
            let mut d = self.0.lock().unwrap();
            let c = d.entry(digest).or_insert(0);
            *c += 1;
            *c - 1
        };
        let body_seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        let mut rng = SplitMix64::new(combine(plan.seed, combine(body_seed, n as u64)));
        let faulty = match plan.first {
            Some(k) => n < k,
            None => rng.next_f64() < plan.rate,
        };
        faulty.then(|| plan.kinds[rng.below(plan.kinds.len())])
    }
}

/// The reply a drawn fault gives instead of the normal answer, if any (`delay` waits and
/// returns `None`): 429, 500 and 400 through `error` (each server words its error body), a
/// truncated 200 body `malformed`, or a dropped connection.
pub async fn inject(
    fault: Option<FaultKind>,
    plan: &FaultPlan,
    malformed: &'static str,
    error: fn(StatusCode, &str) -> Reply,
) -> Option<Reply> {
    match fault? {
        FaultKind::TooManyRequests => Some(error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited (fault injection)",
        )),
        FaultKind::ServerError => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (fault injection)",
        )),
        FaultKind::BadRequest => Some(error(
            StatusCode::BAD_REQUEST,
            "bad request (fault injection)",
        )),
        FaultKind::Malformed => Some(json_reply(StatusCode::OK, malformed)),
        FaultKind::Drop => Some(Err(DropConnection)),
        FaultKind::Delay => {
            tokio::time::sleep(plan.delay).await;
            None
        }
    }
}

/// The fault flags of `cocoflow judge serve` and `cocoflow segment serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// Probability that a request gets a fault.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate: f64,
    /// Fault kinds to draw from (repeatable); default: 429, 500, malformed, delay, drop.
    #[arg(long = "fault", value_enum)]
    pub faults: Vec<FaultKind>,
    /// Make exactly the first N deliveries of each distinct request faulty (overrides the rate).
    #[arg(long)]
    pub fault_first: Option<u32>,
    /// How long a `delay` fault holds its answer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub delay_ms: u64,
    /// Added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed of the fault draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl FaultArgs {
    pub fn plan(&self) -> FaultPlan {
        FaultPlan {
            rate: self.fault_rate,
            first: self.fault_first,
            kinds: if self.faults.is_empty() {
                FaultKind::DEFAULT.to_vec()
            } else {
                self.faults.clone()
            },
            delay: Duration::from_millis(self.delay_ms),
            seed: self.seed,
        }
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}` is not in [0, 1]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_draws_reproduce_per_body_and_delivery() {
        let plan = |rate| FaultPlan {
            rate,
            seed: 3,
            ..FaultPlan::default()
        };
        let (a, b) = (Deliveries::default(), Deliveries::default());
        let half = plan(0.5);
        let seq_a: Vec<_> = (0..40)
            .map(|i| a.draw(&half, format!("body {}", i % 4).as_bytes()))
            .collect();
        // another interleaving of the same deliveries
        let mut seq_b = vec![None; 40];
        for i in (0..40)
            .rev()
            .collect::<Vec<_>>()
            .chunks(4)
            .rev()
            .flat_map(|c| c.iter().rev())
        {
            seq_b[*i] = b.draw(&half, format!("body {}", i % 4).as_bytes());
        }
        assert_eq!(seq_a, seq_b);
        let faults = seq_a.iter().flatten().count();
        assert!((10..=30).contains(&faults), "{faults}");
        let all = Deliveries::default();
        assert!((0..20).all(|i| all.draw(&plan(1.0), &[i]).is_some()));
        let none = Deliveries::default();
        assert!((0..20).all(|i| none.draw(&plan(0.0), &[i]).is_none()));
    }
}
