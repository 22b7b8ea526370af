//! Assembly: the committed shards read back one at a time (memory bounded by a shard) into
//! the curated dataset and the statistics (`stats.json`, `stats.md`, `samples.jsonl`, the
//! type and score plots). The statistics describe the data only — how many shards or service
//! calls this run made depends on what earlier runs cached, so those go to the task's
//! metrics and log, never into an output.

use super::filter;
use super::params::CurateParams;
use super::plots;
use super::source::Source;
use super::stages::{Annotated, LOCAL_TYPES, Outcome, Verdict};
use crate::data::manifest::{Dataset, MANIFEST, Record};
use crate::error::fail;
use crate::imageio;
use cocoflow_engine::kind::{TaskCtx, TaskError};
use image::GrayImage;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where reference masks come from: the `reference` input, else the input manifest's own.
pub struct Reference {
    root: PathBuf,
    /// Where the masks come from, for the statistics (never a local path: those differ from
    /// machine to machine and run to run).
    what: String,
    records: HashMap<String, Record>,
}

pub fn reference_masks(
    ctx: &TaskCtx,
    input_root: Option<&Path>,
) -> Result<Option<Reference>, TaskError> {
    let (root, what) = if ctx.inputs.contains_key("reference") {
        (
            ctx.input_path("reference")?,
            "input `reference`".to_string(),
        )
    } else if let Some(r) = input_root {
        (
            r.to_path_buf(),
            "the curated dataset's own masks".to_string(),
        )
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
    Ok((!records.is_empty()).then_some(Reference {
        root,
        what,
        records,
    }))
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

pub struct Summary {
    pub samples: usize,
    pub annotated: usize,
    pub kept: usize,
    /// Samples that reached the judge, and those of them whose answer was unusable.
    pub judged: usize,
    pub judge_invalid: usize,
    /// The first unusable answer's message.
    pub first_invalid: Option<String>,
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
pub fn assemble(
    p: &CurateParams,
    source: &Source,
    shard_list: &[(std::ops::Range<usize>, String)],
    load: &dyn Fn(&str) -> Result<Vec<Outcome>, TaskError>,
    reference: &Option<Reference>,
    data_dir: &Path,
    stats_dir: &Path,
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
            "reference": reference.as_ref().map(|r| r.what.clone()),
            "all": if iou_n > 0 { Some(iou_sum / iou_n as f64) } else { None }, "n": iou_n,
            "kept": if iouk_n > 0 { Some(iouk_sum / iouk_n as f64) } else { None }, "kept_n": iouk_n,
        },
        "histogram": bins,
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
    out
}
