//! The RL loop kinds (`rollout`, `reward`, `nft-train`, `ema`) through the real engine: a loop
//! of 3 iterations runs, is deterministic across fresh stores, and continuing from the state
//! saved after iteration 1 ends in the same bytes as the continuous run. Plus the state's
//! invariants (fresh state = base model, EMA extremes) and parameter errors.

use cocoflow_engine::kind::Declared;
use cocoflow_engine::kind::TaskKind;
use cocoflow_torch::kinds::rollout::Rollout;
use cocoflow_torch::kinds::{ema::EmaKind, nft_train::NftTrain, reward::RewardKind};
use cocoflow_torch::models::checkpoint::read_safetensors;
use cocoflow_torch::models::peft::ADAPTER_WEIGHTS;
use cocoflow_torch::models::{
    ActiveAdapter, BaseModel, EditPolicy, THETA, THETA_OLD, TextEncoderConfig, TinyKontext,
    TinyKontextConfig,
};
use cocoflow_torch::nft::ema::EmaSchedule;
use cocoflow_torch::rl;
use cocoflow_torch::rl::state::{self, StateInfo};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::common::{files, run};

fn small_config() -> TinyKontextConfig {
    TinyKontextConfig {
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
    }
}

/// A random base model directory.
fn write_base(dir: &Path) -> PathBuf {
    let p = dir.join("base");
    TinyKontext::new(&small_config(), Device::Cpu, 7)
        .unwrap()
        .save(&p)
        .unwrap();
    p
}

const KINDS: &str = r#"
      tasks:
        rollout:
          kind: rollout
          inputs: {model: base.model, state: carry.state, data: data.train}
          params: {seed: 3, groups: 3, k: 3, steps: 4, batch: 4}
        reward:
          kind: reward
          inputs: {rollouts: rollout.rollouts, data: data.train}
          params: {ban_std: -1.0, max_invalid_fraction: 1.0}
        train:
          kind: nft-train
          inputs: {model: base.model, state: carry.state, rollouts: rollout.rollouts, rewards: reward.rewards}
          params: {seed: 5, micro_batch: 4, lambda_ner: 0.2, lambda_er: 0.2, lr: 0.01}
        ema:
          kind: ema
          inputs: {state: train.state}
"#;

/// The loop workflow; `init` is a directory copied in as the carry's initial value (the base
/// model, or a saved state).
fn workflow(base: &Path, init: Option<&Path>, iterations: u32) -> String {
    let init_task = match init {
        None => String::new(),
        Some(p) => format!(
            "  init:\n    kind: shell\n    params:\n      cmd: 'mkdir -p st && cp -r \"$SRC\"/. st/'\n      env: {{SRC: \"{}\"}}\n      outputs: {{state: st/}}\n",
            p.display()
        ),
    };
    let init_ref = if init.is_some() {
        "init.state"
    } else {
        "base.model"
    };
    format!(
        r#"name: rl-test
tasks:
  data:
    kind: synth-data
    params: {{seed: 1, n_train: 10, n_bench: 2, size: 16, max_objects: 2}}
  base:
    kind: shell
    params:
      cmd: 'mkdir -p model && cp -r "$SRC"/. model/'
      env: {{SRC: "{base}"}}
      outputs: {{model: model/}}
{init_task}  rl:
    loop:
      iterations: {iterations}
      carry:
        state: {{init: {init_ref}, next: ema.state}}
{KINDS}"#,
        base = base.display()
    )
}

fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "file lists differ"
    );
    for (k, v) in &fa {
        assert!(
            v == &fb[k],
            "`{k}` differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn info(dir: &Path) -> StateInfo {
    state::read_info(dir).unwrap().expect("a saved state")
}

fn adapter(dir: &Path, which: &str) -> BTreeMap<String, Tensor> {
    read_safetensors(&dir.join(which).join(ADAPTER_WEIGHTS)).unwrap()
}

fn max_abs(t: &BTreeMap<String, Tensor>, part: &str) -> f64 {
    t.iter()
        .filter(|(k, _)| k.contains(part))
        .map(|(_, v)| v.abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// Loop runs, deterministic across fresh stores, and resumable from a saved state.
#[test]
fn loop_runs_is_deterministic_and_resumes_bit_identically() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());

    // (1) three iterations through the engine.
    let t0 = std::time::Instant::now();
    let a = run(&tmp.path().join("a"), &workflow(&base, None, 3));
    eprintln!("3 iterations in {:.1?}", t0.elapsed());
    assert_eq!(a.report.succeeded, 2 + 3 * 4, "{:?}", a.report);
    let final_a = a.output("rl[3].ema", "state");
    let i = info(&final_a);
    assert_eq!((i.iteration, i.step, i.optimizer.t), (3, 3, 3));
    assert_eq!(i.history.len(), 3);
    assert_eq!(i.reward_norm.len(), 3);
    assert_eq!(i.ema.last_step, Some(3));
    assert!((i.ema.last_eta.unwrap() - 0.003).abs() < 1e-12);
    // θ moved away from B = 0, and θ_old follows it only partly.
    let theta = adapter(&final_a, state::THETA_DIR);
    let old = adapter(&final_a, state::THETA_OLD_DIR);
    assert!(max_abs(&theta, "lora_B") > 0.0);
    assert!(max_abs(&old, "lora_B") > 0.0);
    assert!(theta.iter().any(|(k, v)| !v.equal(&old[k])));
    // Rollouts and rewards of each iteration exist and match up.
    for it in 1..=3u64 {
        let r = a.output(&format!("rl[{it}].rollout"), "rollouts");
        let m = cocoflow_torch::artifacts::rollouts::RolloutManifest::read(&r).unwrap();
        assert_eq!(m.iteration, it - 1);
        assert_eq!(m.samples.len(), 9);
        assert!(r.join(&m.samples[8].image).is_file());
        let metrics = a.metrics(&format!("rl[{it}].train"));
        eprintln!(
            "iteration {it}: train {metrics:?}\n  reward {:?}",
            a.metrics(&format!("rl[{it}].reward"))
        );
        assert!(metrics["grad_norm"].as_f64().unwrap() > 0.0, "{metrics:?}");
        for k in ["policy", "kl", "ner", "er", "ner_active", "er_active"] {
            assert!(metrics.contains_key(k), "{k}: {metrics:?}");
        }
        let rm = a.metrics(&format!("rl[{it}].reward"));
        assert!(rm.contains_key("r_sim_mean") && rm.contains_key("banned_groups"));
    }
    // Different iterations pick different prompts or seeds.
    let m1 = cocoflow_torch::artifacts::rollouts::RolloutManifest::read(
        &a.output("rl[1].rollout", "rollouts"),
    )
    .unwrap();
    let m2 = cocoflow_torch::artifacts::rollouts::RolloutManifest::read(
        &a.output("rl[2].rollout", "rollouts"),
    )
    .unwrap();
    assert_ne!(m1.samples[0].seed, m2.samples[0].seed);
    assert_eq!(m1.theta_old, "fresh");
    assert_ne!(m2.theta_old, "fresh");

    // (2) the same workflow in a fresh store gives the same bytes.
    let b = run(&tmp.path().join("b"), &workflow(&base, None, 3));
    assert_eq!(b.report.succeeded, 14);
    assert_same_files(&final_a, &b.output("rl[3].ema", "state"));
    assert_same_files(
        &a.output("rl[3].rollout", "rollouts"),
        &b.output("rl[3].rollout", "rollouts"),
    );

    // (3) continuing from the state saved after iteration 1 (copied out of the store, as a
    // checkpoint would be) for 2 more iterations equals the continuous run.
    let saved = tmp.path().join("saved-after-1");
    state::copy_tree(&a.output("rl[1].ema", "state"), &saved).unwrap();
    assert_eq!(info(&saved).iteration, 1);
    let c = run(&tmp.path().join("c"), &workflow(&base, Some(&saved), 2));
    assert_eq!(c.report.succeeded, 3 + 2 * 4);
    assert_same_files(&final_a, &c.output("rl[2].ema", "state"));
}

/// A short last micro-batch weighs as much per sample as a full one (issue 15, fix 6): one
/// NFT step over 9 samples with micro-batches of 4 (4 + 4 + 1) gives the gradient and loss of
/// one micro-batch of 9.
#[test]
fn rollouts_use_refined_instructions_and_the_gradient_does_not_depend_on_the_micro_batch_size() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());
    let wf = workflow(&base, None, 1);
    assert!(wf.contains("micro_batch: 4"));
    let a = run(&tmp.path().join("a"), &wf);
    let b = run(
        &tmp.path().join("b"),
        &wf.replace("micro_batch: 4", "micro_batch: 9"),
    );
    // Issue 15, fix 2: the rollout conditions (and the reward judges) on the refined
    // instruction of each record (paper §3.1), which the synthetic train split has.
    let ds = cocoflow_torch::data::Dataset::open(&a.output("data", "train")).unwrap();
    let m = cocoflow_torch::artifacts::rollouts::RolloutManifest::read(
        &a.output("rl[1].rollout", "rollouts"),
    )
    .unwrap();
    for g in &m.groups {
        let r = ds.records.iter().find(|r| r.key == g.record).unwrap();
        let refined = r.instruction_refined.as_deref().expect("refined in train");
        assert_ne!(refined, r.instruction);
        assert_eq!(g.instruction, refined, "group {}", g.index);
    }
    let (ma, mb) = (a.metrics("rl[1].train"), b.metrics("rl[1].train"));
    assert_eq!(ma["used"].as_f64(), Some(9.0), "{ma:?}");
    for k in ["grad_norm", "loss", "policy", "kl"] {
        let (x, y) = (ma[k].as_f64().unwrap(), mb[k].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-5 * y.abs().max(1e-12),
            "{k}: micro-batches of 4 give {x}, one of 9 gives {y}"
        );
    }
}

