//! `kill -9` of the `cocoflow` binary in the middle of the RL loop (`rollout → reward →
//! nft-train → ema`), then `cocoflow run` again: the final RL state is byte-identical to
//! that of an uninterrupted run.

use cocoflow_torch::models::{EditPolicy, TextEncoderConfig, TinyKontext, TinyKontextConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cocoflow");

fn write_base(dir: &Path) -> PathBuf {
    let cfg = TinyKontextConfig {
        num_layers: 2,
        num_attention_heads: 2,
        attention_head_dim: 16,
        mlp_ratio: 2.0,
        timestep_freq_dim: 32,
        text_encoder: TextEncoderConfig {
            hidden_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 64,
            ..TextEncoderConfig::default()
        },
        ..TinyKontextConfig::default()
    };
    let p = dir.join("base");
    TinyKontext::new(&cfg, cocoflow_torch::device::select_device(&[]), 7)
        .unwrap()
        .save(&p)
        .unwrap();
    p
}

fn workflow(base: &Path, dest: &Path) -> String {
    format!(
        r#"name: rl-resume
tasks:
  data:
    kind: synth-data
    params: {{seed: 1, n_train: 12, n_bench: 2, size: 16, max_objects: 2}}
  base:
    kind: shell
    params:
      cmd: 'mkdir -p model && cp -r "$SRC"/. model/'
      env: {{SRC: "{base}"}}
      outputs: {{model: model/}}
  rl:
    loop:
      iterations: 4
      carry:
        state: {{init: base.model, next: ema.state}}
      tasks:
        rollout:
          kind: rollout
          inputs: {{model: base.model, state: carry.state, data: data.train}}
          params: {{seed: 3, groups: 4, k: 4, steps: 6, batch: 8}}
        reward:
          kind: reward
          inputs: {{rollouts: rollout.rollouts, data: data.train}}
          params: {{ban_std: -1.0, max_invalid_fraction: 1.0}}
        train:
          kind: nft-train
          inputs: {{model: base.model, state: carry.state, rollouts: rollout.rollouts, rewards: reward.rewards}}
          params: {{seed: 5, micro_batch: 8, lambda_ner: 0.2, lambda_er: 0.2, lr: 0.01}}
        ema:
          kind: ema
          inputs: {{state: train.state}}
  export:
    kind: shell
    inputs: {{state: rl.state}}
    params:
      cmd: 'rm -rf "$DEST" && cp -r "$COCOFLOW_INPUT_STATE" "$DEST" && echo ok > done.txt'
      env: {{DEST: "{dest}"}}
      outputs: {{done: done.txt}}
"#,
        base = base.display(),
        dest = dest.display()
    )
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

/// Whether a file named `name` exists anywhere under `dir`.
fn find(dir: &Path, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        p.file_name().is_some_and(|n| n == name) || (p.is_dir() && find(&p, name))
    })
}

fn run(dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["run", "w.yaml", "--gpus", "none"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kill_9_mid_loop_then_rerun_gives_the_same_final_state() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());

    // Uninterrupted.
    let clean = tmp.path().join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    let clean_out = tmp.path().join("clean-state");
    std::fs::write(clean.join("w.yaml"), workflow(&base, &clean_out)).unwrap();
    let (code, err) = run(&clean);
    assert_eq!(code, 0, "{err}");

    // Killed while iteration 2's training runs (or just after), then run again.
    let killed = tmp.path().join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let killed_out = tmp.path().join("killed-state");
    std::fs::write(killed.join("w.yaml"), workflow(&base, &killed_out)).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "w.yaml", "--gpus", "none"])
        .current_dir(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let logs = killed.join(".cocoflow");
    let mut finished_early = false;
    loop {
        if find(&logs, "rl_2_.train.1.log") {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            // Too fast to catch: still a valid (if weaker) check below.
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
        assert!(
            !killed_out.exists(),
            "the run finished before it was killed"
        );
    }
    let (code, err) = run(&killed);
    assert_eq!(code, 0, "{err}");
    eprintln!("re-run after kill:\n{err}");
    assert!(!finished_early || err.contains("cached"), "{err}");

    let (a, b) = (files(&clean_out), files(&killed_out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "`{k}` differs after kill -9 and re-run");
    }
    let info: serde_json::Value = serde_json::from_slice(&a["state.json"]).unwrap();
    assert_eq!(info["step"], 4);
}
