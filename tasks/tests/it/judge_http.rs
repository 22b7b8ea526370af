//! The judge client against the rule-judge server over real HTTP (loopback): scores, retries,
//! timeouts, invalid samples, the response cache, secrets and image order.

use cocoflow_engine::store::Store;
use cocoflow_tasks::judge::openai::JudgeStats;
use cocoflow_tasks::judge::server::{self, FaultKind, FaultPlan, ServerConfig, ServerHandle};
use cocoflow_tasks::judge::{
    Extraction, Judge, JudgeError, JudgeImage, JudgeRequest, OpenAiConfig, OpenAiJudge,
    ScoreVariant, Scores, prompts,
};
use cocoflow_tasks::net::RetryPolicy;
use cocoflow_tasks::net::{DirCache, StoreCache};
use cocoflow_tasks::synth::EditType;
use cocoflow_tasks::synth::RuleJudge;
use cocoflow_tasks::synth::samples::{sample, to_rgb};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `n` samples of the synthetic world, every edit type, 32 pixels.
fn requests(n: usize) -> Vec<JudgeRequest> {
    let types = [EditType::LOCAL.as_slice(), EditType::GLOBAL.as_slice()].concat();
    (0..n)
        .map(|i| {
            let e = sample(100 + i as u64, 32, types[i % types.len()]).expect("a sample");
            JudgeRequest::new(
                JudgeImage::from_rgb(to_rgb(&e.source_image)),
                JudgeImage::from_rgb(to_rgb(&e.target_image)),
                e.instruction,
            )
        })
        .collect()
}

/// The rule judge's own scores, without HTTP.
fn direct(reqs: &[JudgeRequest]) -> Vec<(f64, f64)> {
    let j = RuleJudge::default();
    reqs.iter()
        .map(|r| {
            let rep = j
                .evaluate(r.source.pixels(), r.edited.pixels(), &r.instruction)
                .unwrap();
            (rep.effect, rep.quality)
        })
        .collect()
}

