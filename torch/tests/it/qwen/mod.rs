//! Qwen-Image-Edit components against diffusers / transformers: the tiny random repository and
//! the references `torch/tests/golden/qwen/gen.py` recorded.
//!
//! Tolerance: every float32 comparison on the CPU requires the max relative error
//! `max|a − b| / max|b|` ≤ 1e-4 (`TOL`); run with `--nocapture` to see each measured value.

mod edit;
mod errors;
mod policy;
mod prompt;

use cocoflow_torch::models::checkpoint::read_safetensors;
use cocoflow_torch::models::qwen_image_edit::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Max relative error allowed in float32: `max|a − b| / max|b|`.
pub(crate) const TOL: f64 = 1e-4;

pub(crate) fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/qwen")
}

pub(crate) fn repo() -> PathBuf {
    golden_dir().join("tiny-qwen-image-edit")
}

pub(crate) fn golden() -> BTreeMap<String, Tensor> {
    read_safetensors(&golden_dir().join("golden.safetensors")).unwrap()
}

pub(crate) fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join("golden.json")).unwrap())
        .unwrap()
}

/// `max|a − b| / max|b|`.
pub(crate) fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    let (a, b) = (cpu(a), cpu(b));
    assert_eq!(a.size(), b.size(), "shapes differ");
    let num = (&a - &b).abs().max().double_value(&[]);
    let den = b.abs().max().double_value(&[]);
    num / den.max(f64::MIN_POSITIVE)
}

pub(crate) fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let e = rel_err(a, b);
    eprintln!("golden {what}: max relative error {e:.3e}");
    assert!(e <= tol, "{what}: max relative error {e:.3e} > {tol:.0e}");
}

fn transformer() -> QwenImageTransformer2DModel {
    QwenImageTransformer2DModel::load(&repo().join("transformer"), Device::Cpu, Kind::Float)
        .unwrap()
}

fn img_shapes(m: &Value) -> Vec<(i64, i64, i64)> {
    m["transformer"]["img_shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let s: Vec<i64> = s
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            (s[0], s[1], s[2])
        })
        .collect()
}

#[test]
fn transformer_matches_diffusers() {
    let g = golden();
    let m = meta();
    let tf = transformer();
    let shapes = img_shapes(&m);
    let ts: Vec<f64> = m["transformer"]["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let n = g["tf.hidden_states"].size()[1];
    for (ti, t) in ts.iter().enumerate() {
        // row 0 at t, row 1 at t/2 (as gen.py)
        let tt = Tensor::from_slice(&[*t as f32, (*t / 2.0) as f32]);
        for masked in [true, false] {
            let inp = QwenInputs {
                hidden_states: &g["tf.hidden_states"],
                source: Some(&g["tf.source"]),
                encoder_hidden_states: &g["tf.encoder_hidden_states"],
                encoder_hidden_states_mask: masked.then(|| &g["tf.mask"]),
                timestep: &tt,
                img_shapes: &shapes,
                adapter: None,
            };
            let key = format!("tf.out.{}.t{ti}", if masked { "mask" } else { "nomask" });
            let all = tch::no_grad(|| tf.forward_all(&inp)).unwrap();
            assert_close(
                &format!("transformer all tokens {key}"),
                &all,
                &g[&key],
                TOL,
            );
            let v = tch::no_grad(|| tf.forward(&inp)).unwrap();
            assert_close(
                &format!("transformer velocity {key}"),
                &v,
                &g[&key].narrow(1, 0, n),
                TOL,
            );
        }
    }
}

#[test]
fn transformer_zero_cond_t_matches_diffusers() {
    let g = golden();
    let m = meta();
    let dir = repo().join("transformer");
    let mut cfg: QwenImageTransformer2DModelConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg.zero_cond_t = true;
    let tf = QwenImageTransformer2DModel::new(&cfg, Device::Cpu, Kind::Float).unwrap();
    tf.load_weights(&dir).unwrap();
    let shapes = img_shapes(&m);
    let tt = Tensor::from_slice(&[0.6f32, 0.3]);
    let inp = QwenInputs {
        hidden_states: &g["tf.hidden_states"],
        source: Some(&g["tf.source"]),
        encoder_hidden_states: &g["tf.encoder_hidden_states"],
        encoder_hidden_states_mask: Some(&g["tf.mask"]),
        timestep: &tt,
        img_shapes: &shapes,
        adapter: None,
    };
    let all = tch::no_grad(|| tf.forward_all(&inp)).unwrap();
    assert_close(
        "transformer zero_cond_t",
        &all,
        &g["tf.out_zero_cond_t.mask.t1"],
        TOL,
    );
}

#[test]
fn vae_matches_diffusers() {
    let g = golden();
    let vae = AutoencoderKLQwenImage::load(&repo().join("vae"), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(vae.scale_factor(), 8);
    let (mean, logvar) = tch::no_grad(|| vae.encode_moments(&g["vae.image"])).unwrap();
    assert_close("vae encode (posterior mean)", &mean, &g["vae.mean"], TOL);
    assert_close("vae encode (log-variance)", &logvar, &g["vae.logvar"], TOL);
    let norm = vae.normalize(&mean);
    assert_close(
        "vae normalised latents (z - mean) / std",
        &norm,
        &g["vae.normalized"],
        TOL,
    );
    let packed = pack_latents(&norm).unwrap();
    assert_close("vae normalised + packed", &packed, &g["vae.packed"], TOL);
    assert!(
        rel_err(&vae.denormalize(&norm), &mean) < 1e-6,
        "denormalize inverts normalize"
    );
    let dec = tch::no_grad(|| vae.decode(&g["vae.z"])).unwrap();
    assert_close("vae decode", &dec, &g["vae.decoded"], TOL);
}
