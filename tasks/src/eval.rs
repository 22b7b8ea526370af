//! Evaluation (method-spec §8), the torch-free part: the judging protocols (`synthetic`: the
//! judge's reward prompt; `gedit`: GEdit-Bench-EN's VIEScore SC/PQ; `imgedit`: ImgEdit-Bench's
//! rubric), each benchmark sample's seed, which edit types have a keep region to score, and
//! judging a chunk of edits. Loading the policy and editing are `cocoflow_torch::eval`; the
//! report format is [`crate::artifacts::eval_report`].

use crate::artifacts::eval_report::BenchScores;
use crate::judge::published::{self, BenchPrompts};
use crate::judge::spec::JudgeParams;
use crate::judge::{Invalid, Judge, JudgeError, JudgeRequest, OpenAiJudge, Scores, prompts};
use crate::net::StoreCache;
use cocoflow_engine::kind::{TaskCtx, TaskError};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A benchmark's judging protocol (method-spec §8).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The judge's reward prompt: effect, quality, overall in [0, 1].
    #[default]
    Synthetic,
    /// GEdit-Bench-EN (VIEScore): SC, PQ, O = sqrt(SC·PQ), 0–10.
    Gedit,
    /// ImgEdit-Bench: the mean of three 1–5 rubric scores.
    Imgedit,
}

impl Protocol {
    pub fn is_synthetic(&self) -> bool {
        *self == Protocol::Synthetic
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Synthetic => "synthetic",
            Protocol::Gedit => "gedit",
            Protocol::Imgedit => "imgedit",
        }
    }
}

/// Edit types with a located edit region (the synthetic world's global types and the
/// benchmarks' style/tone/extract types change the whole image).
pub fn is_local_type(t: &str) -> bool {
    !matches!(
        t,
        "tone" | "style" | "style_change" | "tone_transfer" | "extract" | "global"
    )
}

/// The default cap on per-sample PSNR inside means, in dB: `20·log10(255·√12)` ≈ 58.92, the
/// PSNR of 8-bit rounding noise (MSE = (1/255)²/12). An identical keep region (PSNR = ∞,
/// `null` in records) counts as "identical up to 8-bit quantisation", not as a number that
/// outweighs every real sample (a 100 dB cap made a few unchanged images dominate a mean).
pub const PSNR_CAP_DB: f64 = 58.92;

/// Additions: the new object has no fixed location, so an annotated mask does not bound what
/// may change (paper §3.3 excludes "addition" from the consistency metrics).
pub fn is_addition_type(t: &str) -> bool {
    matches!(
        t,
        "add" | "addition" | "subject-add" | "subject_add" | "object_addition"
    )
}

/// Edit types whose keep region gets masked PSNR/SSIM in evaluation (paper §3.3,
/// method-spec §8): local types except additions.
pub fn has_consistency_metrics(t: &str) -> bool {
    is_local_type(t) && !is_addition_type(t)
}

/// The OpenAI-compatible judge a benchmark protocol asks.
pub fn bench_judge(
    params: &JudgeParams,
    store: &cocoflow_engine::store::Store,
) -> Result<OpenAiJudge, TaskError> {
    match params {
        JudgeParams::Openai(cfg) => Ok(OpenAiJudge::new(cfg.clone())
            .map_err(|e| TaskError::Failed(format!("`judge`: {e}")))?
            .with_cache(Arc::new(StoreCache::new(store.clone())))),
        JudgeParams::Rule { .. } => Err(TaskError::Failed(
            "`judge`: the benchmark protocols need `kind: openai`".into(),
        )),
    }
}