async fn serve(faults: FaultPlan) -> ServerHandle {
    server::start_local(ServerConfig {
        faults,
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// Faults of one kind on the first `first` deliveries of every request.
fn first(kind: FaultKind, first: u32) -> FaultPlan {
    FaultPlan {
        first: Some(first),
        kinds: vec![kind],
        delay: Duration::from_secs(2),
        ..FaultPlan::default()
    }
}

fn config(server: &ServerHandle, extraction: Extraction) -> OpenAiConfig {
    let mut c = OpenAiConfig::new(server.base_url(), "rule-judge");
    c.extraction = extraction;
    c.timeout_ms = 5_000;
    c.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 5,
        max_backoff_ms: 40,
        factor: 2.0,
        jitter_seed: Some(1),
    };
    c
}

fn mean_scores(s: &Scores) -> (f64, f64) {
    match *s {
        Scores::Mean { effect, quality } => (effect, quality),
        Scores::Single { .. } => panic!("expected effect and quality"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_scores_equal_the_rule_judges_and_generate_rounds_them() {
    let server = serve(FaultPlan::default()).await;
    let reqs = requests(16);
    let want = direct(&reqs);
    assert!(want.iter().any(|w| w.0 > 0.5) && want.iter().any(|w| w.0 < 0.99 || w.1 < 0.99));

    let judge = OpenAiJudge::new(config(&server, Extraction::Logprobs)).unwrap();
    let batch = judge.judge_batch(&reqs, 4).await;
    assert_eq!(batch.invalid_count(), 0);
    for (v, w) in batch.verdicts.iter().zip(&want) {
        let j = v.as_ref().unwrap();
        let (e, q) = mean_scores(&j.scores);
        assert!(
            (e - w.0).abs() < 1e-6 && (q - w.1).abs() < 1e-6,
            "{:?} vs {w:?}",
            j.scores
        );
        assert!((j.r_mllm() - 0.5 * (w.0 + w.1)).abs() < 1e-6);
        assert!(
            j.raw.starts_with("{\"editing_effect\": "),
            "the raw answer is kept: {}",
            j.raw
        );
        assert_eq!(
            (j.prompt.as_str(), j.cached, j.attempts),
            ("reward@1", false, 1)
        );
    }
    assert_eq!(
        judge.stats(),
        JudgeStats {
            requests: 16,
            successes: 16,
            ..JudgeStats::default()
        }
    );
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.logprobs && r.top_logprobs == Some(10))
    );

    let judge = OpenAiJudge::new(config(&server, Extraction::Generate)).unwrap();
    let batch = judge.judge_batch(&reqs, 4).await;
    for (v, w) in batch.verdicts.iter().zip(&want) {
        let (e, q) = mean_scores(&v.as_ref().unwrap().scores);
        // integers 0–5: within half a step (0.1) of the exact score
        assert!((e - w.0).abs() <= 0.1 + 1e-9 && (q - w.1).abs() <= 0.1 + 1e-9);
        assert_eq!(((e * 5.0).round(), (q * 5.0).round()), (e * 5.0, q * 5.0));
    }
    assert!(
        server.received()[16..]
            .iter()
            .all(|r| !r.logprobs && r.top_logprobs.is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_variant_gives_one_score() {
    let server = serve(FaultPlan::default()).await;
    let reqs = requests(6);
    let want = direct(&reqs);
    let mut c = config(&server, Extraction::Logprobs);
    c.variant = ScoreVariant::Single;
    let judge = OpenAiJudge::new(c).unwrap();
    let batch = judge.judge_batch(&reqs, 3).await;
    for (v, w) in batch.verdicts.iter().zip(&want) {
        let j = v.as_ref().unwrap();
        assert!(matches!(j.scores, Scores::Single { .. }));
        assert!((j.r_mllm() - 0.5 * (w.0 + w.1)).abs() < 1e-6);
        assert_eq!(j.prompt, "reward-single@1");
    }
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.prompt.as_deref() == Some("reward-single@1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_from_429_500_malformed_bodies_and_dropped_connections() {
    let reqs = requests(5);
    let want = direct(&reqs);
    for kind in [
        FaultKind::TooManyRequests,
        FaultKind::ServerError,
        FaultKind::Malformed,
        FaultKind::Drop,
    ] {
        let server = serve(first(kind, 2)).await;
        let judge = OpenAiJudge::new(config(&server, Extraction::Logprobs)).unwrap();
        let batch = judge.judge_batch(&reqs, 5).await;
        assert_eq!(batch.invalid_count(), 0, "{kind:?}: {:?}", batch.verdicts);
        for (v, w) in batch.verdicts.iter().zip(&want) {
            let j = v.as_ref().unwrap();
            assert_eq!(j.attempts, 3, "{kind:?}");
            assert!((mean_scores(&j.scores).0 - w.0).abs() < 1e-6);
        }
        let s = judge.stats();
        assert_eq!(
            (s.requests, s.retries, s.failures, s.successes),
            (15, 10, 0, 5),
            "{kind:?}"
        );
        assert_eq!(server.request_count(), 15, "{kind:?}");
        let faults = server
            .received()
            .iter()
            .filter(|r| r.fault == Some(kind))
            .count();
        assert_eq!(faults, 10, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_request_timeout_triggers_a_retry() {
    let server = serve(first(FaultKind::Delay, 1)).await;
    let reqs = requests(3);
    let mut c = config(&server, Extraction::Logprobs);
    c.timeout_ms = 1_000;
    let judge = OpenAiJudge::new(c).unwrap();
    let batch = judge.judge_batch(&reqs, 3).await;
    assert_eq!(batch.invalid_count(), 0, "{:?}", batch.verdicts);
    let s = judge.stats();
    assert_eq!((s.requests, s.timeouts, s.retries), (6, 3, 3));
    assert!(
        batch
            .verdicts
            .iter()
            .all(|v| v.as_ref().unwrap().attempts == 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_request_failing_every_sample_is_invalid_and_the_batch_fails() {
    let faults = FaultPlan {
        rate: 1.0,
        seed: 7,
        delay: Duration::from_millis(600),
        ..FaultPlan::default()
    };
    let server = serve(faults).await;
    let reqs = requests(8);
    let mut c = config(&server, Extraction::Logprobs);
    c.timeout_ms = 250;
    let judge = OpenAiJudge::new(c).unwrap();
    let batch = judge.judge_batch(&reqs, 8).await;
    assert_eq!(batch.invalid_count(), 8);
    assert_eq!(batch.r_mllm(), vec![None; 8], "no made-up scores");
    for v in &batch.verdicts {
        let inv = v.as_ref().unwrap_err();
        assert_eq!(inv.attempts, 3);
        assert!(inv.error.retryable(), "{inv}");
    }
    let s = judge.stats();
    assert_eq!(
        (s.requests, s.retries, s.failures, s.successes),
        (24, 16, 8, 0)
    );
    let kinds: std::collections::HashSet<_> =
        server.received().iter().filter_map(|r| r.fault).collect();
    assert!(
        kinds.len() >= 4,
        "faults are drawn from every kind: {kinds:?}"
    );
    let err = batch.check(0.25).unwrap_err();
    assert!(
        err.to_string().starts_with("8 of 8 judge answers are invalid, more than `max_invalid_fraction` 0.25 allows; first: no valid judge answer after 3 attempt(s): "),
        "{err}"
    );
    assert!(batch.check(1.0).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_other_than_429_are_not_retried() {
    let server = serve(FaultPlan {
        rate: 1.0,
        kinds: vec![FaultKind::BadRequest],
        ..FaultPlan::default()
    })
    .await;
    let judge = OpenAiJudge::new(config(&server, Extraction::Logprobs)).unwrap();
    let batch = judge.judge_batch(&requests(2), 2).await;
    for v in &batch.verdicts {
        let inv = v.as_ref().unwrap_err();
        assert_eq!(inv.attempts, 1);
        assert!(
            matches!(&inv.error, JudgeError::Status { status: 400, body } if body.contains("fault injection")),
            "{inv}"
        );
    }
    assert_eq!((judge.stats().requests, judge.stats().retries), (2, 0));

    // a prompt this server does not answer: HTTP 400, not retried; a missing mask: no request
    let server = serve(FaultPlan::default()).await;
    let judge = OpenAiJudge::new(config(&server, Extraction::Generate)).unwrap();
    let req = &requests(1)[0];
    let inv = judge.ask(&prompts::GEDIT_SC, req).await.unwrap_err();
    assert!(
        matches!(&inv.error, JudgeError::Status { status: 400, body } if body.contains("`reward`")),
        "{inv}"
    );
    let inv = judge.ask(&prompts::FILTER, req).await.unwrap_err();
    assert_eq!(
        inv.error.to_string(),
        "prompt `curation-filter@1` shows the Mask image, which the request does not give"
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_makes_a_second_identical_batch_free() {
    let server = serve(FaultPlan::default()).await;
    let reqs = requests(6);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("memory://", dir.path(), dir.path()).unwrap();

    let first_judge = OpenAiJudge::new(config(&server, Extraction::Logprobs))
        .unwrap()
        .with_cache(Arc::new(StoreCache::new(store.clone())));
    let a = first_judge.judge_batch(&reqs, 3).await;
    assert_eq!(server.request_count(), 6);

    // a new judge on the same store: a re-run never pays twice
    let second_judge = OpenAiJudge::new(config(&server, Extraction::Logprobs))
        .unwrap()
        .with_cache(Arc::new(StoreCache::new(store.clone())));
    let b = second_judge.judge_batch(&reqs, 3).await;
    assert_eq!(
        server.request_count(),
        6,
        "zero HTTP requests the second time"
    );
    assert_eq!(
        second_judge.stats(),
        JudgeStats {
            cache_hits: 6,
            ..JudgeStats::default()
        }
    );
    for (x, y) in a.verdicts.iter().zip(&b.verdicts) {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        assert_eq!((x.scores, &x.raw, x.cached), (y.scores, &y.raw, !y.cached));
    }

    // anything in the key that changes misses: another instruction, another extraction
    let mut changed = reqs[0].clone();
    changed.instruction.push('.');
    second_judge.judge(&changed).await.unwrap();
    assert_eq!(server.request_count(), 7);
    let generate = OpenAiJudge::new(config(&server, Extraction::Generate))
        .unwrap()
        .with_cache(Arc::new(StoreCache::new(store)));
    generate.judge(&reqs[0]).await.unwrap();
    assert_eq!(server.request_count(), 8);

    // a directory cache persists across judges too
    let cache_dir = dir.path().join("judge-cache");
    for expected in [9, 9] {
        let j = OpenAiJudge::new(config(&server, Extraction::Logprobs))
            .unwrap()
            .with_cache(Arc::new(DirCache::new(&cache_dir)));
        j.judge(&reqs[1]).await.unwrap();
        assert_eq!(server.request_count(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_go_in_the_order_source_edited_with_the_instruction() {
    let server = serve(FaultPlan::default()).await;
    let reqs = requests(4);
    let judge = OpenAiJudge::new(config(&server, Extraction::Logprobs)).unwrap();
    judge.judge_batch(&reqs, 1).await;
    let got = server.received();
    assert_eq!(got.len(), 4);
    for (r, g) in reqs.iter().zip(&got) {
        assert_eq!(
            g.image_digests,
            vec![r.source.digest().to_string(), r.edited.digest().to_string()]
        );
        assert_eq!(g.instruction.as_deref(), Some(r.instruction.as_str()));
        assert_eq!(
            (g.model.as_str(), g.prompt.as_deref()),
            ("rule-judge", Some("reward@1"))
        );
        assert_ne!(r.source.digest(), r.edited.digest());
    }
}

/// The correlation study's consistency prompt over HTTP (what `correlate` asks with
/// `judge: {kind: openai}`): the server's rule judge reads the mask, and the client's score
/// equals the rule judge's own answer under both extractions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_prompt_is_answered_over_http_with_the_mask() {
    let server = serve(FaultPlan::default()).await;
    // local types: the global ones mask the whole image, leaving no background to judge
    let types = EditType::LOCAL;
    let rule = RuleJudge::default();
    let mut scores = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let e = sample(300 + i as u64, 32, *t).expect("a sample");
        let mask = image::RgbImage::from_fn(32, 32, |x, y| {
            let v = if e.edit_mask[(y * 32 + x) as usize] {
                255
            } else {
                0
            };
            image::Rgb([v, v, v])
        });
        let req = JudgeRequest::new(
            JudgeImage::from_rgb(to_rgb(&e.source_image)),
            JudgeImage::from_rgb(to_rgb(&e.target_image)),
            e.instruction,
        );
        // without the mask the prompt cannot be asked
        let j = OpenAiJudge::new(config(&server, Extraction::Generate)).unwrap();
        let inv = j.ask(&prompts::CONSISTENCY, &req).await.unwrap_err();
        assert!(
            matches!(inv.error, JudgeError::MissingImage { .. }),
            "{inv}"
        );
        let req = req.with_mask(JudgeImage::from_rgb(mask));
        let want = rule
            .consistency(
                req.source.pixels(),
                req.edited.pixels(),
                req.mask.as_ref().unwrap().pixels(),
            )
            .unwrap()
            .consistency_score as f64;
        for extraction in [Extraction::Generate, Extraction::Logprobs] {
            let j = OpenAiJudge::new(config(&server, extraction)).unwrap();
            let a = j.ask(&prompts::CONSISTENCY, &req).await.unwrap();
            let got = a.answer.scores["consistency_score"].value;
            assert!(
                (got - want).abs() < 1e-6,
                "{t:?} {extraction:?}: {got} vs {want}"
            );
        }
        scores.push(want);
    }
    assert!(
        scores.iter().all(|s| (1.0..=10.0).contains(s)),
        "{scores:?}"
    );
    let got = server.received();
    assert_eq!(got.last().unwrap().prompt.as_deref(), Some("consistency@1"));
    assert_eq!(got.last().unwrap().image_digests.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds() {
    let server = server::start_local(ServerConfig {
        latency: Duration::from_millis(60),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let reqs = requests(8);
    let mut c = config(&server, Extraction::Logprobs);
    c.max_concurrency = 2;
    let judge = OpenAiJudge::new(c).unwrap();
    judge.judge_batch(&reqs, 8).await;
    assert!(
        server.max_in_flight() <= 2,
        "the judge's own limit: {}",
        server.max_in_flight()
    );

    let server = server::start_local(ServerConfig {
        latency: Duration::from_millis(30),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let judge = OpenAiJudge::new(config(&server, Extraction::Logprobs)).unwrap();
    judge.judge_batch(&reqs, 1).await;
    assert_eq!(
        server.max_in_flight(),
        1,
        "the batch's limit (the engine's `judge` pool)"
    );
}

/// A writer that keeps everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The key goes to the server, and nowhere else: not into `Debug`, logs or errors.
#[tokio::test]
async fn the_api_key_is_sent_but_never_shown() {
    const SECRET: &str = "sk-test-4f1e9c-never-print-me";
    let var = "COCOFLOW_JUDGE_HTTP_TEST_KEY";
    // SAFETY: this test binary's only use of this variable; set before any thread reads it.
    unsafe { std::env::set_var(var, SECRET) };
    // Global (not thread-local): with other tests running, a thread-local subscriber can miss
    // events whose callsite interest another thread cached first.
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    // one retried fault per request, then a 400 on a prompt the server does not answer
    let server = serve(first(FaultKind::ServerError, 1)).await;
    let mut c = config(&server, Extraction::Logprobs);
    c.api_key_env = Some(var.into());
    let judge = OpenAiJudge::new(c.clone()).unwrap();
    let debug = format!("{judge:?} {c:?}");
    assert!(
        !debug.contains(SECRET) && debug.contains("<redacted>") && debug.contains(var),
        "{debug}"
    );
    let reqs = requests(2);
    let batch = judge.judge_batch(&reqs, 2).await;
    assert_eq!(batch.invalid_count(), 0);
    let inv = judge.ask(&prompts::IMGEDIT, &reqs[0]).await.unwrap_err();
    let shown = format!("{inv} {inv:?} {:?} {}", batch.verdicts, judge.describe());
    assert!(!shown.contains(SECRET));

    let auth: Vec<_> = server
        .received()
        .iter()
        .map(|r| r.authorization.clone())
        .collect();
    assert!(
        auth.iter()
            .all(|a| a.as_deref() == Some(&format!("Bearer {SECRET}")[..])),
        "{auth:?}"
    );
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying") && logs.contains("no valid answer"),
        "{logs}"
    );
    assert!(
        !logs.contains(SECRET),
        "the key leaked into the logs:\n{logs}"
    );
}
