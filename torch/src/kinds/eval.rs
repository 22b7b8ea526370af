//! The work of `eval` (declared in [`cocoflow_tasks::kinds::eval`]): the run function the
//! worker binary registers.

use crate::artifacts::eval_report::{
    self, EvalRecord, TypeRow, label_prompts, summarize, table_markdown, table_markdown_bench,
};
use crate::data::{Dataset, RecordTensors as _};
use crate::error::fail;
use crate::eval::{
    Protocol, bench_judge, edit_chunk, has_consistency_metrics, judge_chunk, load_policy,
    safe_name, sample_seed,
};
use crate::judge::published::BenchPrompts;
use crate::judge::{Judge, JudgeImage, JudgeImageTensor as _, JudgeRequest, pool_concurrency};
use crate::metrics::masked_metrics;
use cocoflow_engine::kind::{TaskCtx, TaskError};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tch::Tensor;

pub use cocoflow_tasks::kinds::eval::*;

pub fn run(_: &Eval, p: EvalParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
    tch::set_num_threads(p.threads);
    let adapter = match ctx.input_items("adapter") {
        Ok(_) => Some(ctx.input_path("adapter")?),
        Err(_) => None,
    };
    // One replica per granted GPU (several), or `cpu_replicas` on the CPU.
    let devices = super::replica_devices(&ctx.cuda_ordinals, p.cpu_replicas);
    let mut replicas: Vec<(
        Box<dyn crate::models::EditPolicy>,
        crate::models::ActiveAdapter,
    )> = Vec::new();
    if p.images == EvalImages::Policy {
        let model_dir = super::model_dir(ctx)?;
        let base = super::base_model(ctx, &model_dir)?;
        for &d in &devices {
            replicas.push(load_policy(&base, adapter.as_deref(), d)?);
        }
        if devices.len() > 1 {
            ctx.log(format!(
                "eval: data-parallel over {} replicas ({devices:?})",
                devices.len()
            ));
        }
    }
    let data_root = ctx.input_path("data")?;
    let ds =
        Dataset::open(&data_root).map_err(|e| TaskError::Failed(format!("input `data`: {e}")))?;
    let mut recs = ds.records.clone();
    if let Some(l) = p.limit {
        recs.truncate(l);
    }
    ctx.log(format!("eval: {} samples", recs.len()));
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
    // The benchmark's prompts, read (and every record's rubric found) before any editing.
    let bench_prompts = BenchPrompts::load(p.protocol, &p.prompts).map_err(TaskError::Failed)?;
    bench_prompts
        .check_types(
            recs.iter()
                .map(|r| (r.key.as_str(), r.edit_type.as_deref().unwrap_or("unknown"))),
        )
        .map_err(TaskError::Failed)?;
    let concurrency = pool_concurrency(&ctx.pools).unwrap_or(8);
    let work = ctx.workdir()?;
    let out = work.join("report");
    let img_dir = out.join("images");
    std::fs::create_dir_all(&img_dir)
        .map_err(|e| TaskError::Failed(format!("cannot create `{}`: {e}", img_dir.display())))?;
    let mut records: Vec<EvalRecord> = Vec::with_capacity(recs.len());
    let total = recs.len() as u64;
    let fail = |k: &str, e: &dyn std::fmt::Display| {
        TaskError::Failed(format!("input `data`, record `{k}`: {e}"))
    };
    // Data parallelism: `replicas` policies (one per granted GPU, or `cpu_replicas` on the
    // CPU) edit whole batches side by side, each batch as one replica would (the same records
    // in it, the same per-record seeds); judging, metrics and saving follow in record order.
    let n_rep = replicas.len().max(1);
    for group in recs.chunks(p.batch_size * n_rep) {
        ctx.check_cancelled()?;
        let mut prepared: Vec<Prepared> = Vec::new();
        for batch_recs in group.chunks(p.batch_size) {
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
                prepared.push(Prepared {
                    chunk,
                    has_mask: all_has_mask[start..end].to_vec(),
                    sources: Tensor::stack(&all_srcs[start..end], 0),
                    edit_masks: Tensor::stack(&all_masks[start..end], 0),
                    seeds: chunk.iter().map(|r| sample_seed(p.seed, &r.key)).collect(),
                });
                start = end;
            }
        }
        let edits = edit_parallel(&p, &mut replicas, &ds, &prepared, &devices)?;
        for (prep, edited) in prepared.iter().zip(edits) {
            let (chunk, has_mask, sources, edit_masks, seeds) = (
                prep.chunk,
                &prep.has_mask,
                &prep.sources,
                &prep.edit_masks,
                &prep.seeds,
            );
            // Judge.
            let mut reqs = Vec::new();
            for (i, r) in chunk.iter().enumerate() {
                let i = i as i64;
                let src = JudgeImage::from_tensor(&sources.get(i)).map_err(|e| fail(&r.key, &e))?;
                let out_img =
                    JudgeImage::from_tensor(&edited.get(i)).map_err(|e| fail(&r.key, &e))?;
                let et = r.edit_type.as_deref().unwrap_or("unknown");
                reqs.push(
                    JudgeRequest::new(src, out_img, r.instruction.clone())
                        .with_var("edit_type", et),
                );
            }
            let judged = judge_chunk(
                ctx,
                p.protocol,
                judge.as_deref(),
                bench.as_ref().map(|b| (b, &bench_prompts)),
                &reqs,
                concurrency,
            );
            // Pixel metrics on the keep region.
            let keep: Tensor = edit_masks.ones_like() - edit_masks;
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
                // The keep region is the record's mask: none, no pixel metrics (never the
                // whole image); additions and global types have none by protocol.
                let local = has_consistency_metrics(&et) && has_mask[i];
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
            ctx.progress(records.len() as u64, total, "edited and scored");
        }
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
    write_report(&out, &label, &records, &rows, &overall, &p, &bench_prompts)?;
    ctx.metric("judge_overall", overall.judge_overall);
    ctx.metric("psnr_db", overall.psnr_db);
    ctx.metric("ssim", overall.ssim);
    ctx.metric("judge_invalid", invalid as u64);
    if p.protocol.is_synthetic() {
        ctx.log(table_markdown(&label, &rows, &overall));
    } else {
        ctx.metric("bench_score", overall.bench_score);
        let md = table_markdown_bench(&label, p.protocol, &rows, &overall);
        ctx.log(label_prompts(&mut json!({}), &md, &bench_prompts));
    }
    if !replicas.is_empty() {
        let inline: u64 = replicas
            .iter()
            .map(|(p, _)| p.inline_prompt_encodings())
            .sum();
        if inline > 0 {
            ctx.log(format!(
                "prompts: {inline} encodings were not in the `prompts` input and were made here"
            ));
        }
    }
    ctx.output_dir("report", &out)
}

