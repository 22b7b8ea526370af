//! Qwen-Image-Edit through the backend seam ([`cocoflow_torch::models::open`]): detection and
//! its errors, the conditioning (Qwen2.5-VL encodings made once per (instruction, source)),
//! true CFG inside the velocity and the conditional branch in training, padded batches, and
//! the RL kinds (`rollout` → `reward` → `nft-train` → `ema`) on the tiny random repository
//! whose θ, exported by `cocoflow export-lora`, loads into `QwenImageEditPipeline` (and, with
//! the repository's class renamed, `QwenImageEditPlusPipeline`) with `load_lora_weights`
//! (`lora_edit.py`) and edits the same as `cocoflow edit`'s library from the same noise: max
//! relative error ≤ 1e-4 in float32.

use super::{golden_dir, rel_err, repo};
use cocoflow_torch::edit::{EditSettings, Noise, edit, load_lora};
use cocoflow_torch::models::checkpoint::{read_safetensors, write_safetensors};
use cocoflow_torch::models::flux_kontext::lora_export::{DIFFUSERS_LORA_WEIGHTS, export_diffusers};
use cocoflow_torch::models::qwen_image_edit::edit_policy::{
    NEGATIVE_PROMPT_EMBEDS, PROMPT_EMBEDS, PROMPT_MASK,
};
use cocoflow_torch::models::qwen_image_edit::{QwenImageEdit, pack_latents, true_cfg};
use cocoflow_torch::models::{
    ActiveAdapter, Backend, Conditioning, EditPolicy, LoraConfig, THETA, open, weights_digest,
};
use cocoflow_torch::rl::state;
use cocoflow_torch::sampling::{SamplerConfig, SamplerKind, guidance_of};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::common::run;

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

