//! The whole CoCoEdit workflow on Qwen-Image-Edit: `cocoflow run workflows/cocoedit.yaml
//! --params configs/presets/qwen-image-edit.yaml --set model=<the tiny random repository>` with
//! small settings (32-pixel images: Qwen needs multiples of 16) runs synth-data → base by
//! reference → eval → 2 × (rollout → reward → nft-train → ema → eval) with the preset's true
//! CFG (1.0 in rollouts, 4.0 in evaluations); the weights are never copied into the store; a
//! run killed with SIGKILL during iteration 2 and run again ends with byte-identical RL state
//! and evaluations.

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
        r.join("configs/presets/qwen-image-edit.yaml")
            .display()
            .to_string(),
        "--gpus".into(),
        "none".into(),
    ];
    let model = r.join("torch/tests/golden/qwen/tiny-qwen-image-edit");
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
        // The tiny random VAE decodes nearly the same image from any latent, so every group's
        // rewards are within the default ban_std (0.02): keep every group, so that nft-train
        // takes its optimiser steps.
        "ban_std=-1".into(),
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
fn cocoedit_on_qwen_runs_and_resumes_after_kill_9_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    let (code, err) = run(&clean);
    assert_eq!(code, 0, "{err}");
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
    assert_eq!(info["optimizer"]["t"], 2, "an AdamW step per iteration");
    // the base is the Qwen repository, by reference
    let logs = clean.join(".cocoflow/logs");
    let base_log = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("base.1.log"))
        .find(|p| p.is_file())
        .expect("base.1.log");
    let text = std::fs::read_to_string(&base_log).unwrap();
    assert!(
        text.contains("model by reference:") && text.contains("tiny-qwen-image-edit"),
        "{text}"
    );
    assert!(
        a.keys()
            .any(|k| k.starts_with("rl[2].eval/") && k.ends_with("table.json"))
    );
    // the Qwen2.5-VL encodings are made once, by `encode-prompts`, keyed by (prompt, condition
    // image); rollouts, training and evaluations take them from there and never load the encoder
    let log = |name: &str| {
        let p = std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .map(|e| e.path().join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no {name}"));
        std::fs::read_to_string(p).unwrap()
    };
    let text = log("prompts.1.log");
    assert!(
        text.contains("(prompt, condition image) pairs of") && text.contains("Qwen2.5-VL"),
        "{text}"
    );
    for name in [
        "rl_1_.rollout.1.log",
        "rl_2_.train.1.log",
        "rl_2_.eval.1.log",
    ] {
        let text = log(name);
        assert!(
            text.contains("the text encoders are not loaded"),
            "{name}: {text}"
        );
        assert!(!text.contains("were made here"), "{name}: {text}");
    }
    // the transformer shards (the repository's largest files) are not in the store
    let shard = root()
        .join("torch/tests/golden/qwen/tiny-qwen-image-edit/transformer")
        .join("diffusion_pytorch_model-00001-of-00007.safetensors");
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
