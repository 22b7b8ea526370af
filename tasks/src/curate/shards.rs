//! Shards: samples in groups of `shard_size`, each group's outcomes committed to the store's
//! key-value cache (namespace `curate`) in one atomic write, keyed by the samples' content and
//! every setting the stages use (not the filter), so a crash loses only the shards in flight
//! and a new filter makes no service call. Also: the stages' environment (judge, segmenter)
//! and the identities that enter the shard key.

use super::params::{CurateParams, Format, SegmenterParams};
use super::source::Source;
use super::stages::{self, Counters, Env, Outcome, Segmenter, StageConfig, StepError, Verdict};
use crate::data::manifest::MANIFEST;
use crate::error::fail;
use crate::judge::prompts;
use crate::judge::spec::JudgeParams;
use crate::net::StoreCache;
use crate::segment::client::{SegmentClient, SegmentConfig};
use crate::synth::ColorSegmenter;
use cocoflow_engine::kind::{TaskCtx, TaskError};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The version of the shard records' content (in their key): bump when the built-in judge,
/// segmenter or stage code changes answers. (2: word-based type mapping, type checked before
/// the box, HTTP status classes.)
pub const SHARD_VERSION: u32 = 2;

/// The dataset to curate: param `dataset` (manifest or parquet) or input `data`; and the root
/// of a manifest dataset (its masks are the IoU reference when there is no `reference`).
pub fn open_source(
    ctx: &TaskCtx,
    p: &CurateParams,
) -> Result<(Source, Option<PathBuf>), TaskError> {
    if let Some(path) = &p.dataset {
        let path = PathBuf::from(path);
        let manifest = match p.format {
            Format::Manifest => true,
            Format::Parquet => false,
            Format::Auto => path.join(MANIFEST).is_file(),
        };
        let s = if manifest {
            Source::manifest(&path)
        } else {
            Source::parquet(&path, &p.columns)
        }
        .map_err(|e| fail(format!("`dataset`: {e}")))?;
        Ok((s, manifest.then_some(path)))
    } else {
        let root = ctx.input_path("data")?;
        let mut s = Source::manifest(&root).map_err(|e| fail(format!("input `data`: {e}")))?;
        s.description = format!("input `data` ({} records)", s.len());
        Ok((s, Some(root)))
    }
}

pub fn build_env(ctx: &TaskCtx, p: &CurateParams) -> Result<Env, TaskError> {
    let judge = p.judge.build(ctx.store()).map_err(fail)?;
    let segmenter = match &p.segmenter {
        SegmenterParams::Builtin => Segmenter::Builtin(ColorSegmenter::default()),
        SegmenterParams::Box => Segmenter::Box,
        SegmenterParams::Http(cfg) => Segmenter::Http(
            SegmentClient::new(cfg.clone())
                .map_err(|e| fail(format!("`segmenter`: {e}")))?
                .with_cache(Arc::new(StoreCache::with_namespace(
                    ctx.store().clone(),
                    segment_namespace(cfg),
                ))),
        ),
    };
    Ok(Env {
        judge,
        segmenter,
        config: StageConfig {
            box_fallback: p.box_fallback,
            background_mask: p.background_mask,
            difference_threshold: p.difference_threshold,
            dilate_px: p.dilate_px,
            dilate_px_replace: p.dilate_px_replace,
            dilate_px_motion: p.dilate_px_motion,
            difference_union: p.difference_union.clone(),
        },
        counters: Counters::default(),
    })
}

/// The segmentation response cache of one server: the client keys answers by model, image and
/// box; the namespace adds the server, so a forgotten `model` (default `color`) cannot serve
/// one server's masks for another's.
fn segment_namespace(cfg: &SegmentConfig) -> String {
    let id = blake3::hash(
        format!("{}\u{0}{}", cfg.base_url.trim_end_matches('/'), cfg.model).as_bytes(),
    );
    format!("segment-{}", &id.to_hex()[..16])
}

/// What decides a judge's answers: not its transport (timeouts, retries, concurrency).
fn judge_identity(j: &JudgeParams) -> Value {
    match j {
        JudgeParams::Openai(c) => json!({
            "kind": "openai", "base_url": c.base_url.trim_end_matches('/'), "model": c.model,
            "variant": c.variant, "extraction": c.extraction, "decoding": c.decoding,
        }),
        other => json!(other),
    }
}

/// What decides a segmenter's answers.
fn segmenter_identity(s: &SegmenterParams) -> Value {
    match s {
        SegmenterParams::Http(c) => json!({
            "kind": "http", "base_url": c.base_url.trim_end_matches('/'), "model": c.model,
        }),
        other => json!(other),
    }
}

