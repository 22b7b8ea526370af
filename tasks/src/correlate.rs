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

use crate::report::plots::{self, Panel, PanelKind, Series};
use crate::report::{parse_label, read_records};
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelateParams {
    /// The judge score (a numeric field of the eval records).
    #[serde(default = "d_x")]
    pub x: String,
    /// PSNR cap in dB (as in `eval`'s means).
    #[serde(default = "d_cap")]
    pub psnr_cap_db: f64,
}

fn d_x() -> String {
    "judge_quality".into()
}
fn d_cap() -> f64 {
    100.0
}

/// Pearson's r with its sample count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Correlation {
    pub n: usize,
    /// `None` when undefined (n < 2 or a constant variable).
    pub r: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undefined: Option<String>,
    pub mean_x: Option<f64>,
    pub mean_y: Option<f64>,
}

/// Pearson's correlation coefficient of paired samples (two-pass, in f64, clamped to
/// [−1, 1]); undefined for fewer than 2 pairs, different lengths, non-finite values or a
/// variable without variance.
pub fn pearson(xs: &[f64], ys: &[f64]) -> Correlation {
    let n = xs.len();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let undefined = |why: &str| Correlation {
        n,
        r: None,
        undefined: Some(why.into()),
        mean_x: mean(xs),
        mean_y: mean(ys),
    };
    if ys.len() != n {
        return undefined("x and y have different lengths");
    }
    if n < 2 {
        return undefined("fewer than 2 samples");
    }
    if xs.iter().chain(ys).any(|v| !v.is_finite()) {
        return undefined("a value is not finite");
    }
    let constant = |v: &[f64]| v.iter().all(|&a| a == v[0]);
    if constant(xs) {
        return undefined("x is constant (variance 0)");
    }
    if constant(ys) {
        return undefined("y is constant (variance 0)");
    }
    let (mx, my) = (mean(xs).unwrap(), mean(ys).unwrap());
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&x, &y) in xs.iter().zip(ys) {
        let (dx, dy) = (x - mx, y - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if !(sxx > 0.0 && syy > 0.0) {
        return undefined("a variable has no variance");
    }
    Correlation {
        n,
        r: Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)),
        undefined: None,
        mean_x: Some(mx),
        mean_y: Some(my),
    }
}

/// One sample: edit type, x, PSNR (capped), SSIM.
#[derive(Debug, Clone)]
struct Sample {
    edit_type: String,
    x: Option<f64>,
    psnr: Option<f64>,
    ssim: Option<f64>,
}

fn num(r: &Map<String, Value>, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64).filter(|v| v.is_finite())
}

/// A record's masked PSNR, capped. `eval` scores PSNR and SSIM together, and JSON has no ∞:
/// a `null` PSNR next to a number SSIM is an identical keep region (PSNR = ∞ → the cap).
fn psnr(r: &Map<String, Value>, cap: f64) -> Option<f64> {
    match (r.get("psnr_db"), num(r, "ssim")) {
        (Some(Value::Number(n)), _) => n.as_f64().map(|v| v.min(cap)),
        (None | Some(Value::Null), Some(_)) => Some(cap),
        _ => None,
    }
}

fn pairs(samples: &[Sample], y: impl Fn(&Sample) -> Option<f64>) -> (Vec<f64>, Vec<f64>) {
    samples.iter().filter_map(|s| Some((s.x?, y(s)?))).unzip()
}

pub struct Correlate;

