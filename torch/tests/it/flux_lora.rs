//! FLUX.1 Kontext through the backend seam: the RL kinds (`rollout` → `reward` → `nft-train`
//! → `ema`) run on the tiny random repository of `torch/tests/golden/flux` with embedded
//! guidance 2.5; θ's LoRA (r 32, α 64 on the attention projections) is exported in diffusers'
//! `load_lora_weights` layout; diffusers (`.venv/bin/python`, `lora_edit.py`) loads it into
//! `FluxKontextPipeline` and edits from the same noise as `cocoflow edit`'s library
//! ([`cocoflow_torch::edit`]): max relative error ≤ 1e-4 in float32. Plus the backend
//! detection and its errors.

use cocoflow_torch::edit::{EditSettings, Noise, edit, load_lora};
use cocoflow_torch::models::checkpoint::{read_safetensors, write_safetensors};
use cocoflow_torch::models::flux_kontext::lora_export::{DIFFUSERS_LORA_WEIGHTS, export_diffusers};
use cocoflow_torch::models::flux_kontext::vae::pack_latents;
use cocoflow_torch::models::{ActiveAdapter, Backend, open, weights_digest};
use cocoflow_torch::rl::state;
use cocoflow_torch::sampling::SamplerKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::common::run;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/flux/tiny-flux-kontext")
}

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    assert_eq!(a.size(), b.size(), "shapes differ");
    (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

/// One loop iteration on the FLUX repository (the tiny test's settings, guidance 2.5, LoRA
/// r 32 / α 64, a large learning rate so that one step moves θ visibly).
fn workflow(repo: &Path) -> String {
    format!(
        r#"name: flux-rl-test
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
  rl:
    loop:
      iterations: 1
      carry:
        state: {{init: base.model, next: ema.state}}
      tasks:
        rollout:
          kind: rollout
          inputs: {{model: base.model, state: carry.state, data: data.train}}
          params: {{seed: 3, groups: 2, k: 2, steps: 2, batch: 4, guidance: 2.5}}
        reward:
          kind: reward
          inputs: {{rollouts: rollout.rollouts, data: data.train}}
          params: {{ban_std: -1.0, max_invalid_fraction: 1.0}}
        train:
          kind: nft-train
          inputs: {{model: base.model, state: carry.state, rollouts: rollout.rollouts, rewards: reward.rewards}}
          params: {{seed: 5, micro_batch: 4, lr: 0.05, lora_rank: 32, lora_alpha: 64.0}}
        ema:
          kind: ema
          inputs: {{state: train.state}}
"#,
        repo = repo.display()
    )
}

#[test]
fn backend_detection_and_errors() {
    assert_eq!(Backend::detect(&repo()).unwrap(), Backend::FluxKontext);
    let e = Backend::detect(&repo().join("transformer"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("FluxTransformer2DModel") && e.contains("model_index.json"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let e = open(tmp.path(), Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("not a model directory"), "{e}");
    // a missing weight file of the last component is named before anything is loaded
    let copy = tmp.path().join("repo");
    assert!(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(repo())
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let gone = copy.join("text_encoder_2/model.safetensors");
    std::fs::remove_file(&gone).unwrap();
    let e = open(&copy, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains(&gone.display().to_string()), "{e}");
    // the digest of a repository is stable and names every file
    let d = weights_digest(&repo()).unwrap();
    assert_eq!(d, weights_digest(&repo()).unwrap());
    assert_eq!(d.len(), 64);
}

#[test]
fn nft_trained_lora_loads_in_diffusers_and_edits_the_same() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let r = run(&tmp.path().join("run"), &workflow(&repo()));
    let st = r.output("rl[1].ema", "state");
    let info = state::read_info(&st).unwrap().unwrap();
    assert_eq!((info.iteration, info.step), (1, 1));
    let m = cocoflow_torch::artifacts::rollouts::RolloutManifest::read(
        &r.output("rl[1].rollout", "rollouts"),
    )
    .unwrap();
    assert_eq!(m.sampler.guidance, Some(2.5));
    assert_eq!(
        m.latent_shape,
        [4, 4, 4],
        "FLUX latents: 4 channels, 16/4 pixels a side"
    );

    // θ in diffusers' layout (`cocoflow export-lora --adapter <state> --to DIR`)
    let lora = tmp.path().join("lora");
    let ext = cocoflow_torch::cli::export_lora::extension();
    let m = ext
        .command
        .clone()
        .try_get_matches_from([
            "export-lora",
            "--adapter",
            st.to_str().unwrap(),
            "--to",
            lora.to_str().unwrap(),
        ])
        .unwrap();
    assert_eq!((ext.run)(&m), 0);
    let file = lora.join(DIFFUSERS_LORA_WEIGHTS);
    // the library call writes the same bytes
    let again = export_diffusers(&st.join(state::THETA_DIR), &tmp.path().join("lora2")).unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let keys: Vec<String> = read_safetensors(&file).unwrap().into_keys().collect();
    assert!(keys.contains(&"transformer.transformer_blocks.0.attn.to_q.lora_A.weight".into()));
    assert!(
        keys.contains(&"transformer.single_transformer_blocks.1.attn.to_v.lora_B.weight".into())
    );
    assert!(
        keys.contains(&"transformer.transformer_blocks.1.attn.to_add_out.lora_B.weight".into())
    );
    assert!(keys.iter().all(|k| k.starts_with("transformer.")));

    // cocoflow's edit with the exported LoRA, and without
    tch::manual_seed(11);
    let (h, w) = (16, 24);
    let image = Tensor::rand([3, h, w], (Kind::Float, Device::Cpu));
    let packed = Tensor::randn([1, (h / 8) * (w / 8), 16], (Kind::Float, Device::Cpu));
    let prompt = "turn the red circle blue";
    let settings = |noise: Tensor| EditSettings {
        image: &image,
        instruction: prompt,
        height: Some(h),
        width: Some(w),
        steps: 3,
        guidance: Some(2.5),
        sampler: SamplerKind::Euler,
        noise: Noise::Latents(noise),
    };
    let mut policy = open(&repo(), Device::Cpu).unwrap();
    let plain = edit(&*policy, &settings(packed.copy())).unwrap();
    load_lora(&mut *policy, &lora).unwrap();
    let ours = edit(&*policy, &settings(packed.copy())).unwrap();
    let moved = rel_err(&ours.latents, &plain.latents);
    eprintln!("flux lora: the LoRA moves the edit's latents by {moved:.3e} (relative)");
    assert!(
        moved > 1e-3,
        "the trained LoRA barely changes the edit ({moved:.3e})"
    );

    // diffusers with load_lora_weights, same inputs
    let inputs = tmp.path().join("inputs.safetensors");
    write_safetensors(
        &inputs,
        &BTreeMap::from([
            ("image".to_string(), image.unsqueeze(0)),
            ("latents".to_string(), packed.copy()),
        ]),
    )
    .unwrap();
    let out = tmp.path().join("diffusers.safetensors");
    let args = serde_json::json!({
        "repo": repo(), "lora": lora, "inputs": inputs, "prompt": prompt,
        "height": h, "width": w, "steps": 3, "guidance": 2.5,
        "max_sequence_length": cocoflow_torch::models::flux_kontext::edit_policy::MAX_SEQUENCE_LENGTH,
        "out": out,
    });
    let args_file = tmp.path().join("args.json");
    std::fs::write(&args_file, args.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/flux/lora_edit.py");
    let run = std::process::Command::new(python())
        .arg(&script)
        .arg(&args_file)
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("DIFFUSERS_VERBOSITY", "error")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (scripts/setup.sh makes it): {e}",
                python().display()
            )
        });
    assert!(
        run.status.success(),
        "lora_edit.py failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs = read_safetensors(&out).unwrap();
    let e_lat = rel_err(&pack_latents(&ours.latents).unwrap(), &theirs["latents"]);
    let e_img = rel_err(&ours.image.unsqueeze(0), &theirs["image"]);
    eprintln!(
        "flux lora: cocoflow vs diffusers load_lora_weights: latents {e_lat:.3e}, image {e_img:.3e}"
    );
    assert!(e_lat <= 1e-4, "latents: max relative error {e_lat:.3e}");
    assert!(e_img <= 1e-4, "image: max relative error {e_img:.3e}");
}

/// A LoRA for another model (tiny-kontext shapes) is refused, naming the file and the keys.
#[test]
fn lora_for_another_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut policy = open(&repo(), Device::Cpu).unwrap();
    let bad: BTreeMap<String, Tensor> = BTreeMap::from([(
        "transformer_blocks.0.attn.to_q.lora_A.weight".to_string(),
        Tensor::zeros([4, 96], (Kind::Float, Device::Cpu)),
    )]);
    cocoflow_torch::models::peft::export(
        &tmp.path().join("a"),
        &cocoflow_torch::models::LoraConfig {
            r: 4,
            ..Default::default()
        },
        &bad,
    )
    .unwrap();
    let e = policy
        .load_adapter(&tmp.path().join("a"), "default")
        .unwrap_err()
        .to_string();
    assert!(e.contains("adapter_model.safetensors"), "{e}");
    assert!(
        e.contains("transformer_blocks.0.attn.to_q.lora_A.weight"),
        "{e}"
    );
    assert!(policy.adapter_names().is_empty());
}

/// FLUX's guidance is the embedded value: `guidance_of` passes the sampler's `guidance` to
/// every velocity call (no classifier-free mixing), and the value changes the velocity.
#[test]
fn guidance_reaches_the_guidance_embedding() {
    let policy = open(&repo(), Device::Cpu).unwrap();
    assert!(policy.embeds_guidance());
    let cfg = |g: Option<f64>| cocoflow_torch::sampling::SamplerConfig {
        guidance: g,
        ..Default::default()
    };
    let g = cocoflow_torch::sampling::guidance_of;
    assert_eq!(g(&*policy, &cfg(Some(2.5))), (None, Some(2.5)));
    assert_eq!(g(&*policy, &cfg(None)), (None, Some(3.5)));
    tch::manual_seed(3);
    let src = policy
        .encode(&Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu)))
        .unwrap();
    let cond = policy.condition(&src, &["a", "turn it red"]).unwrap();
    let x = Tensor::randn([2, 4, 4, 4], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.7f32, 0.3]);
    let v = |g: f64| {
        tch::no_grad(|| {
            policy
                .velocity_with(&x, &t, &cond, &ActiveAdapter::Off, Some(g))
                .unwrap()
        })
    };
    assert!(rel_err(&v(2.5), &v(1.0)) > 1e-4);
    assert!(v(2.5).equal(&v(2.5)));
    // a model that embeds guidance refuses a call without a value
    let e = policy
        .velocity_with(&x, &t, &cond, &ActiveAdapter::Off, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("guidance"), "{e}");
}
