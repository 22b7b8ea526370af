//! `correlate`: the correlation study of paper appendix C.4 — over the pairs of an editing
//! dataset (original image, edited image, edit mask), does the judge's reading of background
//! consistency agree with masked PSNR / SSIM over the non-edit region?
//!
//! Input `data`: a dataset in the manifest format whose records have `source`, `target` (the
//! edited image; `edited` in imported datasets) and `edit_mask` — e.g. `synth-data`'s
//! `train`, or any imported editing dataset. Records without an edited image or a mask,
//! records of global edit types ([`crate::eval::is_local_type`]) and records whose mask covers
//! the whole image are counted and left out.
//!
//! Per pair: the judge (`judge`, as in `eval` and `curate`: the rule judge by default, or any
//! OpenAI-compatible server) is asked [`crate::judge::prompts::CONSISTENCY`] through
//! [`crate::judge::Judge::ask`] with the source, the edited image and the mask (white =
//! edited, whatever the polarity on disk), and answers a 1–10 `consistency_score`; masked
//! PSNR and SSIM over the keep region (1 − edit mask) come from
//! [`crate::metrics::masked_rgb`] (the project's metric kernel), PSNR capped at
//! `psnr_cap_db`. A judge failure leaves the pair out of the correlations with the judge and
//! is counted; more than `max_invalid_fraction` of them fails the task.
//!
//! Output `correlation` ([`crate::report::correlation`]): `correlation.json` — Pearson r of
//! consistency vs PSNR, consistency vs SSIM and PSNR vs SSIM, pooled and per edit type —
//! `records.jsonl` and three scatter plots.

use crate::data::manifest::{Dataset, MaskPolarity, Record};
use crate::judge::spec::JudgeParams;
use crate::judge::{Judge, JudgeImage, JudgeRequest, pool_concurrency, prompts};
use crate::report::correlation::{Correlation, Sample, write};
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};
use futures::StreamExt as _;
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelateParams {
    /// The judge asked for the consistency score (default: the rule judge).
    pub judge: JudgeParams,
    /// PSNR cap in dB (an identical keep region has PSNR = ∞).
    pub psnr_cap_db: f64,
    /// Fraction of judge answers that may be invalid before the task fails.
    pub max_invalid_fraction: f64,
    /// Use only the first `limit` usable pairs (the paper samples 100K of ImgEdit).
    pub limit: Option<usize>,
}

impl Default for CorrelateParams {
    fn default() -> Self {
        CorrelateParams {
            judge: JudgeParams::default(),
            psnr_cap_db: crate::eval::PSNR_CAP_DB,
            max_invalid_fraction: 0.1,
            limit: None,
        }
    }
}

pub struct Correlate;

