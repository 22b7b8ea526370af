//! `eval`: runs an editing policy over a benchmark and scores every output ([`crate::eval`]).
//!
//! Inputs: `model` (a base model directory), `data` (a benchmark dataset in the manifest
//! format, e.g. `synth-data`'s `bench`), and optionally `adapter` (a LoRA adapter in the PEFT
//! layout, or an RL state directory whose `theta/` holds one: the policy θ is then evaluated).
//! Output `report`: the [`crate::artifacts::eval_report`] (`records.jsonl`, `table.json`,
//! `table.md`, `images/<key>.png`).
//!
//! Scores: the judge's editing effect, visual quality and overall (their mean, in [0, 1]) for
//! every sample; masked PSNR (dB), SSIM and r_sim on the keep mask (1 − edit mask) for local
//! edit types only (method-spec §8), on the edited image as saved (8-bit). In means, PSNR is
//! capped at `psnr_cap_db` (default 100 dB; identical keep regions have PSNR = ∞). Per type
//! the mean over its samples; overall = the unweighted mean over types (judge) and the mean
//! over local samples (PSNR, SSIM). A judge failure leaves the sample out of the judge means
//! and is counted (`judge_invalid`), never scored.
//!
//! Each sample's noise comes from a seed derived from (`seed`, key), so a sample's edit does
//! not depend on the batch it ran in. A batch holds images of one size: a benchmark whose
//! images differ in size runs in smaller batches.
//!
//! `protocol` says how the judge is asked (method-spec §8):
//! - `synthetic` (default): the judge's reward prompt, as above.
//! - `gedit` (GEdit-Bench-EN, VIEScore): the SC prompt (editing success, over-editing) and the
//!   PQ prompt (naturalness, artifacts), each 0–10; per sample SC = min of the first two,
//!   PQ = min of the last two, O = sqrt(SC·PQ) (`bench.sc`, `bench.pq`, `bench.score`).
//! - `imgedit` (ImgEdit-Bench): three 1–5 rubric scores; the sample's score is their mean.
//!
//! Under both, the raw scores are in each record's `bench.scores`; per type the mean of
//! `bench_sc`/`bench_pq`/`bench_score` over its judged samples, overall the unweighted mean over
//! types. `judge_effect`/`judge_quality`/`judge_overall` hold the same scores in [0, 1]
//! (gedit: SC/10, PQ/10, O/10; imgedit: compliance, the mean of the other two, and the score,
//! each as (v − 1)/4), so reports compare arms as for the synthetic protocol. Pixel metrics
//! need a mask: records without one have none. The benchmark prompts need an
//! OpenAI-compatible judge (`judge: {kind: openai, ...}`); the rule judge only knows the
//! synthetic world.

