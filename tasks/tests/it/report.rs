//! The `report` and `correlate` kinds through the real engine, on hand-made eval reports,
//! reward files and a tiny benchmark: a two-arm sweep whose loop "evaluates" (shell tasks
//! copying prepared reports) at iterations 2 and 3, a global `report`, and `correlate` on a
//! hand-made editing dataset (the rule judge's consistency score vs masked PSNR/SSIM).
//! Checks the table (a row per arm plus base, best-per-column marks on hand-made numbers,
//! CSV header and shape), the attribution of evaluations and rewards to arms and iterations,
//! the charts (PNG decodes, SVG is XML), the sample grid's size and pixels, the judge's
//! consistency scores, masked PSNR and Pearson r against hand-computed values, and
//! byte-identical outputs across fresh stores.

use serde_json::{Value, json};
use std::path::Path;

use crate::common::{files, run};

// ---------------------------------------------------------------- fixtures

const W: u32 = 8;
const H: u32 = 6;

/// (key, edit type, source colour).
const ITEMS: [(&str, &str, [u8; 3]); 7] = [
    ("add-0", "add", [200, 10, 10]),
    ("add-1", "add", [10, 200, 10]),
    ("add-2", "add", [10, 10, 200]),
    ("remove-0", "remove", [200, 200, 10]),
    ("remove-1", "remove", [10, 200, 200]),
    ("tone-0", "tone", [90, 90, 90]),
    ("remove-2", "remove", [60, 60, 160]),
];

/// The item whose edit mask is stored as a keep mask (`mask_polarity: keep`): white in the
/// right half, so the edited region is the left half as for the others.
const KEEP_ITEM: &str = "remove-2";

fn solid(path: &Path, c: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(W, H, image::Rgb(c))
        .save(path)
        .unwrap();
}

/// A benchmark: solid sources; edit masks white in the left half (the keep mask of
/// [`KEEP_ITEM`] white in the right half); `add-1` has a target (a solid `TARGET_COLOUR`).
fn write_bench(dir: &Path) {
    let mut lines = String::new();
    for (key, t, c) in ITEMS {
        solid(&dir.join(format!("src/{key}.png")), c);
        let keep = key == KEEP_ITEM;
        let m = image::GrayImage::from_fn(W, H, |x, _| {
            image::Luma([if (x < W / 2) != keep { 255 } else { 0 }])
        });
        m.save(dir.join(format!("src/{key}_mask.png"))).unwrap();
        let mut rec = json!({"key": key, "source": format!("src/{key}.png"), "edit_mask": format!("src/{key}_mask.png"),
                    "instruction": format!("do {t}"), "edit_type": t});
        if keep {
            rec["mask_polarity"] = json!("keep");
        }
        if key == "add-1" {
            solid(&dir.join("src/add-1_target.png"), TARGET_COLOUR);
            rec["target"] = json!("src/add-1_target.png");
        }
        lines.push_str(&rec.to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("manifest.jsonl"), lines).unwrap();
}

/// The records of every report (the same for all): local records with PSNR give
/// x = .1 .2 .3 .4 and PSNR 20 40 50 40 and a constant SSIM (r undefined); add-2 has no
/// PSNR/SSIM (left out) and tone-0 is a global type (left out).
fn records() -> String {
    let vals: [(&str, f64, Option<f64>, Option<f64>); 7] = [
        ("add-0", 0.1, Some(20.0), Some(0.9)),
        ("add-1", 0.2, Some(40.0), Some(0.9)),
        ("remove-0", 0.3, Some(50.0), Some(0.9)),
        ("remove-1", 0.4, Some(40.0), Some(0.9)),
        ("add-2", 0.5, None, None),
        ("tone-0", 0.9, Some(10.0), Some(0.1)),
        ("remove-2", 0.6, Some(30.0), Some(0.8)),
    ];
    let mut s = String::new();
    for (key, q, psnr, ssim) in vals {
        let t = ITEMS.iter().find(|i| i.0 == key).unwrap().1;
        s.push_str(
            &json!({"key": key, "edit_type": t, "instruction": format!("do {t}"), "seed": 1,
                    "image": format!("images/{key}.png"), "judge_effect": 0.5, "judge_quality": q,
                    "judge_overall": (0.5 + q) / 2.0, "psnr_db": psnr, "ssim": ssim, "r_sim": null})
            .to_string(),
        );
        s.push('\n');
    }
    s
}

/// An eval report directory with hand-made table numbers.
#[allow(clippy::too_many_arguments)]
fn write_eval(
    dir: &Path,
    label: &str,
    arm: Option<&str>,
    iteration: Option<u64>,
    judge: [(&str, Option<f64>); 3],
    overall: f64,
    psnr: f64,
    ssim: f64,
    colour: [u8; 3],
    recs: &str,
) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let rows: Vec<Value> = judge
        .iter()
        .map(|(t, j)| json!({"edit_type": t, "n": 2, "judge_effect": j, "judge_quality": j, "judge_overall": j,
                             "judge_invalid": 0, "psnr_db": null, "ssim": null, "r_sim": null}))
        .collect();
    let table = json!({
        "label": label, "arm": arm, "iteration": iteration, "rows": rows,
        "overall": {"edit_type": "overall", "n": 6, "judge_effect": overall, "judge_quality": overall,
                    "judge_overall": overall, "judge_invalid": 0, "psnr_db": psnr, "ssim": ssim, "r_sim": null},
        "params": {}, "notes": "fake",
    });
    std::fs::write(
        dir.join("table.json"),
        serde_json::to_vec_pretty(&table).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("records.jsonl"), recs).unwrap();
    for (key, _, _) in ITEMS {
        solid(&dir.join(format!("images/{key}.png")), colour);
    }
}

