//! The full `cocoflow` binary (engine + tch task kinds): the README's demo workflow runs end
//! to end, a re-run is fully cached, and a torch task runs where the scheduler puts it.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cocoflow");

fn cocoflow(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run cocoflow");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kinds_include_the_torch_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = cocoflow(dir.path(), &["kinds"]);
    assert_eq!(code, 0);
    for k in ["noop", "shell", "torch-info"] {
        assert!(out.lines().any(|l| l.starts_with(k)), "{out}");
    }
}

#[test]
fn demo_workflow_runs_then_is_fully_cached() {
    let dir = tempfile::tempdir().unwrap();
    let wf = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/demo.yaml");
    let wf = wf.to_str().unwrap();
    let (code, _, err) = cocoflow(dir.path(), &["run", wf]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("23 ran, 0 cached"), "{err}");
    let (code, _, err) = cocoflow(dir.path(), &["run", wf]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 ran, 23 cached"), "{err}");
    // The shared prefix is one instance for all four arms.
    let (_, out, _) = cocoflow(dir.path(), &["plan", wf, "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let data: Vec<_> = plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["task"] == "data")
        .collect();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["arms"].as_array().unwrap().len(), 4);
}

#[test]
fn torch_task_runs_in_process_and_in_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.yaml"), "name: t\ntasks:\n  a: {kind: torch-info, params: {size: 64, seed: 1}}\n  b: {kind: torch-info, executor: subprocess, params: {size: 64, seed: 1, repeats: 2}}\n").unwrap();
    let (code, _, err) = cocoflow(dir.path(), &["run", "w.yaml", "--gpus", "none"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cocoflow(dir.path(), &["plan", "w.yaml", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut checksums = Vec::new();
    let results = cocoflow_engine::store::pack::read_local(&dir.path().join(".cocoflow/store"));
    for inst in plan["instances"].as_array().unwrap() {
        let key = inst["key"].as_str().unwrap();
        let m: serde_json::Value = serde_json::from_slice(&results[key]).unwrap();
        assert_eq!(m["metrics"]["device"], "Cpu");
        let info = &m["outputs"]["info"];
        let bytes = match info["inline"].as_str() {
            Some(b64) => b64_decode(b64),
            None => std::fs::read(dir.path().join(format!(
                ".cocoflow/store/blobs/{}/{}",
                &info["digest"].as_str().unwrap()[..2],
                info["digest"].as_str().unwrap()
            )))
            .unwrap(),
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        checksums.push(v["checksum"].as_f64().unwrap());
    }
    assert_eq!(checksums.len(), 2);
    assert_eq!(
        checksums[0], checksums[1],
        "same seed, same result in-process and in a worker"
    );
}

fn b64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            _ => 63,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= table(c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}

#[test]
fn synth_data_is_deterministic_and_splits_do_not_overlap() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let wf = "name: sd\ntasks:\n  data: {kind: synth-data, params: {seed: 3, n_train: 48, n_bench: 16, drift: 0.2}}\n";
    for d in [&a, &b] {
        std::fs::write(d.path().join("w.yaml"), wf).unwrap();
        let (code, _, err) = cocoflow(d.path(), &["run", "w.yaml"]);
        assert_eq!(code, 0, "{err}");
    }
    let result = |d: &Path| -> serde_json::Value {
        let results = cocoflow_engine::store::pack::read_local(&d.join(".cocoflow/store"));
        assert_eq!(results.len(), 1, "one result in {}", d.display());
        serde_json::from_slice(results.values().next().unwrap()).unwrap()
    };
    let (ra, rb) = (result(a.path()), result(b.path()));
    // Tree digests cover every byte of every file: byte-identical datasets.
    assert_eq!(ra["outputs"], rb["outputs"]);
    let blob = |d: &Path, digest: &str| {
        std::fs::read(d.join(format!(".cocoflow/store/blobs/{}/{digest}", &digest[..2]))).unwrap()
    };
    let manifest = |split: &str| -> Vec<serde_json::Value> {
        let tree: serde_json::Value = serde_json::from_slice(&blob(
            a.path(),
            ra["outputs"][split]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        let e = tree["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "manifest.jsonl")
            .unwrap();
        String::from_utf8(blob(a.path(), e["digest"].as_str().unwrap()))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (train, bench) = (manifest("train"), manifest("bench"));
    assert_eq!((train.len(), bench.len()), (48, 16));
    let types = |m: &[serde_json::Value]| {
        m.iter()
            .map(|r| r["edit_type"].as_str().unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(types(&train).len(), 6, "train has the six local types only");
    assert!(
        types(&bench).contains("tone") && types(&bench).contains("style"),
        "bench adds the global types"
    );
    let pairs = |m: &[serde_json::Value]| {
        m.iter()
            .map(|r| {
                (
                    r["extra"]["source_scene"].to_string(),
                    r["instruction"].to_string(),
                )
            })
            .collect::<std::collections::HashSet<_>>()
    };
    assert!(pairs(&train).is_disjoint(&pairs(&bench)));
}

#[test]
fn score_command_prints_json_and_names_bad_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let img = |n: &str| root.join("torch/tests/golden/metrics/images").join(n);
    let tmp = tempfile::tempdir().unwrap();
    let (rc, out, err) = cocoflow(
        tmp.path(),
        &[
            "score",
            "--source",
            img("coffee_SRCIMG.png").to_str().unwrap(),
            "--edited",
            img("coffee_blur.png").to_str().unwrap(),
            "--mask",
            img("mask_coffee_box.png").to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ssim = v["ssim"].as_f64().expect("ssim");
    let psnr = v["psnr_db"].as_f64().expect("psnr_db");
    assert!(ssim > 0.0 && ssim < 1.0, "{v}");
    assert!(psnr > 10.0 && psnr < 60.0, "{v}");
    let (rc, _, err) = cocoflow(
        tmp.path(),
        &[
            "score",
            "--source",
            img("coffee_SRCIMG.png").to_str().unwrap(),
            "--edited",
            "missing.png",
            "--mask",
            img("mask_coffee_box.png").to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 3);
    assert!(err.contains("missing.png"), "{err}");
}

/// A small synth → pretrain → eval workflow for the tests (16×16 images, a 1-block model).
fn tiny_pretrain_workflow(steps: u64) -> String {
    format!(
        "name: pt\ntasks:\n  data: {{kind: synth-data, params: {{seed: 1, n_train: 64, n_bench: 16, size: 16, max_objects: 2, drift: 0.2}}}}\n  base:\n    kind: pretrain\n    inputs: {{data: data.train}}\n    params: {{seed: 2, steps: {steps}, batch_size: 8, warmup: 5, log_every: 1, checkpoint_every: 25, threads: 1,\n             model: {{num_layers: 1, num_attention_heads: 2, attention_head_dim: 8, mlp_ratio: 2.0, text_encoder: {{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}}}}}}\n  eval:\n    kind: eval\n    inputs: {{model: base.model, data: data.bench}}\n    params: {{sampler: {{steps: 4}}, batch_size: 8}}\n"
    )
}

/// Digest of an output of the (single) finished instance of `task` in a state directory.
fn output_digest(state: &Path, task: &str, output: &str) -> String {
    for bytes in cocoflow_engine::store::pack::read_local(&state.join("store")).values() {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        if v["task"] == task || v["name"] == task {
            return v["outputs"][output]["digest"].as_str().unwrap().to_string();
        }
    }
    panic!("no result for `{task}` in {}", state.display());
}

#[test]
fn pretrain_killed_mid_run_resumes_to_bit_identical_weights() {
    let steps = 600;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [&a, &b] {
        std::fs::write(d.path().join("w.yaml"), tiny_pretrain_workflow(steps)).unwrap();
    }
    // Uninterrupted.
    let (code, _, err) = cocoflow(a.path(), &["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    // Interrupted with SIGKILL once a checkpoint exists, then re-run.
    let mut child = Command::new(BIN)
        .args(["run", "w.yaml", "-q"])
        .current_dir(b.path())
        .spawn()
        .unwrap();
    let logs = b.path().join(".cocoflow/logs");
    let t0 = std::time::Instant::now();
    let killed_at = loop {
        // Any run folder's `base.1.log` (the logs folder also holds `workers/`).
        let step = std::fs::read_dir(&logs)
            .ok()
            .and_then(|runs| {
                runs.flatten()
                    .find_map(|r| std::fs::read_to_string(r.path().join("base.1.log")).ok())
            })
            .and_then(|s| {
                s.lines()
                    .filter_map(|l| {
                        l.strip_prefix("step ")?
                            .split('/')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .last()
            });
        if let Some(s) = step
            && s >= 60
        {
            child.kill().unwrap();
            break s;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(t0.elapsed().as_secs() < 300, "no progress from pretrain");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.wait().unwrap();
    assert!(killed_at < steps, "killed at step {killed_at}");
    let (code, _, err) = cocoflow(b.path(), &["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    let resumed = std::fs::read_dir(&logs)
        .unwrap()
        .filter_map(|r| std::fs::read_to_string(r.unwrap().path().join("base.1.log")).ok())
        .any(|s| s.contains("resumed from the checkpoint at step"));
    assert!(resumed, "the second run did not resume from the checkpoint");
    // Same seed, same data: bit-identical model directory (weights, config) either way.
    // pretrain.json records this attempt's time and steps, so compare the files themselves.
    let file_in_tree = |d: &Path, task: &str, output: &str, name: &str| -> Vec<u8> {
        let blob = |digest: &str| {
            std::fs::read(d.join(format!(".cocoflow/store/blobs/{}/{digest}", &digest[..2])))
                .unwrap()
        };
        let tree: serde_json::Value =
            serde_json::from_slice(&blob(&output_digest(&d.join(".cocoflow"), task, output)))
                .unwrap();
        let e = tree["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {tree}"));
        blob(e["digest"].as_str().unwrap())
    };
    for f in ["model.safetensors", "config.json"] {
        assert!(
            file_in_tree(a.path(), "base", "model", f)
                == file_in_tree(b.path(), "base", "model", f),
            "{f} differs between the uninterrupted and the resumed run"
        );
    }
    // The evaluation report: a row per edit type of the benchmark, judge and pixel scores.
    let table: serde_json::Value =
        serde_json::from_slice(&file_in_tree(a.path(), "eval", "report", "table.json")).unwrap();
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "{table}");
    let local = rows.iter().find(|r| r["edit_type"] == "remove").unwrap();
    assert!(local["psnr_db"].as_f64().unwrap() > 0.0, "{table}");
    let global = rows.iter().find(|r| r["edit_type"] == "tone").unwrap();
    assert!(
        global["psnr_db"].is_null(),
        "no keep-region metrics for global edits: {table}"
    );
    assert!(
        table["overall"]["judge_overall"].as_f64().is_some(),
        "{table}"
    );
}

/// `cocoflow export --task curate --to <dir>/<to>` of the latest run; returns the task's folder.
fn export_curate(dir: &Path, to: &str) -> std::path::PathBuf {
    let (code, _, err) = cocoflow(dir, &["export", "--task", "curate", "--to", to]);
    assert_eq!(code, 0, "{err}");
    dir.join(to).join("curate")
}

fn stats_of(exported: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(exported.join("stats/stats.json")).unwrap()).unwrap()
}

/// The metrics of instance `task` in the store of `dir` (its result manifest), for the
/// workflow as `plan_args` (`plan` and its overrides) describe it.
fn metrics_of(dir: &Path, plan_args: &[&str], task: &str) -> serde_json::Value {
    let (code, out, err) = cocoflow(dir, plan_args);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == task)
        .unwrap_or_else(|| panic!("no instance `{task}`"))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let results = cocoflow_engine::store::pack::read_local(&dir.join(".cocoflow/store"));
    let m: serde_json::Value = serde_json::from_slice(&results[&key]).unwrap();
    m["metrics"].clone()
}

/// Issue 7's acceptance, as a new user: `workflows/curate.yaml` produces the curated dataset,
/// its statistics and both plots; another threshold makes no judge or segmentation calls;
/// a run killed with SIGKILL mid-way continues without redoing its committed shards and
/// ends with the same dataset.
#[test]
fn curate_workflow_runs_refilters_without_calls_and_resumes_after_kill() {
    let wf = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/curate.yaml");
    let wf = wf.to_str().unwrap();
    let small = ["--set", "n_train=256", "--set", "shard_size=16"];
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into(), wf.into()];
        v.extend(small.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |d: &Path, extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, _, err) = cocoflow(d, &a);
        assert_eq!(code, 0, "{err}");
    };
    // shard and call counts are the task's metrics (they depend on what earlier runs cached)
    let metrics = |d: &Path, extra: &[&str]| {
        let mut a = args(extra);
        a[0] = "plan".into();
        a.push("--json".into());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        metrics_of(d, &a, "curate")
    };
    let a = tempfile::tempdir().unwrap();
    run(a.path(), &[]);
    let first = export_curate(a.path(), "first");
    let s = stats_of(&first);
    assert_eq!(s["samples"], 256, "{s}");
    let kept = s["kept"].as_u64().unwrap();
    assert!(kept > 50 && kept < 256, "{s}");
    let m = metrics(a.path(), &[]);
    assert!(m["calls"]["judge"].as_u64().unwrap() >= 3 * s["annotated"].as_u64().unwrap());
    assert!(m["calls"]["segment"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["shards"]["computed"], 16, "{m}");
    for f in [
        "types.png",
        "types.svg",
        "scores.png",
        "scores.svg",
        "stats.md",
        "samples.jsonl",
    ] {
        assert!(first.join("stats").join(f).is_file(), "no {f}");
    }
    for f in ["types.png", "scores.png"] {
        let img = image::open(first.join("stats").join(f)).unwrap();
        assert_eq!((img.width(), img.height()), (800, 450), "{f}");
    }
    // every local type is annotated; masks are compared with the world's exact ones
    for t in [
        "add",
        "attribute",
        "background",
        "motion",
        "remove",
        "replace",
    ] {
        let row = &s["per_type"][t];
        assert!(row["annotated"].as_u64().unwrap() > 10, "{t}: {s}");
        assert!(row["mask_iou"].as_f64().unwrap() > 0.5, "{t}: {s}");
    }
    let manifest = std::fs::read_to_string(first.join("data/manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count() as u64, kept);
    for l in manifest.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        for f in ["source", "target", "edit_mask"] {
            assert!(
                first.join("data").join(r[f].as_str().unwrap()).is_file(),
                "{l}"
            );
        }
        assert!(
            r["extra"]["curation"]["mean"].as_f64().unwrap() > 9.4,
            "{l}"
        );
        assert!(
            r["instruction_refined"].as_str().unwrap().len()
                > r["instruction"].as_str().unwrap().len()
        );
    }

    // Another threshold: a new instance, every shard read back, no calls at all.
    run(a.path(), &["--set", "threshold=9.0"]);
    let lower = export_curate(a.path(), "lower");
    let s2 = stats_of(&lower);
    let m2 = metrics(a.path(), &["--set", "threshold=9.0"]);
    assert_eq!(
        m2["calls"],
        serde_json::json!({"judge": 0, "judge_cached": 0, "segment": 0, "segment_cached": 0}),
        "{m2}"
    );
    assert_eq!(m2["shards"]["committed_before"], 16, "{m2}");
    assert!(s2["kept"].as_u64().unwrap() > kept, "{s2}");
    // ... and its decisions are the first run's scores filtered at 9.0
    let expected = std::fs::read_to_string(first.join("stats/samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| {
            v["status"] == "annotated"
                && v["mean"].as_f64().unwrap() > 9.0
                && v["keep_fraction"].as_f64().unwrap() >= 0.05
        })
        .count() as u64;
    assert_eq!(s2["kept"].as_u64().unwrap(), expected);

    // Killed once three shards are committed, then re-run.
    let b = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(args(&["-q"]))
        .current_dir(b.path())
        .spawn()
        .unwrap();
    let logs = b.path().join(".cocoflow/logs");
    let t0 = std::time::Instant::now();
    let committed = |logs: &Path| -> usize {
        std::fs::read_dir(logs)
            .map(|runs| {
                runs.filter_map(|r| {
                    std::fs::read_to_string(r.unwrap().path().join("curate.1.log")).ok()
                })
                .map(|s| s.lines().filter(|l| l.contains(": committed (")).count())
                .sum()
            })
            .unwrap_or(0)
    };
    loop {
        if committed(&logs) >= 3 {
            child.kill().unwrap();
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(t0.elapsed().as_secs() < 300, "no progress from curate");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait().unwrap();
    run(b.path(), &[]);
    let resumed = export_curate(b.path(), "resumed");
    let s3 = stats_of(&resumed);
    let m3 = metrics(b.path(), &[]);
    let before = m3["shards"]["committed_before"].as_u64().unwrap();
    assert!((3..16).contains(&before), "{m3}");
    assert_eq!(
        m3["shards"]["computed"].as_u64().unwrap(),
        16 - before,
        "{m3}"
    );
    // the statistics hold no run history: equal to the uninterrupted run's
    assert_eq!(s3, s, "the resumed run's stats.json differs");
    assert_eq!(
        std::fs::read(resumed.join("data/manifest.jsonl")).unwrap(),
        manifest.as_bytes(),
        "the resumed run's dataset differs from the uninterrupted one"
    );
    assert_eq!(s3["kept"], s["kept"]);
}

/// The curation shard records (key-value space `curate`) of the real `curate` kind: after a
/// run with other stage settings (new shard keys) and a re-filter (the same shards, read
/// back), `gc` frees the records no kept run references — the first run's, once its run
/// summary is gone — and keeps the others; `--keep-caches` keeps every record.
#[test]
fn gc_frees_curation_shards_no_run_references() {
    let wf = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/curate.yaml");
    let wf = wf.to_str().unwrap();
    let d = tempfile::tempdir().unwrap();
    let kv = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.join(".cocoflow/store/kv/curate"))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let runs = |d: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(d.join(".cocoflow/store/runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
        v
    };
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run",
            wf,
            "--set",
            "n_train=64",
            "--set",
            "shard_size=16",
            "-q",
        ];
        a.extend_from_slice(extra);
        let (code, _, err) = cocoflow(d.path(), &a);
        assert_eq!(code, 0, "{err}");
    };
    run(&[]);
    let first = kv(d.path());
    assert_eq!(first.len(), 4, "{first:?}");
    run(&["--set", "dilate_px=2"]); // other stage settings: four new shards
    run(&["--set", "dilate_px=2", "--set", "threshold=9.0"]); // the same shards, read back
    let all = kv(d.path());
    assert_eq!(all.len(), 8, "{all:?}");
    let second: Vec<String> = all.iter().filter(|k| !first.contains(k)).cloned().collect();

    // Nothing is unreferenced while every run summary is kept.
    let (code, out, err) = cocoflow(d.path(), &["gc", "--grace", "0s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(kv(d.path()), all, "{out}");
    // The first run forgotten: its shard records go, the others stay.
    let summaries = runs(d.path());
    assert_eq!(summaries.len(), 3);
    std::fs::remove_file(&summaries[0]).unwrap();
    let (code, _, err) = cocoflow(d.path(), &["gc", "--grace", "0s", "--keep-caches"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(kv(d.path()), all, "--keep-caches keeps every record");
    let (code, out, err) = cocoflow(d.path(), &["gc", "--grace", "0s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(kv(d.path()), second, "{out}");
}