fn write_report(
    out: &Path,
    label: &str,
    records: &[EvalRecord],
    rows: &[TypeRow],
    overall: &TypeRow,
    p: &EvalParams,
    bench_prompts: &BenchPrompts,
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
        let md = table_markdown_bench(label, p.protocol, rows, overall);
        label_prompts(&mut table, &md, bench_prompts)
    };
    eval_report::write(out, records, table, &md).map_err(fail)
}

/// One chunk of records of one image size, loaded: what a replica edits.
struct Prepared<'a> {
    chunk: &'a [crate::data::Record],
    has_mask: Vec<bool>,
    sources: Tensor,
    edit_masks: Tensor,
    seeds: Vec<u64>,
}

/// The edited images of every prepared chunk, in order: chunk j by replica j mod R, the
/// replicas in threads (one replica, or none for the reference images: in this thread).
fn edit_parallel(
    p: &EvalParams,
    replicas: &mut [(
        Box<dyn crate::models::EditPolicy>,
        crate::models::ActiveAdapter,
    )],
    ds: &Dataset,
    prepared: &[Prepared],
    devices: &[tch::Device],
) -> Result<Vec<Tensor>, TaskError> {
    if replicas.len() <= 1 {
        let policy = replicas.first();
        return prepared
            .iter()
            .map(|c| {
                edit_chunk(
                    &p.sampler, p.images, policy, ds, c.chunk, &c.sources, &c.seeds, devices[0],
                )
            })
            .collect();
    }
    let n = replicas.len();
    // (chunk index, its tensors) per replica; tensors are not `Sync`, so each thread owns
    // its handles.
    type Job<'a> = (usize, &'a [crate::data::Record], Vec<u64>, Tensor);
    let mut work: Vec<Vec<Job>> = (0..n).map(|_| Vec::new()).collect();
    for (j, c) in prepared.iter().enumerate() {
        work[j % n].push((j, c.chunk, c.seeds.clone(), c.sources.shallow_clone()));
    }
    let results: Vec<Result<Vec<(usize, Tensor)>, TaskError>> = std::thread::scope(|s| {
        let handles: Vec<_> = replicas
            .iter_mut()
            .zip(work)
            .zip(devices)
            .map(|((rep, jobs), &dev)| {
                let threads = p.threads;
                s.spawn(move || {
                    tch::set_num_threads(threads);
                    let rep = &*rep;
                    jobs.into_iter()
                        .map(|(j, chunk, seeds, sources)| {
                            edit_chunk(
                                &p.sampler,
                                p.images,
                                Some(rep),
                                ds,
                                chunk,
                                &sources,
                                &seeds,
                                dev,
                            )
                            .map(|t| (j, t))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(TaskError::Failed(
                        "a data-parallel eval replica panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut out: Vec<Option<Tensor>> = (0..prepared.len()).map(|_| None).collect();
    for (r, res) in results.into_iter().enumerate() {
        for (j, t) in res.map_err(|e| match e {
            TaskError::Failed(m) => TaskError::Failed(format!("eval replica {r} of {n}: {m}")),
            other => other,
        })? {
            out[j] = Some(t);
        }
    }
    Ok(out
        .into_iter()
        .map(|t| t.expect("every chunk edited"))
        .collect())
}
