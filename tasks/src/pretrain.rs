//! `pretrain`: supervised flow matching of a base editing model on a dataset.
//!
//! Inputs: `data` (a dataset in the manifest format with `target` images, e.g. `synth-data`'s
//! `train`). Output: `model`, a model directory (`config.json`, `model.safetensors`) plus
//! `pretrain.json` (params, loss curve, time). Params: `seed`, `steps`, `batch_size`, `lr`,
//! `warmup`, `min_lr_fraction` (cosine decay to `lr·min_lr_fraction`), `weight_decay`,
//! `grad_clip`, `t_sampling` (`logit-normal` or `uniform`), `edit_weight` (loss weight of the
//! edit region, default 4), `checkpoint_every`, `log_every`,
//! `threads` (libtorch intra-op threads; default: the machine's cores), and `model` (fields of
//! `TinyKontextConfig` to override, e.g. `{num_layers: 2}`).
//!
//! Every step draws its batch, `t` and `ε` from a stream derived from `(seed, step)` alone, and
//! the checkpoint (weights, AdamW moments, step, loss curve in one safetensors blob, through the
//! engine's checkpoint API) is all the state there is: an interrupted pretrain continues where
//! it stopped and ends with the weights of an uninterrupted one.

use crate::data::Dataset;
use crate::device::select_device;
use crate::models::random::normal_tensor;
use crate::models::{
    ActiveAdapter, EditPolicy, TinyKontext, TinyKontextConfig, checkpoint, flow_matching_loss,
};
use crate::rl::adamw::{AdamW, AdamWConfig, clip_grad_norm};
use crate::rng::StreamRng;
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TSampling {
    /// `t = sigmoid(n)`, `n ~ N(0, 1)` (SD3's logit-normal; default).
    #[default]
    LogitNormal,
    Uniform,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PretrainParams {
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_steps")]
    pub steps: u64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_warmup")]
    pub warmup: u64,
    #[serde(default = "d_min_lr")]
    pub min_lr_fraction: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    #[serde(default)]
    pub t_sampling: TSampling,
    /// Weight of the edit region in the loss relative to the rest (1 = plain mean; default 4):
    /// the region that changes is a small part of each image, so without a weight most of the
    /// gradient teaches copying the source (on the synthetic world, 1,200 steps with weight 1
    /// gave a mean editing effect of 0.17, with weight 4 of 0.25). Records without an
    /// `edit_mask` weigh 1 everywhere.
    #[serde(default = "d_edit_weight")]
    pub edit_weight: f64,
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: u64,
    #[serde(default = "d_log")]
    pub log_every: u64,
    #[serde(default)]
    pub threads: Option<i32>,
    /// Overrides of `TinyKontextConfig` fields.
    #[serde(default)]
    pub model: serde_json::Map<String, Value>,
}

fn d_steps() -> u64 {
    1200
}
fn d_batch() -> usize {
    16
}
fn d_lr() -> f64 {
    2e-3
}
fn d_warmup() -> u64 {
    50
}
fn d_min_lr() -> f64 {
    0.1
}
fn d_wd() -> f64 {
    1e-4
}
fn d_clip() -> f64 {
    1.0
}
fn d_edit_weight() -> f64 {
    4.0
}
fn d_ckpt() -> u64 {
    50
}
fn d_log() -> u64 {
    25
}

fn bad(path: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        path: path.into(),
        message: message.into(),
    }
}

/// The model config the params describe (defaults overridden field by field).
pub fn model_config(
    overrides: &serde_json::Map<String, Value>,
) -> Result<TinyKontextConfig, ParamError> {
    let mut v = serde_json::to_value(TinyKontextConfig::default()).expect("serialisable");
    let obj = v.as_object_mut().expect("an object");
    for (k, val) in overrides {
        match obj.get_mut(k) {
            None => {
                let known: Vec<&str> = obj.keys().map(String::as_str).collect();
                return Err(bad(
                    &format!("model.{k}"),
                    format!("unknown model field; known: {}", known.join(", ")),
                ));
            }
            Some(slot) => {
                // Nested objects (text_encoder, scheduler) are merged one level deep.
                if let (Some(dst), Some(src)) = (slot.as_object_mut(), val.as_object()) {
                    for (k2, v2) in src {
                        if !dst.contains_key(k2) {
                            return Err(bad(&format!("model.{k}.{k2}"), "unknown model field"));
                        }
                        dst.insert(k2.clone(), v2.clone());
                    }
                } else {
                    *slot = val.clone();
                }
            }
        }
    }
    let cfg: TinyKontextConfig =
        serde_json::from_value(v).map_err(|e| bad("model", e.to_string()))?;
    cfg.validate().map_err(|e| bad("model", e.to_string()))?;
    Ok(cfg)
}