use crate::artifacts::eval_report::{
    self, EvalRecord, TypeRow, summarize, table_markdown, table_markdown_bench,
};
use crate::data::Dataset;
use crate::device::select_device;
use crate::error::fail;
pub use crate::eval::EvalImages;
use crate::eval::{
    Protocol, bench_judge, edit_chunk, is_local_type, judge_chunk, load_policy, safe_name,
    sample_seed,
};
use crate::judge::spec::JudgeParams;
use crate::judge::{Judge, JudgeImage, JudgeRequest, pool_concurrency};
use crate::metrics::{MetricsConfig, masked_metrics};
use crate::sampling::SamplerConfig;
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tch::Tensor;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvalParams {
    pub seed: u64,
    pub sampler: SamplerConfig,
    pub batch_size: usize,
    /// Evaluate only the first `limit` records.
    pub limit: Option<usize>,
    pub judge: JudgeParams,
    pub metrics: MetricsConfig,
    pub psnr_cap_db: f64,
    /// Fraction of judge answers that may be invalid before the task fails.
    pub max_invalid_fraction: f64,
    /// A label for tables and reports (e.g. the arm's name).
    pub label: Option<String>,
    /// The sweep arm this evaluation belongs to (`${arm}` in a workflow), for reports.
    pub arm: Option<String>,
    /// The RL iteration of the evaluated policy (`${iter}`; none for the base), for reports.
    pub iteration: Option<u64>,
    /// libtorch intra-op threads (results on the CPU depend on the count; default 1, like the
    /// RL kinds, so evaluations running side by side agree with one running alone).
    pub threads: i32,
    /// What is scored: the policy's edits (default), or, as reference rows, the benchmark's
    /// own `target` images (`target`: the judge's and metrics' ceiling) or the unedited
    /// sources (`source`: perfect consistency, no edit). The references need no `model`.
    pub images: EvalImages,
    /// How the judge is asked and scores aggregate: `synthetic` (default), `gedit`, `imgedit`
    /// (module docs). Left out of the canonical params when `synthetic`, so existing cache
    /// keys and reports stay as they were.
    #[serde(skip_serializing_if = "Protocol::is_synthetic")]
    pub protocol: Protocol,
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            seed: 0,
            sampler: SamplerConfig::default(),
            batch_size: 48,
            limit: None,
            judge: JudgeParams::default(),
            metrics: MetricsConfig::default(),
            psnr_cap_db: 100.0,
            max_invalid_fraction: 0.1,
            label: None,
            arm: None,
            iteration: None,
            threads: 1,
            images: EvalImages::default(),
            protocol: Protocol::default(),
        }
    }
}

fn bad(path: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        path: path.into(),
        message: message.into(),
    }
}

fn check(p: &EvalParams) -> Result<(), ParamError> {
    if p.threads < 1 {
        return Err(bad("threads", format!("must be ≥ 1, got {}", p.threads)));
    }
    if p.batch_size == 0 {
        return Err(bad("batch_size", "must be at least 1"));
    }
    if p.sampler.steps == 0 {
        return Err(bad("sampler.steps", "must be at least 1"));
    }
    if !(p.psnr_cap_db > 0.0) {
        return Err(bad(
            "psnr_cap_db",
            format!("must be > 0, got {}", p.psnr_cap_db),
        ));
    }
    if !(0.0..=1.0).contains(&p.max_invalid_fraction) {
        return Err(bad(
            "max_invalid_fraction",
            format!("must be in [0, 1], got {}", p.max_invalid_fraction),
        ));
    }
    if !(0.0..=1.0).contains(&p.metrics.w_s) {
        return Err(bad(
            "metrics.w_s",
            format!("must be in [0, 1], got {}", p.metrics.w_s),
        ));
    }
    if !p.protocol.is_synthetic() && matches!(p.judge, JudgeParams::Rule { .. }) {
        return Err(bad(
            "judge",
            format!(
                "protocol `{}` asks the benchmark's rubric prompts, which the rule judge cannot answer; \
                 set `judge: {{kind: openai, base_url: ..., model: ...}}`",
                p.protocol.name()
            ),
        ));
    }
    Ok(())
}

pub struct Eval;