fn write_rewards(path: &Path, iteration: u64, mllm: f64, sim: f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let m = |mean: f64| json!({"n": 4, "mean": mean, "std": 0.1});
    let f = json!({
        "format": "cocoflow-rewards", "version": 1, "iteration": iteration, "theta_old": "x", "judge": "fake",
        "config": {}, "samples": [], "banned": [],
        "stats": {"samples": 4, "groups": 1, "r_mllm": m(mllm), "r_sim": m(sim), "r_raw": m(0.8 * mllm + 0.2 * sim),
                  "invalid_judge": 0, "undefined_sim": 0, "banned_groups": 0, "banned_samples": 0, "used": 4, "z": 1.0},
    });
    std::fs::write(path, serde_json::to_vec_pretty(&f).unwrap()).unwrap();
}

/// Side of the pair images; the edit mask is white (edited) in the left half, x < 8.
const P: u32 = 16;

/// An editing dataset for `correlate`: grey sources, targets red in the edit region and with
/// a hand-made background change outside it. (key, edit type, background change):
/// - `same`: none → consistency 10, PSNR ∞ (→ the cap), SSIM 1;
/// - `shift20`: +20 on every channel → every background pixel visibly changed (no step
///   between neighbours changes): 1;
/// - `shift5`: +5 → not identical, nothing visible: 9;
/// - `dots`: 4 isolated pixels +100 → f = 4/112 changed, s = 12/112 pixels whose luma step
///   to a neighbour changed (each dot: itself, its left and its upper neighbour) → severity
///   1 − (1 − 4/112)(1 − 24/112) = 0.2423, 9 − 8·√0.2423 = 5.06 → 5.
///
/// - `dots-keep`: `dots` with its mask stored as a keep mask (`mask_polarity: keep`): the same.
///
/// The judge ignores the mask and a 1-pixel rim (x ≤ 8): 7 × 16 = 112 background pixels;
/// PSNR uses the keep region x ≥ 8 (128 pixels). Plus a global `tone` pair and a record
/// without a target (both left out).
const PAIRS: [(&str, &str); 5] = [
    ("same", "remove"),
    ("shift20", "remove"),
    ("shift5", "replace"),
    ("dots", "replace"),
    ("dots-keep", "replace"),
];
const DOTS: [(u32, u32); 4] = [(11, 3), (13, 7), (11, 11), (14, 13)];

fn write_pairs(dir: &Path) {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let grey = image::RgbImage::from_pixel(P, P, image::Rgb([100, 100, 100]));
    let mask = image::GrayImage::from_fn(P, P, |x, _| image::Luma([if x < 8 { 255 } else { 0 }]));
    mask.save(dir.join("img/mask.png")).unwrap();
    let keep = image::GrayImage::from_fn(P, P, |x, _| image::Luma([if x < 8 { 0 } else { 255 }]));
    keep.save(dir.join("img/keep.png")).unwrap();
    grey.save(dir.join("img/source.png")).unwrap();
    let mut lines = String::new();
    for (key, t) in PAIRS.iter().copied().chain([("tone", "tone")]) {
        let target = image::RgbImage::from_fn(P, P, |x, y| {
            if x < 8 {
                return image::Rgb([220, 20, 20]);
            }
            let v = match key {
                "shift20" => 120,
                "shift5" => 105,
                "dots" | "dots-keep" if DOTS.contains(&(x, y)) => 200,
                "tone" => 60,
                _ => 100,
            };
            image::Rgb([v, v, v])
        });
        target.save(dir.join(format!("img/{key}.png"))).unwrap();
        let mut rec = json!({"key": key, "source": "img/source.png", "target": format!("img/{key}.png"),
                "edit_mask": "img/mask.png", "instruction": format!("do {t}"), "edit_type": t});
        if key == "dots-keep" {
            rec["edit_mask"] = json!("img/keep.png");
            rec["mask_polarity"] = json!("keep");
        }
        lines.push_str(&rec.to_string());
        lines.push('\n');
    }
    lines.push_str(
        &json!({"key": "no-target", "source": "img/source.png", "edit_mask": "img/mask.png",
                "instruction": "do remove", "edit_type": "remove"})
        .to_string(),
    );
    lines.push('\n');
    std::fs::write(dir.join("manifest.jsonl"), lines).unwrap();
}

/// Arm `b`'s records at iteration 3: no `remove-1`, judge effect 0.25 instead of 0.5.
fn b3_records() -> String {
    records()
        .lines()
        .filter(|l| !l.contains("\"remove-1\""))
        .map(|l| {
            format!(
                "{}\n",
                l.replace("\"judge_effect\":0.5", "\"judge_effect\":0.25")
            )
        })
        .collect()
}

