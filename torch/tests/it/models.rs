//! tiny-kontext and its LoRA adapters: bit-identity of fresh adapters, adapter switching,
//! PEFT export/import, safetensors round trips, loading errors, training, determinism.

use cocoflow_torch::models::checkpoint::{read_safetensors, write_safetensors};
use cocoflow_torch::models::random::normal_tensor;
use cocoflow_torch::models::tokenizer::{BOS_ID, PAD_ID, UNK_ID, WordTokenizer};
use cocoflow_torch::models::*;
use cocoflow_torch::rng::StreamRng;
use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

/// A model small enough for many quick forwards: width 32, 2 blocks, 16×16 images.
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

fn small_model(seed: u64) -> TinyKontext {
    TinyKontext::new(&small_config(), Device::Cpu, seed).unwrap()
}

fn lora(r: i64) -> LoraConfig {
    LoraConfig {
        r,
        lora_alpha: 2.0 * r as f64,
        ..LoraConfig::default()
    }
}

/// `N(0, 1)` from a seed (libtorch's global generator is shared by tests running in parallel).
fn randn(seed: u64, shape: &[i64]) -> Tensor {
    normal_tensor(&mut StreamRng::new(seed), shape, Kind::Float, Device::Cpu)
}

/// `U(0, 1)`-ish values in [0, 1] from a seed.
fn rand01(seed: u64, shape: &[i64]) -> Tensor {
    (randn(seed, shape) * 0.3 + 0.5).clamp(0.0, 1.0)
}

/// A fixed batch: x_t, t, conditioning (instructions of different lengths, one unknown word).
fn inputs(m: &dyn EditPolicy) -> (Tensor, Tensor, Conditioning) {
    let b = 3;
    let x = randn(100, &[b, 3, 16, 16]);
    let src = m.encode(&rand01(101, &[b, 3, 16, 16])).unwrap();
    let t = Tensor::from_slice(&[0.9f32, 0.5, 0.1]);
    let cond = m
        .condition(
            &src,
            &[
                "remove the red circle",
                "make the background mint",
                "zorble",
            ],
        )
        .unwrap();
    (x, t, cond)
}

fn v(m: &dyn EditPolicy, a: &ActiveAdapter) -> Tensor {
    let (x, t, c) = inputs(m);
    tch::no_grad(|| m.velocity_with(&x, &t, &c, a, None).unwrap())
}

