//! The evaluation report (written by `eval`, read by `report` and `correlate`), a directory:
//! `records.jsonl` ([`EvalRecord`] per sample), `table.json` (label, arm, iteration, per-type
//! [`TypeRow`]s and the overall row, the eval params, notes; `format` `cocoflow-eval-report`,
//! `version` 1), `table.md`, and `images/<key>.png` (the edited images).

use crate::eval::Protocol;
use crate::judge::extract::Answer;
use crate::judge::prompts;
use crate::judge::published::BenchPrompts;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

pub const FORMAT: &str = "cocoflow-eval-report";
pub const VERSION: u32 = 1;
pub const RECORDS_FILE: &str = "records.jsonl";
pub const TABLE_FILE: &str = "table.json";

/// One evaluated sample.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvalRecord {
    pub key: String,
    pub edit_type: String,
    pub instruction: String,
    pub seed: u64,
    pub image: String,
    pub judge_effect: Option<f64>,
    pub judge_quality: Option<f64>,
    pub judge_overall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_error: Option<String>,
    /// `None` for global edit types and empty keep masks.
    pub psnr_db: Option<f64>,
    pub ssim: Option<f64>,
    pub r_sim: Option<f64>,
    /// The benchmark protocol's scores (`gedit`, `imgedit`); absent under `synthetic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchScores>,
}

/// One sample's scores under a benchmark protocol, on the benchmark's own scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BenchScores {
    /// The judge's scores by answer field (GEdit 0–10, ImgEdit 1–5).
    pub scores: BTreeMap<String, f64>,
    /// GEdit: SC = min(editing_success, overediting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sc: Option<f64>,
    /// GEdit: PQ = min(naturalness, artifacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pq: Option<f64>,
    /// GEdit: O = sqrt(SC·PQ) (0–10); ImgEdit: the mean of the three scores (1–5).
    pub score: f64,
}

fn field(a: &Answer, name: &str) -> f64 {
    a.scores
        .get(name)
        .map(|s| s.value)
        .expect("a validated answer has every score field of its prompt")
}