const BASE_COLOUR: [u8; 3] = [1, 2, 3];
const TARGET_COLOUR: [u8; 3] = [7, 77, 177];
const A_COLOUR: [u8; 3] = [250, 0, 250];
const B_COLOUR: [u8; 3] = [0, 250, 250];

/// Everything the workflow copies in: `bench/`, `base/`, `<arm>/<iter>/{report/, rewards.json}`.
fn write_fixtures(dir: &Path) {
    write_bench(&dir.join("bench"));
    write_pairs(&dir.join("pairs"));
    let recs = records();
    write_eval(
        &dir.join("base"),
        "base",
        Some("default"),
        None,
        [
            ("add", Some(0.5)),
            ("remove", Some(0.4)),
            ("tone", Some(0.6)),
        ],
        0.5,
        20.0,
        0.7,
        BASE_COLOUR,
        &recs,
    );
    // The base's evaluation says its benchmark prompts were the builtin ones.
    let tj = dir.join("base/table.json");
    let mut t: Value = serde_json::from_slice(&std::fs::read(&tj).unwrap()).unwrap();
    t["prompts"] = json!({"source": "builtin", "label": "builtin prompts: not comparable with published numbers"});
    std::fs::write(&tj, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
    // Iteration 2 (not the last: must not enter the table; PSNR 30 would otherwise be best).
    for arm in ["a", "b"] {
        write_eval(
            &dir.join(format!("{arm}/2/report")),
            "iteration 2",
            Some(arm),
            Some(2),
            [
                ("add", Some(0.9)),
                ("remove", Some(0.9)),
                ("tone", Some(0.9)),
            ],
            0.9,
            30.0,
            0.95,
            [9, 9, 9],
            &records(),
        );
    }
    // Iteration 3, the last. Arm `b`'s table names neither arm nor iteration: the engine's
    // label (`b/iter=3`) gives them.
    write_eval(
        &dir.join("a/3/report"),
        "iteration 3",
        Some("a"),
        Some(3),
        [
            ("add", Some(0.7)),
            ("remove", Some(0.3)),
            ("tone", Some(0.6)),
        ],
        0.53,
        25.0,
        0.8,
        A_COLOUR,
        &records(),
    );
    write_eval(
        &dir.join("b/3/report"),
        "iteration 3",
        None,
        None,
        [("add", Some(0.6)), ("remove", Some(0.45)), ("tone", None)],
        0.55,
        22.0,
        0.8,
        B_COLOUR,
        &b3_records(),
    );
    // Arm `a` at iteration 2 lost an image: its browser entry is absent.
    std::fs::remove_file(dir.join("a/2/report/images/add-1.png")).unwrap();
    for (arm, off) in [("a", 0.0), ("b", 0.1)] {
        for it in 1..=3u64 {
            write_rewards(
                &dir.join(format!("{arm}/{it}/rewards.json")),
                it,
                0.3 + off + 0.05 * it as f64,
                0.6 - 0.02 * it as f64,
            );
        }
    }
}

// ---------------------------------------------------------------- the engine

fn workflow(fixtures: &Path) -> String {
    let src = fixtures.display();
    format!(
        r#"name: report-test
params: {{tag: x}}
sweep:
  arms: [{{name: a, params: {{tag: ta}}}}, {{name: b, params: {{tag: tb}}}}]
tasks:
  data:
    kind: shell
    params: {{cmd: 'mkdir -p bench && cp -r "$SRC"/bench/. bench/', env: {{SRC: "{src}"}}, outputs: {{bench: bench/}}}}
  eval_base:
    kind: shell
    params: {{cmd: 'mkdir -p report && cp -r "$SRC"/base/. report/', env: {{SRC: "{src}"}}, outputs: {{report: report/}}}}
  rl:
    loop:
      iterations: 3
      tasks:
        reward:
          kind: shell
          params: {{cmd: 'cp "$SRC"/${{arm}}/${{iter}}/rewards.json rewards.json # ${{tag}}', env: {{SRC: "{src}"}}, outputs: {{rewards: rewards.json}}}}
        eval:
          kind: shell
          every: 2
          params: {{cmd: 'mkdir -p report && cp -r "$SRC"/${{arm}}/${{iter}}/report/. report/ # ${{tag}}', env: {{SRC: "{src}"}}, outputs: {{report: report/}}}}
  report:
    kind: report
    scope: global
    inputs: {{evals: "rl[*].eval.report", base: eval_base.report, rewards: "rl[*].reward.rewards", data: data.bench}}
    params: {{grid_items: 3, browser_items: 6}}
  report_no_browser:
    kind: report
    scope: global
    inputs: {{evals: "rl[*].eval.report", base: eval_base.report, data: data.bench}}
    params: {{grid_items: 0, browser_items: 0}}
  report_evals_only:
    kind: report
    scope: global
    inputs: {{evals: "rl[*].eval.report"}}
    params: {{title: evals only}}
  pairs:
    kind: shell
    params: {{cmd: 'mkdir -p pairs && cp -r "$SRC"/pairs/. pairs/', env: {{SRC: "{src}"}}, outputs: {{data: pairs/}}}}
  correlate:
    kind: correlate
    scope: global
    inputs: {{data: pairs.data}}
  correlate_limit:
    kind: correlate
    scope: global
    inputs: {{data: pairs.data}}
    params: {{limit: 2, judge: {{kind: rule}}}}
"#
    )
}

fn png(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// The contents of the SVG's `<text>` elements.
fn svg_texts(path: &Path) -> Vec<String> {
    let s = std::fs::read_to_string(path).unwrap();
    s.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

fn assert_svg(path: &Path) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(
        s.trim_start().starts_with("<svg"),
        "{}: {}",
        path.display(),
        &s[..s.len().min(200)]
    );
    assert!(s.trim_end().ends_with("</svg>"), "{}", path.display());
    assert!(s.contains("<text"), "{}: no text", path.display());
    assert!(
        s.contains("<polyline") || s.contains("<circle"),
        "{}: nothing drawn",
        path.display()
    );
}

/// The image browser of the full report: `browser_items: 6` of 7 keys; columns base and
/// a, b at iterations 2 and 3; scores as in [`records`]; a's iteration-2 image of `add-1` is
/// missing and b's iteration-3 evaluation has no record of `remove-1` (no entries).
fn check_browser(out: &Path, fixtures: &Path) {
    let b: Value =
        serde_json::from_slice(&std::fs::read(out.join("browser/index.json")).unwrap()).unwrap();
    assert_eq!(b["format"], json!("cocoflow-report-browser"));
    assert_eq!(b["version"], json!(1));
    assert_eq!(b["title"], json!("ablation"));
    assert_eq!(
        b["columns"],
        json!([
            {"id": "base", "arm": "base", "iteration": 0, "label": "base"},
            {"id": "c1", "arm": "a", "iteration": 2, "label": "a · iter 2"},
            {"id": "c2", "arm": "a", "iteration": 3, "label": "a · iter 3"},
            {"id": "c3", "arm": "b", "iteration": 2, "label": "b · iter 2"},
            {"id": "c4", "arm": "b", "iteration": 3, "label": "b · iter 3"},
        ])
    );
    assert_eq!(b["edit_types"], json!(["add", "remove"]));
    let items = b["items"].as_array().unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "add-0", "add-1", "add-2", "remove-0", "remove-1", "remove-2"
        ]
    );
    // The records, by key.
    let parse = |s: String| -> Vec<Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (recs, recs_b3) = (parse(records()), parse(b3_records()));
    let colour = |col: &str| match col {
        "base" => BASE_COLOUR,
        "c2" => A_COLOUR,
        "c4" => B_COLOUR,
        _ => [9, 9, 9],
    };
    let mut referenced = 0;
    for (n, it) in items.iter().enumerate() {
        let key = keys[n];
        let (_, t, src_colour) = ITEMS.iter().find(|i| i.0 == key).copied().unwrap();
        let rec = |col: &str| {
            let rs = if col == "c4" { &recs_b3 } else { &recs };
            rs.iter().find(|r| r["key"] == json!(key)).unwrap().clone()
        };
        assert_eq!(it["instruction"], json!(format!("do {t}")));
        assert_eq!(it["edit_type"], json!(t));
        let dir = format!("browser/items/{n:04}");
        assert_eq!(it["source"], json!(format!("{dir}/source.png")));
        assert_eq!(it["overlay"], json!(format!("{dir}/overlay.png")));
        let src = png(&out.join(it["source"].as_str().unwrap()));
        assert_eq!(src.dimensions(), (W, H));
        assert!(src.pixels().all(|p| p.0 == src_colour), "{key}: source");
        // The overlay differs from the source exactly in the edited region (the left half,
        // for the keep mask too), there blended 45 % with red.
        let ov = png(&out.join(it["overlay"].as_str().unwrap()));
        assert_eq!(ov.dimensions(), (W, H));
        let tint = |c: u8, t: u32| ((c as u32 * 55 + t * 45 + 50) / 100) as u8;
        let tinted = [
            tint(src_colour[0], 255),
            tint(src_colour[1], 0),
            tint(src_colour[2], 0),
        ];
        for (x, y, p) in ov.enumerate_pixels() {
            let edited = x < W / 2;
            assert_eq!(
                p.0 != src.get_pixel(x, y).0,
                edited,
                "{key} ({x}, {y}): {:?}",
                p.0
            );
            assert_eq!(
                p.0,
                if edited { tinted } else { src_colour },
                "{key} ({x}, {y})"
            );
        }
        if key == "add-1" {
            assert_eq!(it["target"], json!(format!("{dir}/target.png")));
            let t = png(&out.join(it["target"].as_str().unwrap()));
            assert_eq!(t.dimensions(), (W, H));
            assert!(t.pixels().all(|p| p.0 == TARGET_COLOUR));
        } else {
            assert_eq!(it["target"], Value::Null, "{key}");
        }
        // Edits: every column but a's iteration 2 for add-1 and b's iteration 3 for remove-1.
        let edits = it["edits"].as_object().unwrap();
        let mut want: Vec<&str> = vec!["base", "c1", "c2", "c3", "c4"];
        want.retain(|c| !(key == "add-1" && *c == "c1") && !(key == "remove-1" && *c == "c4"));
        assert_eq!(
            edits.keys().map(String::as_str).collect::<Vec<_>>(),
            want,
            "{key}"
        );
        for (col, e) in edits {
            assert_eq!(e["image"], json!(format!("{dir}/{col}.png")));
            for s in [
                "judge_overall",
                "judge_effect",
                "judge_quality",
                "psnr_db",
                "ssim",
            ] {
                assert_eq!(e[s], rec(col)[s], "{key} {col} {s}");
            }
            let img = png(&out.join(e["image"].as_str().unwrap()));
            assert_eq!(img.dimensions(), (W, H));
            assert_eq!(img.get_pixel(0, 0).0, colour(col), "{key} {col}");
            referenced += 1;
        }
    }
    assert_eq!(
        items[2]["edits"]["c2"]["psnr_db"],
        Value::Null,
        "add-2 has no PSNR"
    );
    assert_eq!(items[2]["edits"]["c2"]["judge_overall"], json!(0.5));
    assert_eq!(items[5]["edits"]["base"]["psnr_db"], json!(30.0));
    assert_eq!(items[0]["edits"]["c4"]["judge_effect"], json!(0.25));
    assert_eq!(items[0]["edits"]["c2"]["judge_effect"], json!(0.5));
    assert_eq!(referenced, 6 * 5 - 2);
    // The edited images are the evaluations' bytes.
    assert_eq!(
        std::fs::read(out.join("browser/items/0000/c2.png")).unwrap(),
        std::fs::read(fixtures.join("a/3/report/images/add-0.png")).unwrap()
    );
    let n_files = files(&out.join("browser")).len();
    assert_eq!(
        n_files,
        1 + 6 * 2 + 1 + referenced,
        "index, source + overlay, a target, edits"
    );
}

