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
//!
//! With `reference: DIR` (the workflows' `--set model=DIR`) nothing is trained: the output
//! `model` is `model_ref.json` naming DIR and the digest of its files ([`crate::weights`]), which
//! [`ByReference`] puts in the canonical params at planning time (a FLUX.1 Kontext repository
//! used in place, never copied into the store).

use crate::pretrain::{TSampling, model_config};
use cocoflow_engine::kind::{Input, Kind, ParamError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Fraction of training samples conditioned on the record's refined instruction (curation
    /// stage 2, paper §3.1) where it has one, drawn per sample and step from the stream
    /// `(seed, pretrain/phrasing/<step>)`; the rest on the original wording. The base then
    /// follows both phrasings, as a general editing model does: RL conditions on the refined
    /// one (method-spec §6). 0 = original only (the behaviour of kind version 2).
    pub refined_fraction: f64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub threads: Option<i32>,
    /// Data-parallel replicas when the task runs on the CPU (a GPU task has one per granted
    /// GPU): each step's batch is split into contiguous parts, one replica and thread each,
    /// and their gradients summed before the step — the same step up to float reordering.
    /// Left out of the cache key while 1.
    #[serde(skip_serializing_if = "super::is_one")]
    pub cpu_replicas: usize,
    /// Overrides of `TinyKontextConfig` fields.
    pub model: serde_json::Map<String, Value>,
    /// A base model directory to use by reference instead of pretraining (e.g. a diffusers
    /// FLUX.1 Kontext repository; `""` = none): the output `model` is then only
    /// `model_ref.json` ([`crate::weights`]), the other params are dropped, and the digest of
    /// the directory's files (hashed once per file and machine) enters the canonical params as
    /// `reference_digest`, so changed files make a new cache key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Set by the kind from `reference` (any given value is replaced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_digest: Option<String>,
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
            refined_fraction: 0.5,
            checkpoint_every: 50,
            log_every: 25,
            threads: None,
            cpu_replicas: 1,
            model: serde_json::Map::new(),
            reference: None,
            reference_digest: None,
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
    super::check_cpu_replicas(p.cpu_replicas)?;
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
    if !(0.0..=1.0).contains(&p.refined_fraction) {
        return Err(bad(
            "refined_fraction",
            format!("must be in [0, 1], got {}", p.refined_fraction),
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

impl Kind for Pretrain {
    type Params = PretrainParams;
    const NAME: &'static str = "pretrain";
    const VERSION: u32 = 3;
    const DESCRIBE: &'static str =
        "supervised flow matching of a base editing model (tiny-kontext) on a dataset";
    const INPUTS: Option<&'static [Input]> =
        Some(&[Input::required("data", "a dataset with `target` images")]);
    const OUTPUTS: &'static [&'static str] = &["model"];

    fn validate(&self, p: &PretrainParams) -> Result<(), ParamError> {
        check(p)
    }
}

/// `pretrain` with its `reference` param honoured at planning time: wraps the registered
/// (worker) or declared (front end) kind and, when `reference` names a directory, replaces the
/// canonical params by `{reference: <absolute path>, reference_digest: <files' digest>}`.
pub struct ByReference<T>(pub T);

impl<T: cocoflow_engine::kind::TaskKind> cocoflow_engine::kind::TaskKind for ByReference<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn version(&self) -> u32 {
        self.0.version()
    }
    fn describe(&self) -> &'static str {
        self.0.describe()
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let canonical = self.0.check_params(params)?;
        match canonical.get("reference").and_then(Value::as_str) {
            Some(dir) if !dir.is_empty() => {
                let r = crate::weights::ModelRef::of(std::path::Path::new(dir))
                    .map_err(|m| bad("reference", m))?;
                Ok(serde_json::json!({
                    "reference": r.path.display().to_string(),
                    "reference_digest": r.digest,
                }))
            }
            _ => Ok(canonical),
        }
    }
    fn outputs(&self, params: &Value) -> Vec<String> {
        self.0.outputs(params)
    }
    fn check_inputs(&self, params: &Value, inputs: &[&str]) -> Result<(), String> {
        self.0.check_inputs(params, inputs)
    }
    fn quoted_params(&self) -> &'static [&'static str] {
        self.0.quoted_params()
    }
    fn placement(&self) -> cocoflow_engine::kind::Placement {
        self.0.placement()
    }
    fn declaration(&self) -> Value {
        self.0.declaration()
    }
    fn run(
        &self,
        ctx: &mut cocoflow_engine::kind::TaskCtx,
    ) -> Result<(), cocoflow_engine::kind::TaskError> {
        self.0.run(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::TinyKontextConfig;
    use serde_json::json;

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
}