/// (5) A fresh state from the base model: θ_old = θ, B = 0, and every adapter's outputs equal
/// the base model's exactly.
#[test]
fn fresh_state_equals_the_base_model() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());
    let lora = cocoflow_torch::models::LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    };
    let st = state::load(&BaseModel::uncached(&base), &base, Device::Cpu, &lora).unwrap();
    assert!(st.fresh);
    assert_eq!((st.info.iteration, st.info.step), (0, 0));
    let th = st.model.adapter_variables(THETA).unwrap();
    let old = st.model.adapter_variables(THETA_OLD).unwrap();
    assert_eq!(th.len(), old.len());
    for (k, v) in &th {
        assert!(v.equal(&old[k]), "{k}");
        if k.contains("lora_B") {
            assert_eq!(v.abs().max().double_value(&[]), 0.0, "{k}");
        }
    }
    let m = &st.model;
    let src = Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let z = m.encode(&src).unwrap();
    let cond = m
        .condition(&z, &["turn the red circle blue", "remove the square"])
        .unwrap();
    let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.3f32, 0.8]);
    let v_ref = m
        .velocity_with(&x, &t, &cond, &ActiveAdapter::Off, None)
        .unwrap();
    let v_th = m
        .velocity_with(&x, &t, &cond, &ActiveAdapter::theta(), None)
        .unwrap();
    let v_old = m
        .velocity_with(&x, &t, &cond, &ActiveAdapter::theta_old(), None)
        .unwrap();
    assert!(v_ref.equal(&v_th) && v_ref.equal(&v_old));
    // Saved and loaded again: the same adapters, and the rollout policy of a base-dir state is
    // the base model itself.
    let saved = tmp.path().join("s");
    st.save(&saved).unwrap();
    let again = state::load(&BaseModel::uncached(&base), &saved, Device::Cpu, &lora).unwrap();
    assert!(!again.fresh);
    for (k, v) in again.model.adapter_variables(THETA).unwrap() {
        assert!(v.equal(&th[k.as_str()]), "{k}");
    }
    // A rank that does not match the saved state is an error naming the param.
    let err = state::load(
        &BaseModel::uncached(&base),
        &saved,
        Device::Cpu,
        &cocoflow_torch::models::LoraConfig {
            r: 8,
            lora_alpha: 8.0,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("`lora_rank`"), "{err}");
}