/// Fills every LoRA matrix of adapter `name` with N(0, 0.1²) from `seed`.
fn randomise_adapter(m: &TinyKontext, name: &str, seed: u64) {
    let mut rng = StreamRng::new(seed);
    tch::no_grad(|| {
        for t in m.adapter_variables(name).unwrap().values() {
            let mut t = t.shallow_clone();
            t.copy_(&(normal_tensor(&mut rng, &t.size(), Kind::Float, Device::Cpu) * 0.1));
        }
    });
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A fresh adapter (B = 0) leaves the output bit-identical to the base's.
#[test]
fn zero_b_adapters_are_bit_identical_to_the_base() {
    let mut m = small_model(1);
    let base = v(&m, &ActiveAdapter::Off);
    m.add_adapter(THETA, &lora(4)).unwrap();
    m.add_adapter(THETA_OLD, &lora(8)).unwrap();
    assert!(v(&m, &ActiveAdapter::theta()).equal(&base));
    assert!(v(&m, &ActiveAdapter::theta_old()).equal(&base));
    assert!(v(&m, &ActiveAdapter::Off).equal(&base));
    assert_eq!(
        m.adapter_names(),
        vec!["default".to_string(), "old".to_string()]
    );
}

/// Adapters switch per call and through `set_adapter`; adapters-off is the base whatever B holds.
#[test]
fn adapters_switch_and_off_is_the_base() {
    let mut m = small_model(2);
    let base = v(&m, &ActiveAdapter::Off);
    m.add_adapter(THETA, &lora(4)).unwrap();
    m.add_adapter(THETA_OLD, &lora(4)).unwrap();
    randomise_adapter(&m, THETA, 10);
    let theta = v(&m, &ActiveAdapter::theta());
    assert!(
        max_abs_diff(&theta, &base) > 1e-3,
        "θ must differ from the base"
    );
    assert!(
        v(&m, &ActiveAdapter::Off).equal(&base),
        "adapters off = base after B changed"
    );
    assert!(
        v(&m, &ActiveAdapter::theta_old()).equal(&base),
        "θ_old still zero"
    );
    randomise_adapter(&m, THETA_OLD, 11);
    let old = v(&m, &ActiveAdapter::theta_old());
    assert!(max_abs_diff(&old, &theta) > 1e-3 && max_abs_diff(&old, &base) > 1e-3);

    // the active adapter drives `velocity`
    let (x, t, c) = inputs(&m);
    m.set_adapter(ActiveAdapter::theta()).unwrap();
    assert!(tch::no_grad(|| m.velocity(&x, &t, &c, None).unwrap()).equal(&theta));
    m.set_adapter(ActiveAdapter::Off).unwrap();
    assert!(tch::no_grad(|| m.velocity(&x, &t, &c, None).unwrap()).equal(&base));

    // θ_old ← θ: then they agree exactly
    m.copy_adapter(THETA, THETA_OLD).unwrap();
    assert!(v(&m, &ActiveAdapter::theta_old()).equal(&theta));
}

/// θ and θ_old expose the same names (EMA matches by name), without the adapter name.
#[test]
fn adapter_variables_match_by_name() {
    let mut m = small_model(3);
    m.add_adapter(THETA, &lora(4)).unwrap();
    m.add_adapter(THETA_OLD, &lora(4)).unwrap();
    let a = m.adapter_variables(THETA).unwrap();
    let b = m.adapter_variables(THETA_OLD).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    // 2 blocks × 8 projections × (A, B)
    assert_eq!(a.len(), 2 * 8 * 2);
    assert_eq!(
        a["transformer_blocks.0.attn.to_q.lora_A.weight"].size(),
        vec![4, 32]
    );
    assert_eq!(
        a["transformer_blocks.1.attn.to_add_out.lora_B.weight"].size(),
        vec![32, 4]
    );
    assert!(a.contains_key("transformer_blocks.0.attn.to_out.0.lora_A.weight"));
    assert!(a.contains_key("transformer_blocks.0.attn.add_k_proj.lora_B.weight"));
}

#[test]
fn adapter_errors() {
    let mut m = small_model(3);
    m.add_adapter(THETA, &lora(4)).unwrap();
    let err = |e: ModelError| e.to_string();
    assert_eq!(
        err(m.add_adapter(THETA, &lora(4)).unwrap_err()),
        "an adapter named `default` exists already"
    );
    assert_eq!(
        err(m.set_adapter(ActiveAdapter::theta_old()).unwrap_err()),
        "no adapter named `old` (known: `default`)"
    );
    assert_eq!(
        err(m.add_adapter("a.b", &lora(4)).unwrap_err()),
        "bad adapter name `a.b`: use letters, digits, `_` and `-`"
    );
    let none = LoraConfig {
        target_modules: vec!["q_proj".into()],
        ..lora(4)
    };
    assert_eq!(
        err(m.add_adapter("x", &none).unwrap_err()),
        "invalid config: LoRA `target_modules` [\"q_proj\"] match no attention projection of tiny-kontext"
    );
}

/// PEFT export → import into a fresh model (from the saved base) gives bit-identical outputs.
#[test]
fn peft_export_import_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = small_model(4);
    m.add_adapter(THETA, &lora(4)).unwrap();
    randomise_adapter(&m, THETA, 12);
    let want = v(&m, &ActiveAdapter::theta());
    m.save(&dir.path().join("base")).unwrap();
    m.save_adapter(THETA, &dir.path().join("lora")).unwrap();

    // the PEFT layout
    let keys: Vec<String> = read_safetensors(&dir.path().join("lora/adapter_model.safetensors"))
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(keys.len(), 32);
    assert!(
        keys.contains(&"base_model.model.transformer_blocks.0.attn.to_q.lora_A.weight".to_string())
    );
    assert!(keys.contains(
        &"base_model.model.transformer_blocks.1.attn.to_out.0.lora_B.weight".to_string()
    ));
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("lora/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 8);

    let mut fresh = TinyKontext::load(&dir.path().join("base"), Device::Cpu).unwrap();
    fresh.load_adapter(&dir.path().join("lora"), THETA).unwrap();
    assert!(v(&fresh, &ActiveAdapter::theta()).equal(&want));
    assert_eq!(fresh.adapter_config(THETA).unwrap().r, 4);
    // under another name too
    fresh
        .load_adapter(&dir.path().join("lora"), "imported")
        .unwrap();
    assert!(v(&fresh, &ActiveAdapter::Named("imported".into())).equal(&want));
}

/// The diffusers `transformer.` prefix is accepted as well as PEFT's `base_model.model.`.
#[test]
fn peft_import_accepts_the_diffusers_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = small_model(5);
    m.add_adapter(THETA, &lora(2)).unwrap();
    randomise_adapter(&m, THETA, 13);
    let want = v(&m, &ActiveAdapter::theta());
    m.save_adapter(THETA, dir.path()).unwrap();
    let w = dir.path().join("adapter_model.safetensors");
    let renamed: BTreeMap<String, Tensor> = read_safetensors(&w)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k.replace("base_model.model.", "transformer."), t))
        .collect();
    write_safetensors(&w, &renamed).unwrap();
    let mut fresh = small_model(5);
    fresh.load_adapter(dir.path(), THETA).unwrap();
    assert!(v(&fresh, &ActiveAdapter::theta()).equal(&want));
}

