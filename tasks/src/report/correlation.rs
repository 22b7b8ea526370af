//! The correlation study of paper appendix C.4 (what the `correlate` kind writes,
//! [`crate::kinds::correlate`]): Pearson r between a judge score and masked PSNR / masked SSIM
//! over the samples of one or more `eval` reports, with scatter plots.
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

use super::plots::{self, Panel, PanelKind, Series};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

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
pub struct Sample {
    pub edit_type: String,
    pub x: Option<f64>,
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
}

pub fn num(r: &Map<String, Value>, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64).filter(|v| v.is_finite())
}

/// A record's masked PSNR, capped. `eval` scores PSNR and SSIM together, and JSON has no ∞:
/// a `null` PSNR next to a number SSIM is an identical keep region (PSNR = ∞ → the cap).
pub fn psnr(r: &Map<String, Value>, cap: f64) -> Option<f64> {
    match (r.get("psnr_db"), num(r, "ssim")) {
        (Some(Value::Number(n)), _) => n.as_f64().map(|v| v.min(cap)),
        (None | Some(Value::Null), Some(_)) => Some(cap),
        _ => None,
    }
}

fn pairs(samples: &[Sample], y: impl Fn(&Sample) -> Option<f64>) -> (Vec<f64>, Vec<f64>) {
    samples.iter().filter_map(|s| Some((s.x?, y(s)?))).unzip()
}

/// Pooled and per-type correlations of `samples`, written to `out` (`correlation.json` and
/// the two scatter plots); returns the pooled (PSNR, SSIM) correlations.
pub fn write(
    out: &Path,
    x: &str,
    psnr_cap_db: f64,
    reports: Vec<Value>,
    samples: &[Sample],
) -> Result<(Correlation, Correlation), String> {
    let (xp, yp) = pairs(samples, |s| s.psnr);
    let (xs, ys) = pairs(samples, |s| s.ssim);
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
        "x": x,
        "psnr_cap_db": psnr_cap_db,
        "reports": reports,
        "pairs": {"psnr_db": c_psnr, "ssim": c_ssim},
        "by_type": by_type,
        "notes": "Pearson r over local-type samples with both values; PSNR capped at psnr_cap_db (a null PSNR beside a number SSIM is an identical keep region, PSNR = inf, counted as the cap); r is null when undefined (n < 2 or a constant variable)",
    });
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("correlation.json"),
        serde_json::to_string_pretty(&result).expect("json") + "\n",
    )
    .map_err(|e| format!("writing `correlation.json`: {e}"))?;

    let scatter = |y: &str, ylabel: &str, c: &Correlation, f: &dyn Fn(&Sample) -> Option<f64>| {
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
                err: Vec::new(),
            })
            .collect();
        let r = match c.r {
            Some(r) => format!("r = {r:.3}"),
            None => "r undefined".into(),
        };
        Panel {
            title: format!("{} vs {y}: {r} (n = {})", x, c.n),
            x_label: x.to_string(),
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
    )?;
    plots::write_chart(
        &out,
        "judge_vs_ssim",
        &[scatter("masked SSIM", "masked SSIM", &c_ssim, &|s| s.ssim)],
    )?;
    Ok((c_psnr, c_ssim))
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