/// (4) EMA with η = 0 copies θ into θ_old; with η = 1 keeps θ_old.
#[test]
fn ema_extremes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());
    let lora = cocoflow_torch::models::LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    };
    let st = state::load(&BaseModel::uncached(&base), &base, Device::Cpu, &lora).unwrap();
    // Make θ differ from θ_old.
    tch::no_grad(|| {
        for (_, v) in st.model.adapter_variables(THETA).unwrap() {
            let _ = v.shallow_clone().f_add_(&(v.randn_like() * 0.1));
        }
    });
    let dir = tmp.path().join("s");
    st.save(&dir).unwrap();
    let theta = adapter(&dir, state::THETA_DIR);
    let old0 = adapter(&dir, state::THETA_OLD_DIR);
    assert!(theta.iter().any(|(k, v)| !v.equal(&old0[k])));

    let keep = tmp.path().join("keep");
    state::copy_tree(&dir, &keep).unwrap();
    let eta = rl::state::apply_ema(&keep, &EmaSchedule::Constant { eta: 1.0 }, json!({})).unwrap();
    assert_eq!(eta, 1.0);
    let old1 = adapter(&keep, state::THETA_OLD_DIR);
    assert!(old1.iter().all(|(k, v)| v.equal(&old0[k])));
    // A second EMA after the same step is refused.
    let err =
        rl::state::apply_ema(&keep, &EmaSchedule::Constant { eta: 1.0 }, json!({})).unwrap_err();
    assert!(err.to_string().contains("already applied"), "{err}");

    let copy = tmp.path().join("copy");
    state::copy_tree(&dir, &copy).unwrap();
    rl::state::apply_ema(&copy, &EmaSchedule::Constant { eta: 0.0 }, json!({})).unwrap();
    let old2 = adapter(&copy, state::THETA_OLD_DIR);
    assert!(old2.iter().all(|(k, v)| v.equal(&theta[k])));
    assert_eq!(info(&copy).ema.last_eta, Some(0.0));
}

/// Bad params are rejected with the key's path.
#[test]
fn bad_params_name_the_key() {
    let cases: Vec<(Box<dyn TaskKind>, serde_json::Value, &str)> = vec![
        (Box::new(Declared(Rollout)), json!({"groups": 0}), "groups"),
        (Box::new(Declared(Rollout)), json!({"steps": 0}), "steps"),
        (
            Box::new(Declared(Rollout)),
            json!({"sampler": "heun"}),
            "sampler",
        ),
        (Box::new(Declared(Rollout)), json!({"groupz": 3}), "groupz"),
        (Box::new(Declared(RewardKind)), json!({"w_s": 2.0}), "w_s"),
        (
            Box::new(Declared(RewardKind)),
            json!({"max_invalid_fraction": -0.1}),
            "max_invalid_fraction",
        ),
        (
            Box::new(Declared(RewardKind)),
            json!({"normaliser": {"mode": "constant", "value": 0.0}}),
            "normalizer.value",
        ),
        (
            Box::new(Declared(RewardKind)),
            json!({"judge": {"kind": "openai", "base_url": "", "model": "m"}}),
            "judge.base_url",
        ),
        (Box::new(Declared(NftTrain)), json!({"lr": -1.0}), "lr"),
        (
            Box::new(Declared(NftTrain)),
            json!({"micro_batch": 0}),
            "micro_batch",
        ),
        (
            Box::new(Declared(NftTrain)),
            json!({"lora_rank": 0}),
            "lora_rank",
        ),
        (
            Box::new(Declared(NftTrain)),
            json!({"timestep_fraction": 1.5}),
            "timestep_fraction",
        ),
        (
            Box::new(Declared(NftTrain)),
            json!({"mask_down": "avg"}),
            "mask_down",
        ),
        (
            Box::new(Declared(EmaKind)),
            json!({"decay": {"schedule": "constant", "eta": 2.0}}),
            "decay.eta",
        ),
        (
            Box::new(Declared(EmaKind)),
            json!({"decay": {"schedule": "linear-capped", "cap": 1.5}}),
            "decay.cap",
        ),
    ];
    for (kind, params, path) in cases {
        let err = kind.check_params(&params).unwrap_err();
        assert_eq!(err.path, path, "{} {params}: {err:?}", kind.name());
        if path == "groupz" {
            assert!(err.message.contains("unknown field"), "{err:?}");
        }
    }
    // Defaults are accepted and canonical.
    for kind in [
        Box::new(Declared(Rollout)) as Box<dyn TaskKind>,
        Box::new(Declared(RewardKind)),
        Box::new(Declared(NftTrain)),
        Box::new(Declared(EmaKind)),
    ] {
        let v = kind.check_params(&json!({})).unwrap();
        assert_eq!(kind.check_params(&v).unwrap(), v, "{}", kind.name());
    }
    let v = Declared(NftTrain).check_params(&json!({})).unwrap();
    assert_eq!(v["lora_rank"], 8);
    assert_eq!(v["lr"], 3e-4);
    // Inputs are checked by name.
    let e = Declared(Rollout)
        .check_inputs(&json!({}), &["model", "data"])
        .unwrap_err();
    assert!(e.contains("missing input(s) `state`"), "{e}");
}

