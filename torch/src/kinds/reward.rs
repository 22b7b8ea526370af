//! The work of `reward` (declared in [`cocoflow_tasks::kinds::reward`]): the run function the
//! worker binary registers.

use super::set_threads;
use crate::artifacts::rewards::{FORMAT, RewardsFile, SampleReward, VERSION};
use crate::artifacts::rollouts::{RolloutManifest, RolloutTensors};
use crate::data::{Dataset, RecordTensors as _};
use crate::error::fail;
use crate::imageio::tensor;
use crate::judge::{Judge, JudgeImage, JudgeImageTensor as _, JudgeRequest, Scores};
use crate::metrics::{MetricsConfig, masked_metrics};
use crate::rl::reward::{GroupKey, MixedRewards, SampleRewards, mix};
use cocoflow_engine::kind::{TaskCtx, TaskError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use tch::Tensor;

pub use cocoflow_tasks::kinds::reward::*;

pub fn run(_: &RewardKind, p: RewardParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
    set_threads(p.threads);
    let rdir = ctx.input_path("rollouts")?;
    let ddir = ctx.input_path("data")?;
    let m = RolloutManifest::read(&rdir).map_err(fail)?;
    let tensors = RolloutTensors::read(&rdir, &m).map_err(fail)?;
    let ds = Dataset::open(&ddir).map_err(fail)?;
    let by_key: BTreeMap<&str, &crate::data::Record> =
        ds.records.iter().map(|r| (r.key.as_str(), r)).collect();

    // Sources from the dataset, checked against the rollouts' digests.
    let mut sources = Vec::new();
    for g in &m.groups {
        let r = by_key.get(g.record.as_str()).ok_or_else(|| {
            fail(format!(
                "the `data` input has no record `{}` that the rollouts used",
                g.record
            ))
        })?;
        let src = ds.source(r).map_err(fail)?;
        let img = JudgeImage::from_tensor(&src).map_err(fail)?;
        if img.digest() != g.source_digest {
            return Err(fail(format!(
                "record `{}` of the `data` input is not the source image the rollouts used (digest differs): is `data` the rollouts' dataset?",
                g.record
            )));
        }
        sources.push((src, img));
    }
    // Edited images as stored (8-bit PNG), the keep masks.
    let mut edited = Vec::new();
    for s in &m.samples {
        let path = crate::data::manifest::confined(&rdir, &s.image).map_err(fail)?;
        edited.push(tensor::load_rgb(&path).map_err(fail)?);
    }
    let keep: Tensor = 1.0 - tensors.edit_masks.to_kind(tch::Kind::Float);

    // r_sim, batched per group.
    let mcfg = MetricsConfig {
        w_s: p.w_s,
        tau_db: p.tau_db,
        ..MetricsConfig::default()
    };
    let mut sim = vec![None; m.samples.len()];
    for (g, (src, _)) in sources.iter().enumerate() {
        let idx: Vec<usize> = m
            .samples
            .iter()
            .filter(|s| s.group == g)
            .map(|s| s.index)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let n = idx.len() as i64;
        let a = src.unsqueeze(0).expand([n, -1, -1, -1], false).contiguous();
        let b = Tensor::stack(
            &idx.iter()
                .map(|&i| edited[i].shallow_clone())
                .collect::<Vec<_>>(),
            0,
        );
        let kk = keep
            .get(g as i64)
            .unsqueeze(0)
            .expand([n, -1, -1, -1], false)
            .contiguous();
        let res = masked_metrics(&a, &b, &kk, &mcfg).map_err(fail)?;
        for (&i, r) in idx.iter().zip(res) {
            sim[i] = r.ok();
        }
    }
    ctx.check_cancelled()?;

    // r_mllm from the judge.
    let judge: Arc<dyn Judge> = p.judge.build(ctx.store()).map_err(TaskError::Params)?;
    let requests: Vec<JudgeRequest> = m
        .samples
        .iter()
        .zip(&edited)
        .map(|(s, e)| {
            let g = &m.groups[s.group];
            Ok(JudgeRequest::new(
                sources[s.group].1.clone(),
                JudgeImage::from_tensor(e).map_err(|e| e.to_string())?,
                g.instruction.clone(),
            ))
        })
        .collect::<Result<_, String>>()
        .map_err(fail)?;
    let conc = crate::judge::pool_concurrency(&ctx.pools).unwrap_or(1);
    let batch = ctx.runtime().block_on(judge.judge_batch(&requests, conc));
    batch.check(p.max_invalid_fraction).map_err(fail)?;

    let inputs: Vec<SampleRewards> = m
        .samples
        .iter()
        .zip(&batch.verdicts)
        .map(|(s, v)| {
            let g = &m.groups[s.group];
            SampleRewards {
                group: GroupKey {
                    instruction: g.instruction.clone(),
                    source_digest: g.source_digest.clone(),
                },
                r_mllm: v.as_ref().ok().map(|j| j.r_mllm()),
                r_sim: sim[s.index].map(|x| x.r_sim),
            }
        })
        .collect();
    let cfg = p.reward_config();
    let mixed: MixedRewards = mix(&inputs, &cfg);
    let samples: Vec<SampleReward> = m
        .samples
        .iter()
        .zip(&batch.verdicts)
        .zip(&mixed.samples)
        .map(|((s, v), x)| {
            let metrics = sim[s.index];
            SampleReward {
                index: s.index,
                group: s.group,
                seed: s.seed,
                r_mllm: v.as_ref().ok().map(|j| j.r_mllm()),
                judge_scores: v.as_ref().ok().map(|j| scores_json(&j.scores)),
                judge_error: v.as_ref().err().map(|e| e.to_string()),
                r_sim: metrics.map(|x| x.r_sim),
                psnr_db: metrics.map(|x| x.psnr_db).filter(|x| x.is_finite()),
                ssim: metrics.map(|x| x.ssim),
                r_raw: x.r_raw,
                advantage: x.advantage,
                r: x.r,
                excluded: x.excluded,
            }
        })
        .collect();
    let st = &mixed.stats;
    ctx.metric("iteration", m.iteration);
    ctx.metric("r_mllm_mean", st.r_mllm.mean);
    ctx.metric("r_mllm_std", st.r_mllm.std);
    ctx.metric("r_sim_mean", st.r_sim.mean);
    ctx.metric("r_sim_std", st.r_sim.std);
    ctx.metric("r_raw_mean", st.r_raw.mean);
    ctx.metric("r_raw_std", st.r_raw.std);
    ctx.metric("z", st.z);
    ctx.metric("invalid_judge", st.invalid_judge as u64);
    ctx.metric("undefined_sim", st.undefined_sim as u64);
    ctx.metric("banned_groups", st.banned_groups as u64);
    ctx.metric("banned_samples", st.banned_samples as u64);
    ctx.metric("used", st.used as u64);
    ctx.log(format!(
        "iteration {}: r_mllm {:.4}±{:.4} r_sim {:.4}±{:.4} r_raw {:.4}±{:.4}; {} invalid, {} undefined r_sim, {} banned groups, {} of {} samples used",
        m.iteration, st.r_mllm.mean, st.r_mllm.std, st.r_sim.mean, st.r_sim.std, st.r_raw.mean,
        st.r_raw.std, st.invalid_judge, st.undefined_sim, st.banned_groups, st.used, st.samples
    ));
    let file = RewardsFile {
        format: FORMAT.into(),
        version: VERSION,
        iteration: m.iteration,
        theta_old: m.theta_old.clone(),
        judge: judge.describe(),
        config: cfg,
        samples,
        banned: mixed.banned,
        stats: mixed.stats,
    };
    let text = serde_json::to_string_pretty(&file).map_err(fail)? + "\n";
    ctx.output_bytes("rewards", text.into_bytes())
}

fn scores_json(s: &Scores) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}
