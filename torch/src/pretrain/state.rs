//! The pretrain checkpoint: weights (`model.<k>`), AdamW moments (`exp_avg/<k>`,
//! `exp_avg_sq/<k>`), the step and the loss curve in one safetensors file.

use crate::models::{EditPolicy, TinyKontext, checkpoint};
use crate::rl::adamw::AdamW;
use cocoflow_engine::kind::TaskError;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Weights (`model.<k>`), moments (`exp_avg/<k>`, `exp_avg_sq/<k>`), step and loss curve in
/// one safetensors file.
pub fn save_state(
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

pub fn restore(
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