/// An adapter whose tensors do not fit is rejected with every bad name, and nothing is added.
#[test]
fn peft_import_errors_name_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = small_model(6);
    m.add_adapter(THETA, &lora(2)).unwrap();
    m.save_adapter(THETA, dir.path()).unwrap();
    let w = dir.path().join("adapter_model.safetensors");
    let mut t = read_safetensors(&w).unwrap();
    t.remove("base_model.model.transformer_blocks.0.attn.to_v.lora_B.weight");
    t.insert(
        "base_model.model.transformer_blocks.0.attn.to_q.lora_A.weight".into(),
        Tensor::zeros([3, 32], (Kind::Float, Device::Cpu)),
    );
    t.insert(
        "base_model.model.proj_out.lora_A.weight".into(),
        Tensor::zeros([2, 32], (Kind::Float, Device::Cpu)),
    );
    write_safetensors(&w, &t).unwrap();
    let mut fresh = small_model(6);
    let e = fresh.load_adapter(dir.path(), THETA).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "checkpoint `{}` does not match the model its config describes:\n  \
             1 missing: `transformer_blocks.0.attn.to_v.lora_B.weight`\n  \
             1 unexpected: `proj_out.lora_A.weight`\n  \
             1 mis-shaped: `transformer_blocks.0.attn.to_q.lora_A.weight` (file [3, 32] Float, model [2, 32] Float)",
            w.display()
        )
    );
    assert!(fresh.adapter_names().is_empty());

    // DoRA is refused rather than silently loaded as plain LoRA
    let c = dir.path().join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&c).unwrap()).unwrap();
    cfg["use_dora"] = true.into();
    std::fs::write(&c, cfg.to_string()).unwrap();
    let e = fresh.load_adapter(dir.path(), THETA).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "unsupported adapter `{}`: DoRA (`use_dora: true`) is not supported",
            c.display()
        )
    );
}

/// save → load gives the same weights, config and outputs; files are safetensors + JSON.
#[test]
fn safetensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(7);
    m.save(dir.path()).unwrap();
    assert!(dir.path().join("model.safetensors").exists());
    let cfg: TinyKontextConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg, small_config());
    let l = TinyKontext::load(dir.path(), Device::Cpu).unwrap();
    let (a, b) = (m.base_variables(), l.base_variables());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.iter().all(|(k, t)| t.equal(&b[k])));
    assert!(v(&l, &ActiveAdapter::Off).equal(&v(&m, &ActiveAdapter::Off)));
    // diffusers-like names
    for k in [
        "x_embedder.weight",
        "context_embedder.weight",
        "stream_embed.weight",
        "time_text_embed.timestep_embedder.linear_1.weight",
        "time_text_embed.text_embedder.linear_2.bias",
        "transformer_blocks.1.attn.to_out.0.weight",
        "transformer_blocks.0.attn.norm_added_k.weight",
        "transformer_blocks.0.norm1_context.linear.weight",
        "transformer_blocks.0.ff.net.0.proj.weight",
        "transformer_blocks.0.ff_context.net.2.bias",
        "norm_out.linear.weight",
        "proj_out.weight",
        "text_encoder.embeddings.token_embedding.weight",
        "text_encoder.encoder.layers.0.self_attn.q_proj.weight",
        "text_encoder.final_layer_norm.weight",
    ] {
        assert!(a.contains_key(k), "missing `{k}`");
    }
}

