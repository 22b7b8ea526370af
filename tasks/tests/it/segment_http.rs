//! The segmentation client against `segment serve` over real HTTP (loopback): masks of
//! synthetic scenes, box validation, fault injection with retries, the response cache.

use cocoflow_tasks::judge::JudgeImage;
use cocoflow_tasks::net::{DirCache, MemoryCache};
use cocoflow_tasks::segment::client::{
    CallError, RetryPolicy, SegmentClient, SegmentConfig, SegmentStats,
};
use cocoflow_tasks::segment::server::{self, FaultKind, FaultPlan, ServerConfig, ServerHandle};
use cocoflow_tasks::segment::{BoxPx, iou};
use cocoflow_tasks::synth::samples::render;
use cocoflow_tasks::synth::{self, Scene};
use image::GrayImage;
use std::sync::Arc;
use std::time::Duration;

const SIZE: usize = 64;

/// Scenes of the synthetic world with up to 4 objects.
fn scenes(n: usize) -> Vec<Scene> {
    (0..n)
        .map(|i| {
            let mut rng = synth::stream(7, "segment-test", i as u64);
            synth::random_scene(&mut rng, SIZE, 4)
        })
        .collect()
}

/// Object `k`'s true mask: pixels at least half of whose 2×2 sub-samples show it (later
/// objects paint over earlier ones, as in `Scene::render`).
fn truth(scene: &Scene, k: usize) -> GrayImage {
    GrayImage::from_fn(SIZE as u32, SIZE as u32, |x, y| {
        let hits = (0..4)
            .filter(|s| {
                let (px, py) = (
                    x as f32 + ((s % 2) as f32 + 0.5) / 2.0,
                    y as f32 + ((s / 2) as f32 + 0.5) / 2.0,
                );
                let top = scene
                    .objects
                    .iter()
                    .rposition(|o| o.shape.contains(o.cx, o.cy, o.r, px, py));
                top == Some(k)
            })
            .count();
        image::Luma([if hits >= 2 { 255 } else { 0 }])
    })
}

/// The bounding box of the object's footprint grown by `margin`, clipped to the image.
fn object_box(scene: &Scene, k: usize, margin: u32) -> BoxPx {
    let fp = scene.footprint(&scene.objects[k]);
    let n = SIZE as u32;
    let (mut x0, mut y0, mut x1, mut y1) = (n, n, 0, 0);
    for (i, _) in fp.iter().enumerate().filter(|(_, v)| **v) {
        let (x, y) = ((i % SIZE) as u32, (i / SIZE) as u32);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
    }
    BoxPx::new(
        x0.saturating_sub(margin),
        y0.saturating_sub(margin),
        (x1 + margin).min(n),
        (y1 + margin).min(n),
    )
}