impl BenchScores {
    /// From the answers to [`prompts::GEDIT_SC`] and [`prompts::GEDIT_PQ`].
    pub fn gedit(sc: &Answer, pq: &Answer) -> BenchScores {
        let (es, oe) = (field(sc, "editing_success"), field(sc, "overediting"));
        let (na, ar) = (field(pq, "naturalness"), field(pq, "artifacts"));
        BenchScores {
            scores: [
                ("editing_success", es),
                ("overediting", oe),
                ("naturalness", na),
                ("artifacts", ar),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            sc: Some(es.min(oe)),
            pq: Some(na.min(ar)),
            score: prompts::gedit_overall(es, oe, na, ar),
        }
    }

    /// From the answer to [`prompts::IMGEDIT`].
    pub fn imgedit(a: &Answer) -> BenchScores {
        let names = [
            "prompt_compliance",
            "visual_naturalness",
            "physical_integrity",
        ];
        let [c, n, i] = names.map(|k| field(a, k));
        BenchScores {
            scores: names
                .iter()
                .zip([c, n, i])
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            sc: None,
            pq: None,
            score: prompts::imgedit_score(c, n, i),
        }
    }

    /// From the `score` lists of a published VIEScore SC and PQ answer
    /// ([`crate::judge::published::read_viescore`]): SC = min, PQ = min, O = sqrt(SC·PQ), as
    /// VIEScore computes them. Two-score lists are named as the prompts define them
    /// (editing success, over-editing; naturalness, artifacts), others `sc_1`, `pq_1`, ….
    pub fn gedit_published(sc: &[f64], pq: &[f64]) -> BenchScores {
        let mut scores = BTreeMap::new();
        let mut name = |list: &[f64], two: [&str; 2], prefix: &str| {
            for (i, v) in list.iter().enumerate() {
                let k = if list.len() == 2 {
                    two[i].to_string()
                } else {
                    format!("{prefix}_{}", i + 1)
                };
                scores.insert(k, *v);
            }
        };
        name(sc, ["editing_success", "overediting"], "sc");
        name(pq, ["naturalness", "artifacts"], "pq");
        let min = |l: &[f64]| l.iter().copied().fold(f64::INFINITY, f64::min);
        let (s, q) = (min(sc), min(pq));
        BenchScores {
            scores,
            sc: Some(s),
            pq: Some(q),
            score: (s * q).sqrt(),
        }
    }

    /// From the `(name, value)` scores of a published ImgEdit answer
    /// ([`crate::judge::published::read_imgedit`]): their mean rounded to 2 decimals, as
    /// `step1_get_avgscore.py` computes it. A repeated name gets ` (2)`, ` (3)`, ….
    pub fn imgedit_published(found: &[(String, f64)]) -> BenchScores {
        let mut scores = BTreeMap::new();
        for (k, v) in found {
            let mut key = k.clone();
            let mut n = 1;
            while scores.contains_key(&key) {
                n += 1;
                key = format!("{k} ({n})");
            }
            scores.insert(key, *v);
        }
        let mean = found.iter().map(|(_, v)| v).sum::<f64>() / found.len().max(1) as f64;
        BenchScores {
            scores,
            sc: None,
            pq: None,
            score: crate::judge::published::round2(mean),
        }
    }

    /// (effect, quality, overall) in [0, 1] (module docs).
    pub fn normalized(&self, protocol: Protocol) -> (f64, f64, f64) {
        match protocol {
            Protocol::Gedit => (
                self.sc.unwrap_or(0.0) / 10.0,
                self.pq.unwrap_or(0.0) / 10.0,
                self.score / 10.0,
            ),
            _ => {
                let n = |v: f64| (v - 1.0) / 4.0;
                let get = |k: &str| self.scores.get(k).copied();
                match (
                    get("prompt_compliance"),
                    get("visual_naturalness"),
                    get("physical_integrity"),
                ) {
                    (Some(c), Some(v), Some(i)) => (n(c), 0.5 * (n(v) + n(i)), n(self.score)),
                    // a published rubric names its own criteria: the score stands for all three
                    _ => (n(self.score), n(self.score), n(self.score)),
                }
            }
        }
    }
}

/// Means of one edit type (or of everything).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TypeRow {
    pub edit_type: String,
    pub n: usize,
    pub judge_effect: Option<f64>,
    pub judge_quality: Option<f64>,
    pub judge_overall: Option<f64>,
    pub judge_invalid: usize,
    pub psnr_db: Option<f64>,
    pub ssim: Option<f64>,
    pub r_sim: Option<f64>,
    /// Benchmark protocols: mean SC (GEdit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench_sc: Option<f64>,
    /// Benchmark protocols: mean PQ (GEdit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench_pq: Option<f64>,
    /// Benchmark protocols: mean O (GEdit, 0–10) or mean score (ImgEdit, 1–5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench_score: Option<f64>,
}

fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