/// Data parallelism on the CPU (issue 17): the same 3-iteration loop with 1, 2 and 4 replicas
/// (`cpu_replicas` on `rollout` and `nft-train`): the first iteration's rollouts are the same
/// bytes (shards are whole sampler batches; per-sample seeds), and every iteration's losses
/// and gradient norm, and the final θ and θ_old, agree within 1e-6 relative (the replicas'
/// gradients are summed in another order than one replica accumulates them); the first
/// iteration's evaluation report (`eval` with `cpu_replicas`) is the same bytes.
#[test]
fn data_parallel_replicas_give_the_same_rollouts_and_training() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());
    let wf = workflow(&base, None, 3);
    let runs: Vec<_> = [1usize, 2, 4]
        .iter()
        .map(|&n| {
            let mut w = wf
                .replace(
                    "micro_batch: 4,",
                    &format!("micro_batch: 2, cpu_replicas: {n},"),
                )
                .replace("batch: 4}", &format!("batch: 2, cpu_replicas: {n}}}"));
            assert!(w.contains(&format!("batch: 2, cpu_replicas: {n}}}")), "{w}");
            // an evaluation in the loop as well (the loop's tasks come last)
            w.push_str(&format!(
                "        eval:\n          kind: eval\n          inputs: {{model: base.model, adapter: ema.state, data: data.bench}}\n          params: {{seed: 2, batch_size: 1, cpu_replicas: {n}, sampler: {{steps: 2}}}}\n"
            ));
            run(&tmp.path().join(format!("r{n}")), &w)
        })
        .collect();
    let log = runs[2].log("rl[1].train");
    assert!(log.contains("data-parallel over 4 replicas"), "{log}");
    // 9 samples in whole batches of 2 over 4 replicas: shards of 4, 4 and 1 (3 replicas busy)
    let log = runs[2].log("rl[1].rollout");
    assert!(
        log.contains("data-parallel over 3 replicas") && log.contains("shards of 4 samples"),
        "{log}"
    );
    for r in &runs[1..] {
        assert_same_files(
            &runs[0].output("rl[1].rollout", "rollouts"),
            &r.output("rl[1].rollout", "rollouts"),
        );
    }
    // evaluations: whole batches edited per replica, the same report bytes (iteration 1,
    // where the evaluated adapters are the same bytes)
    let log = runs[2].log("rl[1].eval");
    assert!(log.contains("data-parallel over 4 replicas"), "{log}");
    let report = |r: &crate::common::Run| {
        let mut f = files(&r.output("rl[1].eval", "report"));
        // the task's params (with `cpu_replicas`) are recorded in table.json: compare the rest
        let mut t: serde_json::Value = serde_json::from_slice(&f["table.json"]).unwrap();
        t.as_object_mut().unwrap().remove("params");
        f.insert("table.json".into(), serde_json::to_vec(&t).unwrap());
        f
    };
    let r0 = report(&runs[0]);
    assert!(r0.keys().any(|k| k.ends_with(".png")), "{:?}", r0.keys());
    for r in &runs[1..] {
        let f = report(r);
        assert_eq!(f.keys().collect::<Vec<_>>(), r0.keys().collect::<Vec<_>>());
        for (k, v) in &r0 {
            assert!(v == &f[k], "eval report `{k}` differs with replicas");
        }
    }
    let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-12);
    for it in 1..=3 {
        let name = format!("rl[{it}].train");
        let m0 = runs[0].metrics(&name);
        assert_eq!(m0["used"].as_f64(), Some(9.0), "{m0:?}");
        for r in &runs[1..] {
            let m = r.metrics(&name);
            for k in ["loss", "policy", "kl", "grad_norm"] {
                let (x, y) = (m[k].as_f64().unwrap(), m0[k].as_f64().unwrap());
                assert!(rel(x, y) <= 1e-6, "{name} {k}: {x} vs one replica's {y}");
            }
        }
    }
    let last = |r: &crate::common::Run| r.output("rl[3].ema", "state");
    // relative error of the whole adapter, ‖θ_R − θ_1‖₂ / ‖θ_1‖₂ (AdamW's g/√v magnifies the
    // reordering noise of components whose gradient is near zero, so single elements differ
    // by up to ~1e-6 absolute)
    for which in [state::THETA_DIR, state::THETA_OLD_DIR] {
        let a0 = adapter(&last(&runs[0]), which);
        for (i, r) in runs[1..].iter().enumerate() {
            let a = adapter(&last(r), which);
            let (mut d2, mut n2) = (0.0, 0.0);
            for (k, v) in &a0 {
                d2 += (&a[k] - v).square().sum(Kind::Double).double_value(&[]);
                n2 += v.square().sum(Kind::Double).double_value(&[]);
            }
            let e = (d2 / n2).sqrt();
            eprintln!(
                "{which}: {} replicas vs 1: relative error {e:.3e}",
                [2, 4][i]
            );
            assert!(e <= 1e-6, "{which}: relative error {e:.3e}");
        }
    }
}

