//! FLUX.1 Kontext components against diffusers / transformers: the tiny random repository and
//! the references `torch/tests/golden/flux/gen.py` recorded (token ids of both tokenizers,
//! CLIP and T5 states, transformer velocities with and without source tokens, VAE encode and
//! decode, σ schedules, one whole 4-step edit), gradient checkpointing, and the errors of
//! broken repositories.
//!
//! Tolerance: every float32 comparison on the CPU requires the max relative error
//! `max|a − b| / max|b|` ≤ 1e-4 (`TOL`); run with `--nocapture` to see each measured value.

use cocoflow_torch::models::checkpoint::read_safetensors;
use cocoflow_torch::models::flux_kontext::clip::pooled_positions;
use cocoflow_torch::models::flux_kontext::rope::latent_image_ids;
use cocoflow_torch::models::flux_kontext::*;
use cocoflow_torch::models::{LoraConfig, ModelError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Max relative error allowed in float32: `max|a − b| / max|b|`.
const TOL: f64 = 1e-4;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/flux")
}

fn repo() -> PathBuf {
    golden_dir().join("tiny-flux-kontext")
}

fn golden() -> BTreeMap<String, Tensor> {
    read_safetensors(&golden_dir().join("golden.safetensors")).unwrap()
}

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join("golden.json")).unwrap())
        .unwrap()
}

fn pipeline() -> FluxKontextPipeline {
    FluxKontextPipeline::load(&repo(), Device::Cpu, Kind::Float).unwrap()
}

/// `max|a − b| / max|b|`.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    let (a, b) = (cpu(a), cpu(b));
    assert_eq!(a.size(), b.size(), "shapes differ");
    let num = (&a - &b).abs().max().double_value(&[]);
    let den = b.abs().max().double_value(&[]);
    num / den.max(f64::MIN_POSITIVE)
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let e = rel_err(a, b);
    eprintln!("golden {what}: max relative error {e:.3e}");
    assert!(e <= tol, "{what}: max relative error {e:.3e} > {tol:.0e}");
}

fn ids_of(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

fn rows(t: &Tensor) -> Vec<Vec<i64>> {
    (0..t.size()[0])
        .map(|i| Vec::<i64>::try_from(t.get(i)).unwrap())
        .collect()
}

#[test]
fn clip_tokenizer_matches_transformers() {
    let m = meta();
    let texts: Vec<String> = m["tokens"]["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(texts.len() >= 20);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tok = ClipTokenizer::load(&repo().join("tokenizer")).unwrap();
    let got = rows(&tok.encode(&refs, Device::Cpu).unwrap());
    let want = ids_of(&m["tokens"]["clip"]);
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(got[i], want[i], "CLIP ids of {text:?}");
    }
}

#[test]
fn t5_tokenizer_matches_transformers() {
    let m = meta();
    let texts: Vec<String> = m["tokens"]["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tok = T5Tokenizer::load(&repo().join("tokenizer_2")).unwrap();
    for n in [16, 64] {
        let got = rows(&tok.encode(&refs, n, Device::Cpu).unwrap());
        let want = ids_of(&m["tokens"][format!("t5_max_length_{n}")]);
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(got[i], want[i], "T5 ids (max length {n}) of {text:?}");
        }
    }
}

#[test]
fn clip_text_model_matches_transformers() {
    let g = golden();
    let mut clip =
        ClipTextModel::load(&repo().join("text_encoder"), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(
        clip.cfg.eos_token_id, 2,
        "the tiny repo keeps FLUX's legacy CLIP config"
    );
    let out = clip.forward(&g["clip.ids"]).unwrap();
    assert_close(
        "clip hidden states",
        &out.last_hidden_state,
        &g["clip.hidden"],
        TOL,
    );
    assert_close(
        "clip pooled (eos_token_id 2: argmax rule)",
        &out.pooler_output,
        &g["clip.pooled"],
        TOL,
    );
    clip.cfg.eos_token_id = meta()["clip"]["eos_rule_eos_token_id"].as_i64().unwrap();
    let out = clip.forward(&g["clip.ids"]).unwrap();
    assert_close(
        "clip pooled (first eos rule)",
        &out.pooler_output,
        &g["clip.pooled_eos_rule"],
        TOL,
    );
}

/// The two pooling rules of transformers' `CLIPTextModel`: legacy `eos_token_id == 2` takes
/// the first largest id, otherwise the first occurrence of `eos_token_id` (0 if none).
#[test]
fn clip_pooled_position_rules() {
    let ids = Tensor::from_slice(&[9i64, 5, 7, 9, 1, 3, 7, 7]).view([2, 4]);
    assert_eq!(
        Vec::<i64>::try_from(pooled_positions(&ids, 2)).unwrap(),
        vec![0, 2]
    );
    assert_eq!(
        Vec::<i64>::try_from(pooled_positions(&ids, 7)).unwrap(),
        vec![2, 2]
    );
    assert_eq!(
        Vec::<i64>::try_from(pooled_positions(&ids, 5)).unwrap(),
        vec![1, 0]
    );
}

#[test]
fn t5_encoder_matches_transformers() {
    let g = golden();
    let t5 =
        T5EncoderModel::load(&repo().join("text_encoder_2"), Device::Cpu, Kind::Float).unwrap();
    let out = t5.forward(&g["t5.ids"]).unwrap();
    assert_close("t5 hidden states", &out, &g["t5.hidden"], TOL);
}

fn transformer() -> FluxTransformer2DModel {
    FluxTransformer2DModel::load(&repo().join("transformer"), Device::Cpu, Kind::Float).unwrap()
}

fn tf_inputs<'a>(
    g: &'a BTreeMap<String, Tensor>,
    t: &'a Tensor,
    guidance: &'a Tensor,
    src: bool,
) -> FluxInputs<'a> {
    FluxInputs {
        hidden_states: &g["tf.hidden_states"],
        source: src.then(|| &g["tf.source"]),
        encoder_hidden_states: &g["tf.encoder_hidden_states"],
        pooled_projections: &g["tf.pooled"],
        timestep: t,
        guidance: Some(guidance),
        txt_ids: &g["tf.txt_ids"],
        img_ids: if src {
            &g["tf.img_ids_kontext"]
        } else {
            &g["tf.img_ids"]
        },
        adapter: None,
    }
}

