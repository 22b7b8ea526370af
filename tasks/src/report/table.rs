//! The ablation table (paper Tables 1/2/6 in miniature): one row per arm at its last evaluated
//! iteration plus the base row; columns: the judge's overall score per edit type, the overall
//! judge score, masked PSNR and masked SSIM. Every column is "higher is better"; the best
//! value of each column is marked (bold in Markdown, `best` lists in JSON and CSV), ties all
//! marked, missing values never.

use crate::artifacts::eval_report::TypeRow;
use crate::curate::outcome::LOCAL_TYPES;
use serde::Serialize;
use std::collections::BTreeMap;

/// One column of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// Stable key (CSV header, JSON): `judge_<type>`, `judge_overall`, `psnr_db`, `ssim`.
    pub key: String,
    /// Markdown header.
    pub header: String,
    /// Decimals in Markdown.
    pub digits: usize,
}

/// One row: a method (the base, or an arm at an iteration), over one or more seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableRow {
    /// `base` or the arm's name (without its seed suffix).
    pub name: String,
    pub arm: Option<String>,
    pub iteration: u64,
    /// The evaluation's own label (free text; the first seed's).
    pub label: String,
    /// Samples in one evaluation.
    pub n: usize,
    /// The seeds of the evaluations the row averages (empty: unknown, one evaluation).
    pub seeds: Vec<u64>,
    /// Column key → mean over the row's evaluations.
    pub values: BTreeMap<String, Option<f64>>,
    /// Column key → sample standard deviation over the evaluations (n − 1; `None` with one).
    pub std: BTreeMap<String, Option<f64>>,
    /// Keys of the columns where this row has the best mean.
    pub best: Vec<String>,
    /// Keys of the columns where this row is not the best but within the seed spread of the
    /// best: `|mean − best| ≤ √(s² + s_best²)` (not distinguishable with these seeds).
    pub tied: Vec<String>,
}

/// An arm's difference from the base in one column, paired by seed: the mean and standard
/// deviation over seeds of `arm(seed) − base(seed)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub name: String,
    pub column: String,
    pub mean: f64,
    pub std: Option<f64>,
    /// Seeds with both values.
    pub n: usize,
    /// `|mean| ≤ std`: smaller than the seed spread (always false with one seed, where the
    /// spread is unknown).
    pub within_spread: bool,
}

/// The table, as written to `table.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<TableRow>,
    /// Column key → names of the rows holding its best mean.
    pub best: BTreeMap<String, Vec<String>>,
    /// Every arm's difference from the base (row `base`) in the summary columns.
    pub deltas: Vec<Delta>,
    pub notes: String,
}

/// One evaluation of a row: its per-type rows, its overall row and its seed.
pub struct Part<'a> {
    pub seed: Option<u64>,
    pub rows: &'a [TypeRow],
    pub overall: &'a TypeRow,
}

/// What a row is built from: one evaluation per seed.
pub struct RowInput<'a> {
    pub name: String,
    pub arm: Option<String>,
    pub iteration: u64,
    pub label: String,
    pub parts: Vec<Part<'a>>,
}

/// Columns whose differences from the base are listed.
pub const DELTA_COLUMNS: [&str; 5] = [
    "judge_overall",
    "judge_effect",
    "judge_quality",
    "psnr_db",
    "ssim",
];

/// The column of the judge's editing effect over the six local edit types (paper §3.1), shown
/// when the evaluations have all six (the synthetic benchmark's): the issue-15 target for the
/// embedded base is stated on it.
pub const EFFECT_LOCAL: &str = "judge_effect_local";

/// Mean and sample standard deviation (n − 1) of the finite values; `None` when there are
/// none; the deviation is `None` for a single value.
pub fn mean_std(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, std))
}

