//! `cocoflow bench-flux` on the CPU with the tiny config: every phase runs, reports finite
//! figures under the keys `bench/flux_pytorch.py` prints too, and the NFT step trains θ's LoRA
//! only. Nothing here asserts on time.

use cocoflow_torch::models::flux_kontext::bench::{
    BenchSettings, ModelSize, bench_nft, bench_rollout, bench_vae, build,
};
use cocoflow_torch::models::{THETA, THETA_OLD};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// Keys both implementations print for every phase (bench/flux_summary.py pairs on them).
const COMMON: [&str; 17] = [
    "impl",
    "phase",
    "config",
    "resolution",
    "k",
    "steps",
    "dtype",
    "lora_rank",
    "lora_alpha",
    "text_len",
    "device",
    "build_s",
    "warmup_s",
    "allocated_gib",
    "peak_allocated_gib",
    "reserved_gib",
    "peak_reserved_gib",
];

fn has_keys(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(*k).is_some(), "`{k}` missing from {v}");
    }
}

fn positive(v: &Value, k: &str) -> f64 {
    let x = v[k]
        .as_f64()
        .unwrap_or_else(|| panic!("`{k}` is not a number in {v}"));
    assert!(x.is_finite() && x > 0.0, "`{k}` = {x}");
    x
}

fn tiny() -> BenchSettings {
    let mut s = BenchSettings::new(ModelSize::Tiny, Device::Cpu, Kind::Float, 32);
    s.k = 2;
    s.steps = 3;
    s.rollout_repeats = 1;
    s.nft_repeats = 2;
    s
}

fn lora_snapshot(vs: &tch::nn::VarStore, adapter: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(k, _)| k.contains(&format!(".lora_B.{adapter}.")))
        .map(|(k, t)| (k, t.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn tiny_bench_runs_every_phase_on_the_cpu() {
    let s = tiny();
    let built = build(&s).unwrap();
    // 2 double blocks × 8 projections + 2 single blocks × 3
    assert_eq!(built.lora_layers, 22);
    assert!(
        built
            .model
            .base_variables()
            .values()
            .all(|v| !v.requires_grad() && v.isfinite().all().int64_value(&[]) == 1)
    );

    let r = bench_rollout(&built, &s).unwrap();
    has_keys(&r, &COMMON);
    has_keys(
        &r,
        &["batch_s", "images_per_s", "step_s", "finite", "lora_layers"],
    );
    assert_eq!(r["impl"], "cocoflow");
    assert_eq!(r["phase"], "rollout");
    assert_eq!(r["finite"], true);
    assert_eq!(
        r["peak_allocated_gib"],
        Value::Null,
        "no CUDA counters on the CPU"
    );
    let med = positive(&r, "batch_s_median");
    assert!((positive(&r, "images_per_s") - 2.0 / med).abs() < 1e-9);

    let theta = lora_snapshot(built.model.var_store(), THETA);
    let old = lora_snapshot(built.model.var_store(), THETA_OLD);
    let n = bench_nft(&built, &s).unwrap();
    has_keys(&n, &COMMON);
    has_keys(
        &n,
        &[
            "nft_batch",
            "step_s",
            "samples_per_s",
            "old_ref_s_median",
            "theta_s_median",
            "optim_s_median",
            "loss",
            "lora_params",
        ],
    );
    positive(&n, "step_s_median");
    let losses = n["loss"].as_array().unwrap();
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.as_f64().unwrap().is_finite()));
    // AdamW moved every B of θ; θ_old is only read
    let after = lora_snapshot(built.model.var_store(), THETA);
    assert_eq!(after.len(), 22);
    for ((k, a), (_, b)) in theta.iter().zip(&after) {
        assert!(
            (a - b).abs().max().double_value(&[]) > 0.0,
            "{k} was not updated"
        );
    }
    for ((k, a), (_, b)) in old
        .iter()
        .zip(&lora_snapshot(built.model.var_store(), THETA_OLD))
    {
        assert!(a.equal(b), "{k} of θ_old changed");
    }

    let v = bench_vae(&s).unwrap();
    has_keys(&v, &COMMON);
    positive(&v, "decode_s");
    assert_eq!(v["output"], serde_json::json!([2, 3, 32, 32]));
}

#[test]
fn settings_that_cannot_run_are_refused() {
    let mut s = tiny();
    s.resolution = 40;
    let e = build(&s).unwrap_err().to_string();
    assert!(e.contains("multiple of 16"), "{e}");
    let mut s = tiny();
    s.nft_batch = 0;
    assert!(build(&s).is_err());
}