fn copy_repo(to: &Path) {
    assert!(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(repo())
            .arg(to)
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn backend_detection_and_errors() {
    assert_eq!(Backend::detect(&repo()).unwrap(), Backend::QwenImageEdit);
    assert_eq!(Backend::QwenImageEdit.name(), "qwen-image-edit");
    // a component directory is not a model
    let e = Backend::detect(&repo().join("transformer"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("QwenImageTransformer2DModel") && e.contains("model_index.json"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("repo");
    copy_repo(&copy);
    let index = copy.join("model_index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    // an unknown pipeline is named, with the supported ones
    std::fs::write(
        &index,
        text.replace("QwenImageEditPipeline", "QwenImagePipeline"),
    )
    .unwrap();
    let e = Backend::detect(&copy).unwrap_err().to_string();
    assert!(
        e.contains(&index.display().to_string())
            && e.contains("`QwenImagePipeline`")
            && e.contains("QwenImageEditPipeline")
            && e.contains("FluxKontextPipeline"),
        "{e}"
    );
    // 2509 and later: the Plus pipeline, the same backend
    std::fs::write(
        &index,
        text.replace("QwenImageEditPipeline", "QwenImageEditPlusPipeline"),
    )
    .unwrap();
    assert_eq!(Backend::detect(&copy).unwrap(), Backend::QwenImageEdit);
    std::fs::write(&index, "{}").unwrap();
    let e = Backend::detect(&copy).unwrap_err().to_string();
    assert!(e.contains("no `_class_name`"), "{e}");
    // a wrong component class is named
    std::fs::write(
        &index,
        text.replace("AutoencoderKLQwenImage", "AutoencoderKL"),
    )
    .unwrap();
    let e = Backend::detect(&copy).unwrap_err().to_string();
    assert!(e.contains("component `vae`"), "{e}");
    std::fs::write(&index, &text).unwrap();
    // a missing transformer shard is named before anything is used
    let shard = copy
        .join("transformer")
        .join("diffusion_pytorch_model-00003-of-00007.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let e = open(&copy, Device::Cpu).err().unwrap().to_string();
    assert!(
        e.contains("diffusion_pytorch_model-00003-of-00007.safetensors"),
        "{e}"
    );
    // the digest of a repository is stable
    let d = weights_digest(&repo()).unwrap();
    assert_eq!(d, weights_digest(&repo()).unwrap());
    assert_eq!(d.len(), 64);
}

fn source_images(b: i64, h: i64, w: i64) -> Tensor {
    tch::manual_seed(5);
    // 8-bit values, as images from files
    (Tensor::rand([b, 3, h, w], (Kind::Float, Device::Cpu)) * 255.0).round() / 255.0
}

#[test]
fn conditioning_is_encoded_once_and_padded_batches_agree() {
    let policy = QwenImageEdit::load(&repo(), Device::Cpu).unwrap();
    assert_eq!(policy.latent_shape(32, 48).unwrap(), [4, 4, 6]);
    let e = policy.latent_shape(40, 48).unwrap_err().to_string();
    assert!(e.contains("multiple of 16"), "{e}");
    let images = source_images(2, 32, 32);
    let src = policy.encode(&images).unwrap();
    assert_eq!(src.size(), [2, 4, 4, 4]);
    let ins = [
        "a",
        "turn the large red circle into a small blue square please",
    ];
    let cond = policy.condition(&src, &ins).unwrap();
    // 2 instructions + the negative prompt, per source
    assert_eq!(policy.cached_prompts(), 4);
    let again = policy.condition(&src, &ins).unwrap();
    assert_eq!(policy.cached_prompts(), 4, "encoded again");
    assert!(
        cond.get(PROMPT_EMBEDS)
            .unwrap()
            .equal(again.get(PROMPT_EMBEDS).unwrap())
    );
    let mask = cond.get(PROMPT_MASK).unwrap();
    let lens: Vec<i64> = Vec::try_from(mask.sum_dim_intlist(1, false, Kind::Int64)).unwrap();
    assert!(lens[0] < lens[1], "{lens:?}");
    // the pixels' conditioning differs from the decoded latent's (another condition image)
    let px = policy.encode_condition(&images, &ins).unwrap();
    assert_eq!(policy.cached_prompts(), 8);
    assert!(
        rel_err(
            px.get(PROMPT_EMBEDS).unwrap(),
            cond.get(PROMPT_EMBEDS).unwrap()
        ) > 0.0
    );

    // item by item (no padding) = the padded batch; Conditioning::cat pads (B, L, D) along L
    let cond = px;
    let one = |i: i64| {
        policy
            .encode_condition(&images.narrow(0, i, 1), &[ins[i as usize]])
            .unwrap()
    };
    let (c0, c1) = (one(0), one(1));
    assert_eq!(
        policy.cached_prompts(),
        8,
        "the same sources and prompts again"
    );
    let joined = Conditioning::cat(&[&c0, &c1]).unwrap();
    assert_eq!(
        joined.get(PROMPT_EMBEDS).unwrap().size(),
        cond.get(PROMPT_EMBEDS).unwrap().size()
    );
    tch::manual_seed(9);
    let x = Tensor::randn([2, 4, 4, 4], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.8f32, 0.35]);
    let v = |c: &Conditioning, x: &Tensor, t: &Tensor, g: Option<f64>| {
        tch::no_grad(|| {
            policy
                .velocity_with(x, t, c, &ActiveAdapter::Off, g)
                .unwrap()
        })
    };
    let batched = v(&cond, &x, &t, Some(4.0));
    assert!(rel_err(&v(&joined, &x, &t, Some(4.0)), &batched) < 1e-5);
    for i in 0..2 {
        let c = if i == 0 { &c0 } else { &c1 };
        let single = v(c, &x.narrow(0, i, 1), &t.narrow(0, i, 1), Some(4.0));
        let e = rel_err(&single, &batched.narrow(0, i, 1));
        assert!(e < 1e-5, "item {i}: {e:.3e}");
    }
}

#[test]
fn true_cfg_in_sampling_and_the_conditional_branch_in_training() {
    let policy = open(&repo(), Device::Cpu).unwrap();
    assert!(policy.embeds_guidance() && !policy.guidance_in_training());
    let cfg = |g: Option<f64>| SamplerConfig {
        guidance: g,
        ..Default::default()
    };
    assert_eq!(guidance_of(&*policy, &cfg(Some(4.0))), (None, Some(4.0)));
    let images = source_images(2, 32, 48);
    let cond = policy
        .encode_condition(&images, &["add a hat", "make it night"])
        .unwrap();
    tch::manual_seed(2);
    let x = Tensor::randn([2, 4, 4, 6], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.6f32, 0.2]);
    let v = |c: &Conditioning, g: Option<f64>| {
        tch::no_grad(|| {
            policy
                .velocity_with(&x, &t, c, &ActiveAdapter::Off, g)
                .unwrap()
        })
    };
    let cond_v = v(&cond, None);
    // scale 1 (training rollouts) and no value (training forwards): the conditional branch
    assert!(v(&cond, Some(1.0)).equal(&cond_v));
    // scale 4: the reference's true CFG against the negative prompt " "
    let uncond = policy.unconditional(&cond).unwrap();
    assert!(
        uncond
            .get(PROMPT_EMBEDS)
            .unwrap()
            .equal(cond.get(NEGATIVE_PROMPT_EMBEDS).unwrap())
    );
    let neg_v = v(&uncond, None);
    let want = true_cfg(
        &pack_latents(&cond_v).unwrap(),
        &pack_latents(&neg_v).unwrap(),
        4.0,
    );
    let got = pack_latents(&v(&cond, Some(4.0))).unwrap();
    assert!(rel_err(&got, &want) < 1e-6);
    assert!(rel_err(&got, &pack_latents(&cond_v).unwrap()) > 1e-3);
    // the per-token norm is the conditional velocity's
    let n = |t: &Tensor| t.norm_scalaropt_dim(2.0, [-1i64], false);
    assert!(rel_err(&n(&got), &n(&pack_latents(&cond_v).unwrap())) < 1e-5);
}

/// LoRA: adapters on the attention projections, the base frozen, wrong adapters refused.
#[test]
fn lora_adapters_on_the_attention_projections() {
    let mut policy = open(&repo(), Device::Cpu).unwrap();
    policy.add_adapter(THETA, &LoraConfig::default()).unwrap();
    let vars = policy.adapter_variables(THETA).unwrap();
    // 2 blocks × 8 projections × (A, B)
    assert_eq!(vars.len(), 32, "{:?}", vars.keys().collect::<Vec<_>>());
    assert!(vars.contains_key("transformer_blocks.1.attn.to_add_out.lora_B.weight"));
    assert!(vars.contains_key("transformer_blocks.0.attn.add_k_proj.lora_A.weight"));
    let e = policy
        .set_trainable(cocoflow_torch::models::Trainable::Base)
        .unwrap_err()
        .to_string();
    assert!(e.contains("LoRA adapters only"), "{e}");
    let e = policy
        .add_adapter(
            "x",
            &LoraConfig {
                target_modules: vec!["nothing_here".into()],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("match no linear layer"), "{e}");
    // a LoRA of other shapes is refused naming the file and key
    let tmp = tempfile::tempdir().unwrap();
    let bad = BTreeMap::from([(
        "transformer_blocks.0.attn.to_q.lora_A.weight".to_string(),
        Tensor::zeros([4, 96], (Kind::Float, Device::Cpu)),
    )]);
    cocoflow_torch::models::peft::export(
        &tmp.path().join("a"),
        &LoraConfig {
            r: 4,
            ..Default::default()
        },
        &bad,
    )
    .unwrap();
    let e = policy
        .load_adapter(&tmp.path().join("a"), "other")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains("transformer_blocks.0.attn.to_q.lora_A.weight"),
        "{e}"
    );
    assert_eq!(policy.adapter_names(), vec![THETA.to_string()]);
}

/// One loop iteration on the Qwen repository: true-CFG 1.0 rollouts, LoRA r 32 / α 64, a large
/// learning rate so that one step moves θ visibly.
fn workflow(repo: &Path) -> String {
    format!(
        r#"name: qwen-rl-test
tasks:
  data:
    kind: synth-data
    params: {{seed: 1, n_train: 6, n_bench: 2, size: 32, max_objects: 2}}
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
          params: {{seed: 3, groups: 2, k: 2, steps: 2, batch: 4, guidance: 1.0}}
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
    assert_eq!(
        m.latent_shape,
        [4, 4, 4],
        "Qwen latents: z_dim 4 channels, 32/8 cells a side"
    );

    // θ in diffusers' layout (`cocoflow export-lora --adapter <state> --to DIR`)
    let lora = tmp.path().join("lora");
    let ext = cocoflow_torch::cli::export_lora::extension();
    let matches = ext
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
    assert_eq!((ext.run)(&matches), 0);
    let file = lora.join(DIFFUSERS_LORA_WEIGHTS);
    let again = export_diffusers(&st.join(state::THETA_DIR), &tmp.path().join("lora2")).unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let keys: Vec<String> = read_safetensors(&file).unwrap().into_keys().collect();
    for k in [
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
        "transformer.transformer_blocks.1.attn.to_add_out.lora_B.weight",
        "transformer.transformer_blocks.1.attn.add_v_proj.lora_A.weight",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} not in {keys:?}");
    }
    assert!(keys.iter().all(|k| k.starts_with("transformer.")));

    // cocoflow's edit with the exported LoRA (true CFG 4), and without
    let (h, w) = (32, 48);
    let image = source_images(1, h, w).get(0);
    tch::manual_seed(11);
    let packed = Tensor::randn([1, (h / 16) * (w / 16), 16], (Kind::Float, Device::Cpu));
    let prompt = "turn the red circle blue";
    let settings = |noise: Tensor| EditSettings {
        image: &image,
        instruction: prompt,
        height: Some(h),
        width: Some(w),
        steps: 3,
        guidance: Some(4.0),
        sampler: SamplerKind::Euler,
        noise: Noise::Latents(noise),
    };
    let mut policy = open(&repo(), Device::Cpu).unwrap();
    let plain = edit(&*policy, &settings(packed.copy())).unwrap();
    load_lora(&mut *policy, &lora).unwrap();
    let ours = edit(&*policy, &settings(packed.copy())).unwrap();
    let moved = rel_err(&ours.latents, &plain.latents);
    eprintln!("qwen lora: the LoRA moves the edit's latents by {moved:.3e} (relative)");
    assert!(
        moved > 1e-3,
        "the trained LoRA barely changes the edit ({moved:.3e})"
    );

    // diffusers with load_lora_weights, same inputs
    let inputs = tmp.path().join("inputs.safetensors");
    let u8_image = (&image * 255.0).round().to_kind(Kind::Uint8);
    write_safetensors(
        &inputs,
        &BTreeMap::from([
            ("image".to_string(), u8_image),
            ("latents".to_string(), packed.copy()),
        ]),
    )
    .unwrap();
    let diffusers = |name: &str, repo: &Path, plus: bool| {
        let out = tmp.path().join(format!("{name}.safetensors"));
        let args = serde_json::json!({
            "repo": repo, "lora": lora, "inputs": inputs, "prompt": prompt,
            "steps": 3, "true_cfg_scale": 4.0, "out": out, "plus": plus,
        });
        let args_file = tmp.path().join(format!("{name}.json"));
        std::fs::write(&args_file, args.to_string()).unwrap();
        let py = std::process::Command::new(python())
            .arg(golden_dir().join("lora_edit.py"))
            .arg(&args_file)
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .env("DIFFUSERS_VERBOSITY", "error")
            .env("TRANSFORMERS_VERBOSITY", "error")
            .env("TOKENIZERS_PARALLELISM", "false")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (scripts/setup.sh makes it): {e}",
                    python().display()
                )
            });
        assert!(
            py.status.success(),
            "lora_edit.py failed:\n{}",
            String::from_utf8_lossy(&py.stderr)
        );
        read_safetensors(&out).unwrap()
    };
    let compare =
        |what: &str, ours: &cocoflow_torch::edit::Edited, theirs: &BTreeMap<String, Tensor>| {
            let e_lat = rel_err(&pack_latents(&ours.latents).unwrap(), &theirs["latents"]);
            let e_img = rel_err(&ours.image.unsqueeze(0), &theirs["image"]);
            eprintln!(
                "qwen lora ({what}): cocoflow vs diffusers load_lora_weights: latents {e_lat:.3e}, \
             image {e_img:.3e}"
            );
            assert!(
                e_lat <= 1e-4,
                "{what} latents: max relative error {e_lat:.3e}"
            );
            assert!(
                e_img <= 1e-4,
                "{what} image: max relative error {e_img:.3e}"
            );
        };
    compare(
        "QwenImageEditPipeline",
        &ours,
        &diffusers("edit", &repo(), false),
    );

    // the same repository as a QwenImageEditPlusPipeline (2509's template and encoder image)
    let plus_repo = tmp.path().join("plus");
    copy_repo(&plus_repo);
    let index = plus_repo.join("model_index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replace("QwenImageEditPipeline", "QwenImageEditPlusPipeline"),
    )
    .unwrap();
    let mut plus = open(&plus_repo, Device::Cpu).unwrap();
    load_lora(&mut *plus, &lora).unwrap();
    let ours_plus = edit(&*plus, &settings(packed.copy())).unwrap();
    assert!(
        rel_err(&ours_plus.latents, &ours.latents) > 1e-4,
        "the Plus template and encoder image change the edit"
    );
    compare(
        "QwenImageEditPlusPipeline",
        &ours_plus,
        &diffusers("plus", &plus_repo, true),
    );
}

/// The sampler's σ schedule from the policy's scheduler config (float64) is the pipeline's
/// (float32: exponential dynamic shift, stretched to `shift_terminal`).
#[test]
fn sampler_schedule_is_the_pipelines() {
    let policy = QwenImageEdit::load(&repo(), Device::Cpu).unwrap();
    let cfg = policy.scheduler();
    assert_eq!(cfg.shift_terminal, Some(0.02));
    for (steps, seq) in [(2, 4), (3, 6), (10, 1024), (28, 4096)] {
        let ours = cfg.sigmas(steps, seq);
        let theirs = cocoflow_torch::models::qwen_image_edit::qwen_schedule(
            &policy.pipeline.scheduler,
            steps,
            seq,
        )
        .unwrap();
        assert_eq!(ours.len(), theirs.sigmas.len());
        for (a, b) in ours.iter().zip(&theirs.sigmas) {
            assert!(
                (a - *b as f64).abs() < 1e-6,
                "{steps}/{seq}: {ours:?} vs {:?}",
                theirs.sigmas
            );
        }
        assert_eq!(*ours.last().unwrap(), 0.0);
    }
    // one step: nothing to stretch
    assert_eq!(cfg.sigmas(1, 4), vec![1.0, 0.0]);
}

/// `encode-prompts`' Qwen path (the VAE round trip and the Qwen2.5-VL states per (prompt,
/// condition image)) written as the artifact, one instruction held back: a policy loaded
/// without its prompt encoder conditions exactly as the full policy does, takes the encodings
/// from the artifact, and encodes the held-back one with the encoder loaded on demand (counted).
#[test]
fn cached_prompt_encodings_replace_the_prompt_encoder() {
    use cocoflow_torch::artifacts::prompts::{
        PromptTable, write_entry, write_manifest_with_images,
    };
    use cocoflow_torch::models::lease::Leased;
    use cocoflow_torch::models::qwen_image_edit::QwenConditionEncoder;
    use cocoflow_torch::models::qwen_image_edit::edit_policy::{
        CACHED_STATES, NEGATIVE_PROMPT_MASK,
    };
    use cocoflow_torch::models::qwen_image_edit::pipeline::NEGATIVE_PROMPT;

    let images = source_images(2, 32, 32);
    let ins = ["a", "turn the large red circle into a small blue square"];
    let full = QwenImageEdit::load(&repo(), Device::Cpu).unwrap();
    let src = full.encode(&images).unwrap();
    // one image at a time: a latent does not depend on its batch
    assert!(
        full.encode(&images.narrow(0, 1, 1))
            .unwrap()
            .equal(&src.narrow(0, 1, 1))
    );
    let want = full.condition(&src, &ins).unwrap();

    let enc = QwenConditionEncoder::load(&repo(), Device::Cpu).unwrap();
    let mut entries = BTreeMap::new();
    for i in 0..2 {
        let (img, digest) = enc.condition_image(&images.get(i)).unwrap();
        assert_eq!(img.kind(), Kind::Uint8);
        let prompts: &[&str] = if i == 0 {
            &[ins[0], NEGATIVE_PROMPT]
        } else {
            &[NEGATIVE_PROMPT] // ins[1] held back
        };
        for p in prompts {
            entries.insert(
                (p.to_string(), digest.clone()),
                enc.encode(p, &img).unwrap(),
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("prompts");
    let (mut prompts, mut digests, mut files) = (vec![], vec![], vec![]);
    for (i, ((p, d), t)) in entries.into_iter().enumerate() {
        let parts = BTreeMap::from([(CACHED_STATES.to_string(), t)]);
        files.push(write_entry(&out, i, &parts).unwrap());
        prompts.push(p);
        digests.push(d);
    }
    write_manifest_with_images(
        &out,
        "qwen-image-edit",
        "d",
        &prompts,
        &digests,
        Some(&enc.made_on()),
        Some(files),
    )
    .unwrap();
    assert_eq!(enc.made_on(), "cpu/Float");
    let table = PromptTable::open(&out).unwrap();
    assert_eq!(table.manifest.images.len(), 3);
    // image-keyed entries are not found by instruction alone
    let e = cocoflow_torch::models::PromptSource::lookup(&table, &["a"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("keyed by a condition image"), "{e}");

    let pipe = QwenImageEdit::load_pipeline(&repo(), Device::Cpu, false).unwrap();
    assert!(pipe.encoder.is_none());
    assert!(pipe.bytes() < full.pipeline.bytes());
    let mut policy = QwenImageEdit::from_leased(Leased::owned(pipe), &repo()).unwrap();
    policy.set_prompt_source(Box::new(table));
    let got = policy.condition(&src, &ins).unwrap();
    for k in [
        PROMPT_EMBEDS,
        PROMPT_MASK,
        NEGATIVE_PROMPT_EMBEDS,
        NEGATIVE_PROMPT_MASK,
    ] {
        assert!(
            got.get(k).unwrap().equal(want.get(k).unwrap()),
            "`{k}` differs from the full policy's"
        );
    }
    assert_eq!(
        policy.inline_prompt_encodings(),
        1,
        "the held-back instruction"
    );
    assert_eq!(full.inline_prompt_encodings(), 0, "no prompt source");
}

/// The per-worker model cache holds the Qwen-Image-Edit pipeline: a task leases it, and it
/// comes back without that task's adapters; a concurrent task gets a second slot.
#[test]
fn the_model_cache_loads_qwen_once_and_leases_it() {
    use cocoflow_engine::kind::ModelCache;
    use cocoflow_torch::models::BaseModel;
    use std::sync::Arc;
    let cache = Arc::new(ModelCache::with_limit(1 << 30));
    let base = BaseModel::cached(&repo(), cache.clone(), "digest-of-the-repo");
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..LoraConfig::default()
    };
    {
        let mut a = base.load(Device::Cpu).unwrap();
        a.add_adapter(THETA, &lora).unwrap();
        assert_eq!(a.adapter_names(), vec![THETA.to_string()]);
        assert_eq!(cache.loads(), 1);
    }
    let b = base.load(Device::Cpu).unwrap();
    assert_eq!(cache.loads(), 1, "leased again, not loaded");
    assert!(b.adapter_names().is_empty(), "{:?}", b.adapter_names());
    assert!(b.trainable_variables().is_empty());
    let c = base.load(Device::Cpu).unwrap();
    assert_eq!(cache.loads(), 2, "a concurrent task: a second slot");
    drop((b, c));
    let _d = base.load(Device::Cpu).unwrap();
    assert_eq!(cache.loads(), 2);
}