fn part_value(p: &Part<'_>, key: &str) -> Option<f64> {
    let v = match key {
        "judge_overall" => p.overall.judge_overall,
        "judge_effect" => p.overall.judge_effect,
        "judge_quality" => p.overall.judge_quality,
        "psnr_db" => p.overall.psnr_db,
        "ssim" => p.overall.ssim,
        EFFECT_LOCAL => {
            // the unweighted mean over the six local types (all of them, or none)
            let e: Vec<f64> = LOCAL_TYPES
                .iter()
                .filter_map(|t| p.rows.iter().find(|x| x.edit_type == *t))
                .filter_map(|x| finite(x.judge_effect))
                .collect();
            (e.len() == LOCAL_TYPES.len()).then(|| e.iter().sum::<f64>() / e.len() as f64)
        }
        k => {
            let t = k.strip_prefix("judge_").unwrap_or(k);
            p.rows
                .iter()
                .find(|x| x.edit_type == t)
                .and_then(|x| x.judge_overall)
        }
    };
    finite(v)
}

/// Builds the table, marks the best mean per column and the rows within the seed spread of
/// it, and lists every arm's paired difference from the base.
pub fn build(title: &str, inputs: &[RowInput<'_>]) -> Table {
    let mut types: Vec<String> = inputs
        .iter()
        .flat_map(|r| r.parts.iter())
        .flat_map(|p| p.rows.iter().map(|t| t.edit_type.clone()))
        .collect();
    types.sort();
    types.dedup();
    let mut columns: Vec<Column> = types
        .iter()
        .map(|t| Column {
            key: format!("judge_{t}"),
            header: t.clone(),
            digits: 3,
        })
        .collect();
    for (key, header, digits) in [
        ("judge_overall", "judge overall", 3),
        ("judge_effect", "judge effect", 3),
        ("judge_quality", "judge quality", 3),
        ("psnr_db", "masked PSNR (dB)", 2),
        ("ssim", "masked SSIM", 4),
    ] {
        columns.push(Column {
            key: key.into(),
            header: header.into(),
            digits,
        });
        if key == "judge_effect" && LOCAL_TYPES.iter().all(|t| types.iter().any(|x| x == t)) {
            columns.push(Column {
                key: EFFECT_LOCAL.into(),
                header: "judge effect (6 local types)".into(),
                digits: 3,
            });
        }
    }
    let mut rows: Vec<TableRow> = inputs
        .iter()
        .map(|r| {
            let mut values = BTreeMap::new();
            let mut std = BTreeMap::new();
            for c in &columns {
                let vs: Vec<f64> = r
                    .parts
                    .iter()
                    .filter_map(|p| part_value(p, &c.key))
                    .collect();
                let ms = mean_std(&vs);
                values.insert(c.key.clone(), ms.map(|m| m.0));
                std.insert(c.key.clone(), ms.and_then(|m| m.1));
            }
            let mut seeds: Vec<u64> = r.parts.iter().filter_map(|p| p.seed).collect();
            seeds.sort();
            TableRow {
                name: r.name.clone(),
                arm: r.arm.clone(),
                iteration: r.iteration,
                label: r.label.clone(),
                n: r.parts.first().map(|p| p.overall.n).unwrap_or(0),
                seeds,
                values,
                std,
                best: Vec::new(),
                tied: Vec::new(),
            }
        })
        .collect();
    let mut best = BTreeMap::new();
    for c in &columns {
        let top = rows
            .iter()
            .filter_map(|r| r.values[&c.key].map(|v| (v, r.std[&c.key])))
            .fold(None::<(f64, Option<f64>)>, |acc, (v, s)| match acc {
                Some((m, _)) if m >= v => acc,
                _ => Some((v, s)),
            });
        let mut names = Vec::new();
        if let Some((max, s_best)) = top {
            for r in rows.iter_mut() {
                let Some(v) = r.values[&c.key] else { continue };
                if v == max {
                    r.best.push(c.key.clone());
                    names.push(r.name.clone());
                } else if let (Some(a), Some(b)) = (r.std[&c.key], s_best)
                    && max - v <= (a * a + b * b).sqrt()
                {
                    r.tied.push(c.key.clone());
                }
            }
        }
        best.insert(c.key.clone(), names);
    }
    // Paired differences from the base.
    let mut deltas = Vec::new();
    if let Some(base) = inputs.iter().find(|r| r.arm.is_none()) {
        for r in inputs.iter().filter(|r| r.arm.is_some()) {
            for key in DELTA_COLUMNS {
                let mut d = Vec::new();
                for p in &r.parts {
                    let b = base.parts.iter().find(|b| b.seed == p.seed);
                    if let (Some(x), Some(y)) =
                        (part_value(p, key), b.and_then(|b| part_value(b, key)))
                    {
                        d.push(x - y);
                    }
                }
                if let Some((mean, std)) = mean_std(&d) {
                    deltas.push(Delta {
                        name: r.name.clone(),
                        column: key.to_string(),
                        mean,
                        std,
                        n: d.len(),
                        within_spread: std.is_some_and(|s| mean.abs() <= s),
                    });
                }
            }
        }
    }
    Table {
        title: title.to_string(),
        columns,
        rows,
        best,
        deltas,
        notes: "judge columns: the judge's overall score (mean of editing effect and visual quality, in [0, 1]) per edit type and their unweighted mean over types, then effect and quality alone (effect also as the unweighted mean over the six local types when all six are evaluated); masked PSNR (dB, capped in means) and SSIM on the keep region over local edit types except additions; every column higher is better. With several seeds a cell is the mean over seeds ± the sample standard deviation; the best mean per column is marked (ties all marked), and rows within the seed spread of it (|difference| ≤ √(s² + s_best²)) are marked as not distinguishable. Differences from the base are paired by seed: mean ± std over seeds of arm − base; |mean| ≤ std is within the seed spread".into(),
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn cell(r: &TableRow, c: &Column) -> String {
    let mut v = fmt(r.values[&c.key], c.digits);
    if let (Some(_), Some(s)) = (r.values[&c.key], r.std[&c.key]) {
        v = format!("{v} ± {}", fmt(Some(s), c.digits));
    }
    if r.best.contains(&c.key) {
        format!("**{v}**")
    } else if r.tied.contains(&c.key) {
        format!("_{v}_")
    } else {
        v
    }
}

/// The table in Markdown: best means in bold, means within the seed spread of the best in
/// italics; then the differences from the base.
pub fn markdown(t: &Table) -> String {
    let mut s = format!(
        "### {}

| method | iteration | seeds |",
        t.title
    );
    for c in &t.columns {
        s.push_str(&format!(" {} |", c.header));
    }
    s.push_str("\n|---|---:|---:|");
    for _ in &t.columns {
        s.push_str("---:|");
    }
    s.push('\n');
    for r in &t.rows {
        s.push_str(&format!(
            "| {} | {} | {} |",
            r.name,
            r.iteration,
            r.seeds.len().max(1)
        ));
        for c in &t.columns {
            s.push_str(&format!(" {} |", cell(r, c)));
        }
        s.push('\n');
    }
    if !t.deltas.is_empty() {
        let digits = |key: &str| {
            t.columns
                .iter()
                .find(|c| c.key == key)
                .map(|c| c.digits)
                .unwrap_or(3)
        };
        s.push_str("\n#### Differences from the base (paired by seed: mean ± std of arm − base)\n\n| method |");
        for key in DELTA_COLUMNS {
            let h = t
                .columns
                .iter()
                .find(|c| c.key == key)
                .map(|c| c.header.as_str())
                .unwrap_or(key);
            s.push_str(&format!(" Δ {h} |"));
        }
        s.push_str("\n|---|");
        for _ in DELTA_COLUMNS {
            s.push_str("---:|");
        }
        s.push('\n');
        let mut names: Vec<&str> = Vec::new();
        for d in &t.deltas {
            if !names.contains(&d.name.as_str()) {
                names.push(&d.name);
            }
        }
        for name in names {
            s.push_str(&format!("| {name} |"));
            for key in DELTA_COLUMNS {
                let cellv = match t.deltas.iter().find(|d| d.name == name && d.column == key) {
                    None => "–".to_string(),
                    Some(d) => {
                        let k = digits(key);
                        let mut v = format!("{:+.k$}", d.mean);
                        if let Some(sd) = d.std {
                            v = format!("{v} ± {sd:.k$}");
                        }
                        if d.within_spread {
                            v.push_str(" (within spread)");
                        }
                        v
                    }
                };
                s.push_str(&format!(" {cellv} |"));
            }
            s.push('\n');
        }
    }
    s
}

/// A CSV field, quoted when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The table as CSV: `name,arm,iteration,label,n,seeds,<column keys>...,<column keys>_std...,best`
/// (values at full precision, empty when missing; `seeds` joined by `;`; `best`: the row's
/// best column keys joined by `;`).
pub fn csv(t: &Table) -> String {
    let mut s = String::from("name,arm,iteration,label,n,seeds");
    for c in &t.columns {
        s.push(',');
        s.push_str(&csv_field(&c.key));
    }
    for c in &t.columns {
        s.push(',');
        s.push_str(&csv_field(&format!("{}_std", c.key)));
    }
    s.push_str(",best\n");
    for r in &t.rows {
        s.push_str(&format!(
            "{},{},{},{},{},{}",
            csv_field(&r.name),
            csv_field(r.arm.as_deref().unwrap_or("")),
            r.iteration,
            csv_field(&r.label),
            r.n,
            r.seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(";")
        ));
        for map in [&r.values, &r.std] {
            for c in &t.columns {
                s.push(',');
                if let Some(v) = map[&c.key] {
                    s.push_str(&format!("{v}"));
                }
            }
        }
        s.push(',');
        s.push_str(&csv_field(&r.best.join(";")));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overall(j: f64, psnr: f64) -> TypeRow {
        TypeRow {
            edit_type: "overall".into(),
            n: 4,
            judge_effect: Some(j),
            judge_quality: Some(j),
            judge_overall: Some(j),
            judge_invalid: 0,
            psnr_db: Some(psnr),
            ssim: Some(0.5),
            r_sim: None,
            bench_sc: None,
            bench_pq: None,
            bench_score: None,
        }
    }

    /// The local-effect column: present when all six local types are evaluated, the mean of
    /// their effects (the global types left out); absent with fewer types.
    #[test]
    fn effect_over_the_six_local_types() {
        let row = |t: &str, e: f64| TypeRow {
            edit_type: t.into(),
            judge_effect: Some(e),
            ..overall(0.0, 0.0)
        };
        let all: Vec<TypeRow> = LOCAL_TYPES
            .iter()
            .enumerate()
            .map(|(i, t)| row(t, 0.1 * i as f64))
            .chain([row("style", 1.0), row("tone", 1.0)])
            .collect();
        let ov = overall(0.4, 20.0);
        let build_with = |rows: &[TypeRow]| {
            build(
                "t",
                &[RowInput {
                    name: "base".into(),
                    arm: None,
                    iteration: 0,
                    label: String::new(),
                    parts: vec![Part {
                        seed: None,
                        rows,
                        overall: &ov,
                    }],
                }],
            )
        };
        let t = build_with(&all);
        let keys: Vec<&str> = t.columns.iter().map(|c| c.key.as_str()).collect();
        let i = keys.iter().position(|k| *k == "judge_effect").unwrap();
        assert_eq!(keys[i + 1], EFFECT_LOCAL);
        let v = t.rows[0].values[EFFECT_LOCAL].unwrap();
        assert!((v - 0.25).abs() < 1e-12, "{v}"); // (0 + .1 + … + .5) / 6
        let t = build_with(&all[1..]);
        assert!(t.columns.iter().all(|c| c.key != EFFECT_LOCAL));
    }

    #[test]
    fn mean_std_is_the_sample_deviation() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(m, 2.0);
        assert_eq!(s, Some(1.0));
        assert_eq!(mean_std(&[4.0]), Some((4.0, None)));
        assert_eq!(mean_std(&[f64::NAN]), None);
    }

    /// Seeds: means ± std, the best mean bold, a mean within the spread italic, one outside
    /// plain; paired differences from the base with the spread flag.
    #[test]
    fn seeds_give_means_spreads_ties_and_paired_deltas() {
        // base: judge .50/.52/.54 (seeds 0, 1, 2); arm a: .60/.62/.64 (clearly better, paired
        // Δ = .10 ± 0); arm b: .51/.60/.51 (mean .54, std .052: within the spread of a? a's
        // mean .62, std .02 → √(.02²+.052²) = .0557 < .08: no); arm c: .55/.66/.59 (mean .60,
        // std .0557; |.62 − .60| ≤ √(.02² + .0557²): tied).
        let rows: Vec<(String, Vec<TypeRow>)> = vec![
            (
                "base".into(),
                vec![
                    overall(0.50, 20.0),
                    overall(0.52, 21.0),
                    overall(0.54, 22.0),
                ],
            ),
            (
                "a".into(),
                vec![
                    overall(0.60, 20.0),
                    overall(0.62, 21.0),
                    overall(0.64, 22.0),
                ],
            ),
            (
                "b".into(),
                vec![
                    overall(0.51, 20.0),
                    overall(0.60, 21.0),
                    overall(0.51, 22.0),
                ],
            ),
            (
                "c".into(),
                vec![
                    overall(0.55, 20.0),
                    overall(0.66, 21.0),
                    overall(0.59, 22.0),
                ],
            ),
        ];
        let inputs: Vec<RowInput> = rows
            .iter()
            .map(|(name, ov)| RowInput {
                name: name.clone(),
                arm: (name != "base").then(|| name.clone()),
                iteration: if name == "base" { 0 } else { 8 },
                label: String::new(),
                parts: ov
                    .iter()
                    .enumerate()
                    .map(|(i, o)| Part {
                        seed: Some(i as u64),
                        rows: &[],
                        overall: o,
                    })
                    .collect(),
            })
            .collect();
        let t = build("t", &inputs);
        let row = |n: &str| t.rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(row("a").seeds, vec![0, 1, 2]);
        assert!((row("a").values["judge_overall"].unwrap() - 0.62).abs() < 1e-12);
        assert!((row("a").std["judge_overall"].unwrap() - 0.02).abs() < 1e-12);
        assert!(row("a").best.contains(&"judge_overall".to_string()));
        assert!(row("c").tied.contains(&"judge_overall".to_string()));
        assert!(!row("b").tied.contains(&"judge_overall".to_string()));
        assert!(!row("base").tied.contains(&"judge_overall".to_string()));
        // PSNR is equal everywhere: every row is best (ties all marked).
        assert_eq!(t.best["psnr_db"].len(), 4);
        let md = markdown(&t);
        assert!(md.contains("| a | 8 | 3 | **0.620 ± 0.020** |"), "{md}");
        assert!(md.contains("| c | 8 | 3 | _0.600 ± 0.056_ |"), "{md}");
        assert!(md.contains("| b | 8 | 3 | 0.540 ± 0.052 |"), "{md}");
        let d = |n: &str| {
            t.deltas
                .iter()
                .find(|d| d.name == n && d.column == "judge_overall")
                .unwrap()
        };
        assert!((d("a").mean - 0.10).abs() < 1e-12 && d("a").std.unwrap() < 1e-12);
        assert!(!d("a").within_spread);
        // b − base: .01, .08, −.03 → mean .02, std .0557: within the spread.
        assert!(d("b").within_spread, "{:?}", d("b"));
        assert_eq!(d("b").n, 3);
        assert!(md.contains("| a | +0.100 ± 0.000 |"), "{md}");
        assert!(md.contains("(within spread)"), "{md}");
    }
}
