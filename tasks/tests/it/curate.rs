//! The `curate` kind through the engine: with the judge and the segmenter as real HTTP
//! services (calls counted on the servers), over a manifest with bad lines and corrupt
//! images, over parquet (the same samples as a manifest give the same outcomes), and with a
//! segmentation service that is down.

use cocoflow_tasks::judge::server as judge_server;
use cocoflow_tasks::segment::server as segment_server;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common;

/// The fixture: 12 raw synthetic triplets (and their parquet form).
fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/curation")
}

struct Ran {
    failed: usize,
    /// `curate`'s outputs, when it succeeded: (data dir, stats dir).
    outputs: Option<(PathBuf, PathBuf)>,
    /// The task's metrics (`calls`, `shards`: how this run got its outcomes).
    metrics: Value,
    /// Its attempt's log, when it failed.
    error: Option<String>,
}

/// Runs a workflow in `dir` (store `dir/store`) on `rt`, with `--set` overrides.
fn run(rt: &Arc<tokio::runtime::Runtime>, dir: &Path, yaml: &str, sets: &[&str]) -> Ran {
    let r = common::try_run(rt.clone(), dir, yaml, sets);
    let outputs = r
        .try_result("curate")
        .map(|_| (r.output("curate", "data"), r.output("curate", "stats")));
    let metrics = r
        .try_result("curate")
        .map(|m| Value::Object(m.metrics))
        .unwrap_or(Value::Null);
    Ran {
        metrics,
        failed: r.report.failed,
        error: if outputs.is_none() {
            r.attempt_log("curate")
        } else {
            None
        },
        outputs,
    }
}

fn stats(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("stats.json")).unwrap()).unwrap()
}

