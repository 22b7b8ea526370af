//! `curate`: the CoCoEdit-40K curation pipeline (paper §3.1, appendix A; method-spec §7) over
//! any editing dataset of (source, edited, instruction) triplets.
//!
//! For each sample: **annotate** (the judge, prompt A.2: edit type, edited object, its box;
//! the segmenter turns the box into a mask, or the box itself is the mask when configured),
//! **refine and augment** (prompt A.3 rewrites the instruction given the mask; the mask is
//! dilated, more for `replace` and `motion`), **score** (prompt A.4: instruction clarity, mask
//! accuracy, target prominence, 1–10). The **filter** keeps samples of the allowed local
//! types whose mean score exceeds `threshold` and whose keep area (outside the dilated mask)
//! is at least `min_keep_fraction`.
//!
//! # Shards, resume and caching
//! Samples are cut into shards of `shard_size`. A shard's outcomes are committed to the
//! store's key-value cache (namespace `curate`) in one atomic write once all its samples are
//! done, under a key made of the content of its samples (image bytes, instruction, hint) and
//! every setting the stages use (judge, segmenter, dilation, prompt versions) — not the
//! filter. So a crash or `kill -9` loses only the shards in flight; a re-run, and a run with
//! another `threshold`, `min_keep_fraction` or `types`, reads the committed shards and makes
//! no judge or segmentation calls. Remote judges and segmenters also cache every response by
//! request content. A sample whose service did not answer (after the clients' retries) keeps
//! its shard uncommitted and fails the task at the end, after every other shard is saved.
//!
//! # Inputs, params, outputs
//! - input `data` (a dataset in the manifest format), or param `dataset` (a path on disk:
//!   a manifest dataset directory, or parquet files with embedded images, `format`,
//!   `columns`). Optional input `reference`: a dataset whose `edit_mask`s (matched by key)
//!   the curated masks are compared with (IoU per type); without it, the input records' own
//!   masks, when they have some. Masks of the input are never used to curate.
//! - `judge` (default the rule judge; `{kind: openai, ...}` for a served MLLM), `segmenter`
//!   (`{kind: builtin}` colour segmenter in-process, default; `{kind: http, base_url, ...}`
//!   a server of the segmentation protocol; `{kind: box}` none), `box_fallback` (true),
//!   `background_mask` (`difference`: changed pixels, default; `segment`),
//!   `difference_threshold` (0.1), `dilate_px` (1), `dilate_px_replace` (2),
//!   `dilate_px_motion` (2), `difference_union` (types whose mask also takes the changed
//!   pixels: `[motion]`, since a moved object leaves its box), `threshold` (9.4),
//!   `min_keep_fraction` (0.05), `types` (the six local types), `shard_size` (64), `limit`,
//!   `concurrency` (samples in flight, split over two shards; default the `judge` pool's
//!   units, else 8), `max_invalid_fraction` (0.5: the task fails when more of the judged
//!   samples got an unusable judge answer, reason `judge-answer`; the statistics count them
//!   under `judge`), `output` (`curated`, default; `input` or its synonym `exact`: no
//!   curation, the `data` input is passed through, for workflows that switch between curated
//!   and ground-truth masks).
//! - outputs `data` (the curated dataset: `manifest.jsonl` with `instruction_refined`,
//!   `edit_type`, `edit_mask` = the dilated mask, scores in `extra.curation`) and `stats`
//!   (`stats.json`, `stats.md`, `samples.jsonl` with every sample's outcome and filter
//!   decision, `types.png`/`.svg`, `scores.png`/`.svg`).

pub mod plots;
pub mod source;
pub mod stages;

use crate::data::manifest::{Dataset, MANIFEST, Record};
use crate::imageio;
use crate::judge::prompts;
use crate::judge::spec::JudgeParams;
use crate::net::StoreCache;
use crate::segment::client::{SegmentClient, SegmentConfig};
use crate::synth::ColorSegmenter;
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use futures::StreamExt as _;
use image::GrayImage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use source::{Columns, Source};
use stages::{
    Annotated, BackgroundMask, CallCounts, Counters, Env, LOCAL_TYPES, Outcome, Segmenter,
    StageConfig, StepError, Verdict,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the `data` output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputMode {
    /// The curated dataset.
    #[default]
    Curated,
    /// The `data` input unchanged (nothing is curated); `exact` is a synonym (the input's own,
    /// exact masks).
    #[serde(alias = "exact")]
    Input,
}

/// How `dataset` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A directory with `manifest.jsonl` is a manifest dataset; anything else parquet.
    #[default]
    Auto,
    Manifest,
    Parquet,
}

