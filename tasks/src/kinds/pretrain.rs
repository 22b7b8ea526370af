//! `pretrain`: supervised flow matching of a base editing model on a dataset
//! ([`crate::pretrain`]).
//!
//! Input `data` (a dataset in the manifest format with `target` images, e.g. `synth-data`'s
//! `train`). Output `model`: a model directory (`config.json`, `model.safetensors`) plus
//! `pretrain.json` (backend, params, parameter count, train samples, the loss curve — nothing
//! that depends on the machine or on how often the task was interrupted; time goes to the
//! task's metrics and log). Resources: CPU or one GPU.
//!
//! Every step draws its batch, `t` and `ε` from a stream derived from `(seed, step)` alone, and
//! the checkpoint (weights, AdamW moments, step, loss curve in one safetensors blob, through the
//! engine's checkpoint API) is all the state there is: an interrupted pretrain continues where
//! it stopped and ends with the weights — and files — of an uninterrupted one.

use crate::device::select_device;
use crate::models::{EditPolicy, TinyKontext, checkpoint};
use crate::pretrain::state::{restore, save_state};
use crate::pretrain::{
    LrSchedule, TSampling, draw_batch, load_train_set, loss, loss_weights, model_config,
};
use crate::rl::adamw::{AdamW, AdamWConfig, clip_grad_norm};
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::Tensor;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainParams {
    pub seed: u64,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    pub min_lr_fraction: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub t_sampling: TSampling,
    /// Weight of the edit region in the loss relative to the rest (1 = plain mean; default 4):
    /// the region that changes is a small part of each image, so without a weight most of the
    /// gradient teaches copying the source (on the synthetic world, 1,200 steps with weight 1
    /// gave a mean editing effect of 0.17, with weight 4 of 0.25). Records without an
    /// `edit_mask` weigh 1 everywhere.
    pub edit_weight: f64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub threads: Option<i32>,
    /// Overrides of `TinyKontextConfig` fields.
    pub model: serde_json::Map<String, Value>,
}

impl Default for PretrainParams {
    fn default() -> Self {
        PretrainParams {
            seed: 0,
            steps: 1200,
            batch_size: 16,
            lr: 2e-3,
            warmup: 50,
            min_lr_fraction: 0.1,
            weight_decay: 1e-4,
            grad_clip: 1.0,
            t_sampling: TSampling::default(),
            edit_weight: 4.0,
            checkpoint_every: 50,
            log_every: 25,
            threads: None,
            model: serde_json::Map::new(),
        }
    }
}

impl PretrainParams {
    pub fn lr_schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.lr,
            warmup: self.warmup,
            steps: self.steps,
            min_lr_fraction: self.min_lr_fraction,
        }
    }
}

fn bad(path: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        path: path.into(),
        message: message.into(),
    }
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

pub struct Pretrain;

const CKPT: &str = "pretrain-state";

fn io_err(what: &str) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |e| TaskError::Failed(format!("{what}: {e}"))
}

impl Kind for Pretrain {
    type Params = PretrainParams;
    const NAME: &'static str = "pretrain";
    const VERSION: u32 = 2;
    const DESCRIBE: &'static str =
        "supervised flow matching of a base editing model (tiny-kontext) on a dataset";
    const INPUTS: Option<&'static [Input]> =
        Some(&[Input::required("data", "a dataset with `target` images")]);
    const OUTPUTS: &'static [&'static str] = &["model"];

    fn validate(&self, p: &PretrainParams) -> Result<(), ParamError> {
        check(p)
    }

    fn run(&self, p: PretrainParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let cfg = model_config(&p.model)
            .map_err(|e| TaskError::Failed(format!("param `{}`: {}", e.path, e.message)))?;
        // A fixed intra-op thread count (CPU results depend on it): the param, else the cores.
        let threads = p
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
        tch::set_num_threads(threads);
        let ordinals: Vec<usize> = ctx.cuda_ordinals.iter().map(|&o| o as usize).collect();
        let device = select_device(&ordinals);
        let root = ctx.input_path("data")?;
        let data = load_train_set(&root, &|line| ctx.log(line))?;
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
        let weights = loss_weights(
            &data.masks.to_device(device),
            lat_shape[1],
            lat_shape[2],
            p.edit_weight,
        );
        let schedule = p.lr_schedule();
        let bsz = p.batch_size.min(n);
        let started = Instant::now();
        let start_step = opt.t;
        let mut window = Vec::new();
        for step in start_step..p.steps {
            ctx.check_cancelled()?;
            let (idx, tt, eps) = draw_batch(p.seed, step, n, bsz, &lat_shape, p.t_sampling, device);
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
            for v in params.values() {
                v.shallow_clone().zero_grad();
            }
            let w = weights.as_ref().map(|w| w.index_select(0, &index));
            let loss = loss(&model, &x0, &eps, &tt, &cond, w.as_ref())
                .map_err(|e| TaskError::Failed(format!("forward: {e}")))?;
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
            opt.cfg.lr = schedule.at(step);
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
                    schedule.at(step)
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
        });
        checkpoint::write_json(&out.join("pretrain.json"), &report)
            .map_err(|e| TaskError::Failed(e.to_string()))?;
        ctx.log(format!(
            "{} steps in this attempt, {secs:.1} s",
            p.steps - start_step
        ));
        ctx.metric("final_loss", final_loss);
        ctx.metric("train_samples", n as u64);
        ctx.metric("steps_this_attempt", p.steps - start_step);
        ctx.metric("seconds", secs);
        ctx.output_dir("model", &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::TinyKontextConfig;

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
        let p = params(json!({"steps": 100, "warmup": 10, "lr": 1.0, "min_lr_fraction": 0.1}))
            .lr_schedule();
        assert!((p.at(0) - 0.1).abs() < 1e-12);
        assert!((p.at(9) - 1.0).abs() < 1e-12);
        assert!((p.at(10) - 1.0).abs() < 1e-12);
        assert!((p.at(100) - 0.1).abs() < 1e-12);
        assert!(p.at(50) < 1.0 && p.at(50) > 0.1);
    }
}