fn samples(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const SYNTH: &str = r#"name: curate-http
params:
  judge: {kind: rule}
  segmenter: {kind: builtin}
  threshold: 9.4
tasks:
  raw:
    kind: synth-data
    params: {seed: 5, n_train: 96, n_bench: 8, drift: 0.35, raw: true}
  exact:
    kind: synth-data
    params: {seed: 5, n_train: 96, n_bench: 8, drift: 0.35}
  curate:
    kind: curate
    inputs: {data: raw.train, reference: exact.train}
    params: {judge: "${judge}", segmenter: "${segmenter}", threshold: "${threshold}", shard_size: 16}
"#;

/// Over HTTP (`judge serve`'s rule judge behind the OpenAI API, `segment serve`'s colour
/// segmenter) the outcomes equal the in-process ones; a new threshold asks neither server
/// anything.
#[test]
fn services_over_http_are_not_asked_again_for_a_new_threshold() {
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let judge = rt
        .block_on(judge_server::start_local(
            judge_server::ServerConfig::default(),
        ))
        .unwrap();
    let seg = rt
        .block_on(segment_server::start_local(
            segment_server::ServerConfig::default(),
        ))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let judge_set = format!(
        "judge={{kind: openai, base_url: '{}', model: rule, extraction: logprobs}}",
        judge.base_url()
    );
    let seg_set = format!("segmenter={{kind: http, base_url: '{}'}}", seg.base_url());
    let http = run(&rt, &tmp.path().join("a"), SYNTH, &[&judge_set, &seg_set]);
    assert_eq!(http.failed, 0, "{:?}", http.error);
    let m = http.metrics.clone();
    let (data, st) = http.outputs.unwrap();
    let s = stats(&st);
    let (judge_calls, seg_calls) = (judge.request_count(), seg.request_count());
    assert_eq!(s["samples"], 96, "{s}");
    // three prompts per annotated sample, every one sent
    assert_eq!(judge_calls, m["calls"]["judge"].as_u64().unwrap(), "{m}");
    assert_eq!(judge_calls, 3 * s["annotated"].as_u64().unwrap(), "{s}");
    assert_eq!(seg_calls, m["calls"]["segment"].as_u64().unwrap(), "{m}");
    assert!(seg_calls > 40, "{seg_calls}");

    // Another threshold: same servers, no request to either.
    let again = run(
        &rt,
        &tmp.path().join("a"),
        SYNTH,
        &[&judge_set, &seg_set, "threshold=9.0"],
    );
    assert_eq!(again.failed, 0, "{:?}", again.error);
    assert_eq!(judge.request_count(), judge_calls);
    assert_eq!(seg.request_count(), seg_calls);
    let s2 = stats(&again.outputs.as_ref().unwrap().1);
    assert_eq!(again.metrics["calls"]["judge"], 0, "{}", again.metrics);
    assert_eq!(again.metrics["calls"]["segment"], 0, "{}", again.metrics);
    assert!(s2["kept"].as_u64() >= s["kept"].as_u64());

    // The in-process judge and segmenter give the same outcomes.
    let local = run(&rt, &tmp.path().join("b"), SYNTH, &[]);
    assert_eq!(local.failed, 0, "{:?}", local.error);
    let (ldata, lst) = local.outputs.unwrap();
    assert_eq!(samples(&lst), samples(&st));
    assert_eq!(
        std::fs::read(ldata.join("manifest.jsonl")).unwrap(),
        std::fs::read(data.join("manifest.jsonl")).unwrap()
    );
}

/// Copies the raw fixture into `dir` and breaks it: lines that escape the root, name a missing
/// file or have no edited image; a source that is not an image.
fn broken_manifest(dir: &Path) {
    let src = golden().join("raw");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for e in std::fs::read_dir(src.join("images")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("images").join(e.file_name())).unwrap();
    }
    std::fs::write(
        dir.join("images/train-000003_src.png"),
        b"\x89PNG\r\n\x1a\nbroken",
    )
    .unwrap();
    std::fs::write(dir.join("secret.png"), b"outside").unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(src.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.push(r#"{"key":"esc","source":"../secret.png","target":"images/train-000000_tgt.png","instruction":"remove the red square"}"#.into());
    lines.push(r#"{"key":"abs","source":"/etc/passwd","target":"images/train-000000_tgt.png","instruction":"remove the red square"}"#.into());
    lines.push(r#"{"key":"gone","source":"images/nope.png","target":"images/train-000000_tgt.png","instruction":"remove the red square"}"#.into());
    lines.push(r#"{"key":"notarget","source":"images/train-000000_src.png","instruction":"remove the red square"}"#.into());
    lines.push("{this is not json".into());
    std::fs::write(dir.join("manifest.jsonl"), lines.join("\n") + "\n").unwrap();
}

#[test]
fn bad_lines_and_corrupt_images_are_counted_per_sample() {
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("broken");
    broken_manifest(&ds);
    let yaml = format!(
        "name: broken\ntasks:\n  curate:\n    kind: curate\n    params: {{dataset: '{}', shard_size: 4}}\n",
        ds.display()
    );
    let r = run(&rt, &tmp.path().join("w"), &yaml, &[]);
    assert_eq!(r.failed, 0, "{:?}", r.error);
    let (data, st) = r.outputs.unwrap();
    let s = stats(&st);
    assert_eq!(s["samples"], 17, "{s}");
    assert_eq!(s["rejections"]["manifest"], 4, "{s}");
    assert_eq!(s["rejections"]["missing-target"], 1, "{s}");
    assert_eq!(s["rejections"]["corrupt-image"], 1, "{s}");
    assert_eq!(s["annotated"], 11, "{s}");
    let errors = s["errors"].as_array().unwrap();
    let msg = |k: &str| -> String {
        errors
            .iter()
            .find(|e| e["origin"].as_str().unwrap().contains(k) || e["key"] == k)
            .unwrap_or_else(|| panic!("no error for {k}: {s}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        msg("line 13"),
        "`source`: path `../secret.png` leaves the dataset root"
    );
    assert!(msg("line 14").contains("is absolute"));
    assert_eq!(
        msg("line 15"),
        "`source`: file `images/nope.png` does not exist"
    );
    assert!(msg("line 17").starts_with("not a valid record"));
    assert!(
        msg("train-000003").starts_with("the source image does not decode"),
        "{s}"
    );
    assert!(msg("notarget").contains("no `target`"));
    // the curated dataset holds only good samples
    let kept = std::fs::read_to_string(data.join("manifest.jsonl")).unwrap();
    assert_eq!(kept.lines().count() as u64, s["kept"].as_u64().unwrap());
    assert!(!kept.contains("secret") && !kept.contains("train-000003\""));
}

/// The parquet form (HF `datasets` layout: Image structs, list-valued instructions, row groups
/// of 5 read across shard boundaries) gives the manifest form's outcomes; bad rows are
/// per-sample errors.
#[test]
fn parquet_rows_curate_like_the_same_manifest() {
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let pq = golden().join("parquet");
    let yaml = format!(
        "name: pq\ntasks:\n  curate:\n    kind: curate\n    params: {{dataset: '{}', columns: {{key: id}}, shard_size: 3}}\n",
        pq.display()
    );
    let r = run(&rt, &tmp.path().join("p"), &yaml, &[]);
    assert_eq!(r.failed, 0, "{:?}", r.error);
    let (pdata, pst) = r.outputs.unwrap();
    let yaml = format!(
        "name: mf\ntasks:\n  curate:\n    kind: curate\n    params: {{dataset: '{}', shard_size: 3}}\n",
        golden().join("raw").display()
    );
    let r = run(&rt, &tmp.path().join("m"), &yaml, &[]);
    assert_eq!(r.failed, 0, "{:?}", r.error);
    let (mdata, mst) = r.outputs.unwrap();
    let ps = stats(&pst);
    assert_eq!(ps["samples"], 16, "{ps}");
    assert_eq!(ps["rejections"]["corrupt-image"], 1, "{ps}");
    assert_eq!(ps["rejections"]["unreadable"], 3, "{ps}");
    let strip = |v: &Vec<Value>| -> Vec<Value> {
        v.iter()
            .filter(|s| s["status"] == "annotated")
            .map(|s| {
                let mut s = s.clone();
                s.as_object_mut().unwrap().remove("origin");
                s
            })
            .collect()
    };
    let (p, m) = (samples(&pst), samples(&mst));
    assert_eq!(strip(&p).len(), 12);
    assert_eq!(strip(&p), strip(&m));
    let bad: Vec<(&str, &str)> = p
        .iter()
        .filter(|s| s["status"] == "rejected")
        .map(|s| {
            (
                s["key"].as_str().unwrap_or(""),
                s["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert!(
        bad.iter()
            .any(|(k, m)| *k == "bad-image" && m.starts_with("the edited image does not decode"))
    );
    assert!(
        bad.iter()
            .any(|(k, m)| *k == "bad-instr" && m.contains("`instruction`"))
    );
    assert!(
        bad.iter()
            .any(|(k, m)| *k == "bad-path" && m.contains("leaves the dataset root"))
    );
    assert!(
        bad.iter()
            .any(|(k, m)| *k == "bad-nothing" && m.contains("neither `bytes` nor `path`"))
    );
    // the same kept samples (keys, instructions, masks)
    let rows = |d: &Path| -> Vec<(String, String, String)> {
        std::fs::read_to_string(d.join("manifest.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let mask = std::fs::read(d.join(v["edit_mask"].as_str().unwrap())).unwrap();
                (
                    v["key"].as_str().unwrap().to_string(),
                    v["instruction_refined"].as_str().unwrap().to_string(),
                    blake3::hash(&mask).to_hex().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(rows(&pdata), rows(&mdata));

    // A key column with repeats (here: the edit type): every repeat is a per-sample
    // `duplicate-key` rejection, and the curated dataset still has unique keys.
    let yaml = format!(
        "name: dup\ntasks:\n  curate:\n    kind: curate\n    params: {{dataset: '{}', columns: {{key: edit_type}}, shard_size: 3}}\n",
        pq.display()
    );
    let r = run(&rt, &tmp.path().join("d"), &yaml, &[]);
    assert_eq!(r.failed, 0, "{:?}", r.error);
    let (ddata, dst) = r.outputs.unwrap();
    let ds = stats(&dst);
    let mut types: Vec<String> = std::fs::read_to_string(golden().join("raw/manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["edit_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    types.push("replace".into()); // the bad rows' type
    types.sort();
    types.dedup();
    assert_eq!(
        ds["rejections"]["duplicate-key"],
        16 - types.len() as u64,
        "{ds}"
    );
    let keys: Vec<String> = std::fs::read_to_string(ddata.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
}

/// A segmentation server that does not answer fails the task after every shard was tried,
/// commits nothing it could not finish, and names the problem; once it is up, a re-run
/// completes.
#[test]
fn a_silent_segmenter_fails_the_task_and_a_rerun_completes() {
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    // a port nobody listens on (bound, then released)
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "name: down\ntasks:\n  curate:\n    kind: curate\n    params:\n      dataset: '{}'\n      shard_size: 4\n      segmenter: {{kind: http, base_url: 'http://{addr}', timeout_ms: 2000, retry: {{max_attempts: 2, initial_backoff_ms: 10, max_backoff_ms: 20}}}}\n",
        golden().join("raw").display()
    );
    let r = run(&rt, &tmp.path().join("w"), &yaml, &[]);
    assert_eq!(r.failed, 1);
    let log = r.error.unwrap_or_default();
    assert!(
        log.contains("got no answer from the judge or the segmenter")
            || log.contains("no segmentation"),
        "{log}"
    );
    let seg = rt
        .block_on(segment_server::start(
            addr,
            segment_server::ServerConfig::default(),
        ))
        .unwrap();
    let r = run(&rt, &tmp.path().join("w"), &yaml, &[]);
    assert_eq!(r.failed, 0, "{:?}", r.error);
    assert!(seg.request_count() > 0);
    assert_eq!(r.metrics["shards"]["committed_before"], 0, "{}", r.metrics);
    let s = stats(&r.outputs.unwrap().1);
    assert_eq!(s["annotated"], 12, "{s}");
}

/// Shards whose samples all got answers are committed even when others fail: with a flaky
/// segmentation server (HTTP 500 on half the requests, no retries) the first run fails but keeps
/// its good shards; with the server healthy the re-run reads them back and computes only the
/// rest, and ends with what a run against a healthy server gives.
#[test]
fn a_flaky_segmenter_keeps_the_good_shards_for_the_rerun() {
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let flaky_cfg = segment_server::ServerConfig {
        faults: segment_server::FaultPlan {
            rate: 0.5,
            kinds: vec![segment_server::FaultKind::ServerError],
            seed: 11,
            ..Default::default()
        },
        ..Default::default()
    };
    let flaky = rt.block_on(segment_server::start_local(flaky_cfg)).unwrap();
    let addr = flaky.addr();
    let yaml = format!(
        "name: flaky\ntasks:\n  curate:\n    kind: curate\n    params:\n      dataset: '{}'\n      shard_size: 2\n      segmenter: {{kind: http, base_url: 'http://{addr}', retry: {{max_attempts: 1}}}}\n",
        golden().join("raw").display()
    );
    let first = run(&rt, &tmp.path().join("w"), &yaml, &[]);
    assert_eq!(
        first.failed,
        1,
        "the flaky server never failed: {:?}",
        first.outputs.as_ref().map(|o| stats(&o.1))
    );
    let log = first.error.unwrap_or_default();
    let committed = log.lines().filter(|l| l.contains(": committed (")).count();
    let failed = log
        .lines()
        .filter(|l| l.contains("failed on a service (not committed)"))
        .count();
    assert!(committed > 0 && failed > 0, "{log}");
    rt.block_on(flaky.shutdown()); // the port is free again
    let healthy = rt
        .block_on(segment_server::start(
            addr,
            segment_server::ServerConfig::default(),
        ))
        .unwrap();
    let second = run(&rt, &tmp.path().join("w"), &yaml, &[]);
    assert_eq!(second.failed, 0, "{:?}", second.error);
    let m = &second.metrics;
    assert_eq!(m["shards"]["committed_before"], committed as u64, "{m}");
    assert_eq!(m["shards"]["computed"], 6 - committed as u64, "{m}");
    let (data, st) = second.outputs.unwrap();
    // the same result as one run against the healthy server, in a fresh store
    let clean = run(&rt, &tmp.path().join("clean"), &yaml, &[]);
    assert_eq!(clean.failed, 0, "{:?}", clean.error);
    let (cdata, cst) = clean.outputs.unwrap();
    assert_eq!(samples(&st), samples(&cst));
    assert_eq!(
        std::fs::read(data.join("manifest.jsonl")).unwrap(),
        std::fs::read(cdata.join("manifest.jsonl")).unwrap()
    );
    drop(healthy);
}
