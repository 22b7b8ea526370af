//! `eval`: runs an editing policy over a benchmark and scores every output ([`crate::eval`]).
//!
//! Inputs: `model` (a base model directory), `data` (a benchmark dataset in the manifest
//! format, e.g. `synth-data`'s `bench`), and optionally `adapter` (a LoRA adapter in the PEFT
//! layout, or an RL state directory whose `theta/` holds one: the policy θ is then evaluated),
//! `prompts` (cached prompt encodings from `encode-prompts`: the text encoders are not loaded).
//! Output `report`: the [`crate::artifacts::eval_report`] (`records.jsonl`, `table.json`,
//! `table.md`, `images/<key>.png`).
//!
//! Scores: the judge's editing effect, visual quality and overall (their mean, in [0, 1]) for
//! every sample; masked PSNR (dB), SSIM and r_sim on the keep mask (1 − edit mask) for local
//! edit types except additions (paper §3.3, method-spec §8: [`crate::eval::has_consistency_metrics`])
//! and only for records with a mask (never the whole image), on the edited image as saved
//! (8-bit). In means, PSNR is capped at `psnr_cap_db` (default [`crate::eval::PSNR_CAP_DB`]
//! ≈ 58.92 dB, 8-bit rounding noise; identical keep regions have PSNR = ∞). Per type
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
//!
//! `prompts` (benchmark protocols): `builtin` (default) asks our own wording of the rubrics
//! (above), and the report labels its numbers "builtin prompts: not comparable with published
//! numbers" (`table.json` `prompts`, a line in `table.md`); a PATH reads the benchmark's own
//! prompt file (GEdit-Bench's `vie_prompts.py`; ImgEdit's prompts JSON, one rubric per edit
//! type — a record whose type has none fails the task before any editing) and reads the
//! judge's text answers the way the benchmark's scripts do ([`crate::judge::published`]).

pub use crate::eval::EvalImages;
use crate::eval::Protocol;
use crate::judge::published::PromptSource;
use crate::judge::spec::JudgeParams;
use crate::metrics::MetricsConfig;
use crate::sampling::SamplerConfig;
use cocoflow_engine::kind::{Input, Kind, ParamError};
use serde::{Deserialize, Serialize};

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
    /// Data-parallel replicas when the task runs on the CPU (a GPU task has one per granted
    /// GPU): whole batches are edited side by side, each exactly as one replica edits it, so
    /// the report is the same bytes. Left out of the cache key while 1.
    #[serde(skip_serializing_if = "super::is_one")]
    pub cpu_replicas: usize,
    /// What is scored: the policy's edits (default), or, as reference rows, the benchmark's
    /// own `target` images (`target`: the judge's and metrics' ceiling) or the unedited
    /// sources (`source`: perfect consistency, no edit). The references need no `model`.
    pub images: EvalImages,
    /// How the judge is asked and scores aggregate: `synthetic` (default), `gedit`, `imgedit`
    /// (module docs). Left out of the canonical params when `synthetic`, so existing cache
    /// keys and reports stay as they were.
    #[serde(skip_serializing_if = "Protocol::is_synthetic")]
    pub protocol: Protocol,
    /// Where the benchmark protocols' prompts come from: `builtin` (default: ours; reports
    /// label the numbers "builtin prompts: not comparable with published numbers") or the
    /// path of the benchmark's own prompt file (GEdit-Bench's `vie_prompts.py`, ImgEdit's
    /// prompts JSON; [`crate::judge::published`]). Left out of the canonical params when
    /// `builtin`.
    #[serde(skip_serializing_if = "PromptSource::is_builtin")]
    #[schemars(with = "String")]
    pub prompts: PromptSource,
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
            psnr_cap_db: crate::eval::PSNR_CAP_DB,
            max_invalid_fraction: 0.1,
            label: None,
            arm: None,
            iteration: None,
            threads: 1,
            cpu_replicas: 1,
            images: EvalImages::default(),
            protocol: Protocol::default(),
            prompts: PromptSource::default(),
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
    super::check_cpu_replicas(p.cpu_replicas)?;
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
    if p.protocol.is_synthetic() && !p.prompts.is_builtin() {
        return Err(bad(
            "prompts",
            "only the benchmark protocols (`protocol: gedit` or `imgedit`) read a prompt file; \
             the synthetic protocol asks the judge's own prompt",
        ));
    }
    Ok(())
}

pub struct Eval;

impl Kind for Eval {
    type Params = EvalParams;
    const NAME: &'static str = "eval";
    const VERSION: u32 = 3;
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
        Input::optional(
            "prompts",
            "cached prompt encodings (`encode-prompts`): the text encoders are not loaded",
        ),
    ]);
    const OUTPUTS: &'static [&'static str] = &["report"];

    fn validate(&self, p: &EvalParams) -> Result<(), ParamError> {
        check(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::eval_report::EvalRecord;
    use crate::artifacts::eval_report::summarize;
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

    #[test]
    fn prompts_default_to_builtin_out_of_the_canonical_params_and_need_a_benchmark() {
        let (p, v) = typed_params::<EvalParams>(&json!({})).unwrap();
        assert!(p.prompts.is_builtin() && v.get("prompts").is_none(), "{v}");
        let (p, v) = typed_params::<EvalParams>(&json!({"prompts": "builtin"})).unwrap();
        assert!(p.prompts.is_builtin() && v.get("prompts").is_none(), "{v}");
        let judge = json!({"kind": "openai", "base_url": "http://x/v1", "model": "m"});
        let (p, v) = typed_params::<EvalParams>(
            &json!({"protocol": "imgedit", "prompts": "/b/prompts.json", "judge": judge}),
        )
        .unwrap();
        assert_eq!(v["prompts"], "/b/prompts.json");
        assert!(check(&p).is_ok());
        let (p, _) = typed_params::<EvalParams>(&json!({"prompts": "/b/vie_prompts.py"})).unwrap();
        assert_eq!(check(&p).unwrap_err().path, "prompts");
        assert!(typed_params::<EvalParams>(&json!({"prompts": ""})).is_err());
    }
}
