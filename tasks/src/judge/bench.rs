//! `cocoflow judge bench`: how many judge requests per second a server answers, and how
//! fast, at each concurrency; to size the `judge` pool (the judge client keeps that many
//! requests in flight).
//!
//! For each `--concurrency` c: a fresh [`OpenAiJudge`] (no response cache, one attempt per
//! request, `max_concurrency` c) asks `--requests` distinct samples (two `--image-size`
//! images of their own colours, the mask for prompts that show one), c at a time, as
//! [`super::Judge::judge_batch`] does. One warm-up request before the first run is not
//! counted. Per run: requests/s over the wall time, p50/p99 latency (nearest rank), and how
//! many answers were valid, invalid (the server answered, the answer was unusable) or failed
//! (no answer, or an HTTP error); the speed-up is against the first concurrency, measured in
//! the same run. Answers are not cached, so the numbers are the server's.

use super::check::ServerArgs;
use super::prompts::{self, Prompt};
use super::{JudgeError, JudgeImage, JudgeRequest, OpenAiConfig, OpenAiJudge};
use crate::net::RetryPolicy;
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_OK, EXIT_USAGE};
use futures::StreamExt as _;
use image::{Rgb, RgbImage};
use std::time::{Duration, Instant};

/// `cocoflow judge bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Requests per concurrency.
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Requests in flight; several values (`--concurrency 1,4,16`) make one run each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 4])]
    pub concurrency: Vec<usize>,
    /// Side of the square test images, in pixels.
    #[arg(long, default_value_t = 256)]
    pub image_size: u32,
    /// The prompt asked (an id of the judge's prompts: `reward`, `curation-filter`, `gedit-sc`...).
    #[arg(long, default_value = "reward")]
    pub prompt: String,
}

/// One concurrency's run.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub concurrency: usize,
    pub requests: usize,
    pub wall: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub valid: usize,
    pub invalid: usize,
    pub failed: usize,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
}

impl BenchRow {
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Everything `judge bench` measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub endpoint: String,
    pub model: String,
    pub prompt: String,
    pub image_size: u32,
    pub warmup: Duration,
    pub rows: Vec<BenchRow>,
}

/// The `i`-th bench sample: a square of its own colour on a background of another.
pub fn bench_request(i: usize, size: u32) -> JudgeRequest {
    let c = |k: usize| (i.wrapping_mul(37).wrapping_add(91 * k) % 256) as u8;
    let (lo, hi) = (size / 4, 3 * size / 4);
    let inside = |x: u32, y: u32| (lo..hi).contains(&x) && (lo..hi).contains(&y);
    let img = |square: [u8; 3]| {
        JudgeImage::from_rgb(RgbImage::from_fn(size, size, |x, y| {
            if inside(x, y) {
                Rgb(square)
            } else {
                Rgb([c(0), c(1), c(2)])
            }
        }))
    };
    let mask = RgbImage::from_fn(size, size, |x, y| {
        let v = if inside(x, y) { 255 } else { 0 };
        Rgb([v, v, v])
    });
    JudgeRequest::new(
        img([c(3), c(4), c(5)]),
        img([c(5), c(3), c(4)]),
        "change the colour of the square",
    )
    .with_mask(JudgeImage::from_rgb(mask))
    .with_var("edit_type", "attribute")
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the benchmark (module docs).
pub async fn bench(
    config: &OpenAiConfig,
    prompt: &'static Prompt,
    requests: usize,
    concurrency: &[usize],
    image_size: u32,
) -> Result<BenchReport, String> {
    let judge_with = |c: usize| {
        let mut cfg = config.clone();
        cfg.max_concurrency = c.max(1);
        cfg.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        OpenAiJudge::new(cfg).map_err(|e| e.to_string())
    };
    let warm = judge_with(1)?;
    let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
    let t = Instant::now();
    let _ = warm
        .ask(prompt, &bench_request(usize::MAX / 2, image_size))
        .await;
    let warmup = t.elapsed();
    let mut rows = Vec::new();
    for (run, &c) in concurrency.iter().enumerate() {
        let judge = judge_with(c)?;
        let reqs: Vec<JudgeRequest> = (0..requests)
            .map(|i| bench_request(run * requests + i, image_size))
            .collect();
        let start = Instant::now();
        let outcomes: Vec<(Duration, Result<(), JudgeError>)> = futures::stream::iter(&reqs)
            .map(|r| {
                let judge = &judge;
                async move {
                    let t = Instant::now();
                    let out = judge.ask(prompt, r).await.map(|_| ()).map_err(|e| e.error);
                    (t.elapsed(), out)
                }
            })
            .buffer_unordered(c.max(1))
            .collect()
            .await;
        let wall = start.elapsed();
        let mut lat: Vec<Duration> = outcomes.iter().map(|(d, _)| *d).collect();
        lat.sort();
        let invalid = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Err(JudgeError::Answer(_))))
            .count();
        let valid = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
        let first_error = outcomes
            .iter()
            .find_map(|(_, o)| o.as_ref().err().map(|e| e.to_string()));
        rows.push(BenchRow {
            concurrency: c,
            requests,
            wall,
            p50: percentile(&lat, 50.0),
            p99: percentile(&lat, 99.0),
            valid,
            invalid,
            failed: requests - valid - invalid,
            first_error,
        });
    }
    Ok(BenchReport {
        endpoint,
        model: config.model.clone(),
        prompt: prompt.key(),
        image_size,
        warmup,
        rows,
    })
}