#[test]
fn transformer_matches_diffusers() {
    let g = golden();
    let m = meta();
    let tf = transformer();
    let b = 2;
    let ts: Vec<f64> = m["transformer"]["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let gs: Vec<f64> = m["transformer"]["guidances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(ts.len() >= 3 && gs.len() >= 2);
    for (ti, t) in ts.iter().enumerate() {
        // row 0 at t, row 1 at t/2 (as gen.py)
        let tt = Tensor::from_slice(&[*t as f32, (*t / 2.0) as f32]);
        for (gi, gv) in gs.iter().enumerate() {
            let gg = Tensor::full([b], *gv, (Kind::Float, Device::Cpu));
            for src in [false, true] {
                let v = tch::no_grad(|| tf.forward(&tf_inputs(&g, &tt, &gg, src))).unwrap();
                let key = format!("tf.out.{}.t{ti}.g{gi}", if src { "src" } else { "nosrc" });
                assert_close(&format!("transformer velocity {key}"), &v, &g[&key], TOL);
            }
        }
    }
    // All tokens (target and source) as one sequence: diffusers' raw output.
    let tt = Tensor::from_slice(&[0.6f32, 0.3]);
    let gg = Tensor::full([b], 3.5, (Kind::Float, Device::Cpu));
    let both = Tensor::cat(&[&g["tf.hidden_states"], &g["tf.source"]], 1);
    let mut inp = tf_inputs(&g, &tt, &gg, false);
    inp.hidden_states = &both;
    inp.img_ids = &g["tf.img_ids_kontext"];
    let v = tch::no_grad(|| tf.forward(&inp)).unwrap();
    assert_close(
        "transformer all tokens",
        &v,
        &g["tf.out.src.t1.g1.all_tokens"],
        TOL,
    );
}

/// bfloat16 weights and activations (as diffusers runs the model in bf16 on the CPU): the
/// same rounding points, so the error is bf16's, far below the float32 error of a wrong
/// cast. Reported with the float32 reference's error for scale.
#[test]
fn transformer_bf16_matches_diffusers_bf16() {
    let g = golden();
    let tf = FluxTransformer2DModel::load(&repo().join("transformer"), Device::Cpu, Kind::BFloat16)
        .unwrap();
    let tt = Tensor::from_slice(&[0.6f32, 0.3]);
    let gg = Tensor::full([2], 3.5, (Kind::Float, Device::Cpu));
    let v = tch::no_grad(|| tf.forward(&tf_inputs(&g, &tt, &gg, true))).unwrap();
    assert_eq!(v.kind(), Kind::BFloat16);
    assert_close(
        "transformer bf16 vs diffusers bf16",
        &v,
        &g["tf.out_bf16.src.t1.g1"],
        1e-2,
    );
    eprintln!(
        "  (bf16 reference vs float32 reference: {:.3e})",
        rel_err(&g["tf.out_bf16.src.t1.g1"], &g["tf.out.src.t1.g1"])
    );
}

#[test]
fn vae_matches_diffusers() {
    let g = golden();
    let vae = AutoencoderKL::load(&repo().join("vae"), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(vae.scale_factor(), 4);
    let mean = tch::no_grad(|| vae.encode_mean(&g["vae.image"])).unwrap();
    assert_close("vae encode (posterior mean)", &mean, &g["vae.mean"], TOL);
    let packed = pack_latents(&vae.normalize(&mean)).unwrap();
    assert_close(
        "vae normalised + packed latents",
        &packed,
        &g["vae.packed"],
        TOL,
    );
    let back = unpack_latents(&packed, 8, 12).unwrap();
    assert_eq!(
        rel_err(&back, &vae.normalize(&mean)),
        0.0,
        "unpack inverts pack"
    );
    let dec = tch::no_grad(|| vae.decode(&g["vae.z"])).unwrap();
    assert_close("vae decode", &dec, &g["vae.decoded"], TOL);
}

#[test]
fn schedule_matches_diffusers() {
    let m = meta();
    let cfg: FlowMatchEulerDiscreteSchedulerConfig = serde_json::from_str(
        &std::fs::read_to_string(repo().join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    let sampler = scheduler::sampler_config(&cfg);
    for s in m["schedules"].as_array().unwrap() {
        let (n, steps) = (
            s["image_seq_len"].as_u64().unwrap(),
            s["steps"].as_u64().unwrap() as usize,
        );
        let got = flux_schedule(&cfg, steps, n).unwrap();
        // float32 values (JSON text parses to within an ulp of float64; compare as float32)
        let want = |k: &str| -> Vec<f32> {
            s[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        };
        assert!(
            (got.mu - s["mu"].as_f64().unwrap()).abs() < 1e-12,
            "mu of {n} tokens"
        );
        assert_eq!(
            got.sigmas,
            want("sigmas"),
            "sigmas of {steps} steps, {n} tokens"
        );
        assert_eq!(
            got.timesteps,
            want("timesteps"),
            "timesteps of {steps} steps, {n} tokens"
        );
        // the sampler's float64 schedule is the same up to float32 rounding
        for (a, b) in sampler.sigmas(steps, n).iter().zip(&got.sigmas) {
            assert!(
                (a - *b as f64).abs() < 1e-6,
                "sampling::SchedulerConfig {a} vs {b}"
            );
        }
    }
}

#[test]
fn whole_edit_matches_diffusers() {
    let g = golden();
    let m = &meta()["edit"];
    let p = pipeline();
    let prompts: Vec<String> = m["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let len = m["max_sequence_length"].as_u64().unwrap() as usize;
    let pe = tch::no_grad(|| p.encode_prompt(&prompts, len)).unwrap();
    assert_close(
        "edit prompt_embeds (T5)",
        &pe.prompt_embeds,
        &g["edit.prompt_embeds"],
        TOL,
    );
    assert_close(
        "edit pooled_prompt_embeds (CLIP)",
        &pe.pooled_prompt_embeds,
        &g["edit.pooled_prompt_embeds"],
        TOL,
    );
    let req = EditRequest {
        images: &g["edit.image"],
        prompts: &prompts,
        latents: &g["edit.latents"],
        height: m["height"].as_i64().unwrap(),
        width: m["width"].as_i64().unwrap(),
        num_inference_steps: m["num_inference_steps"].as_u64().unwrap() as usize,
        guidance_scale: m["guidance_scale"].as_f64().unwrap(),
        max_sequence_length: len,
        adapter: None,
    };
    let lat = tch::no_grad(|| p.edit_latents(&req)).unwrap();
    assert_close(
        "edit final latents (4 Euler steps)",
        &lat,
        &g["edit.output_latents"],
        TOL,
    );
    let img = p.edit(&req).unwrap();
    assert_eq!(img.size(), vec![2, 3, 32, 48]);
    assert_close("edit output image", &img, &g["edit.output"], TOL);
}

#[test]
fn position_ids_follow_the_pipeline() {
    let g = golden();
    let tgt = latent_image_ids(4, 6, 0.0, Device::Cpu);
    let src = latent_image_ids(4, 6, 1.0, Device::Cpu);
    assert_eq!(rel_err(&tgt, &g["tf.img_ids"]), 0.0);
    assert_eq!(
        rel_err(&Tensor::cat(&[tgt, src], 0), &g["tf.img_ids_kontext"]),
        0.0
    );
}

/// Gradients of LoRA matrices on every linear layer (so gradients flow through every block,
/// `temb` and the embedders) are the same with block-wise recomputation as with a plain
/// backward.
#[test]
fn gradient_checkpointing_gives_the_plain_gradients() {
    let (n, worst) = checkpointing_gradient_error(Device::Cpu);
    eprintln!("gradient checkpointing: {n} LoRA gradients, worst relative error {worst:.3e}");
    assert!(
        worst <= 1e-5,
        "checkpointed gradients differ by {worst:.3e}"
    );
}

/// `(number of LoRA gradients, worst relative error)` of checkpointed vs plain backward.
fn checkpointing_gradient_error(device: Device) -> (usize, f64) {
    let g = golden();
    let mut tf =
        FluxTransformer2DModel::load(&repo().join("transformer"), device, Kind::Float).unwrap();
    // every layer by its full path (PEFT's suffix rule also matches a full path)
    let all: Vec<String> = tf.linears_mut().iter().map(|l| l.path.clone()).collect();
    let cfg = LoraConfig {
        r: 2,
        lora_alpha: 4.0,
        target_modules: all.clone(),
        ..LoraConfig::default()
    };
    assert_eq!(tf.add_lora("default", &cfg), all.len());
    // B = 0 would leave A without gradient: give B values.
    let mut lora: BTreeMap<String, Tensor> = tf
        .var_store()
        .variables()
        .into_iter()
        .filter(|(k, _)| k.contains(".lora_"))
        .collect();
    tch::no_grad(|| {
        for (i, (k, v)) in lora.iter_mut().enumerate() {
            if k.contains(".lora_B.") {
                let r = Tensor::arange(v.numel() as i64, (Kind::Float, device))
                    .view(v.size().as_slice())
                    .sin()
                    * (0.05 + 0.001 * i as f64);
                v.copy_(&r);
            }
        }
    });
    assert!(lora.values().all(|v| v.requires_grad()));
    assert!(tf.base_variables().values().all(|v| !v.requires_grad()));
    let tt = Tensor::from_slice(&[0.6f32, 0.3]);
    let gg = Tensor::full([2], 3.5, (Kind::Float, Device::Cpu));
    let mut inp = tf_inputs(&g, &tt, &gg, true);
    inp.adapter = Some("default");
    let w = Tensor::arange(2 * 24 * 16, (Kind::Float, device))
        .view([2, 24, 16])
        .cos();
    let loss_of = |v: &Tensor| (v * &w).sum(Kind::Float) + v.square().mean(Kind::Float);

    let plain = tf.forward(&inp).unwrap();
    loss_of(&plain).backward();
    let want: BTreeMap<String, Tensor> = lora
        .iter()
        .map(|(k, v)| (k.clone(), v.grad().copy()))
        .collect();
    for v in lora.values_mut() {
        v.zero_grad();
    }
    let ck = tf.forward_checkpointed(&inp).unwrap();
    assert_eq!(rel_err(&ck.output, &plain), 0.0, "same forward values");
    let loss = loss_of(&ck.output);
    ck.backward(&loss).unwrap();
    let mut worst: f64 = 0.0;
    for (k, v) in &lora {
        assert!(
            want[k].abs().max().double_value(&[]) > 0.0,
            "{k} has a gradient"
        );
        worst = worst.max(rel_err(&v.grad(), &want[k]));
    }
    (lora.len(), worst)
}

/// On a CUDA machine (`cargo test -p cocoflow-torch --test it -- --ignored cuda`): the
/// goldens on `Cuda(0)`, which checks that every tensor the components create lands on the
/// device. GPU kernels differ from the CPU's (cuDNN may run float32 convolutions in TF32), so
/// the tolerances are looser; the measured errors are printed.
#[test]
#[ignore = "needs a CUDA device"]
fn cuda_matches_the_goldens() {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device: run this test on a GPU machine"
    );
    let dev = Device::Cuda(0);
    let g = golden();
    let m = &meta()["edit"];
    let prompts: Vec<String> = m["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let req = EditRequest {
        images: &g["edit.image"],
        prompts: &prompts,
        latents: &g["edit.latents"],
        height: 32,
        width: 48,
        num_inference_steps: 4,
        guidance_scale: 2.5,
        max_sequence_length: 16,
        adapter: None,
    };
    let p = FluxKontextPipeline::load(&repo(), dev, Kind::Float).unwrap();
    let tt = Tensor::from_slice(&[0.6f32, 0.3]);
    let gg = Tensor::full([2], 3.5, (Kind::Float, Device::Cpu));
    let v = tch::no_grad(|| p.transformer.forward(&tf_inputs(&g, &tt, &gg, true))).unwrap();
    assert_eq!(v.device(), dev);
    assert_close(
        "cuda fp32 transformer velocity",
        &v,
        &g["tf.out.src.t1.g1"],
        1e-3,
    );
    let t5 = tch::no_grad(|| {
        p.prompt_encoder()
            .unwrap()
            .text_encoder_2
            .forward(&g["t5.ids"])
    })
    .unwrap();
    assert_close("cuda fp32 t5", &t5, &g["t5.hidden"], 1e-3);
    let clip = tch::no_grad(|| {
        p.prompt_encoder()
            .unwrap()
            .text_encoder
            .forward(&g["clip.ids"])
    })
    .unwrap();
    assert_close(
        "cuda fp32 clip pooled",
        &clip.pooler_output,
        &g["clip.pooled"],
        1e-3,
    );
    let mean = tch::no_grad(|| p.vae.encode_mean(&g["vae.image"])).unwrap();
    assert_close("cuda fp32 vae encode", &mean, &g["vae.mean"], 1e-2);
    let img = p.edit(&req).unwrap();
    assert_close("cuda fp32 edit output", &img, &g["edit.output"], 1e-2);
    let p = FluxKontextPipeline::load(&repo(), dev, Kind::BFloat16).unwrap();
    let lat = tch::no_grad(|| p.edit_latents(&req)).unwrap();
    assert_close(
        "cuda bf16 edit latents",
        &lat,
        &g["edit_bf16.output_latents"],
        5e-2,
    );
    let img = p.edit(&req).unwrap();
    assert_close("cuda bf16 edit output", &img, &g["edit_bf16.output"], 5e-2);
    let (n, worst) = checkpointing_gradient_error(dev);
    eprintln!("cuda gradient checkpointing: {n} LoRA gradients, worst relative error {worst:.3e}");
    assert!(
        worst <= 1e-4,
        "checkpointed gradients differ by {worst:.3e}"
    );
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

fn copy_repo() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    copy_dir(&repo(), &dir);
    (tmp, dir)
}

fn load_err(dir: &Path) -> String {
    FluxKontextPipeline::load(dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string()
}

#[test]
fn not_a_kontext_repository_is_named() {
    let (_tmp, dir) = copy_repo();
    let index = dir.join("model_index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replace("FluxKontextPipeline", "StableDiffusionPipeline"),
    )
    .unwrap();
    assert_eq!(
        load_err(&dir),
        format!(
            "bad config `{}`: not a FLUX.1 Kontext repository: `_class_name` is \
             `StableDiffusionPipeline`, expected `FluxKontextPipeline`",
            index.display()
        )
    );
    std::fs::remove_file(&index).unwrap();
    assert_eq!(
        load_err(&dir),
        format!(
            "bad config `{}`: missing: not a diffusers pipeline directory",
            index.display()
        )
    );
    let (_tmp2, dir) = copy_repo();
    let vae_cfg = dir.join("vae/config.json");
    let text = std::fs::read_to_string(&vae_cfg).unwrap();
    std::fs::write(
        &vae_cfg,
        text.replace("\"AutoencoderKL\"", "\"AutoencoderTiny\""),
    )
    .unwrap();
    assert_eq!(
        load_err(&dir),
        format!(
            "bad config `{}`: `_class_name` is `AutoencoderTiny`, expected `AutoencoderKL`",
            vae_cfg.display()
        )
    );
}

#[test]
fn missing_shard_is_named() {
    let (_tmp, dir) = copy_repo();
    let shard = dir.join("transformer/diffusion_pytorch_model-00002-of-00004.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let index = dir.join("transformer/diffusion_pytorch_model.safetensors.index.json");
    assert_eq!(
        load_err(&dir),
        format!(
            "cannot read `{}`: shard listed in `{}` is missing",
            shard.display(),
            index.display()
        )
    );
}

/// Rewrites `key` of a shard with `f(tensor)`.
fn rewrite(shard: &Path, key: &str, f: impl Fn(&Tensor) -> Tensor) {
    let mut t = read_safetensors(shard).unwrap();
    let new = f(&t[key]);
    t.insert(key.to_string(), new);
    let items: Vec<(String, Tensor)> = t.into_iter().collect();
    Tensor::write_safetensors(&items, shard).unwrap();
}

fn shard_of(dir: &Path, key: &str) -> PathBuf {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(
            dir.join("transformer/diffusion_pytorch_model.safetensors.index.json"),
        )
        .unwrap(),
    )
    .unwrap();
    dir.join("transformer")
        .join(index["weight_map"][key].as_str().unwrap())
}

#[test]
fn shape_mismatch_names_file_and_key() {
    let (_tmp, dir) = copy_repo();
    let key = "single_transformer_blocks.1.attn.to_k.weight";
    let shard = shard_of(&dir, key);
    rewrite(&shard, key, |t| t.narrow(0, 0, 16).contiguous());
    let err = FluxTransformer2DModel::load(&dir.join("transformer"), Device::Cpu, Kind::Float)
        .unwrap_err();
    assert!(matches!(err, ModelError::Checkpoint { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "checkpoint `{}` does not match the model its config describes:\n  1 mis-shaped: \
             `{key}` (file [16, 32] F32, model [32, 32] Float)",
            shard.display()
        )
    );
}

#[test]
fn wrong_dtype_names_file_and_key() {
    let (_tmp, dir) = copy_repo();
    let key = "transformer_blocks.0.norm1.linear.bias";
    let shard = shard_of(&dir, key);
    rewrite(&shard, key, |t| t.to_kind(Kind::Int64));
    assert_eq!(
        load_err(&dir),
        format!(
            "checkpoint `{}` does not match the model its config describes:\n  1 mis-shaped: \
             `{key}` (file [192] I64, model [192] Float)",
            shard.display()
        )
    );
}

#[test]
fn config_that_does_not_match_the_weights_lists_missing_tensors() {
    let (_tmp, dir) = copy_repo();
    let cfg = dir.join("text_encoder_2/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"num_layers\": 2", "\"num_layers\": 3")).unwrap();
    let err = load_err(&dir);
    assert!(
        err.starts_with(&format!(
            "checkpoint `{}` does not match the model its config describes:\n  9 missing: \
             `encoder.block.2.layer.0.SelfAttention.k.weight`",
            dir.join("text_encoder_2/model.safetensors").display()
        )),
        "{err}"
    );
}

/// The whole repository in bfloat16 against diffusers / transformers in bfloat16 (same
/// rounding points: timestep cast before `/ 1000`, Euler steps in float32, ...).
#[test]
fn bf16_components_and_edit_match_bf16_references() {
    let g = golden();
    let m = &meta()["edit"];
    let p = FluxKontextPipeline::load(&repo(), Device::Cpu, Kind::BFloat16).unwrap();
    let t5 = tch::no_grad(|| {
        p.prompt_encoder()
            .unwrap()
            .text_encoder_2
            .forward(&g["t5.ids"])
    })
    .unwrap();
    assert_close("bf16 t5 hidden states", &t5, &g["t5.hidden_bf16"], 1e-2);
    let clip = tch::no_grad(|| {
        p.prompt_encoder()
            .unwrap()
            .text_encoder
            .forward(&g["clip.ids"])
    })
    .unwrap();
    assert_close(
        "bf16 clip pooled",
        &clip.pooler_output,
        &g["clip.pooled_bf16"],
        1e-2,
    );
    let mean = tch::no_grad(|| p.vae.encode_mean(&g["vae.image"])).unwrap();
    assert_close("bf16 vae encode", &mean, &g["vae.mean_bf16"], 1e-2);
    let prompts: Vec<String> = m["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let req = EditRequest {
        images: &g["edit.image"],
        prompts: &prompts,
        latents: &g["edit.latents"],
        height: 32,
        width: 48,
        num_inference_steps: 4,
        guidance_scale: 2.5,
        max_sequence_length: 16,
        adapter: None,
    };
    let lat = tch::no_grad(|| p.edit_latents(&req)).unwrap();
    assert_eq!(lat.kind(), Kind::BFloat16);
    assert_close(
        "bf16 edit final latents",
        &lat,
        &g["edit_bf16.output_latents"],
        1e-2,
    );
    let img = p.edit(&req).unwrap();
    assert_close("bf16 edit output image", &img, &g["edit_bf16.output"], 1e-2);
}

/// Rewrites every key of a safetensors file with `f` (`None` drops it) and adds `extra`.
fn rekey(path: &Path, f: impl Fn(&str) -> Option<String>, extra: Vec<(String, Tensor)>) {
    let t = read_safetensors(path).unwrap();
    let mut items: Vec<(String, Tensor)> = t
        .into_iter()
        .filter_map(|(k, v)| f(&k).map(|k| (k, v)))
        .collect();
    items.extend(extra);
    Tensor::write_safetensors(&items, path).unwrap();
}

/// transformers 4 checkpoints (the FLUX repositories): CLIP keys under `text_model.` with a
/// `position_ids` buffer, T5's embedding as `encoder.embed_tokens.weight` (alone or tied
/// with `shared.weight`). They load to the same model.
#[test]
fn transformers_4_key_layouts_load() {
    let g = golden();
    let (_tmp, dir) = copy_repo();
    let clip_file = dir.join("text_encoder/model.safetensors");
    let pos = Tensor::arange(77, (Kind::Int64, Device::Cpu)).view([1, 77]);
    rekey(
        &clip_file,
        |k| Some(format!("text_model.{k}")),
        vec![("text_model.embeddings.position_ids".into(), pos)],
    );
    let clip = ClipTextModel::load(&dir.join("text_encoder"), Device::Cpu, Kind::Float).unwrap();
    let out = tch::no_grad(|| clip.forward(&g["clip.ids"])).unwrap();
    assert_close(
        "clip from `text_model.` keys",
        &out.pooler_output,
        &g["clip.pooled"],
        TOL,
    );

    let t5_file = dir.join("text_encoder_2/model.safetensors");
    let shared = read_safetensors(&t5_file).unwrap()["shared.weight"].copy();
    rekey(
        &t5_file,
        |k| Some(k.to_string()),
        vec![("encoder.embed_tokens.weight".into(), shared)],
    );
    let t5 = T5EncoderModel::load(&dir.join("text_encoder_2"), Device::Cpu, Kind::Float).unwrap();
    let out = tch::no_grad(|| t5.forward(&g["t5.ids"])).unwrap();
    assert_close(
        "t5 with tied `encoder.embed_tokens`",
        &out,
        &g["t5.hidden"],
        TOL,
    );
    rekey(
        &t5_file,
        |k| (k != "shared.weight").then(|| k.to_string()),
        vec![],
    );
    let t5 = T5EncoderModel::load(&dir.join("text_encoder_2"), Device::Cpu, Kind::Float).unwrap();
    let out = tch::no_grad(|| t5.forward(&g["t5.ids"])).unwrap();
    assert_close(
        "t5 from `encoder.embed_tokens` only",
        &out,
        &g["t5.hidden"],
        TOL,
    );
}
