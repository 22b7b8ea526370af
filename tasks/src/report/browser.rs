//! The image browser of a report (`browser/`): a self-contained index for a dashboard that
//! serves only the report's own files, so every image it names is copied or drawn into the
//! report. Written by [`super::write`] when `browser_items` > 0.
//!
//! `browser/index.json` (paths relative to the report's root; no timestamps, maps sorted, so
//! equal inputs give equal bytes):
//!
//! ```json
//! {"format": "cocoflow-report-browser", "version": 1, "title": "ablation",
//!  "columns": [{"id": "base", "arm": "base", "iteration": 0, "label": "base"},
//!              {"id": "c1", "arm": "a", "iteration": 2, "label": "a · iter 2"}],
//!  "edit_types": ["add", "remove"],
//!  "items": [{"key": "add-0", "instruction": "…", "edit_type": "add",
//!             "source": "browser/items/0000/source.png",
//!             "overlay": "browser/items/0000/overlay.png",
//!             "target": null,
//!             "edits": {"base": {"image": "browser/items/0000/base.png", "judge_overall": 0.7,
//!                                "judge_effect": 0.5, "judge_quality": 0.9,
//!                                "psnr_db": 31.2, "ssim": 0.93}}}]}
//! ```
//!
//! - `columns`: the base's evaluation first (id `base`; with one base evaluation per seed,
//!   ids `base1`, `base2`, … in seed order, labelled `base · seed <s>`), then every evaluation
//!   of the sweep: arms in the report's order, each arm's iterations ascending, at one
//!   iteration the seeds in order; ids `c1`, `c2`, …; `arm` is the evaluation's full arm name
//!   (with its `,seed=<v>` suffix under `sweep.seeds`), `label` `<arm> · iter <i>`.
//! - `items`: the benchmark items, i.e. the keys of the evaluations' `records.jsonl` (union
//!   over every column), in key order (byte order), the first `browser_items`. An item's
//!   files are under `browser/items/<n>/` with `<n>` its index zero-padded to 4 digits, so
//!   no key becomes a file name. `instruction` and `edit_type` are those of the item's
//!   record in the first column that has it.
//! - `source`, `target` (PNG re-encodings of the benchmark's images) and `overlay` (the
//!   source with the edited region, as the record's edit mask and `mask_polarity` give it,
//!   blended 45 % with red: `(0.55·c + 0.45·(255, 0, 0))`, rounded; no outline): only with
//!   the `data` input and for keys the benchmark has; otherwise `null`. `target` is `null`
//!   when the benchmark item has none, `overlay` when it has no mask. Pixels that the blend
//!   does not change (pure red) look the same in the overlay.
//! - `edits`: by column id, the column's edited image (the evaluation's record's `image`,
//!   copied byte for byte to `browser/items/<n>/<column id>.png`) and the record's
//!   `judge_overall`, `judge_effect`, `judge_quality`, `psnr_db`, `ssim` (`null` where the
//!   record has none). A column whose evaluation has no record for the item, or whose image
//!   file is missing, has no entry.
//! - `edit_types`: the distinct edit types of the listed items, sorted.

use super::{EvalReport, Sweep, read_records};
use crate::data::{Dataset, MaskPolarity, Record};
use image::{GrayImage, RgbImage, imageops};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "cocoflow-report-browser";
pub const VERSION: u32 = 1;
/// The browser's directory inside the report.
pub const DIR: &str = "browser";
/// The index inside [`DIR`].
pub const INDEX: &str = "index.json";
/// The most items a browser may list (item directories have 4 digits).
pub const MAX_ITEMS: usize = 10_000;
/// The overlay's blend: this many percent of red.
pub const TINT_PERCENT: u32 = 45;

/// One column of the browser: an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    pub id: String,
    pub arm: String,
    pub iteration: u64,
    pub label: String,
}

/// One edited image and its scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edit {
    pub image: String,
    pub judge_overall: Value,
    pub judge_effect: Value,
    pub judge_quality: Value,
    pub psnr_db: Value,
    pub ssim: Value,
}

/// One benchmark item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub key: String,
    pub instruction: String,
    pub edit_type: String,
    pub source: Option<String>,
    pub overlay: Option<String>,
    pub target: Option<String>,
    pub edits: BTreeMap<String, Edit>,
}

