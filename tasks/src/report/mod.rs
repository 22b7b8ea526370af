//! Reports of a sweep (what the `report` kind writes, [`crate::kinds::report`]): its
//! evaluations and training rewards as tables, curves and sample grids (paper Tables 1/2/6,
//! Figs. 6/7/14). The kind is meant as a `scope: global` task:
//!
//! ```yaml
//! report:
//!   kind: report
//!   scope: global
//!   inputs: {evals: "rl[*].eval.report", base: eval_base.report, rewards: "rl[*].reward.rewards", data: data.bench}
//!   params: {grid_items: 6}
//! ```
//!
//! Inputs: `evals` (required: `eval` reports, every arm's every evaluated iteration), `base`
//! (optional: the base model's `eval` report, shown as the row `base` and as iteration 0 of
//! every curve), `rewards` (optional: `reward` outputs), `data` (optional: the benchmark, for
//! the sample grid). A global task gets one item per arm for a plain reference such as
//! `eval_base.report`; equal producers are one input, and the first is used.
//!
//! Attribution. An evaluation's arm and iteration come from its `table.json` (`arm`,
//! `iteration`: the `eval` params `${arm}` / `${iter}`), else from the engine's item label
//! (`<arm>/iter=<i>` for `loop[*]` references of a global task). A rewards file's arm comes
//! from the item label, its iteration from the label, else from the file's `iteration`.
//!
//! Output `report` (a directory; no timestamps, so equal inputs give equal bytes):
//! `table.md`, `table.csv`, `table.json` (see [`table`]), `judge_vs_iteration`,
//! `psnr_vs_iteration`, `ssim_vs_iteration`, `reward_curves` (each `.png` and `.svg`; see
//! [`plots`]), `samples.png` (see [`grid`]; only with `data`), `browser/` (the image browser
//! for the dashboard: `browser/index.json` and the images it names, per benchmark item
//! source | edit-mask overlay | target | base | every arm at every evaluated iteration with
//! the per-image scores; see [`browser`]; not with `browser_items: 0`) and `index.md` linking
//! them.

pub mod browser;
pub mod correlation;
pub mod grid;
pub mod plots;
pub mod table;

use crate::artifacts::eval_report::TypeRow;
use plots::{Panel, PanelKind, Series};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `eval` report as the report sees it.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// The arm's full name (`<group>,seed=<v>` under `sweep.seeds`).
    pub arm: String,
    /// The arm without its seed suffix ([`split_seed`]): what the table's row is.
    pub group: String,
    /// The evaluation's `seed` param (its sampling noise; the RL seed under `sweep.seeds`).
    pub seed: Option<u64>,
    pub iteration: u64,
    pub label: String,
    pub rows: Vec<TypeRow>,
    pub overall: TypeRow,
    pub dir: PathBuf,
    /// The benchmark-prompt label of a `gedit`/`imgedit` evaluation (table.json `prompts.label`,
    /// e.g. "builtin prompts: not comparable with published numbers"); `None` otherwise.
    pub prompts_label: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct TableJson {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    arm: Option<String>,
    #[serde(default)]
    iteration: Option<u64>,
    rows: Vec<TypeRow>,
    overall: TypeRow,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    prompts: Option<Value>,
}

/// An arm name without the seed suffix the engine's `sweep.seeds` appends
/// (`<group>,<param>=<value>` where the param is `seed` or ends in `_seed`), and that
/// suffix's value; a name of the suffix alone (a sweep of seeds only) has the group
/// `default`.
pub fn split_seed(arm: &str) -> (String, Option<String>) {
    let (head, last) = match arm.rsplit_once(',') {
        Some((h, l)) => (h, l),
        None => ("", arm),
    };
    if let Some((k, v)) = last.split_once('=')
        && (k == "seed" || k.ends_with("_seed"))
    {
        let group = if head.is_empty() { "default" } else { head };
        return (group.to_string(), Some(v.to_string()));
    }
    (arm.to_string(), None)
}