fn check(p: &PretrainParams) -> Result<(), ParamError> {
    if p.steps == 0 {
        return Err(bad("steps", "must be at least 1"));
    }
    if p.batch_size == 0 || p.batch_size > 4096 {
        return Err(bad(
            "batch_size",
            format!("must be in 1..=4096, got {}", p.batch_size),
        ));
    }
    if !(p.lr.is_finite() && p.lr > 0.0) {
        return Err(bad("lr", format!("must be > 0, got {}", p.lr)));
    }
    if !(0.0..=1.0).contains(&p.min_lr_fraction) {
        return Err(bad(
            "min_lr_fraction",
            format!("must be in [0, 1], got {}", p.min_lr_fraction),
        ));
    }
    if !(p.weight_decay >= 0.0) {
        return Err(bad(
            "weight_decay",
            format!("must be ≥ 0, got {}", p.weight_decay),
        ));
    }
    if !(p.grad_clip > 0.0) {
        return Err(bad(
            "grad_clip",
            format!("must be > 0, got {}", p.grad_clip),
        ));
    }
    if !(p.edit_weight.is_finite() && p.edit_weight >= 1.0) {
        return Err(bad(
            "edit_weight",
            format!("must be ≥ 1, got {}", p.edit_weight),
        ));
    }
    if p.checkpoint_every == 0 || p.log_every == 0 {
        return Err(bad(
            "checkpoint_every",
            "`checkpoint_every` and `log_every` must be ≥ 1",
        ));
    }
    if let Some(t) = p.threads
        && t < 1
    {
        return Err(bad("threads", format!("must be ≥ 1, got {t}")));
    }
    model_config(&p.model)?;
    Ok(())
}