/// `browser/index.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Index {
    pub format: String,
    pub version: u32,
    pub title: String,
    pub columns: Vec<Column>,
    pub edit_types: Vec<String>,
    pub items: Vec<Item>,
}

/// The columns of a sweep and the evaluation behind each (module docs).
pub fn columns(sweep: &Sweep) -> Vec<(Column, &EvalReport)> {
    let mut out = Vec::new();
    let several = sweep.base.len() > 1;
    for (i, b) in sweep.base.iter().enumerate() {
        let (id, label) = if several {
            let seed = b.seed.map(|s| s.to_string()).unwrap_or_else(|| "–".into());
            (format!("base{}", i + 1), format!("base · seed {seed}"))
        } else {
            ("base".to_string(), "base".to_string())
        };
        out.push((
            Column {
                id,
                arm: "base".into(),
                iteration: 0,
                label,
            },
            b,
        ));
    }
    let mut n = 0;
    for es in sweep.evals.values() {
        for e in es {
            n += 1;
            out.push((
                Column {
                    id: format!("c{n}"),
                    arm: e.arm.clone(),
                    iteration: e.iteration,
                    label: format!("{} · iter {}", e.arm, e.iteration),
                },
                e,
            ));
        }
    }
    out
}

/// The source with the edited region (where `edited` is true) blended [`TINT_PERCENT`] %
/// with red.
pub fn overlay(src: &RgbImage, edited: &GrayImage) -> RgbImage {
    let keep = 100 - TINT_PERCENT;
    let blend = |c: u8, t: u32| ((c as u32 * keep + t * TINT_PERCENT + 50) / 100) as u8;
    RgbImage::from_fn(src.width(), src.height(), |x, y| {
        let p = src.get_pixel(x, y).0;
        if edited.get_pixel(x, y).0[0] != 0 {
            image::Rgb([blend(p[0], 255), blend(p[1], 0), blend(p[2], 0)])
        } else {
            image::Rgb(p)
        }
    })
}

/// The record's edited region at `w × h` (255 = edited): the mask read with its polarity,
/// scaled to the source's size (nearest neighbour) if it differs; `None` without a mask.
pub fn edited_region(
    ds: &Dataset,
    r: &Record,
    w: u32,
    h: u32,
) -> Result<Option<GrayImage>, String> {
    let Some(m) = &r.edit_mask else {
        return Ok(None);
    };
    let mut grey = crate::imageio::open(&ds.path(m))
        .map_err(|e| e.to_string())?
        .to_luma8();
    if grey.dimensions() != (w, h) {
        grey = imageops::resize(&grey, w, h, imageops::FilterType::Nearest);
    }
    Ok(Some(crate::imageio::binarize(
        grey,
        r.mask_polarity == MaskPolarity::Keep,
    )))
}

/// What [`write_browser`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub items: usize,
    pub columns: usize,
}

fn score(r: &Map<String, Value>, name: &str) -> Value {
    match r.get(name) {
        Some(v @ Value::Number(_)) => v.clone(),
        _ => Value::Null,
    }
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing `{}`: {e}", path.display()))
}

fn write_png(path: &Path, img: &RgbImage) -> Result<(), String> {
    write_bytes(
        path,
        &crate::imageio::rgb_png(img, crate::imageio::Png::Default),
    )
}