async fn serve(faults: FaultPlan) -> ServerHandle {
    server::start_local(ServerConfig {
        faults,
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

fn client(server: &ServerHandle, max_attempts: u32, timeout_ms: u64) -> SegmentClient {
    let mut c = SegmentConfig::new(server.base_url());
    c.timeout_ms = timeout_ms;
    c.retry = RetryPolicy {
        max_attempts,
        initial_backoff_ms: 5,
        max_backoff_ms: 40,
        factor: 2.0,
        jitter_seed: Some(1),
    };
    SegmentClient::new(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masks_of_synthetic_scenes_match_the_objects() {
    let srv = serve(FaultPlan::default()).await;
    let cl = client(&srv, 1, 10_000);
    let mut ious = Vec::new();
    for scene in scenes(24) {
        let img = JudgeImage::from_rgb(render(&scene));
        for k in 0..scene.objects.len() {
            let want = truth(&scene, k);
            for margin in [0, 3] {
                let bx = object_box(&scene, k, margin);
                let got = match cl.segment(&img, bx).await {
                    Ok(g) => g,
                    Err(e) => {
                        eprintln!(
                            "no mask: {} r={:.1} box {:?} margin {margin} ({:?}): {e}",
                            scene.objects[k].describe(),
                            scene.objects[k].r,
                            bx,
                            scene.background
                        );
                        ious.push(0.0);
                        continue;
                    }
                };
                assert!(!got.cached && got.attempts == 1);
                assert!((0.0..=1.0).contains(&got.score));
                let v = iou(&got.mask, &want);
                ious.push(v);
                if v < 0.9 {
                    eprintln!(
                        "low IoU {v:.3}: {} r={:.1} box {:?} margin {margin}",
                        scene.objects[k].describe(),
                        scene.objects[k].r,
                        bx
                    );
                }
            }
        }
    }
    let n = ious.len();
    let good = ious.iter().filter(|v| **v >= 0.9).count();
    let mean = ious.iter().sum::<f64>() / n as f64;
    eprintln!("{good}/{n} masks with IoU >= 0.9, mean IoU {mean:.4}");
    assert!(n >= 60, "{n}");
    assert!(good as f64 >= 0.95 * n as f64, "{good}/{n}");
    assert!(mean >= 0.97, "{mean}");
    assert_eq!(cl.stats().requests, n as u64);
    assert_eq!(srv.request_count(), n as u64);
}

#[tokio::test]
async fn bad_boxes_get_400_naming_the_problem() {
    let srv = serve(FaultPlan::default()).await;
    let scene = &scenes(1)[0];
    let img = JudgeImage::from_rgb(render(scene));
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(img.png())
    };
    let http = reqwest::Client::new();
    let url = format!("{}/v1/segment", srv.base_url());
    let post = |body: serde_json::Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.post(&url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (
                status,
                v["error"]["message"].as_str().unwrap_or("").to_string(),
            )
        }
    };
    let cases = [
        (
            serde_json::json!([0, 0, 65, 10]),
            "box: x1 = 65 is past the image width 64",
        ),
        (
            serde_json::json!([0, 0, 10, 99]),
            "box: y1 = 99 is past the image height 64",
        ),
        (
            serde_json::json!([10, 0, 10, 5]),
            "box: x0 = 10 must be less than x1 = 10 (x1/y1 are exclusive)",
        ),
        (
            serde_json::json!([0, 9, 5, 3]),
            "box: y0 = 9 must be less than y1 = 3 (x1/y1 are exclusive)",
        ),
        (
            serde_json::json!([-2, 0, 5, 5]),
            "box: x0 = -2 is not a pixel coordinate (a non-negative integer)",
        ),
        (
            serde_json::json!([0, 0, 5]),
            "box: expected 4 numbers [x0, y0, x1, y1], got 3",
        ),
    ];
    for (bx, want) in cases {
        let (status, msg) = post(serde_json::json!({"image": b64, "box": bx})).await;
        assert_eq!((status, msg.as_str()), (400, want));
    }
    let (status, msg) = post(serde_json::json!({"image": "@@@", "box": [0, 0, 1, 1]})).await;
    assert_eq!(status, 400);
    assert!(msg.starts_with("image is not base64"), "{msg}");
    let (status, msg) = post(serde_json::json!({"picture": b64})).await;
    assert_eq!(status, 400);
    assert!(msg.contains("not a segment request"), "{msg}");
    // Health, and 404 elsewhere.
    let h: serde_json::Value = http
        .get(format!("{}/health", srv.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert!(h["segmenter"].as_str().unwrap().starts_with("color("));
    let r = http
        .get(format!("{}/v1/other", srv.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Through the client: a 400 is not retried and names the problem.
    let cl = client(&srv, 4, 5_000);
    let err = cl
        .segment(&img, BoxPx::new(0, 0, 70, 10))
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 1);
    assert_eq!(
        err.error,
        CallError::Status {
            status: 400,
            message: "box: x1 = 70 is past the image width 64".into()
        }
    );
    assert!(!err.error.retryable());
}

#[tokio::test]
async fn no_object_in_the_box_is_422_not_a_mask() {
    let srv = serve(FaultPlan::default()).await;
    // A flat image: nothing to find.
    let img = JudgeImage::from_rgb(image::RgbImage::from_pixel(
        32,
        32,
        image::Rgb([120, 130, 140]),
    ));
    let cl = client(&srv, 3, 5_000);
    let err = cl
        .segment(&img, BoxPx::new(4, 4, 20, 20))
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 1);
    assert!(
        matches!(&err.error, CallError::Status { status: 422, message } if message.starts_with("no object found in the box")),
        "{err}"
    );
}

/// Faults of one kind on the first `first` deliveries of every request.
fn first(kind: FaultKind, first: u32) -> FaultPlan {
    FaultPlan {
        first: Some(first),
        kinds: vec![kind],
        delay: Duration::from_secs(3),
        ..FaultPlan::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_is_survived_with_retries() {
    let scene = &scenes(2)[1];
    let img = JudgeImage::from_rgb(render(scene));
    let bx = object_box(scene, 0, 2);
    let want = {
        let srv = serve(FaultPlan::default()).await;
        client(&srv, 1, 5_000).segment(&img, bx).await.unwrap().mask
    };
    for kind in FaultKind::DEFAULT {
        let srv = serve(first(kind, 2)).await;
        let cl = client(&srv, 3, 500);
        let got = cl
            .segment(&img, bx)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(got.attempts, 3, "{kind:?}");
        assert_eq!(got.mask, want, "{kind:?}");
        let s = cl.stats();
        assert_eq!((s.requests, s.retries, s.successes), (3, 2, 1), "{kind:?}");
        assert_eq!(s.timeouts, if kind == FaultKind::Delay { 2 } else { 0 });
        assert_eq!(srv.faults(), vec![Some(kind), Some(kind), None]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_an_error_never_a_mask() {
    for kind in [
        FaultKind::TooManyRequests,
        FaultKind::ServerError,
        FaultKind::Malformed,
        FaultKind::Drop,
        FaultKind::Delay,
    ] {
        let srv = serve(first(kind, 10)).await;
        let cl = client(&srv, 3, 300);
        let scene = &scenes(1)[0];
        let img = JudgeImage::from_rgb(render(scene));
        let err = cl
            .segment(&img, object_box(scene, 0, 1))
            .await
            .expect_err("every attempt is faulty");
        assert_eq!(err.attempts, 3, "{kind:?}");
        let ok = matches!(
            (&err.error, kind),
            (
                CallError::Status { status: 429, .. },
                FaultKind::TooManyRequests
            ) | (
                CallError::Status { status: 500, .. },
                FaultKind::ServerError
            ) | (CallError::Malformed(_), FaultKind::Malformed)
                | (CallError::Connection(_), FaultKind::Drop)
                | (CallError::Timeout { timeout_ms: 300 }, FaultKind::Delay)
        );
        assert!(ok, "{kind:?}: {err}");
        let s = cl.stats();
        assert_eq!((s.requests, s.failures, s.successes), (3, 1, 0));
    }
    // A server that is not there: connection errors, retried, then an error.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = SegmentConfig::new(format!("http://{addr}"));
    c.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff_ms: 1,
        max_backoff_ms: 2,
        factor: 2.0,
        jitter_seed: Some(0),
    };
    let cl = SegmentClient::new(c).unwrap();
    let img = JudgeImage::from_rgb(image::RgbImage::new(8, 8));
    let err = cl.segment(&img, BoxPx::new(0, 0, 4, 4)).await.unwrap_err();
    assert!(matches!(err.error, CallError::Connection(_)), "{err}");
    assert_eq!(err.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_with_concurrency_limit_all_succeed() {
    let srv = server::start_local(ServerConfig {
        faults: FaultPlan {
            rate: 0.4,
            kinds: vec![
                FaultKind::TooManyRequests,
                FaultKind::ServerError,
                FaultKind::Malformed,
                FaultKind::Drop,
            ],
            seed: 5,
            ..FaultPlan::default()
        },
        latency: Duration::from_millis(20),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let mut c = SegmentConfig::new(srv.base_url());
    c.max_concurrency = 2;
    c.retry = RetryPolicy {
        max_attempts: 8,
        initial_backoff_ms: 2,
        max_backoff_ms: 20,
        factor: 2.0,
        jitter_seed: Some(3),
    };
    let cl = Arc::new(SegmentClient::new(c).unwrap());
    let jobs: Vec<(JudgeImage, BoxPx)> = scenes(8)
        .iter()
        .map(|s| (JudgeImage::from_rgb(render(s)), object_box(s, 0, 2)))
        .collect();
    let results =
        futures::future::join_all(jobs.iter().map(|(img, bx)| cl.segment(img, *bx))).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let s = cl.stats();
    assert!(s.retries > 0, "{s:?}");
    assert_eq!(s.successes, 8);
    assert!(srv.max_in_flight() <= 2, "{}", srv.max_in_flight());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_make_no_http_calls() {
    let srv = serve(FaultPlan::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let all = scenes(4);
    let jobs: Vec<(JudgeImage, BoxPx)> = all
        .iter()
        .map(|s| (JudgeImage::from_rgb(render(s)), object_box(s, 0, 2)))
        .collect();
    let first_masks = {
        let cl = client(&srv, 2, 5_000).with_cache(Arc::new(DirCache::new(dir.path())));
        let mut v = Vec::new();
        for (img, bx) in &jobs {
            let r = cl.segment(img, *bx).await.unwrap();
            assert!(!r.cached);
            v.push(r.mask);
        }
        assert_eq!(cl.calls(), 4);
        v
    };
    // A re-run (a new client on the same cache) makes no calls.
    let cl = client(&srv, 2, 5_000).with_cache(Arc::new(DirCache::new(dir.path())));
    for ((img, bx), want) in jobs.iter().zip(&first_masks) {
        let r = cl.segment(img, *bx).await.unwrap();
        assert!(r.cached);
        assert_eq!(r.attempts, 0);
        assert_eq!(&r.mask, want);
    }
    assert_eq!(
        cl.stats(),
        SegmentStats {
            cache_hits: 4,
            ..SegmentStats::default()
        }
    );
    assert_eq!(srv.request_count(), 4);
    // Another box of the same image is another key.
    let (img, bx) = &jobs[0];
    let other = BoxPx::new(bx.x0, bx.y0, bx.x1 - 1, bx.y1);
    let r = cl.segment(img, other).await.unwrap();
    assert!(!r.cached);
    assert_eq!(cl.calls(), 1);
    // Failures are not cached.
    let mem = Arc::new(MemoryCache::new());
    let bad = serve(first(FaultKind::ServerError, 5)).await;
    let cl = client(&bad, 2, 5_000).with_cache(mem.clone());
    assert!(cl.segment(img, *bx).await.is_err());
    assert!(mem.is_empty());
}

#[test]
fn the_cli_has_segment_serve() {
    let cmd = server::command();
    let serve = cmd.find_subcommand("serve").unwrap();
    let args: Vec<String> = serve
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for want in ["addr", "fault_rate", "faults", "delay_ms", "seed"] {
        assert!(args.iter().any(|a| a == want), "{want}: {args:?}");
    }
}