/// (arm, iteration) from an engine item label: `<arm>/iter=<i>`, `<arm>` or empty.
pub fn parse_label(label: &str) -> (Option<String>, Option<u64>) {
    match label.rsplit_once("iter=") {
        Some((head, i)) => {
            let arm = head.strip_suffix('/').unwrap_or(head);
            ((!arm.is_empty()).then(|| arm.to_string()), i.parse().ok())
        }
        None => ((!label.is_empty()).then(|| label.to_string()), None),
    }
}

/// Reads an `eval` report directory (its `table.json`).
pub fn read_eval(dir: &Path, item_label: &str) -> Result<EvalReport, String> {
    let path = dir.join("table.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let t: TableJson = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is not an eval table: {e}", path.display()))?;
    let (l_arm, l_iter) = parse_label(item_label);
    let arm = t.arm.or(l_arm).unwrap_or_else(|| "default".into());
    let seed = t
        .params
        .as_ref()
        .and_then(|p| p.get("seed"))
        .and_then(Value::as_u64);
    Ok(EvalReport {
        group: split_seed(&arm).0,
        arm,
        seed,
        iteration: t.iteration.or(l_iter).unwrap_or(0),
        label: t.label.unwrap_or_default(),
        rows: t.rows,
        overall: t.overall,
        dir: dir.to_path_buf(),
        prompts_label: t
            .prompts
            .as_ref()
            .and_then(|p| p.get("label"))
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The lines of an `eval` report's `records.jsonl` as JSON objects.
pub fn read_records(dir: &Path) -> Result<Vec<Map<String, Value>>, String> {
    let path = dir.join("records.jsonl");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Map<String, Value>>(l)
                .map_err(|e| format!("`{}` line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Record key → edited image path of an `eval` report.
fn report_images(dir: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    for r in read_records(dir)? {
        if let (Some(Value::String(k)), Some(Value::String(img))) = (r.get("key"), r.get("image")) {
            let p = crate::data::manifest::confined(dir, img)?;
            out.insert(k.clone(), p);
        }
    }
    Ok(out)
}

/// Mean rewards of one RL iteration of one arm.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardPoint {
    /// The arm without its seed suffix ([`split_seed`]).
    pub arm: String,
    /// The seed suffix's value, under `sweep.seeds`.
    pub seed: Option<String>,
    pub iteration: u64,
    /// (name, mean) of r_mllm, r_sim, r_raw where defined for some sample.
    pub means: BTreeMap<String, f64>,
}

/// Reads a `reward` output (`rewards.json`).
pub fn read_rewards(path: &Path, item_label: &str) -> Result<RewardPoint, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is not JSON: {e}", path.display()))?;
    if v.get("format").and_then(Value::as_str) != Some(crate::artifacts::rewards::FORMAT) {
        return Err(format!("`{}` is not a rewards file", path.display()));
    }
    let (l_arm, l_iter) = parse_label(item_label);
    let mut means = BTreeMap::new();
    for name in ["r_mllm", "r_sim", "r_raw"] {
        let m = &v["stats"][name];
        if m["n"].as_u64().unwrap_or(0) > 0
            && let Some(x) = m["mean"].as_f64()
        {
            means.insert(name.to_string(), x);
        }
    }
    let (arm, seed) = split_seed(&l_arm.unwrap_or_else(|| "default".into()));
    Ok(RewardPoint {
        arm,
        seed,
        iteration: l_iter.or_else(|| v["iteration"].as_u64()).unwrap_or(0),
        means,
    })
}

/// Picks a value out of an evaluation's overall row.
type Metric = dyn Fn(&TypeRow) -> Option<f64>;

/// A sweep's evaluations (by arm group index in order of first appearance, and iteration;
/// one per seed, in seed order), the base's evaluations (one per seed) and the training
/// rewards.
pub struct Sweep {
    /// Arm groups: arm names without their seed suffix.
    pub arms: Vec<String>,
    pub evals: BTreeMap<(usize, u64), Vec<EvalReport>>,
    pub base: Vec<EvalReport>,
    pub rewards: Vec<RewardPoint>,
}

/// Mean and sample standard deviation over seeds of `f` on the reports' overall rows.
fn over_seeds(reports: &[EvalReport], f: &Metric) -> Option<(f64, Option<f64>)> {
    let v: Vec<f64> = reports.iter().filter_map(|e| f(&e.overall)).collect();
    table::mean_std(&v)
}

fn parts(reports: &[EvalReport]) -> Vec<table::Part<'_>> {
    reports
        .iter()
        .map(|e| table::Part {
            seed: e.seed,
            rows: &e.rows,
            overall: &e.overall,
        })
        .collect()
}

/// What [`write`] wrote that the kind reports.
pub struct Written {
    pub markdown: String,
    /// The best value of each column.
    pub best: Value,
    /// The image browser, when one was written.
    pub browser: Option<browser::Summary>,
}

/// How a report looks.
pub struct Layout<'a> {
    pub title: &'a str,
    pub grid_items: usize,
    pub grid_scale: u32,
    /// Benchmark items in the image browser ([`browser`]); 0: no browser.
    pub browser_items: usize,
}

/// Writes the report's files into `out` (module docs); `data` is the benchmark dataset for
/// the sample grid and the browser's source, target and overlay images.
pub fn write(
    out: &Path,
    p: &Layout,
    sweep: &Sweep,
    data: Option<&Path>,
) -> Result<Written, String> {
    let Sweep {
        arms,
        evals,
        base,
        rewards,
    } = sweep;
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text).map_err(|e| format!("writing `{name}`: {e}"))
    };

    // The table: base + each arm's last evaluation (means over seeds).
    let last: Vec<&Vec<EvalReport>> = (0..arms.len())
        .filter_map(|ai| evals.range((ai, 0)..=(ai, u64::MAX)).last().map(|(_, e)| e))
        .collect();
    let mut inputs = Vec::new();
    if let Some(b) = base.first() {
        inputs.push(table::RowInput {
            name: "base".into(),
            arm: None,
            iteration: 0,
            label: b.label.clone(),
            parts: parts(base),
        });
    }
    for es in &last {
        let e = &es[0];
        inputs.push(table::RowInput {
            name: e.group.clone(),
            arm: Some(e.group.clone()),
            iteration: e.iteration,
            label: e.label.clone(),
            parts: parts(es),
        });
    }
    let t = table::build(p.title, &inputs);
    let mut md = table::markdown(&t);
    // The benchmark-prompt labels of the evaluations (builtin rubrics are not comparable with
    // published numbers): one line each under the table.
    let mut labels: Vec<&str> = base
        .iter()
        .chain(evals.values().flatten())
        .filter_map(|e| e.prompts_label.as_deref())
        .collect();
    labels.sort();
    labels.dedup();
    for l in labels {
        md.push_str(&format!("\n**{l}.**\n"));
    }
    write("table.md", &md)?;
    write("table.csv", &table::csv(&t))?;
    write(
        "table.json",
        &(serde_json::to_string_pretty(&t).map_err(|e| e.to_string())? + "\n"),
    )?;

    // Curves over iterations: one line per arm, starting at the base (iteration 0); with
    // several seeds the mean and ± one standard deviation as error bars.
    let curve = |f: &Metric| -> Vec<Series> {
        arms.iter()
            .enumerate()
            .map(|(ai, arm)| {
                let mut pts = Vec::new();
                let mut err = Vec::new();
                if let Some((y, sd)) = over_seeds(base, f) {
                    pts.push((0.0, y));
                    err.push(sd.unwrap_or(0.0));
                }
                for ((_, it), es) in evals.range((ai, 0)..=(ai, u64::MAX)) {
                    if let Some((y, sd)) = over_seeds(es, f) {
                        pts.push((*it as f64, y));
                        err.push(sd.unwrap_or(0.0));
                    }
                }
                let any = err.iter().any(|e| *e > 0.0);
                Series {
                    name: arm.clone(),
                    points: pts,
                    color: None,
                    err: if any { err } else { Vec::new() },
                }
            })
            .collect()
    };
    let charts: [(&str, &str, &str, &Metric); 3] = [
        (
            "judge_vs_iteration",
            "judge overall score vs RL iteration",
            "judge overall (0–1)",
            &|r| r.judge_overall,
        ),
        (
            "psnr_vs_iteration",
            "masked PSNR vs RL iteration",
            "masked PSNR (dB)",
            &|r| r.psnr_db,
        ),
        (
            "ssim_vs_iteration",
            "masked SSIM vs RL iteration",
            "masked SSIM",
            &|r| r.ssim,
        ),
    ];
    for (stem, title, y, f) in charts {
        let panel = Panel {
            title: title.into(),
            x_label: "iteration (0 = base)".into(),
            y_label: y.into(),
            series: curve(f),
            kind: PanelKind::Lines,
            integer_x: true,
        };
        plots::write_chart(&out, stem, &[panel])?;
    }
    let reward_panels: Vec<Panel> = [
        ("r_mllm", "mean r_mllm (judge) per iteration"),
        ("r_sim", "mean r_sim (masked PSNR/SSIM) per iteration"),
        ("r_raw", "mean r_raw (mixed reward) per iteration"),
    ]
    .into_iter()
    .map(|(key, title)| {
        let series = arms
            .iter()
            .map(|arm| {
                // Mean over seeds per iteration.
                let mut by: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
                for r in rewards.iter().filter(|r| &r.arm == arm) {
                    if let Some(m) = r.means.get(key) {
                        by.entry(r.iteration).or_default().push(*m);
                    }
                }
                let mut pts = Vec::new();
                let mut err = Vec::new();
                for (it, vs) in &by {
                    if let Some((m, sd)) = table::mean_std(vs) {
                        pts.push((*it as f64, m));
                        err.push(sd.unwrap_or(0.0));
                    }
                }
                let any = err.iter().any(|e| *e > 0.0);
                Series {
                    name: arm.clone(),
                    points: pts,
                    color: None,
                    err: if any { err } else { Vec::new() },
                }
            })
            .collect();
        Panel {
            title: title.into(),
            x_label: "iteration".into(),
            y_label: key.into(),
            series,
            kind: PanelKind::Lines,
            integer_x: true,
        }
    })
    .collect();
    plots::write_chart(&out, "reward_curves", &reward_panels)?;

    // The benchmark, when something shows its images.
    let ds = match data {
        Some(root) if p.grid_items > 0 || p.browser_items > 0 => {
            Some(crate::data::Dataset::open(root).map_err(|e| format!("input `data`: {e}"))?)
        }
        _ => None,
    };

    // The sample grid.
    let mut grid_note = String::new();
    if let Some(ds) = &ds
        && p.grid_items > 0
    {
        let items = grid::choose_items(ds, p.grid_items);
        if items.is_empty() {
            grid_note = "No sample grid: the benchmark has no local-type items.\n".into();
        } else {
            // Each column: the first seed's evaluation.
            let mut cols = Vec::new();
            if let Some(b) = base.first() {
                cols.push(grid::OutputColumn {
                    name: "base".into(),
                    images: report_images(&b.dir)?,
                });
            }
            for es in &last {
                let e = &es[0];
                cols.push(grid::OutputColumn {
                    name: format!("{} (it {})", e.group, e.iteration),
                    images: report_images(&e.dir)?,
                });
            }
            let layout =
                grid::write_grid(&out.join("samples.png"), ds, &items, &cols, p.grid_scale)?;
            grid_note = format!(
                "![sample grid](samples.png)\n\nColumns: instruction | source | target | edit mask (white = edited region) | {}; images ×{} (nearest), {}×{} px{}.\n\nRows:\n\n",
                cols.iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(" | "),
                p.grid_scale,
                layout.width,
                layout.height,
                if es_seeds(&last) > 1 {
                    "; arm columns show the first seed"
                } else {
                    ""
                }
            );
            for (i, r) in items.iter().enumerate() {
                grid_note.push_str(&format!(
                    "{}. `{}` ({}): {}\n",
                    i + 1,
                    r.key,
                    r.edit_type.as_deref().unwrap_or("unknown"),
                    r.instruction
                ));
            }
        }
    }

    // The index.
    let mut idx = format!("# {}\n\n{md}\n", p.title);
    idx.push_str("Rows: the base model (iteration 0) and every arm at its last evaluated iteration; with several seeds, mean ± sample standard deviation over seeds. Bold: the best mean of the column (all higher-is-better); italics: within the seed spread of the best (|difference| ≤ √(s² + s_best²)), not distinguishable with these seeds. Differences from the base are paired by seed. Also as [CSV](table.csv) and [JSON](table.json).\n\n");
    idx.push_str("## Curves\n\n");
    for (stem, what) in [
        ("judge_vs_iteration", "judge overall vs iteration"),
        ("psnr_vs_iteration", "masked PSNR vs iteration"),
        ("ssim_vs_iteration", "masked SSIM vs iteration"),
        ("reward_curves", "training rewards per iteration"),
    ] {
        idx.push_str(&format!(
            "![{what}]({stem}.png)\n\n[{stem}.svg]({stem}.svg)\n\n"
        ));
    }
    if !grid_note.is_empty() {
        idx.push_str("## Samples\n\n");
        idx.push_str(&grid_note);
        idx.push('\n');
    }

    // The image browser.
    let browser = if p.browser_items > 0 {
        let s = browser::write_browser(out, p.title, sweep, ds.as_ref(), p.browser_items)?;
        idx.push_str(&format!(
            "Image browser (for the dashboard): [browser/index.json](browser/index.json), {} benchmark items × {} evaluations.\n\n",
            s.items, s.columns
        ));
        Some(s)
    } else {
        let dir = out.join(browser::DIR);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("removing `{}`: {e}", dir.display()))?;
        }
        None
    };
    idx.push_str(
        "## Inputs\n\n| arm | evaluated iterations | reward iterations |\n|---|---|---|\n",
    );
    for (ai, arm) in arms.iter().enumerate() {
        let ev: Vec<String> = evals
            .range((ai, 0)..=(ai, u64::MAX))
            .map(|((_, it), es)| {
                if es.len() > 1 {
                    format!("{it} (×{})", es.len())
                } else {
                    it.to_string()
                }
            })
            .collect();
        let mut rw: Vec<u64> = rewards
            .iter()
            .filter(|r| &r.arm == arm)
            .map(|r| r.iteration)
            .collect();
        rw.sort();
        rw.dedup();
        idx.push_str(&format!(
            "| {arm} | {} | {} |\n",
            ev.join(", "),
            rw.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    write("index.md", &idx)?;

    Ok(Written {
        markdown: md,
        best: json!(t.best),
        browser,
    })
}

/// The most seeds behind one arm's last evaluation.
fn es_seeds(last: &[&Vec<EvalReport>]) -> usize {
    last.iter().map(|es| es.len()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_suffixes_split_off() {
        assert_eq!(
            split_seed("ratio-0.8-0.2,seed=2"),
            ("ratio-0.8-0.2".into(), Some("2".into()))
        );
        assert_eq!(
            split_seed("lr=0.1,ratio=0.5,rl_seed=0"),
            ("lr=0.1,ratio=0.5".into(), Some("0".into()))
        );
        assert_eq!(split_seed("seed=4"), ("default".into(), Some("4".into())));
        assert_eq!(
            split_seed("lr=0.1,ratio=0.5"),
            ("lr=0.1,ratio=0.5".into(), None)
        );
        assert_eq!(split_seed("none"), ("none".into(), None));
    }

    #[test]
    fn labels_give_arm_and_iteration() {
        assert_eq!(parse_label("a/iter=3"), (Some("a".into()), Some(3)));
        assert_eq!(parse_label("iter=2"), (None, Some(2)));
        assert_eq!(parse_label("default"), (Some("default".into()), None));
        assert_eq!(parse_label(""), (None, None));
        assert_eq!(
            parse_label("ratio/0.8/iter=12"),
            (Some("ratio/0.8".into()), Some(12))
        );
    }
}
