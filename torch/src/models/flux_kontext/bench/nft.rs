//! The **nft** phase of the bench: one DiffusionNFT training step on a micro-batch of random
//! rollout data, timed in its pieces (θ_old and reference forwards, θ's checkpointed forward
//! and backward, clipping and AdamW).

use super::{
    BenchSettings, Built, Conditioning, as_map, common, conditioning, elapsed, median, memory_json,
    reset_peak,
};
use crate::models::error::ModelError;
use crate::models::flux_kontext::transformer::FluxTransformer2DModel;
use crate::models::flux_kontext::vae::{pack_latents, unpack_latents};
use crate::models::lora::{THETA, THETA_OLD};
use crate::nft::{NftBatch, NftConfig, nft_loss};
use crate::rl::adamw::{AdamW, AdamWConfig, clip_grad_norm};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Kind, Tensor};

/// θ's LoRA matrices (adapter `default`) by name.
fn theta_params(model: &FluxTransformer2DModel) -> BTreeMap<String, Tensor> {
    let a = format!(".lora_A.{THETA}.");
    let b = format!(".lora_B.{THETA}.");
    model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(k, _)| k.contains(&a) || k.contains(&b))
        .collect()
}

/// One NFT step's pieces, timed: θ_old + reference forwards, θ forward + loss + backward,
/// clipping + AdamW.
struct StepTimes {
    total: f64,
    old_ref: f64,
    theta: f64,
    optim: f64,
    loss: f64,
}

/// One training step of the NFT micro-batch at timestep slot `slot`.
#[allow(clippy::too_many_arguments)]
fn nft_step(
    model: &FluxTransformer2DModel,
    s: &BenchSettings,
    c: &Conditioning,
    data: &NftData,
    params: &BTreeMap<String, Tensor>,
    opt: &mut AdamW,
    cfg: &NftConfig,
    slot: usize,
) -> Result<StepTimes, ModelError> {
    let (b, dev) = (s.nft_batch, s.device);
    let side = s.latent_side();
    let sigmas = s.sigmas(s.steps);
    let t0 = Instant::now();
    // one training timestep per sample from the rollout's own schedule, fresh ε
    let tv: Vec<f64> = (0..b as usize)
        .map(|j| sigmas[(slot + j) % s.steps])
        .collect();
    let t = Tensor::from_slice(&tv).to_kind(Kind::Float).to_device(dev);
    let eps = Tensor::randn(data.x0.size(), (Kind::Float, dev));
    let tb = t.view([-1, 1, 1, 1]);
    let x_t = (1.0 - &tb) * &data.x0 + &tb * &eps; // (B, C, h, w)
    let packed = pack_latents(&x_t)?;
    let g = Tensor::full([b], s.guidance, (Kind::Float, dev));
    let unpack = |v: &Tensor| unpack_latents(v, side, side).map(|v| v.to_kind(Kind::Float));
    let (v_old, v_ref) = tch::no_grad(|| -> Result<(Tensor, Tensor), ModelError> {
        let v_old = model.forward(&c.inputs(&packed, &t, &g, Some(THETA_OLD)))?;
        let v_ref = model.forward(&c.inputs(&packed, &t, &g, None))?;
        Ok((unpack(&v_old)?, unpack(&v_ref)?))
    })?;
    let old_ref = elapsed(dev, t0);
    let t1 = Instant::now();
    let ck = model.forward_checkpointed(&c.inputs(&packed, &t, &g, Some(THETA)))?;
    let v_theta = unpack(&ck.output)?;
    let terms = nft_loss(
        &NftBatch {
            x0: &data.x0,
            x_t: &x_t,
            t: &t,
            v_old: &v_old,
            v_theta: &v_theta,
            v_ref: &v_ref,
            r: &data.r,
            valid: &data.valid,
            z_src: &data.z_src,
            edit_w: &data.edit_w,
            keep_w: &data.keep_w,
        },
        cfg,
    );
    ck.backward(&terms.loss)?;
    let theta = elapsed(dev, t1);
    let t2 = Instant::now();
    let grads: BTreeMap<String, Tensor> = params
        .iter()
        .filter_map(|(k, p)| {
            let g = p.grad();
            g.defined().then(|| (k.clone(), g))
        })
        .collect();
    clip_grad_norm(&grads, 1.0);
    opt.step(params, &grads);
    for p in params.values() {
        p.shallow_clone().zero_grad();
    }
    let optim = elapsed(dev, t2);
    Ok(StepTimes {
        total: t0.elapsed().as_secs_f64(),
        old_ref,
        theta,
        optim,
        loss: terms.loss.double_value(&[]),
    })
}