/// Asks the protocol's prompts about one sample: the builtin ones
/// ([`prompts::GEDIT_SC`], [`prompts::GEDIT_PQ`], [`prompts::IMGEDIT`]) or the benchmark's own
/// ([`crate::judge::published`]; ImgEdit's rubric by the request's `edit_type` var).
pub async fn ask_bench(
    judge: &OpenAiJudge,
    protocol: Protocol,
    bench_prompts: &BenchPrompts,
    req: &JudgeRequest,
) -> Result<BenchScores, Invalid> {
    match (protocol, bench_prompts) {
        (Protocol::Gedit, BenchPrompts::Builtin) => {
            let sc = judge.ask(&prompts::GEDIT_SC, req).await?;
            let pq = judge.ask(&prompts::GEDIT_PQ, req).await?;
            Ok(BenchScores::gedit(&sc.answer, &pq.answer))
        }
        (Protocol::Imgedit, BenchPrompts::Builtin) => {
            let a = judge.ask(&prompts::IMGEDIT, req).await?;
            Ok(BenchScores::imgedit(&a.answer))
        }
        (Protocol::Gedit, BenchPrompts::Gedit { sc, pq, .. }) => {
            // VIEScore takes min(score) and sqrt(SC·PQ): a negative score has no meaning
            let read = |t: &str| {
                let v = published::read_viescore(t)?;
                match v.iter().find(|&&x| x < 0.0) {
                    Some(x) => Err(format!("`score` holds {x}, below 0")),
                    None => Ok(v),
                }
            };
            let s = judge.ask_published(sc, req, read).await?;
            let q = judge.ask_published(pq, req, read).await?;
            Ok(BenchScores::gedit_published(&s.value, &q.value))
        }
        (Protocol::Imgedit, BenchPrompts::Imgedit { .. }) => {
            let t = req.var("edit_type").unwrap_or_default();
            let rubric = bench_prompts.rubric(&t).ok_or_else(|| Invalid {
                error: JudgeError::Unsupported {
                    judge: judge.describe(),
                    prompt: format!("imgedit/{t} (the prompts file has no rubric for it)"),
                },
                attempts: 0,
                raw: None,
            })?;
            let a = judge
                .ask_published(rubric, req, published::read_imgedit)
                .await?;
            Ok(BenchScores::imgedit_published(&a.value))
        }
        (Protocol::Synthetic, _) => {
            unreachable!("the synthetic protocol asks the judge's own prompt")
        }
        _ => unreachable!("BenchPrompts::load gives the protocol's own prompts"),
    }
}

/// The PEFT directory inside an adapter input: itself, or `theta/` of an RL state.
pub fn adapter_dir(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("theta")]
        .into_iter()
        .find(|d| d.join("adapter_config.json").is_file())
}

/// The seed of a benchmark sample's noise.
pub fn sample_seed(seed: u64, key: &str) -> u64 {
    let h = blake3::hash(format!("eval/{seed}/{key}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

pub fn safe_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
/// What `eval` scores: the policy's edits, or as reference rows the benchmark's targets or
/// the unedited sources.
pub enum EvalImages {
    #[default]
    Policy,
    Target,
    Source,
}

/// (effect, quality, overall, error, bench scores) of each sample.
pub type Judged = (
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<String>,
    Option<BenchScores>,
);

/// The judge's verdicts on one chunk (the synthetic protocol's judge, or a benchmark's with
/// its prompts). Benchmark requests carry the record's `edit_type` var (ImgEdit's rubrics).
pub fn judge_chunk(
    ctx: &TaskCtx,
    protocol: Protocol,
    judge: Option<&dyn Judge>,
    bench: Option<(&OpenAiJudge, &BenchPrompts)>,
    reqs: &[JudgeRequest],
    concurrency: usize,
) -> Vec<Judged> {
    match (judge, bench) {
        (Some(judge), _) => {
            let batch = ctx.runtime().block_on(judge.judge_batch(reqs, concurrency));
            batch
                .verdicts
                .iter()
                .map(|v| match v {
                    Ok(j) => {
                        let (e, q) = match j.scores {
                            Scores::Mean { effect, quality } => (Some(effect), Some(quality)),
                            Scores::Single { .. } => (None, None),
                        };
                        (e, q, Some(j.r_mllm()), None, None)
                    }
                    Err(inv) => (None, None, None, Some(inv.to_string()), None),
                })
                .collect()
        }
        (None, Some((bj, bp))) => {
            let verdicts: Vec<Result<BenchScores, Invalid>> = ctx.runtime().block_on(
                futures::stream::iter(reqs.iter().map(|r| ask_bench(bj, protocol, bp, r)))
                    .buffered(concurrency.max(1))
                    .collect(),
            );
            verdicts
                .into_iter()
                .map(|v| match v {
                    Ok(b) => {
                        let (e, q, o) = b.normalized(protocol);
                        (Some(e), Some(q), Some(o), None, Some(b))
                    }
                    Err(inv) => (None, None, None, Some(inv.to_string()), None),
                })
                .collect()
        }
        (None, None) => unreachable!("one judge is built"),
    }
}

#[cfg(test)]
mod consistency_tests {
    use super::*;

    #[test]
    fn additions_and_global_types_get_no_consistency_metrics() {
        for t in [
            "add",
            "subject-add",
            "addition",
            "tone",
            "style_change",
            "extract",
        ] {
            assert!(!has_consistency_metrics(t), "{t}");
        }
        for t in [
            "remove",
            "replace",
            "subject-remove",
            "attribute",
            "background",
            "motion",
        ] {
            assert!(has_consistency_metrics(t), "{t}");
        }
    }

    #[test]
    fn the_psnr_cap_is_the_psnr_of_8_bit_rounding_noise() {
        let mse = (1.0f64 / 255.0).powi(2) / 12.0;
        let want = 10.0 * (1.0 / mse).log10();
        assert!((PSNR_CAP_DB - want).abs() < 0.005, "{want}");
    }
}
