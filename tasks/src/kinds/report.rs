//! `report`: gathers a sweep's evaluations and training rewards into tables, curves and sample
//! grids (paper Tables 1/2/6, Figs. 6/7/14). Meant as a `scope: global` task:
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
//! `eval_base.report`; equal producers are one input. Under `sweep.seeds` (arm names
//! `<arm>,seed=<v>`) the rows are the arms without the suffix, each value the mean ± sample
//! standard deviation over seeds, the base one evaluation per seed (its `seed` param), and
//! differences from the base are paired by seed ([`crate::report::table`]).
//!
//! Attribution. An evaluation's arm and iteration come from its `table.json` (`arm`,
//! `iteration`: the `eval` params `${arm}` / `${iter}`), else from the engine's item label
//! (`<arm>/iter=<i>` for `loop[*]` references of a global task). A rewards file's arm comes
//! from the item label, its iteration from the label, else from the file's `iteration`.
//!
//! Output `report` (a directory; no timestamps, so equal inputs give equal bytes):
//! `table.md`, `table.csv`, `table.json` (see [`crate::report::table`]), `judge_vs_iteration`,
//! `psnr_vs_iteration`, `ssim_vs_iteration`, `reward_curves` (each `.png` and `.svg`; see
//! [`crate::report::plots`]), `samples.png` (see [`crate::report::grid`]; only with `data`),
//! `browser/` (the dashboard's image browser: `browser/index.json` and the images it names —
//! per benchmark item, the first `browser_items` in key order, source | edit-mask overlay |
//! target (those three only with `data`) | base | every arm at every evaluated iteration,
//! with instruction, edit type, judge scores and masked PSNR/SSIM; see
//! [`crate::report::browser`]; none with `browser_items: 0`) and `index.md` linking them. The
//! writing is [`crate::report::write`]'s.

use crate::error::fail;
use crate::report::{EvalReport, Layout, RewardPoint, Sweep, read_eval, read_rewards};
use cocoflow_engine::kind::{Input, InputItem, Kind, ParamError, TaskCtx, TaskError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReportParams {
    /// Title of the table and the index.
    pub title: String,
    /// Benchmark items (rows) in `samples.png`; 0: no grid.
    pub grid_items: usize,
    /// Integer up-scaling of the grid's images (nearest neighbour).
    pub grid_scale: u32,
    /// Benchmark items (the first in key order) in the image browser `browser/`; 0: no
    /// browser.
    pub browser_items: usize,
}

impl Default for ReportParams {
    fn default() -> Self {
        ReportParams {
            title: "ablation".into(),
            grid_items: 6,
            grid_scale: 4,
            browser_items: 48,
        }
    }
}

/// The distinct items of an input (by producer), in order.
fn distinct(items: &[InputItem]) -> Vec<InputItem> {
    let mut seen = std::collections::BTreeSet::new();
    items
        .iter()
        .filter(|i| seen.insert((i.producer.clone(), i.output.clone())))
        .cloned()
        .collect()
}

fn optional_items(ctx: &TaskCtx, name: &str) -> Vec<InputItem> {
    ctx.input_items(name)
        .map(|s| s.to_vec())
        .unwrap_or_default()
}

pub struct Report;

impl Kind for Report {
    type Params = ReportParams;
    const NAME: &'static str = "report";
    const VERSION: u32 = 4;
    const DESCRIBE: &'static str = "a sweep's ablation table (Markdown/CSV/JSON), judge/PSNR/SSIM and reward curves (PNG/SVG), sample grids, an image browser";
    const INPUTS: Option<&'static [Input]> = Some(&[
        Input::required(
            "evals",
            "`eval` reports: every arm's every evaluated iteration",
        ),
        Input::optional("base", "the base model's `eval` report"),
        Input::optional("rewards", "`reward` outputs"),
        Input::optional(
            "data",
            "the benchmark, for the sample grid and the browser's source/target/overlay",
        ),
    ]);
    const OUTPUTS: &'static [&'static str] = &["report"];

    fn validate(&self, p: &ReportParams) -> Result<(), ParamError> {
        if p.grid_items > 64 {
            return super::bad("grid_items", format!("must be ≤ 64, got {}", p.grid_items));
        }
        if !(1..=16).contains(&p.grid_scale) {
            return super::bad(
                "grid_scale",
                format!("must be in 1..=16, got {}", p.grid_scale),
            );
        }
        if p.browser_items > crate::report::browser::MAX_ITEMS {
            return super::bad(
                "browser_items",
                format!(
                    "must be ≤ {}, got {}",
                    crate::report::browser::MAX_ITEMS,
                    p.browser_items
                ),
            );
        }
        Ok(())
    }
}

