//! `report` and `correlate` on what `synth-data` and `eval` really write (the report kinds'
//! own tests on fixtures are `cocoflow-tasks`'), and `correlate`'s torch-free masked PSNR/SSIM
//! checked against this crate's metrics on the same pairs.

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
    params: {seed: 1, n_train: 24, n_bench: 16, size: 16, max_objects: 2}
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
    inputs: {data: data.train}
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
    assert_eq!(c["x"], json!("consistency"));
    let n = c["data"]["pairs"].as_u64().unwrap();
    assert!(n > 0, "{c:#}");
    assert_eq!(c["pooled"]["psnr_ssim"]["n"], json!(n), "{c:#}");
    // The torch-free metrics of `correlate` (`cocoflow_tasks::metrics::masked_rgb`, the same
    // kernel source) equal `masked_metrics` on the same 8-bit pairs, to 1e-12.
    use cocoflow_torch::data::{Dataset, RecordTensors as _};
    let ds = Dataset::open(&r.output("data", "train")).unwrap();
    let recs: Vec<Value> =
        std::fs::read_to_string(r.output("correlate", "correlation").join("records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(recs.len() as u64, n);
    for rec in &recs {
        let key = rec["key"].as_str().unwrap();
        let r = ds.records.iter().find(|r| r.key == key).unwrap();
        let src = ds
            .source(r)
            .unwrap()
            .unsqueeze(0)
            .to_kind(tch::Kind::Double);
        let tgt = ds
            .target(r)
            .unwrap()
            .unwrap()
            .unsqueeze(0)
            .to_kind(tch::Kind::Double);
        let edit = ds
            .edit_mask(r)
            .unwrap()
            .unwrap()
            .unsqueeze(0)
            .to_kind(tch::Kind::Double);
        let keep = edit.ones_like() - edit;
        let m = cocoflow_torch::metrics::masked_metrics(
            &src,
            &tgt,
            &keep,
            &cocoflow_torch::metrics::MetricsConfig::default(),
        )
        .unwrap();
        let m = m[0].as_ref().unwrap();
        let psnr = rec["psnr_db"].as_f64().unwrap();
        assert!(
            (psnr - m.psnr_db.min(cocoflow_tasks::eval::PSNR_CAP_DB)).abs() < 1e-12,
            "{key}: {psnr} vs {}",
            m.psnr_db
        );
        assert!(
            (rec["ssim"].as_f64().unwrap() - m.ssim).abs() < 1e-12,
            "{key}"
        );
        let s = rec["consistency"].as_f64().unwrap();
        assert!((1.0..=10.0).contains(&s) && s.fract() == 0.0, "{rec}");
    }
    eprintln!("{}", std::fs::read_to_string(out.join("table.md")).unwrap());
    eprintln!("{c:#}");
}