/// The rollout data an NFT micro-batch trains on (random: only shapes matter here).
struct NftData {
    x0: Tensor,
    z_src: Tensor,
    r: Tensor,
    valid: Tensor,
    edit_w: Tensor,
    keep_w: Tensor,
}

fn nft_data(s: &BenchSettings) -> NftData {
    let (b, dev) = (s.nft_batch, s.device);
    let ch = s.size.transformer().in_channels / 4;
    let side = s.latent_side();
    let shape = [b, ch, side, side];
    // the edit region: the middle half of the latent grid
    let edit_w = Tensor::zeros([b, 1, side, side], (Kind::Float, dev));
    let _ = edit_w
        .narrow(2, side / 4, side / 2)
        .narrow(3, side / 4, side / 2)
        .fill_(1.0);
    let keep_w = 1.0 - &edit_w;
    NftData {
        x0: Tensor::randn(shape, (Kind::Float, dev)),
        z_src: Tensor::randn(shape, (Kind::Float, dev)),
        r: Tensor::linspace(0.2, 0.8, b, (Kind::Float, dev)),
        valid: Tensor::ones([b], (Kind::Float, dev)),
        edit_w,
        keep_w,
    }
}

/// One NFT training step (see the module doc): median seconds per step and peak memory.
pub fn bench_nft(built: &Built, s: &BenchSettings) -> Result<Value, ModelError> {
    let model = &built.model;
    let c = conditioning(s, s.nft_batch, false);
    let data = nft_data(s);
    let params = theta_params(model);
    let mut opt = AdamW::fresh(AdamWConfig::default(), &params);
    // the FLUX.1 Kontext preset (configs/presets/flux-kontext.yaml)
    let cfg = NftConfig {
        lambda_ner: 0.2,
        lambda_er: 0.2,
        ..NftConfig::default()
    };
    reset_peak(s.device);
    let mut warmup_s = Vec::new();
    for i in 0..s.nft_warmup {
        warmup_s.push(nft_step(model, s, &c, &data, &params, &mut opt, &cfg, i)?.total);
    }
    let mut steps = Vec::new();
    for i in 0..s.nft_repeats {
        steps.push(nft_step(
            model,
            s,
            &c,
            &data,
            &params,
            &mut opt,
            &cfg,
            s.nft_warmup + i,
        )?);
    }
    let col = |f: fn(&StepTimes) -> f64| steps.iter().map(f).collect::<Vec<f64>>();
    let step_s = col(|t| t.total);
    let med = median(&step_s);
    let mut m = common(s, "nft");
    m.insert("nft_batch".into(), json!(s.nft_batch));
    m.insert("tokens".into(), json!([s.tokens(), s.tokens(), s.text_len]));
    m.insert("build_s".into(), json!(built.build_s));
    m.insert("weights_gib".into(), json!(built.weights_gib));
    m.insert("lora_layers".into(), json!(built.lora_layers));
    m.insert(
        "lora_params".into(),
        json!(params.values().map(Tensor::numel).sum::<usize>()),
    );
    m.insert("warmup_s".into(), json!(warmup_s));
    m.insert("step_s".into(), json!(step_s));
    m.insert("step_s_median".into(), json!(med));
    m.insert("samples_per_s".into(), json!(s.nft_batch as f64 / med));
    m.insert(
        "old_ref_s_median".into(),
        json!(median(&col(|t| t.old_ref))),
    );
    m.insert("theta_s_median".into(), json!(median(&col(|t| t.theta))));
    m.insert("optim_s_median".into(), json!(median(&col(|t| t.optim))));
    m.insert("loss".into(), json!(col(|t| t.loss)));
    m.extend(as_map(memory_json(s.device)));
    Ok(Value::Object(m))
}
