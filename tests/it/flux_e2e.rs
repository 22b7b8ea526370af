//! The whole CoCoEdit workflow on FLUX.1 Kontext: `cocoflow run workflows/cocoedit.yaml
//! --params configs/presets/flux-kontext.yaml --set model=<the tiny random repository>` with
//! small settings runs synth-data → base by reference → eval → 2 × (rollout → reward →
//! nft-train → ema → eval); the weights are never copied into the store; each worker loads the
//! FLUX pipeline at most once (the per-worker model cache) and without its text encoders
//! (`encode-prompts` made the prompt encodings); a run killed with SIGKILL during iteration 2
//! and run again ends with byte-identical RL state and evaluations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cocoflow");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn args() -> Vec<String> {
    let r = root();
    let mut v: Vec<String> = vec![
        "run".into(),
        r.join("workflows/cocoedit.yaml").display().to_string(),
        "--params".into(),
        r.join("configs/presets/flux-kontext.yaml")
            .display()
            .to_string(),
        "--gpus".into(),
        "none".into(),
    ];
    let model = r.join("torch/tests/golden/flux/tiny-flux-kontext");
    for s in [
        format!("model={}", model.display()),
        "iterations=2".into(),
        "eval_every=1".into(),
        "n_train=16".into(),
        "n_bench=4".into(),
        "groups=2".into(),
        "k=2".into(),
        "steps=2".into(),
        "eval_steps=2".into(),
    ] {
        v.push("--set".into());
        v.push(s);
    }
    v
}

fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("COCOFLOW_DIGEST_CACHE", dir.join("digests.json"));
    c
}

fn run(dir: &Path) -> (i32, String) {
    let out = cmd(dir).args(args()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file of the run's RL states and evaluations (`cocoflow export`), by relative path.
fn exported(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let to = dir.join("exported");
    for task in ["ema", "eval"] {
        let out = cmd(dir)
            .args(["export", "--task", task, "--to"])
            .arg(&to)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&to, &to, &mut out);
    out
}

fn find(dir: &Path, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        p.file_name().is_some_and(|n| n == name) || (p.is_dir() && find(&p, name))
    })
}

/// The text of the first file named `name` under `dir`.
fn read_log(dir: &Path, name: &str) -> String {
    fn search(dir: &Path, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
            if p.is_dir()
                && let Some(f) = search(&p, name)
            {
                return Some(f);
            }
        }
        None
    }
    let path = search(dir, name).unwrap_or_else(|| panic!("no `{name}` under {}", dir.display()));
    std::fs::read_to_string(path).unwrap()
}

/// The largest file under `dir` (bytes).
fn largest(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                largest(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn cocoedit_on_flux_runs_and_resumes_after_kill_9_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    let (code, err) = run(&clean);
    assert_eq!(code, 0, "{err}");
    // The model cache: 2 rollouts (sampling + VAE), 2 nft-train and 3 evals use the base; a
    // worker loads it once (the text encoders not at all: encode-prompts runs them alone,
    // outside the cache).
    let status = cmd(&clean).args(["status", "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let (loads, workers) = (
        st["run"]["model_loads"].as_u64().unwrap(),
        st["run"]["workers_started"].as_u64().unwrap(),
    );
    eprintln!("flux e2e: {loads} model loads by {workers} workers");
    assert!(loads >= 1 && loads <= workers, "{}", st["run"]);
    assert!(workers < 7, "{}", st["run"]);
    let logs = clean.join(".cocoflow");
    assert!(find(&logs, "prompts.1.log"), "encode-prompts ran");
    // rollout, nft-train and eval conditioned on the cached encodings, without text encoders
    for task in ["rl_1_.rollout", "rl_1_.train", "rl_2_.eval"] {
        let log = read_log(&logs, &format!("{task}.1.log"));
        assert!(
            log.contains("the text encoders are not loaded"),
            "{task}: {log}"
        );
    }
    let a = exported(&clean);
    let states: Vec<&String> = a.keys().filter(|k| k.ends_with("state.json")).collect();
    assert_eq!(states.len(), 2, "{:?}", a.keys().collect::<Vec<_>>());
    let last = a
        .keys()
        .find(|k| k.starts_with("rl[2].ema/") && k.ends_with("state.json"));
    let info: serde_json::Value = serde_json::from_slice(&a[last.unwrap()]).unwrap();
    assert_eq!(
        (info["iteration"].as_u64(), info["step"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(info["lora"]["r"], 32);
    assert!(
        a.keys()
            .any(|k| k.starts_with("rl[2].eval/") && k.ends_with("table.json"))
    );
    // the transformer shards (the repository's largest files) are not in the store
    let shard = root()
        .join("torch/tests/golden/flux/tiny-flux-kontext/transformer")
        .join("diffusion_pytorch_model-00001-of-00004.safetensors");
    assert!(!find(
        &clean.join(".cocoflow"),
        shard.file_name().unwrap().to_str().unwrap()
    ));
    assert!(largest(&clean.join(".cocoflow")) < 1 << 20);

    // killed during iteration 2's training (or just after), then run again
    let killed = tmp.path().join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let mut child = cmd(&killed)
        .args(args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut finished_early = false;
    loop {
        if find(&killed.join(".cocoflow"), "rl_2_.train.1.log") {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("the run ended before the kill: {status}");
            finished_early = true;
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    if !finished_early {
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let (code, err) = run(&killed);
    assert_eq!(code, 0, "{err}");
    eprintln!("re-run after kill:\n{err}");
    let b = exported(&killed);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "`{k}` differs after kill -9 and re-run");
    }
}
