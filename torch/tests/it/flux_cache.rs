//! FLUX.1 Kontext (the tiny random repository of `torch/tests/golden/flux`) in the per-worker
//! model cache, on cached prompt encodings, with gradient checkpointing in training, and its
//! repository checks before any weights are read:
//!
//! - the cache loads the pipeline once and leases it to one policy at a time; a returned
//!   pipeline has no adapters left and gives the velocities of a fresh load; two policies
//!   alive at once get two slots;
//! - `encode-prompts` encodings give the inline conditioning bit for bit, and a policy on
//!   them is loaded without its text encoders; `rollout` and `nft-train` with the `prompts`
//!   input write byte-identical outputs;
//! - θ's training forward with gradient checkpointing gives the plain gradients, and
//!   `nft-train` with `gradient_checkpointing: true` the plain LoRA update (1e-6 relative);
//! - a mis-shaped or mis-typed tensor of a later component is reported (file and key) before
//!   the transformer's weights are read.

use cocoflow_engine::kind::ModelCache;
use cocoflow_torch::artifacts::prompts::{PromptTable, write_encodings, write_manifest};
use cocoflow_torch::models::checkpoint::read_safetensors;
use cocoflow_torch::models::flux_kontext::{FluxKontextPipeline, PROMPT_EMBEDS_KEYS};
use cocoflow_torch::models::{
    ActiveAdapter, BaseModel, EditPolicy, LoraConfig, PromptSource, THETA, Trainable, open,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

use crate::common::run;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/flux/tiny-flux-kontext")
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    assert_eq!(a.size(), b.size(), "shapes differ");
    (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

/// A standard-normal tensor from its own stream (not libtorch's global generator, which the
/// tests running in parallel share).
fn randn(name: &str, shape: &[i64]) -> Tensor {
    cocoflow_torch::models::random::normal_tensor(
        &mut cocoflow_torch::rng::StreamRng::derive(17, name),
        shape,
        Kind::Float,
        Device::Cpu,
    )
}

/// Source images in (0, 1).
fn images(name: &str, b: i64) -> Tensor {
    randn(name, &[b, 3, 16, 16]).sigmoid()
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    }
}

/// A velocity of `policy` on fixed inputs (θ_ref), and the number of LoRA variables in its
/// transformer.
fn probe(policy: &dyn EditPolicy) -> Tensor {
    let src = policy.encode(&images("probe", 2)).unwrap();
    let cond = policy
        .condition(&src, &["turn it red", "remove it"])
        .unwrap();
    let x = randn("probe/x", &[2, 4, 4, 4]);
    let t = Tensor::from_slice(&[0.7f32, 0.3]);
    tch::no_grad(|| {
        policy
            .velocity_with(&x, &t, &cond, &ActiveAdapter::Off, Some(2.5))
            .unwrap()
    })
}

#[test]
fn the_model_cache_loads_flux_once_and_leases_it() {
    let cache = Arc::new(ModelCache::with_limit(1 << 30));
    let base = BaseModel::cached(&repo(), cache.clone(), "digest-of-the-repo");
    let fresh = probe(&*open(&repo(), Device::Cpu).unwrap());
    {
        let mut a = base.load(Device::Cpu).unwrap();
        a.add_adapter(THETA, &lora()).unwrap();
        a.set_trainable(Trainable::Adapter(THETA.into())).unwrap();
        // θ with B ≠ 0 changes the velocity; the next task must not see it
        for (k, v) in a.adapter_variables(THETA).unwrap() {
            if k.contains("lora_B") {
                let _ = tch::no_grad(|| v.shallow_clone().fill_(0.1));
            }
        }
        assert!(probe(&*a).equal(&fresh), "θ_ref ignores adapters");
    }
    assert_eq!(cache.loads(), 1);
    {
        // the returned pipeline holds no LoRA: neither layers nor variables
        let f = base.load_flux(Device::Cpu, true).unwrap();
        let tf = &f.pipeline.transformer;
        assert!(
            tf.attention_projections()
                .iter()
                .all(|l| l.adapters.is_empty())
        );
        let vs = tf.var_store();
        assert!(!vs.variables().keys().any(|k| k.contains(".lora_")));
        assert!(vs.trainable_variables().iter().all(|v| !v.requires_grad()));
    }
    let b = base.load(Device::Cpu).unwrap();
    assert_eq!(
        cache.loads(),
        1,
        "the second task reuses the loaded pipeline"
    );
    assert!(b.adapter_names().is_empty(), "{:?}", b.adapter_names());
    assert!(b.trainable_variables().is_empty());
    assert!(probe(&*b).equal(&fresh));
    let mut b = b;
    b.add_adapter(THETA, &lora()).unwrap(); // the names are free again
    // a second policy alive at the same time gets a slot of its own
    let c = base.load(Device::Cpu).unwrap();
    assert_eq!(cache.loads(), 2);
    assert!(c.adapter_names().is_empty());
    drop((b, c));
    let _d = base.load(Device::Cpu).unwrap();
    let _e = base.load(Device::Cpu).unwrap();
    assert_eq!(cache.loads(), 2, "both slots are reused");
}

/// Writes the `encode-prompts` artifact of `instructions` to `dir` as the kind does.
fn encode_to(dir: &Path, instructions: &[&str]) -> PromptTable {
    let enc = cocoflow_torch::models::open::prompt_encoder(&repo(), Device::Cpu)
        .unwrap()
        .expect("FLUX encodes prompts apart");
    let e = enc.encode_prompts(instructions).unwrap();
    let files = write_encodings(dir, 0, &e).unwrap();
    let owned: Vec<String> = instructions.iter().map(|s| s.to_string()).collect();
    write_manifest(dir, enc.backend(), "d", &owned, Some(files)).unwrap();
    PromptTable::open(dir).unwrap()
}

#[test]
fn cached_prompt_encodings_equal_inline_ones_without_the_text_encoders() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let table = encode_to(&tmp.path().join("p"), &["remove it", "turn it red"]);
    let inline = open(&repo(), Device::Cpu).unwrap();
    let t2 = table.clone();
    let cached = BaseModel::cached(&repo(), Arc::new(ModelCache::default()), "d")
        .with_prompts(Arc::new(move || Box::new(t2.clone())));
    let flux = cached.load_flux(Device::Cpu, false).unwrap();
    assert!(
        flux.pipeline.prompt_encoder.is_none(),
        "no text encoders are loaded"
    );
    let policy = cached.load(Device::Cpu).unwrap();
    let src = inline.encode(&images("cached", 3)).unwrap();
    let ins = ["turn it red", "remove it", "turn it red"];
    let a = inline.condition(&src, &ins).unwrap();
    let b = policy.condition(&src, &ins).unwrap();
    assert_eq!(
        a.parts.keys().collect::<Vec<_>>(),
        b.parts.keys().collect::<Vec<_>>()
    );
    for k in PROMPT_EMBEDS_KEYS {
        assert!(a.get(k).unwrap().equal(b.get(k).unwrap()), "`{k}` differs");
    }
    assert!(probe(&*inline).equal(&probe(&*policy)));
    // an instruction the artifact lacks is named; without a source nothing can encode
    let e = policy
        .condition(&src.narrow(0, 0, 1), &["make it blue"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"make it blue\"") && e.contains("prompts.json"),
        "{e}"
    );
    let e = flux
        .condition(&src.narrow(0, 0, 1), &["remove it"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("text encoders are not loaded"), "{e}");
    assert_eq!(table.lookup(&["remove it"]).unwrap().parts.len(), 2);
}

/// Gradients of every LoRA matrix of θ for one loss on θ's training forward.
fn lora_grads(policy: &dyn EditPolicy, checkpointing: bool) -> BTreeMap<String, Tensor> {
    let src = policy.encode(&images("grads", 2)).unwrap();
    let cond = policy
        .condition(&src, &["turn it red", "remove it"])
        .unwrap();
    let x = randn("grads/x", &[2, 4, 4, 4]);
    let target = randn("grads/target", &[2, 4, 4, 4]);
    let t = Tensor::from_slice(&[0.6f32, 0.2]);
    let vars = policy.adapter_variables(THETA).unwrap();
    for v in vars.values() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let fwd = policy
        .velocity_for_training(
            &x,
            &t,
            &cond,
            &ActiveAdapter::theta(),
            Some(2.5),
            checkpointing,
        )
        .unwrap();
    assert_eq!(fwd.is_checkpointed(), checkpointing);
    let loss = (&fwd.velocity - &target).square().mean(Kind::Float);
    fwd.backward(&loss).unwrap();
    vars.iter()
        .map(|(k, v)| (k.clone(), v.grad().copy()))
        .collect()
}

#[test]
fn checkpointed_training_forward_gives_the_plain_gradients() {
    tch::set_num_threads(1);
    let mut policy = open(&repo(), Device::Cpu).unwrap();
    assert!(policy.supports_gradient_checkpointing());
    policy.add_adapter(THETA, &lora()).unwrap();
    policy
        .set_trainable(Trainable::Adapter(THETA.into()))
        .unwrap();
    // B ≠ 0, so that A gets gradients too
    for (k, v) in policy.adapter_variables(THETA).unwrap() {
        if k.contains("lora_B") {
            let r = randn(&k, &v.size()) * 0.05;
            tch::no_grad(|| v.shallow_clone().copy_(&r));
        }
    }
    let plain = lora_grads(&*policy, false);
    let ck = lora_grads(&*policy, true);
    assert!(plain.len() > 8);
    let mut worst = 0f64;
    for (k, g) in &plain {
        assert!(
            g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
            "`{k}` got no gradient"
        );
        worst = worst.max(rel_err(&ck[k], g));
    }
    eprintln!("checkpointed training forward: worst relative gradient error {worst:.3e}");
    assert!(worst <= 1e-6, "{worst:.3e}");
}

fn workflow(repo: &Path) -> String {
    format!(
        r#"name: flux-prompts-test
tasks:
  data:
    kind: synth-data
    params: {{seed: 1, n_train: 6, n_bench: 2, size: 16, max_objects: 2}}
  base:
    kind: shell
    params:
      cmd: 'mkdir -p model && cp -r "$SRC"/. model/'
      env: {{SRC: "{repo}"}}
      outputs: {{model: model/}}
  prompts:
    kind: encode-prompts
    inputs: {{model: base.model, data: [data.train, data.bench]}}
  rollout_inline:
    kind: rollout
    inputs: {{model: base.model, state: base.model, data: data.train}}
    params: {{seed: 3, groups: 2, k: 2, steps: 2, batch: 4, guidance: 2.5}}
  rollout_cached:
    kind: rollout
    inputs: {{model: base.model, state: base.model, data: data.train, prompts: prompts.prompts}}
    params: {{seed: 3, groups: 2, k: 2, steps: 2, batch: 4, guidance: 2.5}}
  reward:
    kind: reward
    inputs: {{rollouts: rollout_inline.rollouts, data: data.train}}
    params: {{ban_std: -1.0, max_invalid_fraction: 1.0}}
  train_inline:
    kind: nft-train
    inputs: {{model: base.model, state: base.model, rollouts: rollout_inline.rollouts, rewards: reward.rewards}}
    params: {{seed: 5, micro_batch: 4, lr: 0.05, lora_rank: 8, lora_alpha: 16.0}}
  train_cached:
    kind: nft-train
    inputs: {{model: base.model, state: base.model, rollouts: rollout_inline.rollouts, rewards: reward.rewards, prompts: prompts.prompts}}
    params: {{seed: 5, micro_batch: 4, lr: 0.05, lora_rank: 8, lora_alpha: 16.0}}
  train_checkpointed:
    kind: nft-train
    inputs: {{model: base.model, state: base.model, rollouts: rollout_inline.rollouts, rewards: reward.rewards, prompts: prompts.prompts}}
    params: {{seed: 5, micro_batch: 4, lr: 0.05, lora_rank: 8, lora_alpha: 16.0, gradient_checkpointing: true}}
"#,
        repo = repo.display()
    )
}

/// Every file under `dir` by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
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
    walk(dir, dir, &mut out);
    out
}