/// Linear warm-up, then cosine decay to `lr·min_lr_fraction` at the last step.
pub fn lr_at(p: &PretrainParams, step: u64) -> f64 {
    if step < p.warmup {
        return p.lr * (step + 1) as f64 / p.warmup as f64;
    }
    let span = (p.steps - p.warmup.min(p.steps)).max(1) as f64;
    let x = ((step - p.warmup) as f64 / span).min(1.0);
    let floor = p.lr * p.min_lr_fraction;
    floor + (p.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
}

pub struct Pretrain;

/// The whole training set in memory: `(N, 3, H, W)` sources and targets, instructions.
struct TrainSet {
    sources: Tensor,
    targets: Tensor,
    /// `(N, 1, H, W)` edit masks (1 = changes); zeros where a record has none.
    masks: Tensor,
    instructions: Vec<String>,
}

fn load_train_set(ctx: &TaskCtx) -> Result<TrainSet, TaskError> {
    let root = ctx.input_path("data")?;
    let ds = Dataset::open(&root).map_err(|e| TaskError::Failed(format!("input `data`: {e}")))?;
    if !ds.rejected.is_empty() {
        ctx.log(format!(
            "input `data`: {} manifest line(s) rejected, first: line {}: {}",
            ds.rejected.len(),
            ds.rejected[0].line,
            ds.rejected[0].reason
        ));
    }
    let (mut src, mut tgt, mut ins, mut masks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut size: Option<Vec<i64>> = None;
    for r in &ds.records {
        let Some(t) = ds
            .target(r)
            .map_err(|e| TaskError::Failed(format!("input `data`, record `{}`: {e}", r.key)))?
        else {
            continue;
        };
        let s = ds
            .source(r)
            .map_err(|e| TaskError::Failed(format!("input `data`, record `{}`: {e}", r.key)))?;
        match &size {
            None => size = Some(s.size()),
            Some(sz) if *sz != s.size() || *sz != t.size() => {
                return Err(TaskError::Failed(format!(
                    "input `data`, record `{}`: images of {:?} / {:?}, but the dataset's first record has {:?}; pretraining needs one size",
                    r.key,
                    s.size(),
                    t.size(),
                    sz
                )));
            }
            _ => {}
        }
        let m = ds
            .edit_mask(r)
            .map_err(|e| TaskError::Failed(format!("input `data`, record `{}`: {e}", r.key)))?;
        let (_, h, w) = s.size3().expect("(3, H, W)");
        masks.push(m.unwrap_or_else(|| Tensor::zeros([1, h, w], (Kind::Float, tch::Device::Cpu))));
        src.push(s);
        tgt.push(t);
        ins.push(r.instruction.clone());
    }
    if src.is_empty() {
        return Err(TaskError::Failed(format!(
            "input `data` (`{}`): no record with a `target` image to learn from",
            root.display()
        )));
    }
    Ok(TrainSet {
        sources: Tensor::stack(&src, 0),
        targets: Tensor::stack(&tgt, 0),
        masks: Tensor::stack(&masks, 0),
        instructions: ins,
    })
}

const CKPT: &str = "pretrain-state";

fn io_err(what: &str) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |e| TaskError::Failed(format!("{what}: {e}"))
}

impl TaskKind for Pretrain {
    fn name(&self) -> &'static str {
        "pretrain"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "supervised flow matching of a base editing model (tiny-kontext) on a dataset"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<PretrainParams>(params)?;
        check(&p)?;
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["model".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: PretrainParams = ctx.params()?;
        let cfg = model_config(&p.model)
            .map_err(|e| TaskError::Failed(format!("param `{}`: {}", e.path, e.message)))?;
        // A fixed intra-op thread count (CPU results depend on it): the param, else the cores.
        let threads = p
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
        tch::set_num_threads(threads);
        let ordinals: Vec<usize> = ctx.cuda_ordinals.iter().map(|&o| o as usize).collect();
        let device = select_device(&ordinals);
        let data = load_train_set(ctx)?;
        let n = data.instructions.len();
        let model = TinyKontext::new(&cfg, device, p.seed)
            .map_err(|e| TaskError::Failed(format!("model: {e}")))?;
        let params = model.trainable_variables();
        let adam_cfg = AdamWConfig {
            lr: p.lr,
            weight_decay: p.weight_decay,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::fresh(adam_cfg.clone(), &params);
        let work = ctx.workdir()?;
        let mut history: Vec<f64> = Vec::new();
        // Resume from the engine's checkpoint when an earlier attempt left one.
        if let Some(bytes) = ctx.checkpoint_load(CKPT)? {
            let f = work.join("resume.safetensors");
            std::fs::write(&f, &bytes).map_err(io_err("cannot write the checkpoint"))?;
            let step = restore(&model, &params, &mut opt, &f, &mut history)?;
            ctx.log(format!("resumed from the checkpoint at step {step}"));
        }
        let sources = data.sources.to_device(device);
        let targets = data.targets.to_device(device);
        let (src_lat, tgt_lat) = tch::no_grad(|| -> Result<_, TaskError> {
            let e = |e| TaskError::Failed(format!("encode: {e}"));
            Ok((
                model.encode(&sources).map_err(e)?,
                model.encode(&targets).map_err(e)?,
            ))
        })?;
        let lat_shape = tgt_lat.size()[1..].to_vec();
        // Per-cell loss weights on the latent grid: 1 + (edit_weight − 1)·Ẽ (max-pooled mask).
        let weights = (p.edit_weight != 1.0).then(|| {
            let (edit, _) = crate::nft::loss::downsample_mask(
                &data.masks.to_device(device),
                lat_shape[1],
                lat_shape[2],
                crate::nft::loss::MaskDown::Maxpool,
            );
            edit * (p.edit_weight - 1.0) + 1.0
        });
        let bsz = p.batch_size.min(n);
        let started = Instant::now();
        let start_step = opt.t;
        let mut window = Vec::new();
        for step in start_step..p.steps {
            ctx.check_cancelled()?;
            let mut rng = StreamRng::derive(p.seed, &format!("pretrain/step/{step}"));
            let idx: Vec<i64> = (0..bsz)
                .map(|_| (rng.next_u64() % n as u64) as i64)
                .collect();
            let t: Vec<f32> = (0..bsz)
                .map(|_| match p.t_sampling {
                    TSampling::Uniform => rng.uniform() as f32,
                    TSampling::LogitNormal => (1.0 / (1.0 + (-rng.normal()).exp())) as f32,
                })
                .collect();
            let mut shape = vec![bsz as i64];
            shape.extend_from_slice(&lat_shape);
            let eps = normal_tensor(&mut rng, &shape, Kind::Float, device);
            let index = Tensor::from_slice(&idx).to_device(device);
            let x0 = tgt_lat.index_select(0, &index);
            let src = src_lat.index_select(0, &index);
            let ins: Vec<&str> = idx
                .iter()
                .map(|&i| data.instructions[i as usize].as_str())
                .collect();
            let cond = model
                .condition(&src, &ins)
                .map_err(|e| TaskError::Failed(format!("conditioning: {e}")))?;
            let tt = Tensor::from_slice(&t).to_device(device);
            for v in params.values() {
                v.shallow_clone().zero_grad();
            }
            let loss = match &weights {
                None => flow_matching_loss(&model, &x0, &eps, &tt, &cond, &ActiveAdapter::Off)
                    .map_err(|e| TaskError::Failed(format!("forward: {e}")))?,
                Some(wts) => {
                    let w = wts.index_select(0, &index);
                    let x_t = crate::models::interpolate(&x0, &eps, &tt);
                    let v = model
                        .velocity_with(&x_t, &tt, &cond, &ActiveAdapter::Off)
                        .map_err(|e| TaskError::Failed(format!("forward: {e}")))?;
                    // Σ w·(v − (ε − x0))² / (C·Σ w): the plain mean when w ≡ 1.
                    let c = lat_shape[0] as f64;
                    ((v - (&eps - &x0)).square() * &w).sum(Kind::Float) / (w.sum(Kind::Float) * c)
                }
            };
            let lv = loss.double_value(&[]);
            if !lv.is_finite() {
                return Err(TaskError::Failed(format!(
                    "the loss is {lv} at step {step}; lower `lr` (now {})",
                    p.lr
                )));
            }
            loss.backward();
            let grads: BTreeMap<String, Tensor> = params
                .iter()
                .map(|(k, v)| (k.clone(), v.grad()))
                .filter(|(_, g)| g.defined())
                .collect();
            clip_grad_norm(&grads, p.grad_clip);
            opt.cfg.lr = lr_at(&p, step);
            opt.step(&params, &grads);
            window.push(lv);
            let done = step + 1;
            if done % p.log_every == 0 || done == p.steps {
                let mean = window.iter().sum::<f64>() / window.len() as f64;
                window.clear();
                history.push(mean);
                ctx.log(format!(
                    "step {done}/{}: loss {mean:.5} lr {:.2e}",
                    p.steps,
                    lr_at(&p, step)
                ));
            }
            ctx.progress(done, p.steps, format!("loss {lv:.4}"));
            if done % p.checkpoint_every == 0 && done < p.steps {
                let f = work.join("ckpt.safetensors");
                save_state(&model, &opt, &history, &f)?;
                let bytes = std::fs::read(&f).map_err(io_err("cannot read the checkpoint"))?;
                ctx.checkpoint_save(CKPT, bytes)?;
            }
        }
        let out = work.join("model");
        model
            .save(&out)
            .map_err(|e| TaskError::Failed(format!("saving the model: {e}")))?;
        let secs = started.elapsed().as_secs_f64();
        let final_loss = history.last().copied().unwrap_or(f64::NAN);
        let report = json!({
            "backend": model.backend(),
            "params": serde_json::to_value(&p).expect("serialisable"),
            "parameters": model.base_variables().values().map(|t| t.numel()).sum::<usize>(),
            "train_samples": n,
            "loss_every": p.log_every,
            "loss": history,
            "final_loss": final_loss,
            "steps_this_attempt": p.steps - start_step,
            "seconds_this_attempt": secs,
        });
        checkpoint::write_json(&out.join("pretrain.json"), &report)
            .map_err(|e| TaskError::Failed(e.to_string()))?;
        ctx.metric("final_loss", final_loss);
        ctx.metric("train_samples", n as u64);
        ctx.metric("seconds", secs);
        ctx.output_dir("model", &out)
    }
}

/// Weights (`model.<k>`), moments (`exp_avg/<k>`, `exp_avg_sq/<k>`), step and loss curve in
/// one safetensors file.
fn save_state(
    model: &TinyKontext,
    opt: &AdamW,
    history: &[f64],
    path: &std::path::Path,
) -> Result<(), TaskError> {
    let mut all = opt.tensors();
    for (k, t) in model.base_variables() {
        all.insert(format!("model.{k}"), t);
    }
    all.insert("meta.step".into(), Tensor::from_slice(&[opt.t as i64]));
    all.insert(
        "meta.loss".into(),
        Tensor::from_slice(history).to_kind(Kind::Double),
    );
    checkpoint::write_safetensors(path, &all)
        .map_err(|e| TaskError::Failed(format!("checkpoint: {e}")))
}

fn restore(
    model: &TinyKontext,
    params: &BTreeMap<String, Tensor>,
    opt: &mut AdamW,
    path: &std::path::Path,
    history: &mut Vec<f64>,
) -> Result<u64, TaskError> {
    let e = |e: String| TaskError::Failed(format!("checkpoint `{}`: {e}", path.display()));
    let mut all = checkpoint::read_safetensors(path).map_err(|x| e(x.to_string()))?;
    let step = all
        .remove("meta.step")
        .map(|t| t.int64_value(&[0]) as u64)
        .ok_or_else(|| e("no `meta.step`".into()))?;
    *history = all
        .remove("meta.loss")
        .map(|t| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap_or_default())
        .unwrap_or_default();
    let mut weights = BTreeMap::new();
    let mut moments = BTreeMap::new();
    for (k, t) in all {
        match k.strip_prefix("model.") {
            Some(rest) => {
                weights.insert(rest.to_string(), t);
            }
            None => {
                moments.insert(k, t);
            }
        }
    }
    let vars = model.base_variables();
    let diff = checkpoint::compare(&weights, &vars);
    if !diff.is_empty() {
        return Err(e(format!("weights do not match the model: {diff}")));
    }
    tch::no_grad(|| {
        for (k, v) in &vars {
            v.shallow_clone().copy_(&weights[k]);
        }
    });
    *opt = AdamW::from_tensors(opt.cfg.clone(), step, moments, params).map_err(e)?;
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> PretrainParams {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn model_overrides_merge_and_unknown_fields_are_named() {
        let cfg = model_config(
            json!({"num_layers": 2, "text_encoder": {"hidden_size": 32}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(cfg.num_layers, 2);
        assert_eq!(cfg.text_encoder.hidden_size, 32);
        assert_eq!(cfg.patch_size, TinyKontextConfig::default().patch_size);
        let e = model_config(json!({"num_layerz": 2}).as_object().unwrap()).unwrap_err();
        assert_eq!(e.path, "model.num_layerz");
        let e =
            model_config(json!({"text_encoder": {"depth": 2}}).as_object().unwrap()).unwrap_err();
        assert_eq!(e.path, "model.text_encoder.depth");
        let e = check(&params(json!({"batch_size": 0}))).unwrap_err();
        assert_eq!(e.path, "batch_size");
    }

    #[test]
    fn lr_warms_up_then_decays_to_the_floor() {
        let p = params(json!({"steps": 100, "warmup": 10, "lr": 1.0, "min_lr_fraction": 0.1}));
        assert!((lr_at(&p, 0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&p, 9) - 1.0).abs() < 1e-12);
        assert!((lr_at(&p, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(&p, 100) - 0.1).abs() < 1e-12);
        assert!(lr_at(&p, 50) < 1.0 && lr_at(&p, 50) > 0.1);
    }
}