/// `pretrain` with 1, 2 and 3 CPU replicas (`cpu_replicas`: each step's batch split into
/// contiguous parts whose losses share the whole batch's denominator, gradients summed):
/// the loss of every step agrees within 1e-5 relative and the final weights within 2e-5
/// (‖Δ‖/‖w‖; measured 4e-6 and 7e-6: AdamW's g/√v turns the reordering noise of near-zero
/// gradient components into steps of up to the learning rate).
#[test]
fn data_parallel_pretrain_gives_the_same_model() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let wf = |n: usize| {
        format!(
            "name: pt\ntasks:\n  data: {{kind: synth-data, params: {{seed: 1, n_train: 24, n_bench: 2, size: 16, max_objects: 2}}}}\n  base:\n    kind: pretrain\n    inputs: {{data: data.train}}\n    params: {{seed: 2, steps: 8, batch_size: 8, warmup: 2, log_every: 1, threads: 1, cpu_replicas: {n},\n             model: {{num_layers: 1, num_attention_heads: 2, attention_head_dim: 8, mlp_ratio: 2.0, text_encoder: {{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}}}}}}\n"
        )
    };
    let runs: Vec<_> = [1usize, 2, 3]
        .iter()
        .map(|&n| run(&tmp.path().join(format!("p{n}")), &wf(n)))
        .collect();
    let log = runs[2].log("base");
    assert!(log.contains("data-parallel over 3 replicas"), "{log}");
    let report = |r: &crate::common::Run| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(r.output("base", "model").join("pretrain.json")).unwrap(),
        )
        .unwrap()
    };
    let weights = |r: &crate::common::Run| {
        read_safetensors(&r.output("base", "model").join("model.safetensors")).unwrap()
    };
    let (l0, w0) = (report(&runs[0])["loss"].clone(), weights(&runs[0]));
    assert_eq!(l0.as_array().unwrap().len(), 8);
    for r in &runs[1..] {
        let l = report(r)["loss"].clone();
        for (a, b) in l.as_array().unwrap().iter().zip(l0.as_array().unwrap()) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "loss {a} vs one replica's {b}"
            );
        }
        let w = weights(r);
        let (mut d2, mut n2) = (0.0, 0.0);
        for (k, v) in &w0 {
            d2 += (&w[k] - v).square().sum(Kind::Double).double_value(&[]);
            n2 += v.square().sum(Kind::Double).double_value(&[]);
        }
        let e = (d2 / n2).sqrt();
        eprintln!("pretrain weights: relative error {e:.3e}");
        assert!(e <= 2e-5, "relative error {e:.3e}");
    }
}

/// A data-parallel replica that fails (here one without the θ adapter) fails the step with
/// its own error, naming the replica, and no thread is left waiting.
#[test]
fn a_failing_replica_fails_the_step_cleanly() {
    use cocoflow_torch::artifacts::rewards::RewardsFile;
    use cocoflow_torch::artifacts::rollouts::{RolloutManifest, RolloutTensors};
    use cocoflow_torch::kinds::nft_train::NftTrainParams;
    use cocoflow_torch::rl::nft_train::{Settings, accumulate_parallel};
    use cocoflow_torch::rl::reward::Normalizer;
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());
    let a = run(&tmp.path().join("a"), &workflow(&base, None, 1));
    let rdir = a.output("rl[1].rollout", "rollouts");
    let m = RolloutManifest::read(&rdir).unwrap();
    let t = RolloutTensors::read(&rdir, &m).unwrap();
    let rw = RewardsFile::read(&a.output("rl[1].reward", "rewards")).unwrap();
    let clip = match rw.config.normalizer {
        Normalizer::GlobalStd { adv_clip } => Some(adv_clip),
        Normalizer::Constant { .. } => None,
    };
    let cfg = NftTrainParams::default().nft_config(clip).unwrap();
    let bm = BaseModel::uncached(&base);
    let lora = cocoflow_torch::kinds::lora_config(8, 16.0, 0);
    let mut good = state::load(&bm, &base, Device::Cpu, &lora).unwrap().model;
    let mut bad = bm.load(Device::Cpu).unwrap(); // no adapters: θ cannot train
    let sets: Vec<Settings> = (0..2)
        .map(|r| Settings {
            cfg: &cfg,
            seed: 5,
            step: 0,
            timestep_fraction: 0.99,
            micro_batch: 2,
            device: Device::Cpu,
            gradient_checkpointing: false,
            shard: (r, 2),
            only: None,
        })
        .collect();
    let t0 = std::time::Instant::now();
    let err = accumulate_parallel(
        &mut [&mut *good, &mut *bad],
        &m,
        &t,
        &rw,
        &sets,
        &mut |_, _, _| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("data-parallel replica 1 of 2"), "{err}");
    assert!(!err.contains("stopped"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(60));
}