impl Kind for Correlate {
    type Params = CorrelateParams;
    const NAME: &'static str = "correlate";
    const VERSION: u32 = 2;
    const DESCRIBE: &'static str = "Pearson r between the judge's mask-aware consistency score and masked PSNR/SSIM over the pairs of an editing dataset, with scatter plots (paper C.4)";
    const INPUTS: Option<&'static [Input]> = Some(&[Input::required(
        "data",
        "an editing dataset: records with `source`, `target` (edited) and `edit_mask`",
    )]);
    const OUTPUTS: &'static [&'static str] = &["correlation"];

    fn validate(&self, p: &CorrelateParams) -> Result<(), ParamError> {
        if p.psnr_cap_db.is_nan() || p.psnr_cap_db <= 0.0 {
            return Err(ParamError {
                path: "psnr_cap_db".into(),
                message: format!("must be > 0, got {}", p.psnr_cap_db),
            });
        }
        if !(0.0..=1.0).contains(&p.max_invalid_fraction) {
            return Err(ParamError {
                path: "max_invalid_fraction".into(),
                message: format!("must be in [0, 1], got {}", p.max_invalid_fraction),
            });
        }
        if p.limit == Some(0) {
            return Err(ParamError {
                path: "limit".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// One usable pair, loaded.
struct Pair {
    record: Record,
    edit_type: String,
    source: RgbImage,
    edited: RgbImage,
    /// Row-major, `true` = edited.
    edit: Vec<bool>,
}

/// Loads a record's source, edited image and mask; `Ok(None)` when it has no edited image or
/// no mask (counted by the caller).
fn load(ds: &Dataset, r: &Record) -> Result<Option<Pair>, String> {
    let (Some(target), Some(mask)) = (&r.target, &r.edit_mask) else {
        return Ok(None);
    };
    let open = |rel: &str, what: &str| {
        crate::imageio::open(&ds.path(rel))
            .map_err(|e| format!("record `{}`, {what} `{rel}`: {e}", r.key))
    };
    let source = open(&r.source, "source")?.to_rgb8();
    let edited = open(target, "target")?.to_rgb8();
    let mask: GrayImage = open(mask, "edit_mask")?.to_luma8();
    let dims = source.dimensions();
    for (what, d) in [
        ("target", edited.dimensions()),
        ("edit_mask", mask.dimensions()),
    ] {
        if d != dims {
            return Err(format!(
                "record `{}`: the {what} is {}×{}, the source {}×{}",
                r.key, d.0, d.1, dims.0, dims.1
            ));
        }
    }
    let keep_polarity = r.mask_polarity == MaskPolarity::Keep;
    let edit = mask
        .pixels()
        .map(|p| (p.0[0] >= 128) != keep_polarity)
        .collect();
    Ok(Some(Pair {
        record: r.clone(),
        edit_type: r.edit_type.clone().unwrap_or_else(|| "unknown".into()),
        source,
        edited,
        edit,
    }))
}

impl Correlate {
    /// Does the work (the kind's run function).
    pub fn run(&self, p: CorrelateParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let fail = |e: String| TaskError::Failed(e);
        // A global task in a sweep gets one item per arm; arms share the data instance.
        let items = ctx.input_items("data")?.to_vec();
        let mut producers: Vec<&str> = items.iter().map(|i| i.producer.as_str()).collect();
        producers.sort();
        producers.dedup();
        if producers.len() > 1 {
            return Err(fail(format!(
                "input `data`: {} different datasets ({}); `correlate` takes one",
                producers.len(),
                producers.join(", ")
            )));
        }
        let root = ctx.item_path("data", &items[0])?;
        let ds = Dataset::open(&root)
            .map_err(|e| fail(format!("input `data` (`{}`): {e}", root.display())))?;
        let judge = p.judge.build(ctx.store()).map_err(fail)?;
        let (mut no_pair, mut global, mut no_keep) = (0usize, 0usize, 0usize);
        let mut pairs = Vec::new();
        for r in &ds.records {
            if p.limit.is_some_and(|l| pairs.len() >= l) {
                break;
            }
            let t = r.edit_type.as_deref().unwrap_or("unknown");
            if !crate::eval::is_local_type(t) {
                global += 1;
                continue;
            }
            match load(&ds, r).map_err(|e| fail(format!("input `data`: {e}")))? {
                // a mask over the whole image leaves nothing to compare
                Some(pair) if pair.edit.iter().all(|&e| e) => no_keep += 1,
                Some(pair) => pairs.push(pair),
                None => no_pair += 1,
            }
        }
        if pairs.is_empty() {
            return Err(fail(format!(
                "input `data` (`{}`): no usable pair among {} records ({no_pair} without a \
                 `target` or an `edit_mask`, {global} of global edit types, {no_keep} whose \
                 mask covers the whole image)",
                root.display(),
                ds.records.len()
            )));
        }
        ctx.log(format!(
            "correlate: {} pairs ({no_pair} records without target or mask, {global} global, {no_keep} without a keep region left out); judge {}",
            pairs.len(),
            judge.describe()
        ));

        let mut samples = Vec::with_capacity(pairs.len());
        let mut records = Vec::with_capacity(pairs.len());
        let mut invalid = Vec::new();
        let concurrency = pool_concurrency(&ctx.pools).unwrap_or(8);
        let total = pairs.len() as u64;
        for chunk in pairs.chunks(256) {
            ctx.check_cancelled()?;
            let reqs: Vec<JudgeRequest> = chunk
                .iter()
                .map(|q| {
                    let (w, h) = q.source.dimensions();
                    let mask = RgbImage::from_fn(w, h, |x, y| {
                        let v = if q.edit[(y * w + x) as usize] { 255 } else { 0 };
                        image::Rgb([v, v, v])
                    });
                    JudgeRequest::new(
                        JudgeImage::from_rgb(q.source.clone()),
                        JudgeImage::from_rgb(q.edited.clone()),
                        q.record.instruction.clone(),
                    )
                    .with_mask(JudgeImage::from_rgb(mask))
                    .with_var("edit_type", q.edit_type.clone())
                })
                .collect();
            let judge: &dyn Judge = judge.as_ref();
            let answers: Vec<_> = ctx.runtime().block_on(
                futures::stream::iter(reqs.iter().map(|r| judge.ask(&prompts::CONSISTENCY, r)))
                    .buffered(concurrency.max(1))
                    .collect(),
            );
            for (q, a) in chunk.iter().zip(answers) {
                let keep: Vec<bool> = q.edit.iter().map(|&e| !e).collect();
                let m = crate::metrics::masked_rgb(&q.source, &q.edited, &keep).ok();
                let psnr = m.map(|m| m.psnr_db.min(p.psnr_cap_db));
                let ssim = m.map(|m| m.ssim);
                let (score, raw, error) = match a {
                    Ok(a) => (
                        a.answer.scores.get("consistency_score").map(|s| s.value),
                        Some(a.raw),
                        None,
                    ),
                    Err(e) => {
                        invalid.push(format!("record `{}`: {e}", q.record.key));
                        let msg = e.to_string();
                        (None, e.raw, Some(msg))
                    }
                };
                samples.push(Sample {
                    edit_type: q.edit_type.clone(),
                    consistency: score,
                    psnr,
                    ssim,
                });
                let mut rec = json!({
                    "key": q.record.key,
                    "edit_type": q.edit_type,
                    "consistency": score,
                    "psnr_db": psnr,
                    "psnr_infinite": m.is_some_and(|m| m.psnr_db.is_infinite()),
                    "ssim": ssim,
                    "keep_pixels": m.map(|m| m.keep_pixels),
                    "judge_answer": raw,
                });
                if let Some(e) = error {
                    rec["judge_error"] = json!(e);
                }
                records.push(rec);
            }
            ctx.progress(samples.len() as u64, total, "pairs judged and measured");
        }
        if invalid.len() as f64 > p.max_invalid_fraction * samples.len() as f64 {
            return Err(fail(format!(
                "{} of {} judge answers are invalid, more than `max_invalid_fraction` {} allows; first: {}",
                invalid.len(),
                samples.len(),
                p.max_invalid_fraction,
                invalid[0]
            )));
        }
        let mut header = Map::new();
        header.insert("x".into(), json!("consistency"));
        header.insert("prompt".into(), json!(prompts::CONSISTENCY.key()));
        header.insert("judge".into(), json!(judge.describe()));
        header.insert("psnr_cap_db".into(), json!(p.psnr_cap_db));
        header.insert(
            "data".into(),
            json!({
                "records": ds.records.len(),
                "pairs": samples.len(),
                "without_target_or_mask": no_pair,
                "global_types": global,
                "judge_invalid": invalid.len(),
                "no_keep_region": no_keep,
            }),
        );
        header.insert(
            "notes".into(),
            json!("Pearson r over dataset pairs of local edit types that have both values: the judge's 1-10 consistency score (prompt `consistency`: source, edited, mask; background only), masked PSNR (dB, capped at psnr_cap_db) and masked SSIM over the keep region (1 - edit mask); r is null when undefined (n < 2 or a constant variable)"),
        );
        let out = ctx.workdir()?.join("correlation");
        let pooled = write(&out, header, &samples, &records).map_err(fail)?;
        let show = |c: &Correlation| {
            c.r.map(|r| format!("{r:.4}")).unwrap_or_else(|| {
                format!("undefined ({})", c.undefined.clone().unwrap_or_default())
            })
        };
        ctx.log(format!(
            "Pearson r: consistency vs masked PSNR {} (n = {}), consistency vs masked SSIM {} (n = {}), PSNR vs SSIM {} (n = {})",
            show(&pooled.consistency_psnr),
            pooled.consistency_psnr.n,
            show(&pooled.consistency_ssim),
            pooled.consistency_ssim.n,
            show(&pooled.psnr_ssim),
            pooled.psnr_ssim.n,
        ));
        ctx.metric("r_consistency_psnr", pooled.consistency_psnr.r);
        ctx.metric("r_consistency_ssim", pooled.consistency_ssim.r);
        ctx.metric("r_psnr_ssim", pooled.psnr_ssim.r);
        ctx.metric("pairs", samples.len() as u64);
        ctx.metric("judge_invalid", invalid.len() as u64);
        ctx.output_dir("correlation", &out)
    }
}