impl Kind for Eval {
    type Params = EvalParams;
    const NAME: &'static str = "eval";
    const VERSION: u32 = 2;
    const DESCRIBE: &'static str = "runs a policy over a benchmark: judge scores, masked PSNR/SSIM per edit type, edited images";
    const INPUTS: Option<&'static [Input]> = Some(&[
        Input::optional(
            "model",
            "the base model directory (not needed for `images: target | source`)",
        ),
        Input::required("data", "a benchmark dataset in the manifest format"),
        Input::optional(
            "adapter",
            "a PEFT adapter, or an RL state whose `theta/` holds one",
        ),
    ]);
    const OUTPUTS: &'static [&'static str] = &["report"];

    fn validate(&self, p: &EvalParams) -> Result<(), ParamError> {
        check(p)
    }

    fn run(&self, p: EvalParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        tch::set_num_threads(p.threads);
        let ordinals: Vec<usize> = ctx.cuda_ordinals.iter().map(|&o| o as usize).collect();
        let device = select_device(&ordinals);
        let adapter = match ctx.input_items("adapter") {
            Ok(_) => Some(ctx.input_path("adapter")?),
            Err(_) => None,
        };
        let policy = match p.images {
            EvalImages::Policy => {
                let model_dir = ctx.input_path("model")?;
                Some(load_policy(&model_dir, adapter.as_deref(), device)?)
            }
            _ => None,
        };
        let data_root = ctx.input_path("data")?;
        let ds = Dataset::open(&data_root)
            .map_err(|e| TaskError::Failed(format!("input `data`: {e}")))?;
        let mut recs = ds.records.clone();
        if let Some(l) = p.limit {
            recs.truncate(l);
        }
        if recs.is_empty() {
            return Err(TaskError::Failed(format!(
                "input `data` (`{}`): no records to evaluate",
                data_root.display()
            )));
        }
        let judge: Option<Arc<dyn Judge>> = match p.protocol {
            Protocol::Synthetic => Some(p.judge.build(ctx.store()).map_err(TaskError::Failed)?),
            _ => None,
        };
        let bench = match p.protocol {
            Protocol::Synthetic => None,
            _ => Some(bench_judge(&p.judge, ctx.store())?),
        };
        let concurrency = pool_concurrency(&ctx.pools).unwrap_or(8);
        let work = ctx.workdir()?;
        let out = work.join("report");
        let img_dir = out.join("images");
        std::fs::create_dir_all(&img_dir).map_err(|e| {
            TaskError::Failed(format!("cannot create `{}`: {e}", img_dir.display()))
        })?;
        let mut records: Vec<EvalRecord> = Vec::with_capacity(recs.len());
        let total = recs.len() as u64;
        let fail = |k: &str, e: &dyn std::fmt::Display| {
            TaskError::Failed(format!("input `data`, record `{k}`: {e}"))
        };
        for batch_recs in recs.chunks(p.batch_size) {
            ctx.check_cancelled()?;
            let mut all_srcs = Vec::new();
            let mut all_masks = Vec::new();
            let mut all_has_mask = Vec::new();
            for r in batch_recs {
                let s = ds.source(r).map_err(|e| fail(&r.key, &e))?;
                let (_, h, w) = s.size3().expect("(3, H, W)");
                let m = ds.edit_mask(r).map_err(|e| fail(&r.key, &e))?;
                all_has_mask.push(m.is_some());
                let m = m.unwrap_or_else(|| {
                    Tensor::zeros([1, h, w], (tch::Kind::Float, tch::Device::Cpu))
                });
                if m.size()[1..] != s.size()[1..] {
                    return Err(fail(
                        &r.key,
                        &format!(
                            "the mask is {:?}, the source {:?} (height, width)",
                            &m.size()[1..],
                            &s.size()[1..]
                        ),
                    ));
                }
                all_srcs.push(s);
                all_masks.push(m);
            }
            // Runs of equal image size: one tensor per batch (the synthetic benchmark has one
            // size, so its batches are whole).
            let mut start = 0;
            while start < batch_recs.len() {
                let size = all_srcs[start].size();
                let end = (start + 1..batch_recs.len())
                    .find(|&j| all_srcs[j].size() != size)
                    .unwrap_or(batch_recs.len());
                let chunk = &batch_recs[start..end];
                let has_mask = &all_has_mask[start..end];
                let sources = Tensor::stack(&all_srcs[start..end], 0);
                let edit_masks = Tensor::stack(&all_masks[start..end], 0);
                start = end;
                let seeds: Vec<u64> = chunk.iter().map(|r| sample_seed(p.seed, &r.key)).collect();
                let edited = edit_chunk(
                    &p.sampler,
                    p.images,
                    policy.as_ref(),
                    &ds,
                    chunk,
                    &sources,
                    &seeds,
                    device,
                )?;
                // Judge.
                let mut reqs = Vec::new();
                for (i, r) in chunk.iter().enumerate() {
                    let i = i as i64;
                    let src =
                        JudgeImage::from_tensor(&sources.get(i)).map_err(|e| fail(&r.key, &e))?;
                    let out_img =
                        JudgeImage::from_tensor(&edited.get(i)).map_err(|e| fail(&r.key, &e))?;
                    reqs.push(JudgeRequest::new(src, out_img, r.instruction.clone()));
                }
                let judged = judge_chunk(
                    ctx,
                    p.protocol,
                    judge.as_deref(),
                    bench.as_ref(),
                    &reqs,
                    concurrency,
                );
                // Pixel metrics on the keep region.
                let keep: Tensor = edit_masks.ones_like() - &edit_masks;
                let pm = masked_metrics(
                    &sources.to_kind(tch::Kind::Double),
                    &edited.to_kind(tch::Kind::Double),
                    &keep.to_kind(tch::Kind::Double),
                    &p.metrics,
                )
                .map_err(|e| TaskError::Failed(format!("metrics: {e}")))?;
                for ((i, r), (eff, qual, overall, jerr, bscores)) in
                    chunk.iter().enumerate().zip(judged)
                {
                    let et = r.edit_type.clone().unwrap_or_else(|| "unknown".into());
                    let file = format!("images/{}.png", safe_name(&r.key));
                    crate::imageio::tensor::save_rgb(&out.join(&file), &edited.get(i as i64))
                        .map_err(|e| fail(&r.key, &e))?;
                    // A benchmark's keep region is its mask: none, no pixel metrics.
                    let local = is_local_type(&et) && (p.protocol.is_synthetic() || has_mask[i]);
                    let m = pm[i].as_ref().ok().filter(|_| local);
                    records.push(EvalRecord {
                        key: r.key.clone(),
                        edit_type: et,
                        instruction: r.instruction.clone(),
                        seed: seeds[i],
                        image: file,
                        judge_effect: eff,
                        judge_quality: qual,
                        judge_overall: overall,
                        judge_error: jerr,
                        psnr_db: m.map(|m| m.psnr_db),
                        ssim: m.map(|m| m.ssim),
                        r_sim: m.map(|m| m.r_sim),
                        bench: bscores,
                    });
                }
            }
            ctx.progress(records.len() as u64, total, "edited and scored");
        }
        let invalid = records.iter().filter(|r| r.judge_overall.is_none()).count();
        if invalid as f64 > p.max_invalid_fraction * records.len() as f64 {
            let first = records
                .iter()
                .find_map(|r| r.judge_error.clone())
                .unwrap_or_default();
            return Err(TaskError::Failed(format!(
                "{invalid} of {} judge answers are invalid, more than `max_invalid_fraction` {} allows; first: {first}",
                records.len(),
                p.max_invalid_fraction
            )));
        }
        let (rows, overall) = summarize(&records, p.psnr_cap_db);
        let label = p.label.clone().unwrap_or_else(|| match p.images {
            EvalImages::Target => "benchmark targets".into(),
            EvalImages::Source => "unedited sources".into(),
            EvalImages::Policy if adapter.is_some() => "policy θ".into(),
            EvalImages::Policy => "base".into(),
        });
        write_report(&out, &label, &records, &rows, &overall, &p)?;
        ctx.metric("judge_overall", overall.judge_overall);
        ctx.metric("psnr_db", overall.psnr_db);
        ctx.metric("ssim", overall.ssim);
        ctx.metric("judge_invalid", invalid as u64);
        if p.protocol.is_synthetic() {
            ctx.log(table_markdown(&label, &rows, &overall));
        } else {
            ctx.metric("bench_score", overall.bench_score);
            ctx.log(table_markdown_bench(&label, p.protocol, &rows, &overall));
        }
        ctx.output_dir("report", &out)
    }
}