impl Report {
    /// Does the work (the kind's run function).
    pub fn run(&self, p: ReportParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        // Evaluations, by arm group (in order of first appearance) and iteration, one per
        // seed (an arm's `,seed=<v>` suffix; see `sweep.seeds`).
        let mut arms: Vec<String> = Vec::new();
        let mut evals: BTreeMap<(usize, u64), Vec<EvalReport>> = BTreeMap::new();
        for item in distinct(ctx.input_items("evals")?) {
            let dir = ctx.item_path("evals", &item)?;
            let e = read_eval(&dir, &item.label).map_err(fail)?;
            let ai = match arms.iter().position(|a| *a == e.group) {
                Some(i) => i,
                None => {
                    arms.push(e.group.clone());
                    arms.len() - 1
                }
            };
            let slot = evals.entry((ai, e.iteration)).or_default();
            if slot.iter().any(|x| x.arm == e.arm && x.seed == e.seed) {
                ctx.log(format!(
                    "note: two evaluations of arm `{}` at iteration {}; the first is used",
                    e.arm, e.iteration
                ));
                continue;
            }
            slot.push(e);
        }
        if evals.is_empty() {
            return Err(fail("input `evals` holds no evaluation"));
        }
        for slot in evals.values_mut() {
            slot.sort_by(|a, b| a.seed.cmp(&b.seed).then_with(|| a.arm.cmp(&b.arm)));
        }
        // The base: one evaluation per seed (a global task gets one item per arm).
        let mut base: Vec<EvalReport> = Vec::new();
        for item in distinct(&optional_items(ctx, "base")) {
            let dir = ctx.item_path("base", &item)?;
            let b = read_eval(&dir, "").map_err(fail)?;
            if !base.iter().any(|x| x.seed == b.seed) {
                base.push(b);
            }
        }
        base.sort_by_key(|b| b.seed);
        let mut rewards: Vec<RewardPoint> = Vec::new();
        for item in optional_items(ctx, "rewards") {
            let path = ctx.item_path("rewards", &item)?;
            let path = if path.is_dir() {
                path.join(crate::artifacts::rewards::REWARDS_FILE)
            } else {
                path
            };
            let r = read_rewards(&path, &item.label).map_err(fail)?;
            if !rewards
                .iter()
                .any(|x| x.arm == r.arm && x.seed == r.seed && x.iteration == r.iteration)
            {
                rewards.push(r);
            }
        }
        for r in &rewards {
            if !arms.contains(&r.arm) {
                arms.push(r.arm.clone());
            }
        }

        let data = match distinct(&optional_items(ctx, "data")).into_iter().next() {
            Some(item) => Some(ctx.item_path("data", &item)?),
            None => None,
        };
        let out = ctx.workdir()?.join("report");
        let sweep = Sweep {
            arms,
            evals,
            base,
            rewards,
        };
        let written = crate::report::write(
            &out,
            &Layout {
                title: &p.title,
                grid_items: p.grid_items,
                grid_scale: p.grid_scale,
                browser_items: p.browser_items,
            },
            &sweep,
            data.as_deref(),
        )
        .map_err(fail)?;
        ctx.log(&written.markdown);
        ctx.metric("arms", sweep.arms.len() as u64);
        ctx.metric("evaluations", sweep.evals.len() as u64);
        ctx.metric("reward_files", sweep.rewards.len() as u64);
        ctx.metric("best", written.best);
        if let Some(b) = &written.browser {
            ctx.metric("browser_items", b.items as u64);
        }
        ctx.output_dir("report", &out)
    }
}
