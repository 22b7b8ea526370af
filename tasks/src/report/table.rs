//! The ablation table (paper Tables 1/2/6 in miniature): one row per arm at its last evaluated
//! iteration plus the base row; columns: the judge's overall score per edit type, the overall
//! judge score, masked PSNR and masked SSIM. Every column is "higher is better"; the best
//! value of each column is marked (bold in Markdown, `best` lists in JSON and CSV), ties all
//! marked, missing values never.

use crate::artifacts::eval_report::TypeRow;
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

/// One row: a method (the base, or an arm at an iteration).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableRow {
    /// `base` or the arm's name.
    pub name: String,
    pub arm: Option<String>,
    pub iteration: u64,
    /// The evaluation's own label (free text).
    pub label: String,
    /// Samples in the evaluation.
    pub n: usize,
    pub values: BTreeMap<String, Option<f64>>,
    /// Keys of the columns where this row is best.
    pub best: Vec<String>,
}

/// The table, as written to `table.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<Column>,
    pub rows: Vec<TableRow>,
    /// Column key → names of the rows holding its best value.
    pub best: BTreeMap<String, Vec<String>>,
    pub notes: String,
}

/// What a row is built from: an evaluation's per-type rows and its overall row.
pub struct RowInput<'a> {
    pub name: String,
    pub arm: Option<String>,
    pub iteration: u64,
    pub label: String,
    pub rows: &'a [TypeRow],
    pub overall: &'a TypeRow,
}

/// Builds the table and marks the best value per column.
pub fn build(title: &str, inputs: &[RowInput<'_>]) -> Table {
    let mut types: Vec<String> = inputs
        .iter()
        .flat_map(|r| r.rows.iter().map(|t| t.edit_type.clone()))
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
    columns.push(Column {
        key: "judge_overall".into(),
        header: "judge overall".into(),
        digits: 3,
    });
    columns.push(Column {
        key: "psnr_db".into(),
        header: "masked PSNR (dB)".into(),
        digits: 2,
    });
    columns.push(Column {
        key: "ssim".into(),
        header: "masked SSIM".into(),
        digits: 4,
    });
    let mut rows: Vec<TableRow> = inputs
        .iter()
        .map(|r| {
            let mut values = BTreeMap::new();
            for t in &types {
                let v = r
                    .rows
                    .iter()
                    .find(|x| &x.edit_type == t)
                    .and_then(|x| x.judge_overall);
                values.insert(format!("judge_{t}"), finite(v));
            }
            values.insert("judge_overall".into(), finite(r.overall.judge_overall));
            values.insert("psnr_db".into(), finite(r.overall.psnr_db));
            values.insert("ssim".into(), finite(r.overall.ssim));
            TableRow {
                name: r.name.clone(),
                arm: r.arm.clone(),
                iteration: r.iteration,
                label: r.label.clone(),
                n: r.overall.n,
                values,
                best: Vec::new(),
            }
        })
        .collect();
    let mut best = BTreeMap::new();
    for c in &columns {
        let max = rows
            .iter()
            .filter_map(|r| r.values[&c.key])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut names = Vec::new();
        if max.is_finite() {
            for r in rows.iter_mut() {
                if r.values[&c.key] == Some(max) {
                    r.best.push(c.key.clone());
                    names.push(r.name.clone());
                }
            }
        }
        best.insert(c.key.clone(), names);
    }
    Table {
        title: title.to_string(),
        columns,
        rows,
        best,
        notes: "judge columns: the judge's overall score (mean of editing effect and visual quality, in [0, 1]) per edit type and their unweighted mean over types; masked PSNR (dB, capped in means) and SSIM on the keep region over local edit types; every column higher is better, the best value per column marked (ties all marked)".into(),
    }
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The table in Markdown, best values in bold.
pub fn markdown(t: &Table) -> String {
    let mut s = format!("### {}\n\n| method | iteration |", t.title);
    for c in &t.columns {
        s.push_str(&format!(" {} |", c.header));
    }
    s.push_str("\n|---|---:|");
    for _ in &t.columns {
        s.push_str("---:|");
    }
    s.push('\n');
    for r in &t.rows {
        s.push_str(&format!("| {} | {} |", r.name, r.iteration));
        for c in &t.columns {
            let v = fmt(r.values[&c.key], c.digits);
            if r.best.contains(&c.key) {
                s.push_str(&format!(" **{v}** |"));
            } else {
                s.push_str(&format!(" {v} |"));
            }
        }
        s.push('\n');
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

/// The table as CSV: `name,arm,iteration,label,n,<column keys>...,best` (values at full
/// precision, empty when missing; `best`: the row's best column keys joined by `;`).
pub fn csv(t: &Table) -> String {
    let mut s = String::from("name,arm,iteration,label,n");
    for c in &t.columns {
        s.push(',');
        s.push_str(&csv_field(&c.key));
    }
    s.push_str(",best\n");
    for r in &t.rows {
        s.push_str(&format!(
            "{},{},{},{},{}",
            csv_field(&r.name),
            csv_field(r.arm.as_deref().unwrap_or("")),
            r.iteration,
            csv_field(&r.label),
            r.n
        ));
        for c in &t.columns {
            s.push(',');
            if let Some(v) = r.values[&c.key] {
                s.push_str(&format!("{v}"));
            }
        }
        s.push(',');
        s.push_str(&csv_field(&r.best.join(";")));
        s.push('\n');
    }
    s
}