/// Which segmenter turns boxes into masks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SegmenterParams {
    /// The built-in colour segmenter, in-process.
    #[default]
    Builtin,
    /// A segmentation server (`base_url`, `model`, `timeout_ms`, `retry`, `max_concurrency`).
    Http(SegmentConfig),
    /// No segmenter: the box is the mask.
    Box,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurateParams {
    #[serde(default)]
    pub output: OutputMode,
    /// A dataset on disk, instead of the `data` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub columns: Columns,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default = "d_shard")]
    pub shard_size: usize,
    #[serde(default)]
    pub judge: JudgeParams,
    #[serde(default)]
    pub segmenter: SegmenterParams,
    #[serde(default = "d_true")]
    pub box_fallback: bool,
    #[serde(default)]
    pub background_mask: BackgroundMask,
    #[serde(default = "d_diff")]
    pub difference_threshold: f64,
    #[serde(default = "d_dilate")]
    pub dilate_px: u32,
    #[serde(default = "d_dilate_shape")]
    pub dilate_px_replace: u32,
    #[serde(default = "d_dilate_shape")]
    pub dilate_px_motion: u32,
    #[serde(default = "d_union")]
    pub difference_union: Vec<String>,
    #[serde(default = "d_threshold")]
    pub threshold: f64,
    #[serde(default = "d_min_keep")]
    pub min_keep_fraction: f64,
    #[serde(default = "d_types")]
    pub types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Fraction of the judged samples whose judge answer may be unusable (reason
    /// `judge-answer`) before the task fails.
    #[serde(default = "d_invalid")]
    pub max_invalid_fraction: f64,
}

fn d_invalid() -> f64 {
    0.5
}

fn d_shard() -> usize {
    64
}
fn d_true() -> bool {
    true
}
fn d_diff() -> f64 {
    0.1
}
fn d_dilate() -> u32 {
    1
}
fn d_dilate_shape() -> u32 {
    2
}
fn d_union() -> Vec<String> {
    vec!["motion".into()]
}
fn d_threshold() -> f64 {
    9.4
}
fn d_min_keep() -> f64 {
    0.05
}
fn d_types() -> Vec<String> {
    LOCAL_TYPES.iter().map(|s| s.to_string()).collect()
}

fn bad(path: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        path: path.into(),
        message: message.into(),
    }
}

