//! The correlation study of paper appendix C.4 (what the `correlate` kind writes,
//! [`crate::kinds::correlate`]): over the pairs of an editing dataset (original, edited image,
//! edit mask), the judge's mask-aware consistency score ([`crate::judge::prompts::CONSISTENCY`],
//! 1–10) against masked PSNR and masked SSIM over the non-edit region, and PSNR against SSIM:
//! Pearson r pooled and per edit type, with scatter plots.
//!
//! Samples: the pairs of local edit types ([`crate::eval::is_local_type`]); a correlation
//! uses the pairs that have both of its values. PSNR is capped at `psnr_cap_db` (an identical
//! keep region has PSNR = ∞). r is undefined (`null`, with the reason) when there are fewer
//! than 2 pairs or either variable is constant — never NaN.
//!
//! Output: `correlation.json` (pooled and per type: n, r, means), `records.jsonl` (one line
//! per pair), `consistency_vs_psnr`, `consistency_vs_ssim`, `psnr_vs_ssim` (`.png` and
//! `.svg`, points coloured by edit type).

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

/// One pair: edit type, the judge's consistency score (1–10), masked PSNR (capped) and SSIM.
#[derive(Debug, Clone)]
pub struct Sample {
    pub edit_type: String,
    pub consistency: Option<f64>,
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
}

/// The three correlations of the study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Study {
    pub consistency_psnr: Correlation,
    pub consistency_ssim: Correlation,
    pub psnr_ssim: Correlation,
}

type Var = fn(&Sample) -> Option<f64>;

const CONSISTENCY: Var = |s| s.consistency;
const PSNR: Var = |s| s.psnr;
const SSIM: Var = |s| s.ssim;

fn pairs<'a>(samples: impl Iterator<Item = &'a Sample>, x: Var, y: Var) -> (Vec<f64>, Vec<f64>) {
    samples.filter_map(|s| Some((x(s)?, y(s)?))).unzip()
}

fn study<'a>(samples: impl Iterator<Item = &'a Sample> + Clone) -> Study {
    let r = |x, y| {
        let (a, b) = pairs(samples.clone(), x, y);
        pearson(&a, &b)
    };
    Study {
        consistency_psnr: r(CONSISTENCY, PSNR),
        consistency_ssim: r(CONSISTENCY, SSIM),
        psnr_ssim: r(PSNR, SSIM),
    }
}

/// Pooled and per-type correlations of `samples`, written to `out` (`correlation.json`,
/// `records.jsonl` from `records`, the three scatter plots); `header` goes into
/// `correlation.json` as it is. Returns the pooled study.
pub fn write(
    out: &Path,
    mut header: Map<String, Value>,
    samples: &[Sample],
    records: &[Value],
) -> Result<Study, String> {
    let pooled = study(samples.iter());
    let mut types: Vec<&str> = samples.iter().map(|s| s.edit_type.as_str()).collect();
    types.sort();
    types.dedup();
    let by_type: BTreeMap<&str, Study> = types
        .iter()
        .map(|t| (*t, study(samples.iter().filter(|s| s.edit_type == *t))))
        .collect();
    header.insert("pooled".into(), json!(pooled));
    header.insert("by_type".into(), json!(by_type));
    std::fs::create_dir_all(out).map_err(|e| format!("creating `{}`: {e}", out.display()))?;
    std::fs::write(
        out.join("correlation.json"),
        serde_json::to_string_pretty(&Value::Object(header)).expect("json") + "\n",
    )
    .map_err(|e| format!("writing `correlation.json`: {e}"))?;
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r).expect("json"));
        lines.push('\n');
    }
    std::fs::write(out.join("records.jsonl"), lines)
        .map_err(|e| format!("writing `records.jsonl`: {e}"))?;

    let scatter = |x: Var, xl: &str, y: Var, yl: &str, c: &Correlation| {
        let series = types
            .iter()
            .map(|t| Series {
                name: t.to_string(),
                points: samples
                    .iter()
                    .filter(|s| s.edit_type == *t)
                    .filter_map(|s| Some((x(s)?, y(s)?)))
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
            title: format!("{yl} vs {xl}: {r} (n = {})", c.n),
            x_label: xl.to_string(),
            y_label: yl.to_string(),
            series,
            kind: PanelKind::Points,
            integer_x: false,
        }
    };
    let judge = "judge consistency (1-10)";
    let (p, s) = ("masked PSNR (dB)", "masked SSIM");
    plots::write_chart(
        out,
        "consistency_vs_psnr",
        &[scatter(
            CONSISTENCY,
            judge,
            PSNR,
            p,
            &pooled.consistency_psnr,
        )],
    )?;
    plots::write_chart(
        out,
        "consistency_vs_ssim",
        &[scatter(
            CONSISTENCY,
            judge,
            SSIM,
            s,
            &pooled.consistency_ssim,
        )],
    )?;
    plots::write_chart(
        out,
        "psnr_vs_ssim",
        &[scatter(PSNR, p, SSIM, s, &pooled.psnr_ssim)],
    )?;
    Ok(pooled)
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