impl TaskKind for Correlate {
    fn name(&self) -> &'static str {
        "correlate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "Pearson r between a judge score and masked PSNR/SSIM over eval reports, with scatter plots (paper C.4)"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<CorrelateParams>(params)?;
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
        Ok(v)
    }
    fn check_inputs(&self, _params: &Value, inputs: &[&str]) -> Result<(), String> {
        if inputs != ["evals"] {
            return Err(format!(
                "`correlate` takes exactly the input `evals` (eval reports), got {inputs:?}"
            ));
        }
        Ok(())
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["correlation".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: CorrelateParams = ctx.params()?;
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
        let (xp, yp) = pairs(&samples, |s| s.psnr);
        let (xs, ys) = pairs(&samples, |s| s.ssim);
        let c_psnr = pearson(&xp, &yp);
        let c_ssim = pearson(&xs, &ys);
        let mut by_type: BTreeMap<String, Value> = BTreeMap::new();
        let mut types: Vec<&str> = samples.iter().map(|s| s.edit_type.as_str()).collect();
        types.sort();
        types.dedup();
        for t in &types {
            let sub: Vec<Sample> = samples
                .iter()
                .filter(|s| s.edit_type == *t)
                .cloned()
                .collect();
            let (a, b) = pairs(&sub, |s| s.psnr);
            let (c, d) = pairs(&sub, |s| s.ssim);
            by_type.insert(
                t.to_string(),
                json!({"psnr_db": pearson(&a, &b), "ssim": pearson(&c, &d)}),
            );
        }
        let result = json!({
            "x": p.x,
            "psnr_cap_db": p.psnr_cap_db,
            "reports": reports,
            "pairs": {"psnr_db": c_psnr, "ssim": c_ssim},
            "by_type": by_type,
            "notes": "Pearson r over local-type samples with both values; PSNR capped at psnr_cap_db (a null PSNR beside a number SSIM is an identical keep region, PSNR = inf, counted as the cap); r is null when undefined (n < 2 or a constant variable)",
        });
        let out = ctx.workdir()?.join("correlation");
        std::fs::create_dir_all(&out).map_err(|e| fail(e.to_string()))?;
        std::fs::write(
            out.join("correlation.json"),
            serde_json::to_string_pretty(&result).expect("json") + "\n",
        )
        .map_err(|e| fail(format!("writing `correlation.json`: {e}")))?;

        let scatter =
            |y: &str, ylabel: &str, c: &Correlation, f: &dyn Fn(&Sample) -> Option<f64>| {
                let series = types
                    .iter()
                    .map(|t| Series {
                        name: t.to_string(),
                        points: samples
                            .iter()
                            .filter(|s| s.edit_type == *t)
                            .filter_map(|s| Some((s.x?, f(s)?)))
                            .collect(),
                        color: None,
                    })
                    .collect();
                let r = match c.r {
                    Some(r) => format!("r = {r:.3}"),
                    None => "r undefined".into(),
                };
                Panel {
                    title: format!("{} vs {y}: {r} (n = {})", p.x, c.n),
                    x_label: p.x.clone(),
                    y_label: ylabel.into(),
                    series,
                    kind: PanelKind::Points,
                    integer_x: false,
                }
            };
        plots::write_chart(
            &out,
            "judge_vs_psnr",
            &[scatter("masked PSNR", "masked PSNR (dB)", &c_psnr, &|s| {
                s.psnr
            })],
        )
        .map_err(fail)?;
        plots::write_chart(
            &out,
            "judge_vs_ssim",
            &[scatter("masked SSIM", "masked SSIM", &c_ssim, &|s| s.ssim)],
        )
        .map_err(fail)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_matches_hand_computed_values() {
        // x = 1..5, y = 2, 4, 5, 4, 5: Sxy = 6, Sxx = 10, Syy = 6 → r = 6/√60.
        let c = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 5.0, 4.0, 5.0]);
        assert_eq!(c.n, 5);
        assert!((c.r.unwrap() - 6.0 / 60f64.sqrt()).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 2.0], &[3.0, 1.0]).r, Some(-1.0));
        assert_eq!(pearson(&[1.0], &[1.0]).r, None);
        assert_eq!(pearson(&[], &[]).r, None);
        let c = pearson(&[0.1, 0.1, 0.1], &[1.0, 2.0, 3.0]);
        assert_eq!(c.r, None);
        assert!(c.undefined.unwrap().contains("constant"));
    }
}