/// Writes `out/browser/` (module docs) for the first `n` items; `ds` is the benchmark, for
/// the source, target and overlay images. A `browser/` already there is replaced.
pub fn write_browser(
    out: &Path,
    title: &str,
    sweep: &Sweep,
    ds: Option<&Dataset>,
    n: usize,
) -> Result<Summary, String> {
    let dir = out.join(DIR);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing `{}`: {e}", dir.display()))?;
    }
    let cols = columns(sweep);
    // Each column's records by key (the first line of a repeated key).
    let mut records: Vec<BTreeMap<String, Map<String, Value>>> = Vec::new();
    for (_, e) in &cols {
        let mut by = BTreeMap::new();
        for r in read_records(&e.dir)? {
            if let Some(Value::String(k)) = r.get("key") {
                by.entry(k.clone()).or_insert(r);
            }
        }
        records.push(by);
    }
    let keys: BTreeSet<&String> = records.iter().flat_map(|m| m.keys()).collect();
    let by_key: BTreeMap<&str, &Record> = ds
        .map(|d| d.records.iter().map(|r| (r.key.as_str(), r)).collect())
        .unwrap_or_default();

    let mut items = Vec::new();
    for (i, key) in keys.into_iter().take(n).enumerate() {
        let rel = format!("{DIR}/items/{i:04}");
        let idir = out.join(&rel);
        std::fs::create_dir_all(&idir)
            .map_err(|e| format!("creating `{}`: {e}", idir.display()))?;
        let first = records
            .iter()
            .find_map(|m| m.get(key))
            .expect("a key comes from some column's records");
        let text = |name: &str| first.get(name).and_then(Value::as_str).map(str::to_string);
        let rec = by_key.get(key.as_str()).copied();
        let instruction = text("instruction")
            .or_else(|| rec.map(|r| r.instruction.clone()))
            .unwrap_or_default();
        let edit_type = text("edit_type")
            .or_else(|| rec.and_then(|r| r.edit_type.clone()))
            .unwrap_or_else(|| "unknown".into());

        let (mut source, mut overlay_path, mut target) = (None, None, None);
        if let (Some(ds), Some(r)) = (ds, rec) {
            let src = crate::imageio::open(&ds.path(&r.source))
                .map_err(|e| e.to_string())?
                .to_rgb8();
            write_png(&idir.join("source.png"), &src)?;
            source = Some(format!("{rel}/source.png"));
            if let Some(region) = edited_region(ds, r, src.width(), src.height())? {
                write_png(&idir.join("overlay.png"), &overlay(&src, &region))?;
                overlay_path = Some(format!("{rel}/overlay.png"));
            }
            if let Some(t) = &r.target {
                let img = crate::imageio::open(&ds.path(t))
                    .map_err(|e| e.to_string())?
                    .to_rgb8();
                write_png(&idir.join("target.png"), &img)?;
                target = Some(format!("{rel}/target.png"));
            }
        }

        let mut edits = BTreeMap::new();
        for ((col, e), recs) in cols.iter().zip(&records) {
            let Some(r) = recs.get(key) else { continue };
            let Some(img) = r.get("image").and_then(Value::as_str) else {
                continue;
            };
            let from: PathBuf = crate::data::manifest::confined(&e.dir, img)?;
            if !from.is_file() {
                continue;
            }
            let bytes = std::fs::read(&from)
                .map_err(|err| format!("cannot read `{}`: {err}", from.display()))?;
            let name = format!("{}.png", col.id);
            write_bytes(&idir.join(&name), &bytes)?;
            edits.insert(
                col.id.clone(),
                Edit {
                    image: format!("{rel}/{name}"),
                    judge_overall: score(r, "judge_overall"),
                    judge_effect: score(r, "judge_effect"),
                    judge_quality: score(r, "judge_quality"),
                    psnr_db: score(r, "psnr_db"),
                    ssim: score(r, "ssim"),
                },
            );
        }
        items.push(Item {
            key: key.clone(),
            instruction,
            edit_type,
            source,
            overlay: overlay_path,
            target,
            edits,
        });
    }
    let edit_types: BTreeSet<String> = items.iter().map(|i| i.edit_type.clone()).collect();
    let index = Index {
        format: FORMAT.into(),
        version: VERSION,
        title: title.into(),
        columns: cols.into_iter().map(|(c, _)| c).collect(),
        edit_types: edit_types.into_iter().collect(),
        items,
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating `{}`: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(&index).map_err(|e| e.to_string())? + "\n";
    write_bytes(&dir.join(INDEX), text.as_bytes())?;
    Ok(Summary {
        items: index.items.len(),
        columns: index.columns.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::eval_report::TypeRow;

    fn eval(arm: &str, iteration: u64, seed: Option<u64>) -> EvalReport {
        EvalReport {
            arm: arm.into(),
            group: super::super::split_seed(arm).0,
            seed,
            iteration,
            label: String::new(),
            rows: vec![],
            overall: TypeRow::default(),
            dir: PathBuf::new(),
            prompts_label: None,
        }
    }

    #[test]
    fn columns_are_base_then_arms_by_iteration_then_seeds() {
        let mut evals = BTreeMap::new();
        evals.insert((1, 2), vec![eval("b", 2, None)]);
        evals.insert(
            (0, 4),
            vec![eval("a,seed=0", 4, Some(0)), eval("a,seed=1", 4, Some(1))],
        );
        evals.insert((0, 2), vec![eval("a,seed=0", 2, Some(0))]);
        let sweep = Sweep {
            arms: vec!["a".into(), "b".into()],
            evals,
            base: vec![eval("default", 0, Some(0)), eval("default", 0, Some(1))],
            rewards: vec![],
        };
        let got: Vec<(String, String, u64, String)> = columns(&sweep)
            .into_iter()
            .map(|(c, _)| (c.id, c.arm, c.iteration, c.label))
            .collect();
        let want = [
            ("base1", "base", 0, "base · seed 0"),
            ("base2", "base", 0, "base · seed 1"),
            ("c1", "a,seed=0", 2, "a,seed=0 · iter 2"),
            ("c2", "a,seed=0", 4, "a,seed=0 · iter 4"),
            ("c3", "a,seed=1", 4, "a,seed=1 · iter 4"),
            ("c4", "b", 2, "b · iter 2"),
        ];
        assert_eq!(
            got,
            want.map(|(a, b, c, d)| (a.to_string(), b.to_string(), c, d.to_string()))
        );
        let one = Sweep {
            arms: vec![],
            evals: BTreeMap::new(),
            base: vec![eval("default", 0, None)],
            rewards: vec![],
        };
        let c = columns(&one);
        assert_eq!(
            c[0].0,
            Column {
                id: "base".into(),
                arm: "base".into(),
                iteration: 0,
                label: "base".into()
            }
        );
    }

    #[test]
    fn overlay_tints_the_edited_region_only() {
        let src = RgbImage::from_fn(4, 2, |x, _| image::Rgb([100, 10 * x as u8, 255]));
        let region = GrayImage::from_fn(4, 2, |x, y| {
            image::Luma([if x < 2 && y == 0 { 255 } else { 0 }])
        });
        let o = overlay(&src, &region);
        for (x, y, p) in o.enumerate_pixels() {
            let s = src.get_pixel(x, y).0;
            if x < 2 && y == 0 {
                let g = (s[1] as u32 * 55 + 50) / 100;
                assert_eq!(p.0, [170, g as u8, 140], "({x}, {y})"); // 55+114.75, 140.25
            } else {
                assert_eq!(p.0, s, "({x}, {y})");
            }
        }
    }

    #[test]
    fn masks_are_read_with_their_polarity() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        GrayImage::from_fn(4, 2, |x, _| image::Luma([if x < 1 { 255 } else { 0 }]))
            .save(root.join("m.png"))
            .unwrap();
        // Half the source's resolution: scaled up, nearest neighbour.
        GrayImage::from_fn(2, 1, |x, _| image::Luma([if x < 1 { 255 } else { 0 }]))
            .save(root.join("small.png"))
            .unwrap();
        RgbImage::new(4, 2).save(root.join("s.png")).unwrap();
        let rec = |mask: &str, polarity: &str| {
            serde_json::json!({"key": format!("{mask}-{polarity}"), "source": "s.png",
                               "edit_mask": mask, "mask_polarity": polarity, "instruction": "x"})
            .to_string()
        };
        let lines = [
            rec("m.png", "edit"),
            rec("m.png", "keep"),
            rec("small.png", "edit"),
            serde_json::json!({"key": "none", "source": "s.png", "instruction": "x"}).to_string(),
        ];
        std::fs::write(root.join("manifest.jsonl"), lines.join("\n")).unwrap();
        let ds = Dataset::open(root).unwrap();
        let on = |i: usize| -> Vec<(u32, u32)> {
            let g = edited_region(&ds, &ds.records[i], 4, 2).unwrap().unwrap();
            g.enumerate_pixels()
                .filter(|(_, _, p)| p.0[0] == 255)
                .map(|(x, y, _)| (x, y))
                .collect()
        };
        assert_eq!(on(0), [(0, 0), (0, 1)]);
        assert_eq!(on(1), [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(on(2), [(0, 0), (1, 0), (0, 1), (1, 1)]);
        assert!(edited_region(&ds, &ds.records[3], 4, 2).unwrap().is_none());
    }
}