#[test]
fn rl_kinds_on_cached_prompts_and_checkpointing_match_the_plain_ones() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let r = run(&tmp.path().join("run"), &workflow(&repo()));
    let p = PromptTable::open(&r.output("prompts", "prompts")).unwrap();
    assert!(p.encoded() && p.manifest.backend == "flux-kontext");
    assert!(!p.manifest.instructions.is_empty());
    let (a, b) = (
        files(&r.output("rollout_inline", "rollouts")),
        files(&r.output("rollout_cached", "rollouts")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "rollouts: `{k}` differs with cached prompt encodings"
        );
    }
    let (a, b) = (
        files(&r.output("train_inline", "state")),
        files(&r.output("train_cached", "state")),
    );
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "nft-train: `{k}` differs with cached prompt encodings"
        );
    }
    // checkpointing: the same LoRA update within 1e-6 (relative to the update's size)
    let theta = |task: &str| {
        read_safetensors(
            &r.output(task, "state")
                .join("theta/adapter_model.safetensors"),
        )
        .unwrap()
    };
    let (plain, ck) = (theta("train_inline"), theta("train_checkpointed"));
    let mut worst = 0f64;
    let mut moved = 0;
    for (k, t) in &plain {
        // A starts from its seeded init, B from 0: the update is θ − θ₀ for B, and A's
        // gradient is 0 at B = 0 (weight decay only), so B carries the comparison
        if k.contains("lora_B") {
            if t.abs().max().double_value(&[]) > 0.0 {
                moved += 1;
            }
            worst = worst.max(rel_err(&ck[k], t));
        } else {
            assert!(ck[k].equal(t) || rel_err(&ck[k], t) <= 1e-6, "`{k}`");
        }
    }
    assert!(moved > 0, "one step moved B");
    eprintln!("nft-train with gradient checkpointing: worst relative update error {worst:.3e}");
    assert!(worst <= 1e-6, "{worst:.3e}");
    let stats = |task: &str| r.result(task).metrics["grad_norm"].as_f64().unwrap();
    let (g0, g1) = (stats("train_inline"), stats("train_checkpointed"));
    assert!((g0 - g1).abs() <= 1e-6 * g0, "grad norms {g0} vs {g1}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Rewrites `key` of the safetensors file `path` with `f(tensor)`.
fn rewrite(path: &Path, key: &str, f: impl Fn(&Tensor) -> Tensor) {
    let mut t = read_safetensors(path).unwrap();
    let new = f(&t[key]);
    t.insert(key.to_string(), new);
    let items: Vec<(String, Tensor)> = t.into_iter().collect();
    Tensor::write_safetensors(&items, path).unwrap();
}

/// Cuts the data of every transformer shard short (headers intact): reading its weights
/// fails, so an error about another file proves they were not read.
fn truncate_transformer(dir: &Path) {
    for e in std::fs::read_dir(dir.join("transformer")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            std::fs::write(&p, &bytes[..8 + n + 4]).unwrap();
        }
    }
}