impl BenchReport {
    /// The table `cocoflow judge bench` prints.
    pub fn render(&self) -> String {
        let mut out = format!(
            "judge bench: {} · model `{}` · prompt {} · images {s}×{s} · warm-up {:.0} ms\n",
            self.endpoint,
            self.model,
            self.prompt,
            self.warmup.as_secs_f64() * 1e3,
            s = self.image_size,
        );
        out.push_str(
            "concurrency  requests  requests/s  p50 ms  p99 ms  valid  invalid  failed  speed-up\n",
        );
        let base = self.rows.first().map(BenchRow::requests_per_s);
        for r in &self.rows {
            out.push_str(&format!(
                "{:>11}  {:>8}  {:>10.2}  {:>6.0}  {:>6.0}  {:>5}  {:>7}  {:>6}  {:>8.2}\n",
                r.concurrency,
                r.requests,
                r.requests_per_s(),
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.valid,
                r.invalid,
                r.failed,
                base.map_or(1.0, |b| r.requests_per_s() / b.max(1e-9)),
            ));
        }
        for r in &self.rows {
            if let Some(e) = &r.first_error {
                out.push_str(&format!(
                    "concurrency {}: first error: {e}\n",
                    r.concurrency
                ));
            }
        }
        out
    }
}

/// `cocoflow judge bench`: prints the table; exit 0, or 5 when no request got an answer.
pub fn run(args: &BenchArgs) -> i32 {
    let Some(prompt) = prompts::by_id(&args.prompt) else {
        let ids: Vec<&str> = prompts::ALL.iter().map(|p| p.id).collect();
        eprintln!(
            "error: no prompt `{}`; the prompts are {}",
            args.prompt,
            ids.join(", ")
        );
        return EXIT_USAGE;
    };
    if args.requests == 0 || args.concurrency.contains(&0) || args.image_size < 8 {
        eprintln!(
            "error: `--requests` and `--concurrency` must be at least 1, `--image-size` at least 8"
        );
        return EXIT_USAGE;
    }
    let rt = match crate::net::serve::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let config = args.server.config();
    match rt.block_on(bench(
        &config,
        prompt,
        args.requests,
        &args.concurrency,
        args.image_size,
    )) {
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
        Ok(report) => {
            print!("{}", report.render());
            if report.rows.iter().all(|r| r.failed == r.requests) {
                eprintln!("error: no request got an answer from the server");
                EXIT_ENVIRONMENT
            } else {
                EXIT_OK
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&d, 99.0), Duration::from_millis(99));
        let d = vec![Duration::from_millis(7)];
        assert_eq!(percentile(&d, 99.0), Duration::from_millis(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn bench_samples_differ() {
        let a = bench_request(0, 16);
        let b = bench_request(1, 16);
        assert_ne!(a.source.digest(), b.source.digest());
        assert_ne!(a.source.digest(), a.edited.digest());
        assert_eq!(
            (a.source.width(), a.mask.as_ref().unwrap().height()),
            (16, 16)
        );
    }
}