/// What a shard's outcomes depend on besides its samples: the judge's and the segmenter's
/// identity (not their timeouts or retries), the stage settings, the prompts' versions and this
/// kind's version (bumped when the built-in judge, segmenter or stage code changes answers).
pub fn settings_digest(p: &CurateParams, env: &Env) -> String {
    let v = json!({
        "pipeline": "cocoflow-curate-shard",
        "version": SHARD_VERSION,
        "judge": judge_identity(&p.judge),
        "segmenter": segmenter_identity(&p.segmenter),
        "stages": env.config,
        "prompts": [prompts::LOCATE.digest(), prompts::REFINE.digest(), prompts::FILTER.digest()],
    });
    blake3::hash(v.to_string().as_bytes()).to_hex().to_string()
}

/// A committed shard as stored.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShardRecord {
    pub range: [usize; 2],
    pub outcomes: Vec<Outcome>,
}

struct ShardDone {
    /// The key of its record in the store's kv (namespace [`KV`]), once committed.
    key: String,
    outcomes: Vec<Outcome>,
    cached: bool,
    service_failures: Vec<String>,
}

pub const KV: &str = "curate";

/// Consecutive shards without a single answer after which a run stops (a service is down).
const DEAD_SHARDS: usize = 3;

async fn process_shard(
    ctx: &TaskCtx,
    env: &Env,
    source: &Source,
    settings: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> Result<ShardDone, TaskError> {
    let loaded = source.load(range.clone());
    let mut h = blake3::Hasher::new();
    h.update(settings.as_bytes());
    for (i, s) in range.clone().zip(&loaded) {
        h.update(&(i as u64).to_le_bytes());
        match s {
            Ok(s) => h.update(s.digest().as_bytes()),
            Err(e) => h.update(serde_json::to_string(e).unwrap_or_default().as_bytes()),
        };
    }
    let key = h.finalize().to_hex().to_string();
    if let Some(bytes) = ctx.store().get_kv(KV, &key).await.map_err(fail)? {
        match serde_json::from_slice::<ShardRecord>(&bytes) {
            Ok(r) if r.range == [range.start, range.end] => {
                return Ok(ShardDone {
                    key,
                    outcomes: r.outcomes,
                    cached: true,
                    service_failures: Vec::new(),
                });
            }
            _ => ctx.log(format!(
                "shard {range:?}: ignoring an unreadable committed record"
            )),
        }
    }
    let results: Vec<Result<Outcome, StepError>> = futures::stream::iter(range.clone().zip(loaded))
        .map(|(i, s)| async move {
            match s {
                Ok(s) => stages::curate(env, i, &s).await,
                Err(e) => Ok(Outcome::unreadable(i, e)),
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    let mut outcomes = Vec::with_capacity(results.len());
    let mut service_failures = Vec::new();
    for r in results {
        match r {
            Ok(o) => outcomes.push(o),
            Err(StepError::Service(m)) => service_failures.push(m),
            Err(StepError::Fatal(m)) => return Err(fail(m)),
        }
    }
    if service_failures.is_empty() {
        let rec = ShardRecord {
            range: [range.start, range.end],
            outcomes,
        };
        let bytes = serde_json::to_vec(&rec).map_err(fail)?;
        ctx.store()
            .put_kv(KV, &key, bytes.into())
            .await
            .map_err(fail)?;
        outcomes = rec.outcomes;
    }
    Ok(ShardDone {
        key,
        outcomes,
        cached: false,
        service_failures,
    })
}

fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Shards committed by [`run_all`]: (sample range, key of its record), in order.
pub struct Committed {
    pub shards: Vec<(std::ops::Range<usize>, String)>,
    pub total: usize,
    /// Shards found committed by an earlier run.
    pub from_cache: usize,
    /// Shards computed by this one.
    pub computed: usize,
}

/// Runs every shard of the first `n` samples (two in flight), logging each committed shard
/// and the progress; fails after the others are committed when a sample's service did not
/// answer (or early, after [`DEAD_SHARDS`] dead shards in a row).
pub fn run_all(
    ctx: &TaskCtx,
    p: &CurateParams,
    env: &Env,
    source: &Source,
    settings: &str,
    n: usize,
) -> Result<Committed, TaskError> {
    let shards: Vec<std::ops::Range<usize>> = (0..n)
        .step_by(p.shard_size)
        .map(|s| s..(s + p.shard_size).min(n))
        .collect();
    // requests in flight: `concurrency` if set, else the `judge` pool's grant, else 8; split
    // over the two shards in flight.
    let concurrency = p
        .concurrency
        .or(crate::judge::pool_concurrency(&ctx.pools))
        .unwrap_or(8)
        .max(1);
    let in_flight = if concurrency >= 2 { 2 } else { 1 };
    ctx.log(format!(
        "curate: {} → {n} samples in {} shards of {}; judge: {}; concurrency {concurrency}",
        source.description,
        shards.len(),
        p.shard_size,
        env.judge.describe()
    ));
    // ---- the shards
    let start = Instant::now();
    let done = AtomicU64::new(0);
    let computed = AtomicU64::new(0);
    let kept_so_far = AtomicU64::new(0);
    // (range, kv key) of every committed shard: assembly reads them back one at a time, so
    // memory holds one shard's masks, not the dataset's.
    let mut committed: Vec<(std::ops::Range<usize>, String)> = Vec::with_capacity(shards.len());
    let (mut from_cache, mut fresh) = (0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    let mut failed_shards = 0usize;
    let mut dead_in_a_row = 0usize;
    {
        let ctx_ref: &TaskCtx = ctx;
        let env_ref = env;
        let source_ref = source;
        let settings_ref = settings;
        let per_shard = (concurrency / in_flight).max(1);
        let stream = futures::stream::iter(shards.iter().cloned())
            .map(|range| async move {
                ctx_ref.check_cancelled()?;
                let r = process_shard(
                    ctx_ref,
                    env_ref,
                    source_ref,
                    settings_ref,
                    range.clone(),
                    per_shard,
                )
                .await;
                r.map(|d| (range, d))
            })
            .buffer_unordered(in_flight);
        let mut stream = std::pin::pin!(stream);
        let rt = ctx.runtime().clone();
        rt.block_on(async {
            while let Some(r) = stream.next().await {
                let (range, d) = r?;
                let kept = d
                    .outcomes
                    .iter()
                    .filter(
                        |o| matches!(&o.result, Verdict::Annotated(a) if super::filter(a, p).is_none()),
                    )
                    .count() as u64;
                kept_so_far.fetch_add(kept, Ordering::Relaxed);
                let total_done =
                    done.fetch_add(range.len() as u64, Ordering::Relaxed) + range.len() as u64;
                if d.cached {
                    from_cache += 1;
                } else {
                    fresh += 1;
                    computed.fetch_add(range.len() as u64, Ordering::Relaxed);
                }
                let secs = start.elapsed().as_secs_f64();
                let c = computed.load(Ordering::Relaxed) as f64;
                let rate = if secs > 0.0 { c / secs } else { 0.0 };
                let left = n as u64 - total_done;
                let eta = if rate > 0.0 {
                    fmt_duration(left as f64 / rate)
                } else {
                    "?".into()
                };
                let message = format!(
                    "{rate:.1} samples/s · kept {:.1}% · ETA {eta}",
                    100.0 * kept_so_far.load(Ordering::Relaxed) as f64 / total_done.max(1) as f64
                );
                ctx_ref.progress(total_done, n as u64, message.clone());
                if !d.service_failures.is_empty() && d.outcomes.is_empty() {
                    dead_in_a_row += 1;
                } else {
                    dead_in_a_row = 0;
                }
                if !d.service_failures.is_empty() {
                    failed_shards += 1;
                    ctx_ref.log(format!(
                        "shard {range:?}: {} sample(s) failed on a service (not committed): {}",
                        d.service_failures.len(),
                        d.service_failures[0]
                    ));
                    failures.extend(d.service_failures);
                    if dead_in_a_row >= DEAD_SHARDS {
                        return Err(TaskError::Failed(format!(
                            "{DEAD_SHARDS} shards in a row got no answer from the judge or the segmenter \
                             at all (first: {}); stopped instead of trying every sample; the {} shards \
                             committed so far are kept, re-run when the service is up",
                            failures[0],
                            committed.len()
                        )));
                    }
                } else {
                    if !d.cached {
                        ctx_ref.log(format!(
                            "shard {range:?}: committed ({total_done}/{n} · {message})"
                        ));
                    }
                    committed.push((range, d.key));
                }
            }
            Ok::<(), TaskError>(())
        })?;
    }
    committed.sort_by_key(|(r, _)| r.start);
    ctx.log(format!(
        "shards: {from_cache} already committed, {fresh} computed ({failed_shards} with service failures); calls: {:?}",
        env.counters.snapshot()
    ));
    if !failures.is_empty() {
        return Err(TaskError::Failed(format!(
            "{} sample(s) in {failed_shards} shard(s) got no answer from the judge or the segmenter \
             (first: {}); the other shards are committed, re-run to retry these",
            failures.len(),
            failures[0]
        )));
    }
    Ok(Committed {
        shards: committed,
        total: shards.len(),
        from_cache,
        computed: fresh,
    })
}
