//! `reward`: scores rollouts and turns them into optimality probabilities (method-spec §1–§3).
//!
//! Inputs: `rollouts` (from `rollout`), `data` (the dataset the rollouts came from: sources
//! and edit masks, checked against the rollouts' source digests). Output `rewards`: the
//! [`crate::artifacts::rewards`] artifact (the iteration's statistics also as metrics).
//!
//! - r_sim on the keep mask `1 − edit_mask`, between the source and the decoded (8-bit PNG)
//!   sample; an empty keep mask leaves r_sim undefined (never 0).
//! - r_mllm from the judge: `rule` (the synthetic world's [`RuleJudge`], default) or `openai`
//!   (any OpenAI-compatible server; responses cached in the store). More invalid answers than
//!   `max_invalid_fraction` fail the task.
//! - groups keyed by (instruction, source digest); [`crate::rl::reward::mix`] does the rest.

use super::{bad, check_threads, set_threads};
use crate::artifacts::rewards::{FORMAT, RewardsFile, SampleReward, VERSION};
use crate::artifacts::rollouts::{RolloutManifest, RolloutTensors};
use crate::data::Dataset;
use crate::error::fail;
use crate::imageio::tensor;
use crate::judge::{Judge, JudgeImage, JudgeRequest, Scores};
use crate::metrics::{MetricsConfig, masked_metrics};
use crate::rl::reward::{GroupKey, MixedRewards, Normalizer, RewardConfig, SampleRewards, mix};
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use tch::Tensor;

pub use crate::judge::spec::JudgeParams;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RewardParams {
    /// Weight of r_mllm in r_raw (default 0.8).
    pub lambda_mllm: f64,
    /// Weight of r_sim in r_raw (default 0.2).
    pub lambda_sim: f64,
    /// SSIM weight in r_sim (method-spec §1: 0.5).
    pub w_s: f64,
    /// PSNR normaliser in dB (40).
    pub tau_db: f64,
    /// `{mode: global-std, adv_clip: 5}` (default) or `{mode: constant, value: Z}`.
    #[serde(alias = "normaliser")]
    pub normalizer: Normalizer,
    /// Groups whose r_raw std is at most this are left out of the loss.
    pub ban_std: f64,
    /// Groups whose r_raw mean is at least this are left out of the loss.
    pub ban_mean: f64,
    pub judge: JudgeParams,
    /// The task fails when more than this fraction of judge answers is invalid.
    pub max_invalid_fraction: f64,
    /// libtorch intra-op threads.
    pub threads: usize,
}

impl Default for RewardParams {
    fn default() -> Self {
        RewardParams {
            lambda_mllm: 0.8,
            lambda_sim: 0.2,
            w_s: 0.5,
            tau_db: 40.0,
            normalizer: Normalizer::default(),
            ban_std: 0.02,
            ban_mean: 0.9,
            judge: JudgeParams::default(),
            max_invalid_fraction: 0.1,
            threads: 1,
        }
    }
}

fn check(p: &RewardParams) -> Result<(), ParamError> {
    let finite_nonneg = |path: &str, v: f64| {
        if !(v.is_finite() && v >= 0.0) {
            bad(path, format!("must be a finite number ≥ 0, got {v}"))
        } else {
            Ok(())
        }
    };
    finite_nonneg("lambda_mllm", p.lambda_mllm)?;
    finite_nonneg("lambda_sim", p.lambda_sim)?;
    if p.lambda_mllm + p.lambda_sim <= 0.0 {
        return bad(
            "lambda_mllm",
            "`lambda_mllm` and `lambda_sim` cannot both be 0",
        );
    }
    if !(0.0..=1.0).contains(&p.w_s) {
        return bad("w_s", format!("must be in [0, 1], got {}", p.w_s));
    }
    if !(p.tau_db.is_finite() && p.tau_db > 0.0) {
        return bad("tau_db", format!("must be positive, got {}", p.tau_db));
    }
    match p.normalizer {
        Normalizer::GlobalStd { adv_clip } if !(adv_clip.is_finite() && adv_clip > 0.0) => {
            return bad(
                "normalizer.adv_clip",
                format!("must be positive, got {adv_clip}"),
            );
        }
        Normalizer::Constant { value } if !(value.is_finite() && value > 0.0) => {
            return bad("normalizer.value", format!("must be positive, got {value}"));
        }
        _ => {}
    }
    if p.ban_std.is_nan() {
        return bad("ban_std", "must be a number");
    }
    if p.ban_mean.is_nan() {
        return bad("ban_mean", "must be a number");
    }
    if !(0.0..=1.0).contains(&p.max_invalid_fraction) {
        return bad(
            "max_invalid_fraction",
            format!("must be in [0, 1], got {}", p.max_invalid_fraction),
        );
    }
    if let JudgeParams::Rule {
        min_area_fraction, ..
    } = p.judge
        && !(0.0..1.0).contains(&min_area_fraction)
    {
        return bad(
            "judge.min_area_fraction",
            format!("must be in [0, 1), got {min_area_fraction}"),
        );
    }
    if let JudgeParams::Openai(cfg) = &p.judge {
        if cfg.base_url.trim().is_empty() {
            return bad("judge.base_url", "must not be empty");
        }
        if cfg.model.trim().is_empty() {
            return bad("judge.model", "must not be empty");
        }
    }
    check_threads(p.threads)
}

impl RewardParams {
    pub fn reward_config(&self) -> RewardConfig {
        RewardConfig {
            lambda_mllm: self.lambda_mllm,
            lambda_sim: self.lambda_sim,
            normalizer: self.normalizer.clone(),
            ban_std: self.ban_std,
            ban_mean: self.ban_mean,
        }
    }
}

pub struct RewardKind;

impl Kind for RewardKind {
    type Params = RewardParams;
    const NAME: &'static str = "reward";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str = "RL rewards: r_sim (masked PSNR/SSIM) + r_mllm (judge), group advantages, optimality probabilities";
    const INPUTS: Option<&'static [Input]> = Some(&[
        Input::required("rollouts", "the `rollout` kind's output"),
        Input::required("data", "the dataset the rollouts came from"),
    ]);
    const OUTPUTS: &'static [&'static str] = &["rewards"];

    fn validate(&self, p: &RewardParams) -> Result<(), ParamError> {
        check(p)
    }

    fn run(&self, p: RewardParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
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
}

fn scores_json(s: &Scores) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}