/// The per-type rows (sorted by type) and the overall row.
pub fn summarize(records: &[EvalRecord], psnr_cap_db: f64) -> (Vec<TypeRow>, TypeRow) {
    let mut by: BTreeMap<&str, Vec<&EvalRecord>> = BTreeMap::new();
    for r in records {
        by.entry(r.edit_type.as_str()).or_default().push(r);
    }
    let row = |name: &str, rs: &[&EvalRecord]| TypeRow {
        edit_type: name.to_string(),
        n: rs.len(),
        judge_effect: mean(rs.iter().filter_map(|r| r.judge_effect)),
        judge_quality: mean(rs.iter().filter_map(|r| r.judge_quality)),
        judge_overall: mean(rs.iter().filter_map(|r| r.judge_overall)),
        judge_invalid: rs.iter().filter(|r| r.judge_overall.is_none()).count(),
        psnr_db: mean(
            rs.iter()
                .filter_map(|r| r.psnr_db)
                .map(|p| p.min(psnr_cap_db)),
        ),
        ssim: mean(rs.iter().filter_map(|r| r.ssim)),
        r_sim: mean(rs.iter().filter_map(|r| r.r_sim)),
        bench_sc: mean(rs.iter().filter_map(|r| r.bench.as_ref()?.sc)),
        bench_pq: mean(rs.iter().filter_map(|r| r.bench.as_ref()?.pq)),
        bench_score: mean(rs.iter().filter_map(|r| Some(r.bench.as_ref()?.score))),
    };
    let rows: Vec<TypeRow> = by.iter().map(|(k, rs)| row(k, rs)).collect();
    let all: Vec<&EvalRecord> = records.iter().collect();
    let mut overall = row("overall", &all);
    // Judge scores: unweighted mean over types (the benchmarks' protocol).
    overall.judge_effect = mean(rows.iter().filter_map(|r| r.judge_effect));
    overall.judge_quality = mean(rows.iter().filter_map(|r| r.judge_quality));
    overall.judge_overall = mean(rows.iter().filter_map(|r| r.judge_overall));
    overall.bench_sc = mean(rows.iter().filter_map(|r| r.bench_sc));
    overall.bench_pq = mean(rows.iter().filter_map(|r| r.bench_pq));
    overall.bench_score = mean(rows.iter().filter_map(|r| r.bench_score));
    (rows, overall)
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The table as Markdown.
pub fn table_markdown(title: &str, rows: &[TypeRow], overall: &TypeRow) -> String {
    let mut s = format!(
        "### {title}\n\n| edit type | n | judge effect | judge quality | judge overall | masked PSNR (dB) | masked SSIM |\n|---|---|---|---|---|---|---|\n"
    );
    for r in rows.iter().chain(std::iter::once(overall)) {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.edit_type,
            r.n,
            fmt(r.judge_effect, 3),
            fmt(r.judge_quality, 3),
            fmt(r.judge_overall, 3),
            fmt(r.psnr_db, 2),
            fmt(r.ssim, 4)
        ));
    }
    s
}

/// The table of a benchmark protocol as Markdown (the benchmark's own scale).
pub fn table_markdown_bench(
    title: &str,
    protocol: Protocol,
    rows: &[TypeRow],
    overall: &TypeRow,
) -> String {
    let all = rows.iter().chain(std::iter::once(overall));
    let mut s = String::new();
    match protocol {
        Protocol::Gedit => {
            s.push_str(&format!(
                "### {title} — GEdit-Bench (VIEScore)\n\n| edit type | n | SC | PQ | O | judge invalid | masked PSNR (dB) | masked SSIM |\n|---|---|---|---|---|---|---|---|\n"
            ));
            for r in all {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    r.edit_type,
                    r.n,
                    fmt(r.bench_sc, 3),
                    fmt(r.bench_pq, 3),
                    fmt(r.bench_score, 3),
                    r.judge_invalid,
                    fmt(r.psnr_db, 2),
                    fmt(r.ssim, 4)
                ));
            }
        }
        _ => {
            s.push_str(&format!(
                "### {title} — ImgEdit-Bench\n\n| edit type | n | score (1–5) | judge invalid | masked PSNR (dB) | masked SSIM |\n|---|---|---|---|---|---|\n"
            ));
            for r in all {
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.edit_type,
                    r.n,
                    fmt(r.bench_score, 3),
                    r.judge_invalid,
                    fmt(r.psnr_db, 2),
                    fmt(r.ssim, 4)
                ));
            }
        }
    }
    s
}

/// A benchmark protocol's report says where its prompts came from: `table["prompts"]` (with
/// the label [`crate::judge::published::BUILTIN_LABEL`] for the builtin ones) and a line
/// under the Markdown title. Returns the Markdown with that line.
pub fn label_prompts(table: &mut Value, md: &str, prompts: &BenchPrompts) -> String {
    table["prompts"] = prompts.describe();
    let line = prompts.markdown_line();
    match md.find("\n\n") {
        Some(i) => format!("{}\n\n{line}\n{}", &md[..i], &md[i + 2..]),
        None => format!("{md}\n{line}"),
    }
}