/// `nft-train` with `optimizer_steps: 3`: each iteration deals the samples in the loss into 3
/// parts and takes one AdamW step per part — the state's step counts 3 per iteration, θ differs
/// from the one-step run's, and with 2 CPU replicas (which must start every part from θ's
/// updated values) θ and θ_old agree with one replica's within 1e-6 relative. The parts are a
/// partition of the samples in the loss (`split_samples`).
#[test]
fn several_optimizer_steps_per_iteration() {
    use cocoflow_torch::rl::nft_train::split_samples;
    let used: Vec<usize> = (0..10).filter(|i| i % 4 != 1).collect();
    let parts = split_samples(5, 7, &used, 3);
    assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2, 2]);
    let mut all: Vec<usize> = parts.concat();
    all.sort_unstable();
    assert_eq!(all, used);
    assert!(parts.iter().all(|p| p.windows(2).all(|w| w[0] < w[1])));
    assert_eq!(parts, split_samples(5, 7, &used, 3), "seeded");
    assert_ne!(parts, split_samples(5, 8, &used, 3), "per step");
    assert_eq!(
        split_samples(5, 7, &used[..2], 3).len(),
        2,
        "never more parts than samples"
    );
    assert!(split_samples(5, 7, &[], 3).is_empty());

    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let base = write_base(tmp.path());
    let wf = workflow(&base, None, 2);
    let one = run(&tmp.path().join("one"), &wf);
    let runs: Vec<_> = [1usize, 2]
        .iter()
        .map(|&n| {
            let w = wf.replace(
                "micro_batch: 4,",
                &format!("micro_batch: 2, optimizer_steps: 3, cpu_replicas: {n},"),
            );
            assert!(w.contains("optimizer_steps: 3"), "{w}");
            run(&tmp.path().join(format!("r{n}")), &w)
        })
        .collect();
    for r in &runs {
        let m = r.metrics("rl[2].train");
        assert_eq!(m["step"].as_f64(), Some(6.0), "{m:?}");
        assert_eq!(info(&r.output("rl[2].ema", "state")).step, 6);
        let log = r.log("rl[1].train");
        assert!(log.contains("\"optimizer_steps\":3"), "{log}");
    }
    assert_eq!(info(&one.output("rl[2].ema", "state")).step, 2);
    let last =
        |r: &crate::common::Run, which: &str| adapter(&r.output("rl[2].ema", "state"), which);
    let rel = |a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>| {
        let (mut d2, mut n2) = (0.0, 0.0);
        for (k, v) in b {
            d2 += (&a[k] - v).square().sum(Kind::Double).double_value(&[]);
            n2 += v.square().sum(Kind::Double).double_value(&[]);
        }
        (d2 / n2).sqrt()
    };
    let e = rel(
        &last(&runs[0], state::THETA_DIR),
        &last(&one, state::THETA_DIR),
    );
    assert!(
        e > 1e-3,
        "three steps per iteration changed θ by only {e:.3e}"
    );
    for which in [state::THETA_DIR, state::THETA_OLD_DIR] {
        let e = rel(&last(&runs[1], which), &last(&runs[0], which));
        eprintln!("{which}: 2 replicas vs 1, 3 steps per iteration: relative error {e:.3e}");
        assert!(e <= 1e-6, "{which}: relative error {e:.3e}");
    }
}