/// Missing, unexpected and mis-shaped tensors are all named in one error.
#[test]
fn loading_errors_name_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    small_model(8).save(dir.path()).unwrap();
    let w = dir.path().join("model.safetensors");
    let mut t = read_safetensors(&w).unwrap();
    t.remove("proj_out.bias");
    t.remove("x_embedder.weight");
    t.insert(
        "transformer_blocks.0.attn.to_q.bias".into(),
        Tensor::zeros([5], (Kind::Float, Device::Cpu)),
    );
    t.insert(
        "mystery.weight".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    );
    t.insert(
        "norm_out.linear.bias".into(),
        Tensor::zeros([64], (Kind::Int64, Device::Cpu)),
    );
    write_safetensors(&w, &t).unwrap();
    let e = TinyKontext::load(dir.path(), Device::Cpu).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "checkpoint `{}` does not match the model its config describes:\n  \
             2 missing: `proj_out.bias`, `x_embedder.weight`\n  \
             1 unexpected: `mystery.weight`\n  \
             2 mis-shaped: `norm_out.linear.bias` (file [64] Int64, model [64] Float), \
             `transformer_blocks.0.attn.to_q.bias` (file [5] Float, model [32] Float)",
            w.display()
        )
    );
    match e {
        ModelError::Checkpoint { diff, .. } => {
            assert_eq!(diff.missing.len(), 2);
            assert_eq!(diff.unexpected, vec!["mystery.weight".to_string()]);
            assert_eq!(diff.mismatched.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

/// A config that does not describe the weights is an error (not a panic), and so are unknown
/// config keys and impossible sizes.
#[test]
fn config_mismatch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    small_model(9).save(dir.path()).unwrap();
    let c = dir.path().join("config.json");
    let write = |f: &dyn Fn(&mut TinyKontextConfig)| {
        let mut cfg = small_config();
        f(&mut cfg);
        std::fs::write(&c, serde_json::to_string(&cfg).unwrap()).unwrap();
    };

    write(&|c| c.num_layers = 3);
    let e = TinyKontext::load(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing: `transformer_blocks.2."), "{e}");
    assert!(!e.contains("unexpected"), "{e}");

    write(&|c| c.attention_head_dim = 8);
    let e = TinyKontext::load(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mis-shaped: `"), "{e}");
    assert!(
        e.contains("`context_embedder.weight` (file [32, 32] Float, model [16, 32] Float)"),
        "{e}"
    );
    assert!(
        e.contains("80 mis-shaped") && e.contains("… (68 more)"),
        "{e}"
    );

    write(&|c| c.text_encoder.vocab.push("zebra".into()));
    let e = TinyKontext::load(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`text_encoder.embeddings.token_embedding.weight` (file ["),
        "{e}"
    );

    write(&|c| c.text_encoder.num_attention_heads = 3);
    let e = TinyKontext::load(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid config: `text_encoder.hidden_size` (32) must divide by `text_encoder.num_attention_heads` (3)"
    );

    let mut v: serde_json::Value = serde_json::to_value(small_config()).unwrap();
    v["num_layer"] = 2.into();
    std::fs::write(&c, v.to_string()).unwrap();
    let e = TinyKontext::load(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "bad config `{}`: unknown field `num_layer`",
            c.display()
        )),
        "{e}"
    );

    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    write(&|_| {});
    let e = TinyKontext::load(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read `") && e.ends_with("model.safetensors`: no such file"),
        "{e}"
    );
}

#[test]
fn bad_inputs_are_errors() {
    let m = small_model(10);
    let (x, t, c) = inputs(&m);
    let e = m
        .velocity_with(&x.narrow(1, 0, 2), &t, &c, &ActiveAdapter::Off, None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad input `x_t`: expected (B, 3, h, w) with h and w positive multiples of 4, got [3, 2, 16, 16]"
    );
    let e = m
        .velocity_with(&x.narrow(0, 0, 2), &t, &c, &ActiveAdapter::Off, None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad input `conditioning.source`: batch 3 where 2 was expected"
    );
    let e = m
        .velocity_with(&x, &t.narrow(0, 0, 2), &c, &ActiveAdapter::Off, None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad input `t`: expected shape () or (3,), got [2]"
    );
    let e = m
        .encode(&Tensor::zeros([1, 3, 10, 16], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad input `images`: expected (B, 3, H, W) with H and W multiples of 4, got [1, 3, 10, 16]"
    );
    let bad = Conditioning::new(c.source.shallow_clone()).with(
        "text_ids",
        c.get("text_ids").unwrap() + 1000,
        Some(0.0),
    );
    let e = m
        .velocity_with(&x, &t, &bad, &ActiveAdapter::Off, None)
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("bad input `conditioning.text_ids`: ids must lie in [0, "),
        "{e}"
    );
    // a scalar t is broadcast
    let a = tch::no_grad(|| {
        m.velocity_with(&x, &Tensor::from(0.5f32), &c, &ActiveAdapter::Off, None)
            .unwrap()
    });
    let b = tch::no_grad(|| {
        m.velocity_with(
            &x,
            &Tensor::from_slice(&[0.5f32; 3]),
            &c,
            &ActiveAdapter::Off,
            None,
        )
        .unwrap()
    });
    assert!(a.equal(&b));
}

/// Same config and seed → bit-identical weights; another seed → different ones.
#[test]
fn initialisation_is_deterministic() {
    let (a, b, c) = (small_model(11), small_model(11), small_model(12));
    let (va, vb, vc) = (a.base_variables(), b.base_variables(), c.base_variables());
    assert!(va.iter().all(|(k, t)| t.equal(&vb[k])));
    assert!(
        !va["transformer_blocks.0.attn.to_q.weight"]
            .equal(&vc["transformer_blocks.0.attn.to_q.weight"])
    );
}

#[test]
fn tokenizer() {
    let tok = WordTokenizer::new(&["Red".into(), "circle".into(), "red".into()], 5);
    assert_eq!(tok.len(), 5); // <pad> <unk> <bos> red circle
    assert_eq!(tok.encode("RED, circle!"), vec![BOS_ID, 3, 4]);
    assert_eq!(
        tok.encode("a red-circle x y z"),
        vec![BOS_ID, UNK_ID, 3, 4, UNK_ID]
    );
    assert_eq!(tok.encode(""), vec![BOS_ID]);
    let ids = tok.encode_batch(&["red", ""], Device::Cpu);
    assert_eq!(
        Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap(),
        vec![BOS_ID, 3, BOS_ID, PAD_ID]
    );
    assert_eq!(
        tokenizer::vocab_from_texts(["b a", "A c"]),
        vec!["a", "b", "c"]
    );
}

/// Padding an instruction batch with more `<pad>` changes nothing beyond rounding.
#[test]
fn padding_is_masked() {
    let m = small_model(13);
    let (x, t, c) = inputs(&m);
    let padded = Conditioning::new(c.source.shallow_clone()).with(
        "text_ids",
        c.get("text_ids")
            .unwrap()
            .pad([0, 4], "constant", Some(0.0)),
        Some(0.0),
    );
    let a = tch::no_grad(|| {
        m.velocity_with(&x, &t, &c, &ActiveAdapter::Off, None)
            .unwrap()
    });
    let b = tch::no_grad(|| {
        m.velocity_with(&x, &t, &padded, &ActiveAdapter::Off, None)
            .unwrap()
    });
    assert!(max_abs_diff(&a, &b) < 1e-5, "{}", max_abs_diff(&a, &b));
}

/// Fixed random data; `steps` AdamW steps on `params`; returns the loss on a fixed probe
/// before and after.
fn train(m: &TinyKontext, adapter: &ActiveAdapter, steps: usize) -> (f64, f64) {
    let b = 8;
    let x0 = rand01(200, &[b, 3, 16, 16]) * 2.0 - 1.0;
    let src = (&x0 * 0.8).shallow_clone();
    let instr = ["remove the red circle"; 8];
    let cond = m.condition(&src, &instr).unwrap();
    let probe_eps = randn(201, &[b, 3, 16, 16]);
    let probe_t = Tensor::linspace(0.05, 0.95, b, (Kind::Float, Device::Cpu));
    let probe = || {
        tch::no_grad(|| {
            flow_matching_loss(m, &x0, &probe_eps, &probe_t, &cond, adapter)
                .unwrap()
                .double_value(&[])
        })
    };
    let before = probe();
    let mut opt = tch::COptimizer::adamw(3e-3, 0.9, 0.999, 1e-4, 1e-8, false).unwrap();
    for p in m.trainable_variables().values() {
        opt.add_parameters(p, 0).unwrap();
    }
    for i in 0..steps as u64 {
        let eps = randn(300 + i, &[b, 3, 16, 16]);
        let t = rand01(1000 + i, &[b]);
        let loss = flow_matching_loss(m, &x0, &eps, &t, &cond, adapter).unwrap();
        opt.zero_grad().unwrap();
        loss.backward();
        opt.step().unwrap();
    }
    (before, probe())
}

/// A few steps of supervised flow matching reduce the loss (base training).
#[test]
fn training_reduces_the_flow_matching_loss() {
    let mut m = small_model(14);
    m.set_trainable(Trainable::Base).unwrap();
    let (before, after) = train(&m, &ActiveAdapter::Off, 40);
    println!("base training: loss {before:.4} → {after:.4}");
    assert!(after < 0.8 * before, "{before} → {after}");
}

/// LoRA-only training reduces the loss, moves only θ's matrices, and θ_old / the base stay put.
#[test]
fn lora_training_moves_only_the_adapter() {
    let mut m = small_model(15);
    m.add_adapter(THETA, &lora(4)).unwrap();
    m.add_adapter(THETA_OLD, &lora(4)).unwrap();
    m.set_trainable(Trainable::Adapter(THETA.into())).unwrap();
    let names: Vec<String> = m.trainable_variables().into_keys().collect();
    assert_eq!(
        names,
        m.adapter_variables(THETA)
            .unwrap()
            .into_keys()
            .collect::<Vec<_>>()
    );
    let base0: BTreeMap<String, Tensor> = m
        .base_variables()
        .into_iter()
        .map(|(k, t)| (k, t.copy()))
        .collect();
    let ref_v = v(&m, &ActiveAdapter::Off);
    let (before, after) = train(&m, &ActiveAdapter::theta(), 40);
    println!("LoRA training: loss {before:.4} → {after:.4}");
    assert!(after < 0.9 * before, "{before} → {after}");
    assert!(m.base_variables().iter().all(|(k, t)| t.equal(&base0[k])));
    assert!(v(&m, &ActiveAdapter::Off).equal(&ref_v));
    assert!(v(&m, &ActiveAdapter::theta_old()).equal(&ref_v));
}

/// `requires_grad` follows `set_trainable`, for adapters added later too; the trait is
/// object-safe and `Send` (a policy can live in a task's model cache behind a mutex).
#[test]
fn trainable_follows_the_setting() {
    fn is_send<T: Send + ?Sized>() {}
    is_send::<dyn EditPolicy>();
    let mut m: Box<dyn EditPolicy> = Box::new(small_model(16));
    assert!(
        m.base_variables().values().all(|t| t.requires_grad()),
        "a new model trains its base"
    );
    m.add_adapter(THETA, &lora(2)).unwrap();
    assert!(
        m.adapter_variables(THETA)
            .unwrap()
            .values()
            .all(|t| !t.requires_grad())
    );
    m.set_trainable(Trainable::Adapter(THETA.into())).unwrap();
    m.add_adapter(THETA_OLD, &lora(2)).unwrap();
    assert!(
        m.adapter_variables(THETA)
            .unwrap()
            .values()
            .all(|t| t.requires_grad())
    );
    assert!(
        m.adapter_variables(THETA_OLD)
            .unwrap()
            .values()
            .all(|t| !t.requires_grad())
    );
    assert!(m.base_variables().values().all(|t| !t.requires_grad()));
    m.set_trainable(Trainable::Nothing).unwrap();
    assert!(m.trainable_variables().is_empty());
    let e = m.set_trainable(Trainable::Adapter("x".into())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no adapter named `x` (known: `default`, `old`)"
    );
    let mut other = lora(4);
    other.target_modules = vec!["to_q".into()];
    m.add_adapter("narrow", &other).unwrap();
    let e = m.copy_adapter(THETA, "narrow").unwrap_err().to_string();
    assert!(
        e.starts_with(
            "adapters `default` and `narrow` do not have the same matrices:\n  28 unexpected:"
        ),
        "{e}"
    );
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(i) = stat.rfind(')') else { return 0.0 };
    let f: Vec<f64> = stat[i + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// Prints the time of one training step (forward + backward + AdamW) of the default config on
/// a batch of 32 images of 32×32. Not asserted (tests never assert on wall-clock time):
/// `cargo test -p cocoflow-torch --release --test it -- --ignored --nocapture step_time`
#[test]
#[ignore]
fn step_time() {
    if let Some(n) = std::env::var("STEP_TIME_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        tch::set_num_threads(n);
    }
    let cfg = TinyKontextConfig::default();
    let mut m = TinyKontext::new(&cfg, Device::Cpu, 0).unwrap();
    m.set_trainable(Trainable::Base).unwrap();
    let mut opt = tch::COptimizer::adamw(3e-4, 0.9, 0.999, 1e-4, 1e-8, false).unwrap();
    for p in m.trainable_variables().values() {
        opt.add_parameters(p, 0).unwrap();
    }
    let b = 32;
    let x0 = Tensor::rand([b, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let src = Tensor::rand([b, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let instr = ["replace the red circle in the top left with a blue square"; 32];
    let cond = m.condition(&src, &instr).unwrap();
    let mut wall = vec![];
    let steps = 10;
    let cpu0 = cpu_seconds();
    for _ in 0..steps {
        let eps = Tensor::randn([b, 3, 32, 32], (Kind::Float, Device::Cpu));
        let t = Tensor::rand([b], (Kind::Float, Device::Cpu));
        let start = std::time::Instant::now();
        let loss = flow_matching_loss(&m, &x0, &eps, &t, &cond, &ActiveAdapter::Off).unwrap();
        opt.zero_grad().unwrap();
        loss.backward();
        opt.step().unwrap();
        wall.push(start.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - cpu0) / steps as f64;
    wall.sort_by(f64::total_cmp);
    let params: i64 = m.base_variables().values().map(|t| t.numel() as i64).sum();
    println!(
        "tiny-kontext default ({params} parameters), batch 32 × 3×32×32, {} torch threads: \
         step median {:.3} s, min {:.3} s, CPU {cpu:.3} s/step",
        tch::get_num_threads(),
        wall[steps / 2],
        wall[0]
    );
}

/// A model built on shared weights (the model cache) gives the outputs of one loaded from
/// the directory, keeps its adapters to itself, refuses to train its base, and the cache
/// loads the weights once for any number of models.
#[test]
fn shared_base_models_match_loaded_ones_and_load_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model(7);
    m.save(dir.path()).unwrap();
    let cache = std::sync::Arc::new(cocoflow_engine::kind::ModelCache::with_limit(1 << 30));
    let base = BaseModel::cached(dir.path(), cache.clone(), "digest-of-the-dir");
    let loaded = BaseModel::uncached(dir.path()).load(Device::Cpu).unwrap();
    let mut a = base.load(Device::Cpu).unwrap();
    let b = base.load(Device::Cpu).unwrap();
    assert_eq!(cache.loads(), 1, "two models, one load");
    assert!(cache.bytes() > 0);
    assert!(v(&*a, &ActiveAdapter::Off).equal(&v(&*loaded, &ActiveAdapter::Off)));
    assert!(v(&*b, &ActiveAdapter::Off).equal(&v(&*loaded, &ActiveAdapter::Off)));
    // an adapter of `a` is `a`'s alone
    let lora = LoraConfig {
        r: 2,
        lora_alpha: 4.0,
        init_seed: 3,
        ..LoraConfig::default()
    };
    a.add_adapter(THETA, &lora).unwrap();
    assert!(b.adapter_variables(THETA).is_err());
    let e = a.set_trainable(Trainable::Base).unwrap_err().to_string();
    assert!(e.contains("shared"), "{e}");
    a.set_trainable(Trainable::Adapter(THETA.into())).unwrap();
}
