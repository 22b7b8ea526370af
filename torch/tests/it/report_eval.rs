//! `report` and `correlate` on what `synth-data` and `eval` really write (the report kinds'
//! own tests on fixtures are `cocoflow-tasks`').

use serde_json::{Value, json};
use std::path::Path;

use crate::common::{files, run};

fn png(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// On real `synth-data` and `eval` outputs (the benchmark's own targets and its unedited
/// sources as two "arms", which need no model): the formats the kinds read are the ones the
/// producing kinds write.
#[test]
fn report_and_correlate_on_real_eval_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = r#"name: report-real
tasks:
  data:
    kind: synth-data
    params: {seed: 1, n_train: 4, n_bench: 16, size: 16, max_objects: 2}
  eval_src:
    kind: eval
    inputs: {data: data.bench}
    params: {images: source, label: sources, arm: sources, iteration: 1}
  eval_tgt:
    kind: eval
    inputs: {data: data.bench}
    params: {images: target, label: targets, arm: targets, iteration: 1}
  report:
    kind: report
    inputs: {evals: [eval_src.report, eval_tgt.report], base: eval_src.report, data: data.bench}
    params: {grid_items: 4}
  correlate:
    kind: correlate
    inputs: {evals: [eval_src.report, eval_tgt.report]}
"#;
    let r = run(tmp.path(), yaml);
    let out = r.output("report", "report");
    if let Ok(keep) = std::env::var("COCOFLOW_KEEP_REPORT") {
        for (name, bytes) in files(&out) {
            let p = Path::new(&keep).join("real").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }
    let t: Value = serde_json::from_slice(&std::fs::read(out.join("table.json")).unwrap()).unwrap();
    let names: Vec<&str> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "sources", "targets"]);
    // The targets are the judge's ceiling.
    assert_eq!(t["best"]["judge_overall"], json!(["targets"]), "{t:#}");
    let g = png(&out.join("samples.png"));
    // instruction column, then source | target | mask | base | sources | targets.
    assert_eq!(
        g.dimensions(),
        (4 + 200 + 4 + 6 * (64 + 4), 36 + 4 * (64 + 4))
    );
    let c: Value = serde_json::from_slice(
        &std::fs::read(
            r.output("correlate", "correlation")
                .join("correlation.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(c["x"], json!("judge_quality"));
    assert_eq!(c["reports"].as_array().unwrap().len(), 2);
    // Infinite PSNR (identical keep regions: `null` beside a number SSIM) counts as the cap.
    assert_eq!(c["pairs"]["psnr_db"]["n"], c["pairs"]["ssim"]["n"], "{c:#}");
    assert!(c["pairs"]["psnr_db"]["n"].as_u64().unwrap() > 0);
    eprintln!("{}", std::fs::read_to_string(out.join("table.md")).unwrap());
    eprintln!("{c:#}");
}