fn check(p: &CurateParams) -> Result<(), ParamError> {
    if p.shard_size == 0 {
        return Err(bad("shard_size", "must be at least 1"));
    }
    if !(1.0..=10.0).contains(&p.threshold) {
        return Err(bad(
            "threshold",
            format!(
                "must be in [1, 10] (the scores' scale), got {}",
                p.threshold
            ),
        ));
    }
    if !(0.0..1.0).contains(&p.min_keep_fraction) {
        return Err(bad(
            "min_keep_fraction",
            format!("must be in [0, 1), got {}", p.min_keep_fraction),
        ));
    }
    if !(p.difference_threshold > 0.0 && p.difference_threshold < 1.0) {
        return Err(bad(
            "difference_threshold",
            format!("must be in (0, 1), got {}", p.difference_threshold),
        ));
    }
    for (i, t) in p.difference_union.iter().enumerate() {
        if !LOCAL_TYPES.contains(&t.as_str()) {
            return Err(bad(
                &format!("difference_union[{i}]"),
                format!(
                    "`{t}` is not a local edit type; expected one of {}",
                    LOCAL_TYPES.join(", ")
                ),
            ));
        }
    }
    if p.types.is_empty() {
        return Err(bad("types", "must name at least one edit type"));
    }
    for (i, t) in p.types.iter().enumerate() {
        if !LOCAL_TYPES.contains(&t.as_str()) {
            return Err(bad(
                &format!("types[{i}]"),
                format!(
                    "`{t}` is not a local edit type; expected one of {}",
                    LOCAL_TYPES.join(", ")
                ),
            ));
        }
    }
    if p.concurrency == Some(0) {
        return Err(bad("concurrency", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&p.max_invalid_fraction) {
        return Err(bad(
            "max_invalid_fraction",
            format!("must be in [0, 1], got {}", p.max_invalid_fraction),
        ));
    }
    if p.limit == Some(0) {
        return Err(bad("limit", "must be at least 1"));
    }
    if p.dataset.is_none() && (p.format != Format::Auto) {
        return Err(bad("format", "only applies with `dataset`"));
    }
    if p.output == OutputMode::Input && p.dataset.is_some() {
        return Err(bad(
            "output",
            "`input` passes the `data` input through; it cannot be used with `dataset`",
        ));
    }
    Ok(())
}

pub struct Curate;

impl TaskKind for Curate {
    fn name(&self) -> &'static str {
        "curate"
    }

    fn version(&self) -> u32 {
        // 2: word-based type mapping, type checked before the box, HTTP status classes
        2
    }

    fn describe(&self) -> &'static str {
        "curation (paper §3.1): judge boxes + segmentation masks, refined instructions, dilation, three-score filter; sharded, resumable, cached"
    }

    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<CurateParams>(params)?;
        check(&p)?;
        Ok(v)
    }

    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["data".into(), "stats".into()]
    }

    fn check_inputs(&self, params: &Value, inputs: &[&str]) -> Result<(), String> {
        for i in inputs {
            if !["data", "reference"].contains(i) {
                return Err(format!(
                    "`curate` takes inputs `data` and `reference`, not `{i}`"
                ));
            }
        }
        let has_dataset = params.get("dataset").is_some_and(|v| !v.is_null());
        match (inputs.contains(&"data"), has_dataset) {
            (true, true) => Err(
                "give the dataset either as input `data` or as param `dataset`, not both".into(),
            ),
            (false, false) => Err("`curate` needs input `data` or param `dataset`".into()),
            _ => Ok(()),
        }
    }

    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: CurateParams = ctx.params()?;
        run(ctx, &p)
    }
}

fn fail(e: impl std::fmt::Display) -> TaskError {
    TaskError::Failed(e.to_string())
}

