//! `correlate`: the correlation study of paper appendix C.4 — Pearson r between a judge score
//! and masked PSNR / masked SSIM over the samples of one or more `eval` reports, with
//! scatter plots.
//!
//! Input `evals`: one or more `eval` report directories (their `records.jsonl`). Param `x`:
//! the judge field of the records to correlate (default `judge_quality`). The paper's
//! consistency score comes from a dedicated prompt ([`crate::judge::prompts::CONSISTENCY`]),
//! which no judge backend scores yet, and `eval` records hold `judge_effect`,
//! `judge_quality` and `judge_overall`; of these, visual quality is the closest to
//! consistency. Any numeric record field can be named (e.g. a future `judge_consistency`).
//!
//! Samples: every record of a local edit type ([`crate::eval::is_local_type`]) with both
//! values; PSNR is capped at `psnr_cap_db`, as in `eval`'s means (an identical keep region
//! has PSNR = ∞, which `records.jsonl` stores as `null` beside a number SSIM: it counts as
//! the cap). r is undefined (`null`, with the reason) when there are fewer than 2 samples or
//! either variable is constant — never NaN.
//!
//! Output `correlation`: `correlation.json` (pooled and per edit type: n, r, means),
//! `judge_vs_psnr.{png,svg}`, `judge_vs_ssim.{png,svg}` (points coloured by edit type).

use crate::report::correlation::{Correlation, Sample, num, psnr, write};
use crate::report::{parse_label, read_records};
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelateParams {
    /// The judge score (a numeric field of the eval records).
    pub x: String,
    /// PSNR cap in dB (as in `eval`'s means).
    pub psnr_cap_db: f64,
}

impl Default for CorrelateParams {
    fn default() -> Self {
        CorrelateParams {
            x: "judge_quality".into(),
            psnr_cap_db: crate::eval::PSNR_CAP_DB,
        }
    }
}

pub struct Correlate;

impl Kind for Correlate {
    type Params = CorrelateParams;
    const NAME: &'static str = "correlate";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str = "Pearson r between a judge score and masked PSNR/SSIM over eval reports, with scatter plots (paper C.4)";
    const INPUTS: Option<&'static [Input]> =
        Some(&[Input::required("evals", "one or more `eval` reports")]);
    const OUTPUTS: &'static [&'static str] = &["correlation"];

    fn validate(&self, p: &CorrelateParams) -> Result<(), ParamError> {
        if p.x.trim().is_empty() || p.x == "psnr_db" || p.x == "ssim" {
            return Err(ParamError {
                path: "x".into(),
                message: format!(
                    "must name a judge score field of the eval records (e.g. `judge_quality`), got `{}`",
                    p.x
                ),
            });
        }
        if p.psnr_cap_db.is_nan() || p.psnr_cap_db <= 0.0 {
            return Err(ParamError {
                path: "psnr_cap_db".into(),
                message: format!("must be > 0, got {}", p.psnr_cap_db),
            });
        }
        Ok(())
    }
}

impl Correlate {
    /// Does the work (the kind's run function).
    pub fn run(&self, p: CorrelateParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let fail = |e: String| TaskError::Failed(e);
        let mut samples = Vec::new();
        let mut reports = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut x_seen = false;
        for item in ctx.input_items("evals")?.to_vec() {
            if !seen.insert(item.producer.clone()) {
                continue;
            }
            let dir = ctx.item_path("evals", &item)?;
            let recs = read_records(&dir).map_err(fail)?;
            let table: Value = std::fs::read_to_string(dir.join("table.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let (l_arm, l_iter) = parse_label(&item.label);
            let mut used = 0usize;
            for r in &recs {
                let t = r
                    .get("edit_type")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                if !crate::eval::is_local_type(t) {
                    continue;
                }
                let x = num(r, &p.x);
                x_seen |= x.is_some();
                used += 1;
                samples.push(Sample {
                    edit_type: t.to_string(),
                    x,
                    psnr: psnr(r, p.psnr_cap_db),
                    ssim: num(r, "ssim"),
                });
            }
            reports.push(json!({
                "label": table.get("label").cloned().unwrap_or(Value::Null),
                "arm": table.get("arm").cloned().filter(|v| !v.is_null()).or(l_arm.map(Value::from)).unwrap_or(Value::Null),
                "iteration": table.get("iteration").cloned().filter(|v| !v.is_null()).or(l_iter.map(Value::from)).unwrap_or(Value::Null),
                "records": recs.len(),
                "local_records": used,
            }));
        }
        if !samples.is_empty() && !x_seen {
            return Err(fail(format!(
                "no local-type record of the `evals` input has a numeric `{}` (eval records have `judge_effect`, `judge_quality`, `judge_overall`)",
                p.x
            )));
        }
        let out = ctx.workdir()?.join("correlation");
        let (c_psnr, c_ssim) = write(&out, &p.x, p.psnr_cap_db, reports, &samples).map_err(fail)?;
        let show = |c: &Correlation| {
            c.r.map(|r| format!("{r:.4}")).unwrap_or_else(|| {
                format!("undefined ({})", c.undefined.clone().unwrap_or_default())
            })
        };
        ctx.log(format!(
            "Pearson r of `{}` with masked PSNR: {} (n = {}); with masked SSIM: {} (n = {})",
            p.x,
            show(&c_psnr),
            c_psnr.n,
            show(&c_ssim),
            c_ssim.n
        ));
        ctx.metric("r_psnr", c_psnr.r);
        ctx.metric("r_ssim", c_ssim.r);
        ctx.metric("n_psnr", c_psnr.n as u64);
        ctx.metric("n_ssim", c_ssim.n as u64);
        ctx.output_dir("correlation", &out)
    }
}