// ---------------------------------------------------------------- the test

#[test]
fn report_and_correlate_through_the_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = tmp.path().join("fixtures");
    write_fixtures(&fx);
    let r = run(&tmp.path().join("run1"), &workflow(&fx));

    // What the engine gives a global task for list and plain inputs across arms.
    let m = r.result("report");
    let labels = |name: &str| {
        m.inputs[name]
            .iter()
            .map(|i| i.label.clone())
            .collect::<Vec<_>>()
    };
    eprintln!(
        "report input labels: {:#?}",
        m.inputs
            .iter()
            .map(|(k, v)| (k, v.iter().map(|i| i.label.as_str()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        labels("evals"),
        ["a/iter=2", "a/iter=3", "b/iter=2", "b/iter=3"]
    );
    assert_eq!(
        labels("rewards"),
        [
            "a/iter=1", "a/iter=2", "a/iter=3", "b/iter=1", "b/iter=2", "b/iter=3"
        ]
    );
    assert_eq!(labels("base"), ["a", "b"]);

    let out = r.output("report", "report");
    // To look at the outputs: COCOFLOW_KEEP_REPORT=DIR cargo test -p cocoflow-tasks --test it report::
    if let Ok(keep) = std::env::var("COCOFLOW_KEEP_REPORT") {
        for (dir, sub) in [
            (out.clone(), "report"),
            (r.output("correlate", "correlation"), "correlation"),
        ] {
            for (name, bytes) in files(&dir) {
                let p = Path::new(&keep).join(sub).join(name);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, bytes).unwrap();
            }
        }
    }
    let names: Vec<String> = files(&out).into_keys().collect();
    for f in [
        "index.md",
        "table.md",
        "table.csv",
        "table.json",
        "judge_vs_iteration.png",
        "judge_vs_iteration.svg",
        "psnr_vs_iteration.png",
        "psnr_vs_iteration.svg",
        "ssim_vs_iteration.png",
        "ssim_vs_iteration.svg",
        "reward_curves.png",
        "reward_curves.svg",
        "samples.png",
    ] {
        assert!(names.contains(&f.to_string()), "no `{f}` in {names:?}");
    }

    // The table: base + one row per arm at its last iteration, best marks.
    let t: Value = serde_json::from_slice(&std::fs::read(out.join("table.json")).unwrap()).unwrap();
    let rows = t["rows"].as_array().unwrap();
    let row_names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(row_names, ["base", "a", "b"]);
    let iters: Vec<u64> = rows
        .iter()
        .map(|r| r["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(iters, [0, 3, 3]);
    assert_eq!(rows[1]["values"]["psnr_db"], json!(25.0));
    assert_eq!(rows[2]["values"]["judge_tone"], Value::Null);
    assert_eq!(
        t["best"],
        json!({
            "judge_add": ["a"],
            "judge_remove": ["b"],
            "judge_tone": ["base", "a"],
            "judge_overall": ["b"],
            "judge_effect": ["b"],
            "judge_quality": ["b"],
            "psnr_db": ["a"],
            "ssim": ["a", "b"],
        })
    );
    assert_eq!(rows[0]["best"], json!(["judge_tone"]));

    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    let md_row = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        md_row("a"),
        "| a | 3 | 1 | **0.700** | 0.300 | **0.600** | 0.530 | 0.530 | 0.530 | **25.00** | **0.8000** |"
    );
    assert_eq!(
        md_row("b"),
        "| b | 3 | 1 | 0.600 | **0.450** | – | **0.550** | **0.550** | **0.550** | 22.00 | **0.8000** |"
    );
    assert_eq!(
        md_row("base"),
        "| base | 0 | 1 | 0.500 | 0.400 | **0.600** | 0.500 | 0.500 | 0.500 | 20.00 | 0.7000 |"
    );
    assert!(
        md.contains("\n**builtin prompts: not comparable with published numbers.**\n"),
        "the evaluations' prompt label: {md}"
    );
    assert!(
        r.log("report").contains(&md_row("a")),
        "the table is in the log"
    );

    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "name",
            "arm",
            "iteration",
            "label",
            "n",
            "seeds",
            "judge_add",
            "judge_remove",
            "judge_tone",
            "judge_overall",
            "judge_effect",
            "judge_quality",
            "psnr_db",
            "ssim",
            "judge_add_std",
            "judge_remove_std",
            "judge_tone_std",
            "judge_overall_std",
            "judge_effect_std",
            "judge_quality_std",
            "psnr_db_std",
            "ssim_std",
            "best"
        ]
    );
    assert_eq!(lines.len(), 4);
    for l in &lines {
        assert_eq!(l.len(), 23, "{l:?}");
    }
    assert_eq!(lines[2][..6], ["a", "a", "3", "iteration 3", "6", ""]);
    assert_eq!(lines[2][12].parse::<f64>().unwrap(), 25.0);
    assert_eq!(lines[2][20], "", "one evaluation: no std");
    assert_eq!(lines[3][8], "");
    assert_eq!(
        lines[3][22],
        "judge_remove;judge_overall;judge_effect;judge_quality;ssim"
    );
    // Differences from the base (one evaluation each: no spread).
    let deltas = t["deltas"].as_array().unwrap();
    let d = deltas
        .iter()
        .find(|d| d["name"] == "a" && d["column"] == "psnr_db")
        .unwrap();
    assert_eq!(d["mean"], json!(5.0));
    assert_eq!(d["std"], Value::Null);
    assert_eq!(d["within_spread"], json!(false));
    assert!(
        md.contains("| a | +0.030 | +0.030 | +0.030 | +5.00 | +0.1000 |"),
        "{md}"
    );

    // Charts.
    for stem in [
        "judge_vs_iteration",
        "psnr_vs_iteration",
        "ssim_vs_iteration",
    ] {
        let img = png(&out.join(format!("{stem}.png")));
        assert_eq!(img.dimensions(), (800, 450), "{stem}");
        assert!(
            img.pixels().any(|p| p.0 != [255, 255, 255]),
            "{stem} is blank"
        );
        assert_svg(&out.join(format!("{stem}.svg")));
    }
    assert_eq!(
        png(&out.join("reward_curves.png")).dimensions(),
        (800, 1350)
    );
    assert_svg(&out.join("reward_curves.svg"));
    let texts = svg_texts(&out.join("judge_vs_iteration.svg"));
    assert!(
        texts.contains(&"a".to_string()) && texts.contains(&"b".to_string()),
        "arm names in the legend: {texts:?}"
    );

    // The sample grid: rows add-0, remove-0, add-1 (round-robin over local types);
    // columns instruction (200 px) | source | target | mask | base | a | b; tiles 8×6 ×4 =
    // 32×24, pad 4, header 36.
    let g = png(&out.join("samples.png"));
    let x0 = 4 + 200 + 4;
    assert_eq!(g.dimensions(), (x0 + 6 * (32 + 4), 36 + 3 * (24 + 4)));
    let tile = |row: u32, col: u32, dx: u32, dy: u32| {
        g.get_pixel(x0 + col * 36 + dx, 36 + row * 28 + dy).0
    };
    assert_eq!(tile(0, 0, 5, 5), [200, 10, 10]); // add-0's source
    assert_eq!(tile(1, 0, 31, 23), [200, 200, 10]); // remove-0's source
    assert_eq!(tile(2, 0, 0, 0), [10, 200, 10]); // add-1's source
    assert_eq!(tile(0, 1, 5, 5), [200, 200, 200]); // no target: grey
    assert_eq!(tile(0, 2, 2, 2), [255, 255, 255]); // mask: left half edited
    assert_eq!(tile(0, 2, 30, 2), [0, 0, 0]);
    assert_eq!(tile(0, 3, 3, 3), BASE_COLOUR);
    assert_eq!(tile(1, 4, 3, 3), A_COLOUR); // a's last iteration, not iteration 2
    assert_eq!(tile(2, 5, 3, 3), B_COLOUR);
    assert!(
        (0..36).any(|y| (x0..x0 + 32).any(|x| g.get_pixel(x, y).0 != [255, 255, 255])),
        "column labels in the header band"
    );
    assert!(
        (36..36 + 24).any(|y| (4..204).any(|x| g.get_pixel(x, y).0 != [255, 255, 255])),
        "the instruction beside the first row"
    );
    let index = std::fs::read_to_string(out.join("index.md")).unwrap();
    for link in [
        "table.csv",
        "samples.png",
        "reward_curves.svg",
        "psnr_vs_iteration.png",
    ] {
        assert!(index.contains(&format!("({link})")), "index links {link}");
    }
    assert!(index.contains("| a | 2, 3 | 1, 2, 3 |"), "{index}");
    assert!(
        index.contains(
            "[browser/index.json](browser/index.json), 6 benchmark items × 5 evaluations"
        ),
        "{index}"
    );
    check_browser(&out, &fx);
    assert_eq!(r.metrics("report")["browser_items"], json!(6));

    // correlate: the rule judge's consistency per pair (module docs of the fixture), masked
    // PSNR in closed form, r against the same numbers computed here.
    let cdir = r.output("correlate", "correlation");
    let c: Value =
        serde_json::from_slice(&std::fs::read(cdir.join("correlation.json")).unwrap()).unwrap();
    let recs: Vec<Value> = std::fs::read_to_string(cdir.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = recs.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["same", "shift20", "shift5", "dots", "dots-keep"]);
    let consistency: Vec<f64> = recs
        .iter()
        .map(|r| r["consistency"].as_f64().unwrap())
        .collect();
    assert_eq!(consistency, [10.0, 1.0, 9.0, 5.0, 5.0]);
    let psnr_dots = -10.0 * (4.0 * (100.0f64 / 255.0).powi(2) / 128.0).log10();
    let want_psnr = [
        58.92, // identical: the cap (PSNR_CAP_DB)
        20.0 * (255.0f64 / 20.0).log10(),
        20.0 * (255.0f64 / 5.0).log10(),
        psnr_dots,
        psnr_dots,
    ];
    for (r, w) in recs.iter().zip(want_psnr) {
        assert!(
            (r["psnr_db"].as_f64().unwrap() - w).abs() < 1e-9,
            "{r} vs {w}"
        );
    }
    assert_eq!(recs[0]["psnr_infinite"], json!(true));
    assert_eq!(recs[0]["ssim"], json!(1.0));
    let ssim: Vec<f64> = recs.iter().map(|r| r["ssim"].as_f64().unwrap()).collect();
    assert!(ssim[1..].iter().all(|&s| s < 1.0 && s > 0.0), "{ssim:?}");
    assert!(
        recs[3]["judge_answer"]
            .as_str()
            .unwrap()
            .contains("3.6 % of the background changed visibly (largest step 100/255)"),
        "{}",
        recs[3]
    );
    use cocoflow_tasks::report::correlation::pearson;
    let close = |got: &Value, want: Option<f64>| match (got["r"].as_f64(), want) {
        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{got} vs {w}"),
        (g, w) => panic!("{got} vs {w:?} ({g:?})"),
    };
    close(
        &c["pooled"]["consistency_psnr"],
        pearson(&consistency, &want_psnr).r,
    );
    close(
        &c["pooled"]["consistency_ssim"],
        pearson(&consistency, &ssim).r,
    );
    close(&c["pooled"]["psnr_ssim"], pearson(&want_psnr, &ssim).r);
    assert_eq!(c["pooled"]["consistency_psnr"]["n"], json!(5));
    assert_eq!(
        recs[4]["ssim"], recs[3]["ssim"],
        "the keep mask reads as the same region"
    );
    // per type: two pairs each → r = ±1
    close(
        &c["by_type"]["remove"]["consistency_psnr"],
        pearson(&consistency[..2], &want_psnr[..2]).r,
    );
    assert_eq!(c["by_type"]["replace"]["psnr_ssim"]["n"], json!(3));
    assert!(
        c["by_type"].get("tone").is_none(),
        "global types are left out"
    );
    assert_eq!(
        c["data"],
        json!({"records": 7, "pairs": 5, "without_target_or_mask": 1, "global_types": 1,
               "judge_invalid": 0, "no_keep_region": 0})
    );
    assert_eq!(c["prompt"], json!("consistency@1"));
    assert!(c["judge"].as_str().unwrap().starts_with("rule("));
    for stem in ["consistency_vs_psnr", "consistency_vs_ssim", "psnr_vs_ssim"] {
        assert_eq!(
            png(&cdir.join(format!("{stem}.png"))).dimensions(),
            (800, 450)
        );
        assert_svg(&cdir.join(format!("{stem}.svg")));
    }
    // `limit`: the first usable pairs only (`same`, `shift20`: consistency 10, 1 and PSNR
    // 100, 22.1 dB → r = 1)
    let c: Value = serde_json::from_slice(
        &std::fs::read(
            r.output("correlate_limit", "correlation")
                .join("correlation.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(c["data"]["pairs"], json!(2));
    assert_eq!(c["pooled"]["consistency_psnr"]["r"], json!(1.0));

    // Only `evals`: the table without a base row, curves, empty reward curves, no grid.
    let o = r.output("report_evals_only", "report");
    let names: Vec<String> = files(&o).into_keys().collect();
    assert!(!names.contains(&"samples.png".to_string()), "{names:?}");
    assert!(
        names.contains(&"reward_curves.png".to_string()),
        "{names:?}"
    );
    let t: Value = serde_json::from_slice(&std::fs::read(o.join("table.json")).unwrap()).unwrap();
    assert_eq!(t["title"], json!("evals only"));
    assert_eq!(t["rows"].as_array().unwrap().len(), 2);
    assert_eq!(t["best"]["judge_tone"], json!(["a"]));
    assert!(svg_texts(&o.join("reward_curves.svg")).contains(&"no data".to_string()));
    // Its browser: every evaluated key (default `browser_items` 48), no base column, no
    // benchmark images.
    let b: Value =
        serde_json::from_slice(&std::fs::read(o.join("browser/index.json")).unwrap()).unwrap();
    let ids: Vec<&str> = b["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3", "c4"]);
    assert_eq!(b["title"], json!("evals only"));
    assert_eq!(b["edit_types"], json!(["add", "remove", "tone"]));
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert_eq!(items[6]["key"], json!("tone-0"));
    for it in items {
        for f in ["source", "overlay", "target"] {
            assert_eq!(it[f], Value::Null, "{f} without `data`: {it}");
        }
        for e in it["edits"].as_object().unwrap().values() {
            assert!(o.join(e["image"].as_str().unwrap()).is_file(), "{e}");
        }
    }
    assert_eq!(
        items[1]["edits"]["c2"]["image"],
        json!("browser/items/0001/c2.png")
    );

    // `browser_items: 0`: no browser, and no line for it in the index.
    let o = r.output("report_no_browser", "report");
    assert!(!o.join("browser").exists());
    assert!(
        files(&o).keys().all(|k| !k.starts_with("browser")),
        "{:?}",
        files(&o).keys().collect::<Vec<_>>()
    );
    assert!(
        !std::fs::read_to_string(o.join("index.md"))
            .unwrap()
            .contains("browser")
    );
    assert!(
        r.metrics("report_no_browser")
            .get("browser_items")
            .is_none()
    );

    // Deterministic: a fresh store gives the same bytes.
    let r2 = run(&tmp.path().join("run2"), &workflow(&fx));
    assert_eq!(files(&out), files(&r2.output("report", "report")));
    assert_eq!(files(&cdir), files(&r2.output("correlate", "correlation")));
}

#[test]
fn bad_params_and_inputs_are_refused() {
    use cocoflow_engine::kind::TaskKind;
    let k = cocoflow_engine::kind::Declared(cocoflow_tasks::kinds::report::Report);
    assert!(k.check_params(&json!({"grid_scale": 0})).is_err());
    assert!(k.check_params(&json!({"grid_itmes": 3})).is_err());
    assert!(k.check_params(&json!({"browser_items": 10001})).is_err());
    assert!(k.check_params(&json!({"browser_items": 0})).is_ok());
    let p = k.check_params(&json!({})).unwrap();
    assert_eq!(
        p,
        json!({"title": "ablation", "grid_items": 6, "grid_scale": 4, "browser_items": 48})
    );
    assert!(k.check_inputs(&p, &["base"]).is_err());
    assert!(k.check_inputs(&p, &["evals", "extra"]).is_err());
    assert!(
        k.check_inputs(&p, &["evals", "base", "rewards", "data"])
            .is_ok()
    );
    let c = cocoflow_engine::kind::Declared(cocoflow_tasks::kinds::correlate::Correlate);
    // the eval-report form is gone: `x` is no param
    assert!(c.check_params(&json!({"x": "judge_quality"})).is_err());
    assert!(c.check_params(&json!({"psnr_cap_db": 0})).is_err());
    assert!(c.check_params(&json!({"limit": 0})).is_err());
    let p = c.check_params(&json!({})).unwrap();
    assert_eq!(
        p,
        json!({"judge": {"kind": "rule", "min_area_fraction": 0.0025, "variant": "mean"},
               "psnr_cap_db": 58.92, "max_invalid_fraction": 0.1, "limit": null})
    );
    assert!(c.check_inputs(&p, &["evals"]).is_err());
    assert!(c.check_inputs(&p, &["data"]).is_ok());
}

#[test]
fn pearson_against_hand_computed_values() {
    use cocoflow_tasks::report::correlation::pearson;
    // x = 1..5, y = 2 4 5 4 5: Sxy = 6, Sxx = 10, Syy = 6 → r = 6/√60 ≈ 0.774597.
    let c = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 5.0, 4.0, 5.0]);
    assert!((c.r.unwrap() - 0.7745966692414834).abs() < 1e-12);
    assert_eq!(c.n, 5);
    // Perfect negative correlation.
    assert!((pearson(&[0.0, 1.0, 2.0], &[5.0, 3.0, 1.0]).r.unwrap() + 1.0).abs() < 1e-12);
    // Undefined, never NaN.
    for (x, y) in [
        (vec![], vec![]),
        (vec![1.0], vec![2.0]),
        (vec![0.3, 0.3, 0.3], vec![1.0, 2.0, 3.0]),
        (vec![1.0, 2.0, 3.0], vec![7.0, 7.0, 7.0]),
    ] {
        let c = pearson(&x, &y);
        assert_eq!(c.r, None, "{x:?} {y:?}");
        assert!(c.undefined.is_some());
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["r"], Value::Null);
    }
}