fn open_source(ctx: &TaskCtx, p: &CurateParams) -> Result<(Source, Option<PathBuf>), TaskError> {
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

fn build_env(ctx: &TaskCtx, p: &CurateParams) -> Result<Env, TaskError> {
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
fn settings_digest(p: &CurateParams, env: &Env) -> String {
    let v = json!({
        "pipeline": "cocoflow-curate-shard",
        "version": Curate.version(),
        "judge": judge_identity(&p.judge),
        "segmenter": segmenter_identity(&p.segmenter),
        "stages": env.config,
        "prompts": [prompts::LOCATE.digest(), prompts::REFINE.digest(), prompts::FILTER.digest()],
    });
    blake3::hash(v.to_string().as_bytes()).to_hex().to_string()
}

/// A committed shard as stored.
#[derive(Serialize, Deserialize)]
struct ShardRecord {
    range: [usize; 2],
    outcomes: Vec<Outcome>,
}

struct ShardDone {
    /// The key of its record in the store's kv (namespace [`KV`]), once committed.
    key: String,
    outcomes: Vec<Outcome>,
    cached: bool,
    service_failures: Vec<String>,
}

const KV: &str = "curate";

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

/// The filter over a sample's stored annotation: `None` = kept, else the reason.
pub fn filter(a: &Annotated, p: &CurateParams) -> Option<&'static str> {
    if !p.types.iter().any(|t| t == &a.edit_type) {
        Some("type-excluded")
    } else if a.scores.mean() <= p.threshold {
        Some("below-threshold")
    } else if a.keep_fraction < p.min_keep_fraction {
        Some("keep-area")
    } else {
        None
    }
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

fn run(ctx: &mut TaskCtx, p: &CurateParams) -> Result<(), TaskError> {
    if p.output == OutputMode::Input {
        let root = ctx.input_path("data")?;
        let dir = ctx.workdir()?.join("stats");
        std::fs::create_dir_all(&dir).map_err(TaskError::io("creating the stats directory"))?;
        std::fs::write(
            dir.join("stats.json"),
            serde_json::to_vec_pretty(&json!({"output": "input", "note": "nothing was curated: `data` is the input dataset"}))
                .map_err(fail)?,
        )
        .map_err(TaskError::io("writing stats.json"))?;
        ctx.output_dir("data", &root)?;
        ctx.output_dir("stats", &dir)?;
        return Ok(());
    }
    let (source, manifest_root) = open_source(ctx, p)?;
    let env = build_env(ctx, p)?;
    let settings = settings_digest(p, &env);
    let n = p.limit.map_or(source.len(), |l| l.min(source.len()));
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
        let env_ref = &env;
        let source_ref = &source;
        let settings_ref = settings.as_str();
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
                        |o| matches!(&o.result, Verdict::Annotated(a) if filter(a, p).is_none()),
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
    let calls = env.counters.snapshot();
    ctx.log(format!(
        "shards: {from_cache} already committed, {fresh} computed ({failed_shards} with service failures); calls: {calls:?}"
    ));
    if !failures.is_empty() {
        return Err(TaskError::Failed(format!(
            "{} sample(s) in {failed_shards} shard(s) got no answer from the judge or the segmenter \
             (first: {}); the other shards are committed, re-run to retry these",
            failures.len(),
            failures[0]
        )));
    }

    // ---- assemble
    let work = ctx.workdir()?;
    let data_dir = work.join("data");
    let stats_dir = work.join("stats");
    for d in [&data_dir, &stats_dir] {
        std::fs::create_dir_all(d.join("images"))
            .map_err(TaskError::io("creating output directories"))?;
    }
    let reference = reference_masks(ctx, manifest_root.as_deref())?;
    let summary = assemble(
        p,
        &source,
        &committed,
        &|key: &str| {
            let bytes = ctx
                .runtime()
                .block_on(ctx.store().get_kv(KV, key))
                .map_err(fail)?
                .ok_or_else(|| {
                    fail(format!(
                        "the committed shard `{key}` vanished from the store"
                    ))
                })?;
            serde_json::from_slice::<ShardRecord>(&bytes)
                .map(|r| r.outcomes)
                .map_err(|e| fail(format!("the committed shard `{key}` is unreadable: {e}")))
        },
        &reference,
        &data_dir,
        &stats_dir,
        ShardCounts {
            total: shards.len(),
            committed_before: from_cache,
            computed: fresh,
        },
        calls,
    )?;
    ctx.metric("samples", summary.samples as u64);
    ctx.metric("annotated", summary.annotated as u64);
    ctx.metric("kept", summary.kept as u64);
    ctx.metric("judge_calls", calls.judge);
    ctx.metric("segment_calls", calls.segment);
    ctx.metric("judge_invalid", summary.judge_invalid as u64);
    ctx.log(format!(
        "kept {} of {} samples ({} annotated); {} judge and {} segmentation calls; \
         {} of {} judged samples got an unusable judge answer",
        summary.kept,
        summary.samples,
        summary.annotated,
        calls.judge,
        calls.segment,
        summary.judge_invalid,
        summary.judged
    ));
    if summary.judge_invalid as f64 > p.max_invalid_fraction * summary.judged as f64 {
        return Err(TaskError::Failed(format!(
            "{} of {} judge answers are invalid, more than `max_invalid_fraction` {} allows \
             (statistics in {}); first: {}",
            summary.judge_invalid,
            summary.judged,
            p.max_invalid_fraction,
            stats_dir.join("stats.json").display(),
            summary.first_invalid.as_deref().unwrap_or("")
        )));
    }
    ctx.output_dir("data", &data_dir)?;
    let _ = std::fs::remove_dir(stats_dir.join("images"));
    ctx.output_dir("stats", &stats_dir)?;
    Ok(())
}

/// Where reference masks come from: the `reference` input, else the input manifest's own.
struct Reference {
    root: PathBuf,
    records: HashMap<String, Record>,
}

fn reference_masks(
    ctx: &TaskCtx,
    input_root: Option<&Path>,
) -> Result<Option<Reference>, TaskError> {
    let root = if ctx.inputs.contains_key("reference") {
        ctx.input_path("reference")?
    } else if let Some(r) = input_root {
        r.to_path_buf()
    } else {
        return Ok(None);
    };
    let ds = Dataset::open(&root).map_err(|e| fail(format!("reference dataset: {e}")))?;
    let records: HashMap<String, Record> = ds
        .records
        .into_iter()
        .filter(|r| r.edit_mask.is_some())
        .map(|r| (r.key.clone(), r))
        .collect();
    Ok((!records.is_empty()).then_some(Reference { root, records }))
}

impl Reference {
    /// The record's edit mask (white = edit), whatever its polarity on disk.
    fn mask(&self, key: &str) -> Option<GrayImage> {
        let r = self.records.get(key)?;
        let path = crate::data::manifest::confined(&self.root, r.edit_mask.as_ref()?).ok()?;
        let g = imageio::open(&path).ok()?.to_luma8();
        let keep = r.mask_polarity == crate::data::MaskPolarity::Keep;
        Some(imageio::binarize(g, keep))
    }
}

struct ShardCounts {
    total: usize,
    committed_before: usize,
    computed: usize,
}

struct Summary {
    samples: usize,
    annotated: usize,
    kept: usize,
    /// Samples that reached the judge, and those of them whose answer was unusable.
    judged: usize,
    judge_invalid: usize,
    /// The first unusable answer's message.
    first_invalid: Option<String>,
}

#[derive(Default, Serialize)]
struct TypeStats {
    annotated: u64,
    kept: u64,
    mean_score_sum: f64,
    iou_sum: f64,
    iou_n: u64,
    iou_kept_sum: f64,
    iou_kept_n: u64,
}

fn decode_mask(a: &Annotated) -> Result<GrayImage, String> {
    let bytes = imageio::from_base64(&a.mask_png).map_err(|e| e.to_string())?;
    Ok(imageio::decode(&bytes).map_err(|e| e.reason())?.to_luma8())
}

fn ext_of(bytes: &[u8]) -> &'static str {
    imageio::extension_of(bytes)
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    p: &CurateParams,
    source: &Source,
    shard_list: &[(std::ops::Range<usize>, String)],
    load: &dyn Fn(&str) -> Result<Vec<Outcome>, TaskError>,
    reference: &Option<Reference>,
    data_dir: &Path,
    stats_dir: &Path,
    shards: ShardCounts,
    calls: CallCounts,
) -> Result<Summary, TaskError> {
    let io = |what: String| move |e: std::io::Error| TaskError::Failed(format!("{what}: {e}"));
    let mut per_type: BTreeMap<String, TypeStats> = LOCAL_TYPES
        .iter()
        .map(|t| (t.to_string(), TypeStats::default()))
        .collect();
    let mut hints: BTreeMap<String, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: Vec<Value> = Vec::new();
    let mut means = Vec::new();
    let mut kept = 0usize;
    let mut samples = source.rejected.len();
    let mut lines = std::io::BufWriter::new(
        std::fs::File::create(stats_dir.join("samples.jsonl"))
            .map_err(io("samples.jsonl".into()))?,
    );
    let mut manifest = std::io::BufWriter::new(
        std::fs::File::create(data_dir.join(MANIFEST)).map_err(io(MANIFEST.into()))?,
    );
    let mut line = |v: Value| writeln!(lines, "{v}").map_err(io("samples.jsonl".into()));
    let mut annotated = 0usize;
    let (mut judged, mut judge_invalid) = (0usize, 0usize);
    let mut first_invalid: Option<String> = None;
    let mut mask_from: BTreeMap<String, u64> = BTreeMap::new();
    for e in &source.rejected {
        *reasons.entry(e.reason.clone()).or_default() += 1;
        let v = json!({"key": e.key, "origin": e.origin, "status": "rejected", "stage": "read", "reason": e.reason, "message": e.message});
        if errors.len() < 100 {
            errors.push(v.clone());
        }
        line(v)?;
    }
    let mut seen_keys: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (range, key) in shard_list {
        let outcomes = load(key)?;
        samples += outcomes.len();
        let mut kept_here: BTreeMap<usize, &Annotated> = BTreeMap::new();
        for o in &outcomes {
            // a key seen earlier (parquet key columns are not checked up front): out, counted
            if let Some(k) = &o.key
                && !seen_keys.insert(k.clone())
            {
                *reasons.entry("duplicate-key".into()).or_default() += 1;
                let v = json!({"key": o.key, "origin": o.origin, "status": "rejected", "stage": "read", "reason": "duplicate-key", "message": format!("key `{k}` repeats an earlier sample")});
                if errors.len() < 100 {
                    errors.push(v.clone());
                }
                line(v)?;
                continue;
            }
            if let Some(h) = &o.hint {
                *hints.entry(h.clone()).or_default() += 1;
            }
            match &o.result {
                Verdict::Rejected(r) => {
                    *reasons.entry(r.reason.clone()).or_default() += 1;
                    if r.stage != "read" {
                        judged += 1;
                    }
                    if r.reason == "judge-answer" {
                        judge_invalid += 1;
                        first_invalid.get_or_insert_with(|| r.message.clone());
                    }
                    let v = json!({"key": o.key, "origin": o.origin, "status": "rejected", "stage": r.stage, "reason": r.reason, "message": r.message});
                    if r.stage == "read" && errors.len() < 100 {
                        errors.push(v.clone());
                    }
                    line(v)?;
                }
                Verdict::Annotated(a) => {
                    annotated += 1;
                    judged += 1;
                    means.push(a.scores.mean());
                    *mask_from.entry(a.mask_from.clone()).or_default() += 1;
                    let decision = filter(a, p);
                    let t = per_type.entry(a.edit_type.clone()).or_default();
                    t.annotated += 1;
                    t.mean_score_sum += a.scores.mean();
                    let iou = match (reference, &o.key) {
                        (Some(r), Some(k)) => match (r.mask(k), decode_mask(a)) {
                            (Some(m), Ok(c)) if m.dimensions() == c.dimensions() => {
                                Some(crate::segment::iou(&c, &m))
                            }
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some(v) = iou {
                        t.iou_sum += v;
                        t.iou_n += 1;
                        if decision.is_none() {
                            t.iou_kept_sum += v;
                            t.iou_kept_n += 1;
                        }
                    }
                    match decision {
                        None => {
                            t.kept += 1;
                            kept += 1;
                            kept_here.insert(o.index, a);
                        }
                        Some(r) => *reasons.entry(r.to_string()).or_default() += 1,
                    }
                    line(json!({
                        "key": o.key, "origin": o.origin, "status": "annotated",
                        "kept": decision.is_none(), "reason": decision,
                        "edit_type": a.edit_type, "judge_type": a.judge_type, "object": a.object,
                        "bbox": a.bbox, "mask_from": a.mask_from, "segment_score": a.segment_score,
                        "refined": a.refined, "scores": a.scores, "mean": a.scores.mean(),
                        "keep_fraction": a.keep_fraction, "mask_iou": iou,
                    }))?;
                }
            }
        }
        // the curated dataset: the shard's images are read again only when it keeps some
        if kept_here.is_empty() {
            continue;
        }
        for (i, s) in range.clone().zip(source.load(range.clone())) {
            let Some(a) = kept_here.get(&i) else {
                continue;
            };
            let s = s.map_err(|e| {
                fail(format!(
                    "{} changed while curating: {}",
                    e.origin, e.message
                ))
            })?;
            let src = format!("images/{i:07}_src.{}", ext_of(&s.source));
            let tgt = format!("images/{i:07}_tgt.{}", ext_of(&s.edited));
            let mask = format!("images/{i:07}_mask.png");
            std::fs::write(data_dir.join(&src), &s.source).map_err(io(src.clone()))?;
            std::fs::write(data_dir.join(&tgt), &s.edited).map_err(io(tgt.clone()))?;
            let png = imageio::from_base64(&a.mask_png).map_err(fail)?;
            std::fs::write(data_dir.join(&mask), png).map_err(io(mask.clone()))?;
            let mut extra = serde_json::Map::new();
            extra.insert(
                "curation".into(),
                json!({
                    "scores": a.scores, "mean": a.scores.mean(), "object": a.object,
                    "bbox": a.bbox, "judge_type": a.judge_type, "mask_from": a.mask_from,
                    "keep_fraction": a.keep_fraction, "origin": s.origin,
                }),
            );
            let rec = Record {
                key: s.key.clone(),
                source: src,
                target: Some(tgt),
                edit_mask: Some(mask),
                mask_polarity: crate::data::MaskPolarity::Edit,
                instruction: s.instruction.clone(),
                instruction_refined: Some(a.refined.clone()),
                edit_type: Some(a.edit_type.clone()),
                extra,
            };
            let l = serde_json::to_string(&rec).map_err(fail)?;
            writeln!(manifest, "{l}").map_err(io(MANIFEST.into()))?;
        }
    }
    drop(line);
    lines.flush().map_err(io("samples.jsonl".into()))?;
    manifest.flush().map_err(io(MANIFEST.into()))?;

    // ---- statistics
    let bins = plots::histogram(means.iter().copied());
    let types_json: BTreeMap<&String, Value> = per_type
        .iter()
        .map(|(k, t)| {
            let mean = |s: f64, n: u64| if n > 0 { Some(s / n as f64) } else { None };
            (
                k,
                json!({
                    "annotated": t.annotated, "kept": t.kept,
                    "mean_score": mean(t.mean_score_sum, t.annotated),
                    "mask_iou": mean(t.iou_sum, t.iou_n), "mask_iou_n": t.iou_n,
                    "mask_iou_kept": mean(t.iou_kept_sum, t.iou_kept_n), "mask_iou_kept_n": t.iou_kept_n,
                }),
            )
        })
        .collect();
    let (iou_sum, iou_n) = per_type
        .values()
        .fold((0.0, 0), |(s, n), t| (s + t.iou_sum, n + t.iou_n));
    let (iouk_sum, iouk_n) = per_type
        .values()
        .fold((0.0, 0), |(s, n), t| (s + t.iou_kept_sum, n + t.iou_kept_n));
    let stats = json!({
        "source": source.description,
        "samples": samples,
        "annotated": annotated,
        "kept": kept,
        "kept_fraction": if samples > 0 { kept as f64 / samples as f64 } else { 0.0 },
        "filter": {"threshold": p.threshold, "min_keep_fraction": p.min_keep_fraction, "types": p.types},
        "per_type": types_json,
        "dataset_types": hints,
        "rejections": reasons,
        "judge": {
            "judged": judged,
            "invalid": judge_invalid,
            "invalid_fraction": if judged > 0 { judge_invalid as f64 / judged as f64 } else { 0.0 },
            "max_invalid_fraction": p.max_invalid_fraction,
            "first_invalid": first_invalid,
        },
        "mask_from": mask_from,
        "mask_iou": {
            "reference": reference.as_ref().map(|r| r.root.display().to_string()),
            "all": if iou_n > 0 { Some(iou_sum / iou_n as f64) } else { None }, "n": iou_n,
            "kept": if iouk_n > 0 { Some(iouk_sum / iouk_n as f64) } else { None }, "kept_n": iouk_n,
        },
        "histogram": bins,
        "shards": {"total": shards.total, "committed_before": shards.committed_before, "computed": shards.computed},
        "calls": calls,
        "errors": errors,
    });
    std::fs::write(
        stats_dir.join("stats.json"),
        serde_json::to_vec_pretty(&stats).map_err(fail)?,
    )
    .map_err(io("stats.json".into()))?;
    std::fs::write(stats_dir.join("stats.md"), markdown(&stats)).map_err(io("stats.md".into()))?;
    let counts: Vec<(String, u64, u64)> = per_type
        .iter()
        .map(|(k, t)| (k.clone(), t.annotated, t.kept))
        .collect();
    plots::write_types(stats_dir, &counts).map_err(fail)?;
    plots::write_histogram(stats_dir, &bins, p.threshold).map_err(fail)?;
    Ok(Summary {
        samples,
        annotated,
        kept,
        judged,
        judge_invalid,
        first_invalid,
    })
}

fn markdown(s: &Value) -> String {
    let f = |v: &Value| match v.as_f64() {
        Some(x) if v.is_f64() => format!("{x:.3}"),
        _ if v.is_null() => "–".into(),
        _ => v.to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# Curation\n\n{}: **{}** samples, {} annotated, **{} kept** ({:.1} %), threshold {}, min keep fraction {}.\n\n",
        s["source"].as_str().unwrap_or(""),
        s["samples"],
        s["annotated"],
        s["kept"],
        100.0 * s["kept_fraction"].as_f64().unwrap_or(0.0),
        s["filter"]["threshold"],
        s["filter"]["min_keep_fraction"],
    ));
    out.push_str("| type | annotated | kept | mean score | mask IoU (all) | mask IoU (kept) |\n|---|---:|---:|---:|---:|---:|\n");
    if let Some(m) = s["per_type"].as_object() {
        for (k, t) in m {
            out.push_str(&format!(
                "| {k} | {} | {} | {} | {} | {} |\n",
                t["annotated"],
                t["kept"],
                f(&t["mean_score"]),
                f(&t["mask_iou"]),
                f(&t["mask_iou_kept"])
            ));
        }
    }
    out.push_str("\n| rejection | samples |\n|---|---:|\n");
    if let Some(m) = s["rejections"].as_object() {
        for (k, v) in m {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
    }
    let j = &s["judge"];
    out.push_str(&format!(
        "\nJudge: {} of {} judged samples got an unusable answer ({:.1} %; `max_invalid_fraction` {}).\n",
        j["invalid"],
        j["judged"],
        100.0 * j["invalid_fraction"].as_f64().unwrap_or(0.0),
        j["max_invalid_fraction"],
    ));
    let c = &s["calls"];
    out.push_str(&format!(
        "Shards: {} ({} committed before this run, {} computed). Calls: judge {} ({} from its cache), segmenter {} ({} from its cache).\n",
        s["shards"]["total"],
        s["shards"]["committed_before"],
        s["shards"]["computed"],
        c["judge"],
        c["judge_cached"],
        c["segment"],
        c["segment_cached"],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Result<CurateParams, ParamError> {
        let (p, _) = typed_params::<CurateParams>(&v)?;
        check(&p)?;
        Ok(p)
    }

    #[test]
    fn params_are_checked_with_their_key() {
        assert!(params(json!({})).is_ok());
        let e = params(json!({"threshold": 11})).unwrap_err();
        assert_eq!(e.path, "threshold");
        let e = params(json!({"types": ["add", "style"]})).unwrap_err();
        assert_eq!(e.path, "types[1]");
        assert!(
            e.message.contains("`style` is not a local edit type"),
            "{}",
            e.message
        );
        let e = params(json!({"shard_size": 0})).unwrap_err();
        assert_eq!(e.path, "shard_size");
        let e = params(json!({"segmenter": {"kind": "sam"}})).unwrap_err();
        assert_eq!(e.path, "segmenter.kind");
        assert!(e.message.contains("`sam`"), "{}", e.message);
        let p = params(json!({"segmenter": {"kind": "http", "base_url": "http://127.0.0.1:1"}}))
            .unwrap();
        assert!(matches!(p.segmenter, SegmenterParams::Http(_)));
        let e = params(json!({"thresold": 9})).unwrap_err();
        assert!(e.message.contains("thresold"), "{}", e.message);
    }

    #[test]
    fn the_filter_needs_a_mean_above_the_threshold_and_keep_area() {
        let p = params(json!({"types": ["add", "remove"]})).unwrap();
        let mut a = Annotated {
            edit_type: "add".into(),
            judge_type: "add".into(),
            object: "red circle".into(),
            bbox: [0.0, 0.0, 4.0, 4.0],
            mask_from: "segmenter".into(),
            segment_score: Some(1.0),
            refined: "add a red circle".into(),
            scores: stages::Scores {
                instruction_clarity: 10.0,
                mask_accuracy: 9.0,
                target_prominence: 10.0,
            },
            keep_fraction: 0.9,
            width: 8,
            height: 8,
            mask_png: String::new(),
        };
        assert_eq!(filter(&a, &p), None); // 9.667 > 9.4
        a.scores.mask_accuracy = 8.0; // 9.333
        assert_eq!(filter(&a, &p), Some("below-threshold"));
        a.scores.mask_accuracy = 10.0;
        a.keep_fraction = 0.01;
        assert_eq!(filter(&a, &p), Some("keep-area"));
        a.edit_type = "motion".into();
        assert_eq!(filter(&a, &p), Some("type-excluded"));
        // exactly the threshold is not above it
        let p = params(json!({"threshold": 10.0})).unwrap();
        a.edit_type = "add".into();
        a.keep_fraction = 0.5;
        assert_eq!(filter(&a, &p), Some("below-threshold"));
    }
}