fn load_err(dir: &Path) -> String {
    FluxKontextPipeline::load(dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_bad_later_component_is_named_before_any_weights_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    copy_dir(&repo(), &dir);
    truncate_transformer(&dir);
    // the truncated shards alone: the transformer fails when its weights are read
    let e = load_err(&dir);
    assert!(
        e.contains("transformer/diffusion_pytorch_model-0000"),
        "{e}"
    );
    // a mis-shaped T5 tensor is reported first
    let t5 = dir.join("text_encoder_2/model.safetensors");
    let key = "encoder.block.1.layer.0.SelfAttention.q.weight";
    let shape = read_safetensors(&t5).unwrap()[key].size();
    rewrite(&t5, key, |t| t.narrow(0, 0, 4).contiguous());
    let mut short = shape.clone();
    short[0] = 4;
    assert_eq!(
        load_err(&dir),
        format!(
            "checkpoint `{}` does not match the model its config describes:\n  1 mis-shaped: \
             `{key}` (file {short:?} F32, model {shape:?} Float)",
            t5.display()
        )
    );
    // a VAE tensor of the wrong dtype too (the VAE is checked before the text encoders)
    let vae = dir.join("vae/diffusion_pytorch_model.safetensors");
    let vkey = "decoder.conv_out.bias";
    let vshape = read_safetensors(&vae).unwrap()[vkey].size();
    rewrite(&vae, vkey, |t| t.to_kind(Kind::Int64));
    assert_eq!(
        load_err(&dir),
        format!(
            "checkpoint `{}` does not match the model its config describes:\n  1 mis-shaped: \
             `{vkey}` (file {vshape:?} I64, model {vshape:?} Float)",
            vae.display()
        )
    );
    // and through the backend seam, a policy load reports the same
    let e = open(&dir, Device::Cpu).err().unwrap().to_string();
    assert!(
        e.contains(vkey) && e.contains(&vae.display().to_string()),
        "{e}"
    );
    // a missing shard of the transformer is named before anything is built
    std::fs::remove_file(
        dir.join("transformer/diffusion_pytorch_model-00003-of-00004.safetensors"),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("00003-of-00004") && e.contains("is missing"),
        "{e}"
    );
}

/// An adapter for another model (tiny-kontext's shapes) is refused from its file and the
/// repository's headers — naming the file and the key — before the pipeline is loaded (the
/// model cache stays empty), by `eval`'s policy loading and by an RL state's loading.
#[test]
fn a_lora_for_another_model_is_named_before_the_pipeline_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let bad: BTreeMap<String, Tensor> = BTreeMap::from([(
        "transformer_blocks.0.attn.to_q.lora_A.weight".to_string(),
        Tensor::zeros([4, 96], (Kind::Float, Device::Cpu)),
    )]);
    let adapter = tmp.path().join("theta");
    cocoflow_torch::models::peft::export(&adapter, &lora(), &bad).unwrap();
    let cache = Arc::new(ModelCache::with_limit(1 << 30));
    let base = BaseModel::cached(&repo(), cache.clone(), "d");
    let e = cocoflow_torch::eval::load_policy(&base, Some(&adapter), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    let file = adapter.join("adapter_model.safetensors");
    assert!(
        e.contains(&file.display().to_string())
            && e.contains("`transformer_blocks.0.attn.to_q.lora_A.weight` (file [4, 96] Float, model [4, 32] Float)"),
        "{e}"
    );
    assert_eq!(cache.loads(), 0, "nothing was loaded");
    // the same adapter from the headers alone
    let e = cocoflow_torch::models::open::check_adapter(&repo(), &adapter)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "the other targets are missing: {e}");
    // an adapter made for this repository passes
    let good = tmp.path().join("good");
    let mut p = open(&repo(), Device::Cpu).unwrap();
    p.add_adapter(THETA, &lora()).unwrap();
    p.save_adapter(THETA, &good).unwrap();
    cocoflow_torch::models::open::check_adapter(&repo(), &good).unwrap();
}