/// Writes `records.jsonl`, `table.json` (`table` with `format` and `version` added) and
/// `table.md` into `out`.
pub fn write(out: &Path, records: &[EvalRecord], mut table: Value, md: &str) -> Result<(), String> {
    let e = |what: &str, err: std::io::Error| format!("writing `{what}`: {err}");
    let mut f = std::fs::File::create(out.join(RECORDS_FILE)).map_err(|x| e(RECORDS_FILE, x))?;
    for r in records {
        writeln!(f, "{}", serde_json::to_string(r).expect("serialisable"))
            .map_err(|x| e(RECORDS_FILE, x))?;
    }
    table["format"] = FORMAT.into();
    table["version"] = VERSION.into();
    std::fs::write(
        out.join(TABLE_FILE),
        serde_json::to_vec_pretty(&table).expect("json"),
    )
    .map_err(|x| e(TABLE_FILE, x))?;
    std::fs::write(out.join("table.md"), md).map_err(|x| e("table.md", x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::prompts;

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
    fn overall_judge_is_the_unweighted_mean_over_types_and_psnr_is_capped() {
        let rs = vec![
            rec("add", Some(1.0), Some(f64::INFINITY)),
            rec("add", Some(1.0), Some(20.0)),
            rec("add", None, Some(30.0)),
            rec("tone", Some(0.0), None),
        ];
        let (rows, all) = summarize(&rs, 100.0);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].judge_overall, Some(1.0));
        assert_eq!(rows[0].judge_invalid, 1);
        assert_eq!(rows[0].psnr_db, Some(50.0));
        // Types weigh equally: (1 + 0) / 2, not 2/3.
        assert_eq!(all.judge_overall, Some(0.5));
        assert_eq!(all.psnr_db, Some(50.0));
        assert_eq!(all.n, 4);
    }

    fn answer(prompt: &prompts::Prompt, text: &str) -> Answer {
        crate::judge::extract::extract(prompt, text, None, crate::judge::Extraction::Generate)
            .unwrap()
    }

    #[test]
    fn benchmark_scores_per_sample_type_and_overall() {
        let g = BenchScores::gedit(
            &answer(
                &prompts::GEDIT_SC,
                r#"{"editing_success": 8, "overediting": 6}"#,
            ),
            &answer(&prompts::GEDIT_PQ, r#"{"naturalness": 9, "artifacts": 4}"#),
        );
        assert_eq!((g.sc, g.pq), (Some(6.0), Some(4.0)));
        assert_eq!(g.score, 24f64.sqrt());
        assert_eq!(
            g.normalized(Protocol::Gedit),
            (0.6, 0.4, 24f64.sqrt() / 10.0)
        );
        let i = BenchScores::imgedit(&answer(
            &prompts::IMGEDIT,
            r#"{"prompt_compliance": 5, "visual_naturalness": 4, "physical_integrity": 3}"#,
        ));
        assert_eq!(i.score, 4.0);
        assert_eq!(i.normalized(Protocol::Imgedit), (1.0, 0.625, 0.75));
        let with = |t: &str, score: f64| {
            let mut r = rec(t, Some(0.0), None);
            r.bench = Some(BenchScores {
                scores: BTreeMap::new(),
                sc: Some(score),
                pq: None,
                score,
            });
            r
        };
        let (rows, all) = summarize(&[with("a", 1.0), with("a", 2.0), with("b", 6.0)], 100.0);
        assert_eq!(rows[0].bench_score, Some(1.5));
        assert_eq!(rows[0].bench_pq, None);
        // Types weigh equally: (1.5 + 6) / 2.
        assert_eq!(all.bench_score, Some(3.75));
        assert_eq!(all.bench_sc, Some(3.75));
    }
}
