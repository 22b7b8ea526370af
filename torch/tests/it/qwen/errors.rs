//! Clear errors for broken Qwen-Image-Edit repositories: wrong layouts, missing shards,
//! mis-shaped, non-float, missing and unexpected tensors, each naming the file and the key.

use super::{golden, repo};
use cocoflow_torch::models::checkpoint::{read_safetensors, write_safetensors};
use cocoflow_torch::models::qwen_image_edit::*;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

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
    QwenImageEditPipeline::load(dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string()
}

fn encoder_err(dir: &Path) -> String {
    QwenVlPromptEncoder::load(
        &dir.join("text_encoder"),
        &dir.join("processor"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap_err()
    .to_string()
}

fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn wrong_repository_layouts_are_named() {
    let (_tmp, dir) = copy_repo();
    let index = dir.join("model_index.json");
    edit_file(&index, "\"QwenImageEditPipeline\"", "\"QwenImagePipeline\"");
    assert_eq!(
        load_err(&dir),
        format!(
            "bad config `{}`: not a Qwen-Image-Edit repository: `_class_name` is \
             `QwenImagePipeline`, expected `QwenImageEditPipeline` or `QwenImageEditPlusPipeline`",
            index.display()
        )
    );
    edit_file(&index, "\"QwenImagePipeline\"", "\"QwenImageEditPipeline\"");
    edit_file(&index, "\"AutoencoderKLQwenImage\"", "\"AutoencoderKL\"");
    assert_eq!(
        load_err(&dir),
        format!(
            "bad config `{}`: component `vae` is `AutoencoderKL`, expected `AutoencoderKLQwenImage`",
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

    let (_tmp, dir) = copy_repo();
    let cfg = dir.join("text_encoder/config.json");
    edit_file(
        &cfg,
        "\"model_type\": \"qwen2_5_vl\"",
        "\"model_type\": \"qwen2_vl\"",
    );
    assert_eq!(
        encoder_err(&dir),
        format!(
            "bad config `{}`: `model_type` is `qwen2_vl`, expected `qwen2_5_vl` (Qwen2.5-VL)",
            cfg.display()
        )
    );
    let (_tmp, dir) = copy_repo();
    let weights = dir.join("text_encoder/model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    let err = encoder_err(&dir);
    assert!(
        err.contains(&format!("cannot read `{}`", weights.display()))
            && err.contains("model.safetensors.index.json"),
        "{err}"
    );
    let (_tmp, dir) = copy_repo();
    let tok = dir.join("processor/tokenizer.json");
    std::fs::remove_file(&tok).unwrap();
    let err = encoder_err(&dir);
    assert!(
        err.starts_with(&format!("cannot read `{}`", tok.display())),
        "{err}"
    );
    let (_tmp, dir) = copy_repo();
    std::fs::remove_file(dir.join("processor/processor_config.json")).unwrap();
    let err = encoder_err(&dir);
    let v4 = dir.join("processor/preprocessor_config.json");
    assert!(err.contains(&v4.display().to_string()), "{err}");
}

#[test]
fn missing_shard_is_named() {
    let (_tmp, dir) = copy_repo();
    let shard = dir.join("transformer/diffusion_pytorch_model-00003-of-00007.safetensors");
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

#[test]
fn bad_text_encoder_tensors_are_named_with_file_and_key() {
    let (_tmp, dir) = copy_repo();
    let path = dir.join("text_encoder/model.safetensors");
    let mut t = read_safetensors(&path).unwrap();
    t.insert(
        "model.layers.0.self_attn.k_proj.weight".into(),
        Tensor::zeros([32, 16], (Kind::Float, Device::Cpu)),
    );
    t.insert(
        "visual.merger.ln_q.weight".into(),
        Tensor::zeros([32], (Kind::Int64, Device::Cpu)),
    );
    t.remove("model.norm.weight");
    t.insert(
        "model.layers.0.extra.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    );
    write_safetensors(&path, &t).unwrap();
    let err = encoder_err(&dir);
    for want in [
        format!("checkpoint `{}`", path.display()),
        "`model.layers.0.self_attn.k_proj.weight` (file [32, 16] F32, model [16, 32] Float)".into(),
        "`visual.merger.ln_q.weight` (file [32] I64, model [32] Float)".into(),
        "1 missing: `model.norm.weight`".into(),
        "1 unexpected: `model.layers.0.extra.weight`".into(),
    ] {
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }
}

#[test]
fn transformers_5_key_layout_loads_the_same() {
    let g = golden();
    let (_tmp, dir) = copy_repo();
    let path = dir.join("text_encoder/model.safetensors");
    let renamed = read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let k = if let Some(r) = k.strip_prefix("visual.") {
                format!("model.visual.{r}")
            } else if let Some(r) = k.strip_prefix("model.") {
                format!("model.language_model.{r}")
            } else {
                k
            };
            (k, v)
        })
        .collect();
    write_safetensors(&path, &renamed).unwrap();
    let enc = QwenVlPromptEncoder::load(
        &dir.join("text_encoder"),
        &dir.join("processor"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let imgs = [&g["vision.0.image"], &g["vision.1.image"]];
    let vi = enc.processor.preprocess(&imgs).unwrap();
    let feats = tch::no_grad(|| enc.vision.forward(&vi.pixel_values, &vi.grid_thw)).unwrap();
    super::assert_close(
        "vision tower, renamed keys",
        &feats,
        &g["vision.embeds"],
        super::TOL,
    );
}

#[test]
fn bad_inputs_are_named() {
    let pipe = QwenImageEditPipeline::load(&repo(), Device::Cpu, Kind::Float).unwrap();
    let float_image = Tensor::zeros([3, 32, 32], (Kind::Float, Device::Cpu));
    let err = pipe
        .conditions(&float_image, "x", None, 64.0 * 64.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("bad input `source`: expected a uint8 RGB image"),
        "{err}"
    );
    let src = Tensor::zeros([3, 32, 48], (Kind::Uint8, Device::Cpu));
    let latents = Tensor::zeros([1, 5, 16], (Kind::Float, Device::Cpu));
    let req = QwenEditRequest {
        source: &src,
        prompt: "x",
        negative_prompt: None,
        true_cfg_scale: 1.0,
        latents: &latents,
        num_inference_steps: 2,
        condition_area: 96.0 * 64.0,
        size: None,
    };
    let err = pipe.edit_latents(&req).unwrap_err().to_string();
    assert_eq!(
        err,
        "bad input `latents`: expected (1, 24, 16) for a 96×64 target, got [1, 5, 16]"
    );
    let err = pipe
        .encoder()
        .unwrap()
        .encode(&["a <|image_pad|> b"], &[&src])
        .unwrap_err()
        .to_string();
    assert!(err.contains("must not contain `<|image_pad|>`"), "{err}");
    let err = pipe
        .encoder()
        .unwrap()
        .encode(&["a", "b"], &[&src])
        .unwrap_err()
        .to_string();
    assert!(err.contains("give one image per instruction"), "{err}");
}

#[test]
fn bad_transformer_and_vae_tensors_are_named_with_file_and_key() {
    let (_tmp, dir) = copy_repo();
    let shard = dir.join("transformer/diffusion_pytorch_model-00005-of-00007.safetensors");
    let mut t = read_safetensors(&shard).unwrap();
    t.insert(
        "transformer_blocks.1.attn.to_q.weight".into(),
        Tensor::zeros([32, 31], (Kind::Float, Device::Cpu)),
    );
    write_safetensors(&shard, &t).unwrap();
    let err = load_err(&dir);
    assert!(
        err.starts_with(&format!("checkpoint `{}`", shard.display())),
        "the shard is named: {err}"
    );
    assert!(
        err.contains(
            "`transformer_blocks.1.attn.to_q.weight` (file [32, 31] F32, model [32, 32] Float)"
        ),
        "{err}"
    );
    // a key the index places in a shard that does not hold it
    let (_tmp, dir) = copy_repo();
    let index = dir.join("transformer/diffusion_pytorch_model.safetensors.index.json");
    edit_file(
        &index,
        "\"img_in.bias\": \"diffusion_pytorch_model-00001-of-00007.safetensors\"",
        "\"img_in.bias\": \"diffusion_pytorch_model-00002-of-00007.safetensors\"",
    );
    let err = load_err(&dir);
    let second = dir.join("transformer/diffusion_pytorch_model-00002-of-00007.safetensors");
    assert!(
        err.contains(&second.display().to_string())
            && err.contains("`img_in.bias` is not in this shard"),
        "{err}"
    );

    let (_tmp, dir) = copy_repo();
    let vae = dir.join("vae/diffusion_pytorch_model.safetensors");
    let mut t = read_safetensors(&vae).unwrap();
    let key = t.keys().find(|k| k.ends_with("weight")).unwrap().clone();
    let shape = t[&key].size();
    t.insert(key.clone(), t[&key].to_kind(Kind::Int16));
    write_safetensors(&vae, &t).unwrap();
    let err = load_err(&dir);
    assert!(
        err.starts_with(&format!("checkpoint `{}`", vae.display()))
            && err.contains(&format!("`{key}` (file {shape:?} I16")),
        "{err}"
    );
}