fn write_report(
    out: &Path,
    label: &str,
    records: &[EvalRecord],
    rows: &[TypeRow],
    overall: &TypeRow,
    p: &EvalParams,
) -> Result<(), TaskError> {
    let mut table = json!({
        "label": label,
        "arm": p.arm,
        "iteration": p.iteration,
        "rows": rows,
        "overall": overall,
        "params": serde_json::to_value(p).expect("serialisable"),
        "notes": "judge scores in [0, 1]: overall = mean of effect and quality; per-type means, overall = unweighted mean over types; masked PSNR/SSIM over local edit types, PSNR capped at psnr_cap_db in means",
    });
    let bench_notes = match p.protocol {
        Protocol::Synthetic => None,
        Protocol::Gedit => Some(
            "GEdit-Bench (VIEScore), 0-10: per sample SC = min(editing_success, overediting), PQ = min(naturalness, artifacts), O = sqrt(SC*PQ) (bench_sc, bench_pq, bench_score); per-type means over judged samples, overall = unweighted mean over types; judge_effect/quality/overall = SC/10, PQ/10, O/10; masked PSNR/SSIM over local edit types with a mask, PSNR capped at psnr_cap_db in means",
        ),
        Protocol::Imgedit => Some(
            "ImgEdit-Bench, 1-5: per sample the mean of prompt_compliance, visual_naturalness, physical_integrity (bench_score); per-type means over judged samples, overall = unweighted mean over types; judge_* = (v - 1)/4; masked PSNR/SSIM over local edit types with a mask, PSNR capped at psnr_cap_db in means",
        ),
    };
    if let Some(notes) = bench_notes {
        table["protocol"] = json!(p.protocol.name());
        table["notes"] = json!(notes);
    }
    let md = if p.protocol.is_synthetic() {
        table_markdown(label, rows, overall)
    } else {
        table_markdown_bench(label, p.protocol, rows, overall)
    };
    eval_report::write(out, records, table, &md).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::eval_report::EvalRecord;
    use cocoflow_engine::kind::typed_params;
    use serde_json::json;

    fn rec(t: &str, j: Option<f64>, psnr: Option<f64>) -> EvalRecord {
        EvalRecord {
            key: "k".into(),
            edit_type: t.into(),
            instruction: String::new(),
            seed: 0,
            image: String::new(),
            judge_effect: j,
            judge_quality: j,
            judge_overall: j,
            judge_error: None,
            psnr_db: psnr,
            ssim: psnr.map(|_| 0.5),
            r_sim: None,
            bench: None,
        }
    }

    #[test]
    fn the_synthetic_protocol_leaves_params_records_and_rows_as_they_were() {
        let (p, v) = typed_params::<EvalParams>(&json!({})).unwrap();
        assert!(check(&p).is_ok());
        assert!(v.get("protocol").is_none(), "{v}");
        let r = serde_json::to_value(rec("add", Some(1.0), None)).unwrap();
        assert!(r.get("bench").is_none());
        let (rows, all) = summarize(&[rec("add", Some(1.0), None)], 100.0);
        let row = serde_json::to_value(&rows[0]).unwrap();
        assert!(row.get("bench_score").is_none() && row.get("bench_sc").is_none());
        assert!(
            serde_json::to_value(&all)
                .unwrap()
                .get("bench_pq")
                .is_none()
        );
        let (p, v) = typed_params::<EvalParams>(&json!({"protocol": "gedit"})).unwrap();
        assert_eq!(v["protocol"], "gedit");
        let err = check(&p).unwrap_err();
        assert_eq!(err.path, "judge");
        assert_eq!(
            err.message,
            "protocol `gedit` asks the benchmark's rubric prompts, which the rule judge cannot answer; \
             set `judge: {kind: openai, base_url: ..., model: ...}`"
        );
    }
}
