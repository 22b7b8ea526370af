//! `kill -9` of `cocoflow run workflows/cocoedit.yaml` (small settings) at three moments —
//! mid-pretrain (after a checkpoint), mid-RL loop, mid-evaluation — each followed by a re-run,
//! and `cocoflow export` of the finished run: every exported file (outputs of every instance,
//! metadata files such as `pretrain.json`, `state.json`, `table.json` included) is
//! byte-identical to the export of an uninterrupted run. Artifacts hold no timings, attempt
//! counts or host facts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cocoflow");

const SMALL: &[&str] = &[
    "--set",
    "n_train=48",
    "--set",
    "n_bench=16",
    "--set",
    "pretrain_steps=120",
    "--set",
    "iterations=3",
    "--set",
    "eval_every=1",
    "--set",
    "groups=4",
    "--set",
    "k=4",
    "--set",
    "steps=4",
    "--set",
    "eval_steps=4",
];

fn args(extra: &[&str]) -> Vec<String> {
    let wf = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/cocoedit.yaml");
    let mut v = vec!["run".to_string(), wf.display().to_string()];
    v.extend(SMALL.iter().map(|s| s.to_string()));
    v.extend(["--gpus", "none", "-q"].map(String::from));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_to_end(dir: &Path) {
    let out = Command::new(BIN)
        .args(args(&[]))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn export(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = Command::new(BIN)
        .args(["export", "--to", "exported"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    files(&dir.join("exported"))
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every attempt log of the state directory (`.cocoflow/logs/<run>/<instance>.<n>.log`).
fn logs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(runs) = std::fs::read_dir(dir.join(".cocoflow/logs")) {
        for r in runs.flatten() {
            if let Ok(ls) = std::fs::read_dir(r.path()) {
                for l in ls.flatten() {
                    out.push((l.file_name().to_string_lossy().into_owned(), l.path()));
                }
            }
        }
    }
    out
}

/// Starts a run and kills it with SIGKILL as soon as `ready` holds for the attempt logs.
fn kill_when(dir: &Path, what: &str, ready: impl Fn(&[(String, PathBuf)]) -> bool) {
    let err_path = dir.join(format!("stderr-{}.txt", what.replace(' ', "-")));
    let mut child = Command::new(BIN)
        .args(args(&[]))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if ready(&logs(dir)) {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before it could be killed {what}; attempt logs {:?}; stderr:\n{}",
                logs(dir).iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "never reached the moment {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_at_three_moments_the_run_exports_the_files_of_an_uninterrupted_one() {
    let clean = tempfile::tempdir().unwrap();
    run_to_end(clean.path());
    let want = export(clean.path());
    assert!(
        want.keys().any(|k| k.ends_with("pretrain.json"))
            && want.keys().any(|k| k.ends_with("state.json"))
            && want.keys().any(|k| k.ends_with("table.json")),
        "{:?}",
        want.keys().collect::<Vec<_>>()
    );

    let d = tempfile::tempdir().unwrap();
    // 1. mid-pretrain, after its checkpoint at step 50 (the log line of step 75 is written)
    kill_when(d.path(), "mid-pretrain", |ls| {
        ls.iter().any(|(n, p)| {
            n.starts_with("base.")
                && std::fs::read_to_string(p).is_ok_and(|t| t.contains("step 75/"))
        })
    });
    // 2. mid-loop: once the second iteration's rollout has started
    kill_when(d.path(), "mid-loop", |ls| {
        ls.iter().any(|(n, _)| n.starts_with("rl_2_.rollout."))
    });
    // 3. mid-evaluation: once the third iteration's evaluation has started
    kill_when(d.path(), "mid-eval", |ls| {
        ls.iter().any(|(n, _)| n.starts_with("rl_3_.eval."))
    });
    run_to_end(d.path());
    let got = export(d.path());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the exports hold different files"
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "`{k}` differs after the kills");
    }
    let resumed_pretrain = logs(d.path())
        .iter()
        .filter(|(n, _)| n.starts_with("base."))
        .any(|(_, p)| {
            std::fs::read_to_string(p).is_ok_and(|t| t.contains("resumed from the checkpoint"))
        });
    assert!(
        resumed_pretrain,
        "pretrain did not resume from its checkpoint"
    );
}
