//! Evaluation (method-spec §8; what the `eval` kind runs): the policy to evaluate and its
//! edits, on the protocols and helpers of [`cocoflow_tasks::eval`] (re-exported here).

use crate::data::{Dataset, Record, RecordTensors as _};
use crate::models::{ActiveAdapter, BaseModel, EditPolicy, THETA};
use crate::sampling::{SamplerConfig, sample, stack_x0};
use cocoflow_engine::kind::TaskError;
pub use cocoflow_tasks::eval::*;
use std::path::Path;
use tch::Tensor;

/// Loads the policy to evaluate: the base, plus θ from `adapter` when given (checked against
/// the base's files before the base is loaded: [`crate::models::open::check_adapter`]).
pub fn load_policy(
    base: &BaseModel,
    adapter: Option<&Path>,
    device: tch::Device,
) -> Result<(Box<dyn EditPolicy>, ActiveAdapter), TaskError> {
    let peft_dir = match adapter {
        None => None,
        Some(dir) => {
            let peft_dir = adapter_dir(dir)
        .ok_or_else(|| TaskError::Failed(format!(
            "input `adapter` (`{}`): neither a PEFT adapter (adapter_config.json) nor an RL state with `theta/adapter_config.json`",
            dir.display()
        )))?;
            crate::models::open::check_adapter(base.dir(), &peft_dir)
                .map_err(|e| TaskError::Failed(format!("input `adapter`: {e}")))?;
            Some(peft_dir)
        }
    };
    let mut model = base
        .load(device)
        .map_err(|e| TaskError::Failed(format!("input `model`: {e}")))?;
    let Some(peft_dir) = peft_dir else {
        return Ok((model, ActiveAdapter::Off));
    };
    model
        .load_adapter(&peft_dir, THETA)
        .map_err(|e| TaskError::Failed(format!("input `adapter`: {e}")))?;
    model
        .set_adapter(ActiveAdapter::theta())
        .map_err(|e| TaskError::Failed(format!("input `adapter`: {e}")))?;
    Ok((model, ActiveAdapter::theta()))
}

/// The edited images of one chunk of records `(B, 3, H, W)` on the CPU, as saved (8 bits
/// per channel): the policy's samples, or the references (`images: target | source`).
pub fn edit_chunk(
    sampler: &SamplerConfig,
    images: EvalImages,
    policy: Option<&(Box<dyn EditPolicy>, ActiveAdapter)>,
    ds: &Dataset,
    chunk: &[Record],
    sources: &Tensor,
    seeds: &[u64],
    device: tch::Device,
) -> Result<Tensor, TaskError> {
    let fail = |k: &str, e: &dyn std::fmt::Display| {
        TaskError::Failed(format!("input `data`, record `{k}`: {e}"))
    };
    let ins: Vec<&str> = chunk.iter().map(|r| r.instruction.as_str()).collect();
    tch::no_grad(|| -> Result<Tensor, TaskError> {
        let e = |e: &dyn std::fmt::Display| TaskError::Failed(format!("policy: {e}"));
        let Some((policy, active)) = policy else {
            if images == EvalImages::Source {
                return Ok(sources.shallow_clone());
            }
            let mut ts = Vec::new();
            for r in chunk {
                ts.push(ds.target(r).map_err(|x| fail(&r.key, &x))?.ok_or_else(|| {
                    fail(&r.key, &"no `target` image (needed by `images: target`)")
                })?);
            }
            return Ok(Tensor::stack(&ts, 0));
        };
        let src_lat = policy
            .encode(&sources.to_device(device))
            .map_err(|x| e(&x))?;
        let cond = policy.condition(&src_lat, &ins).map_err(|x| e(&x))?;
        let samples = sample(&**policy, &cond, seeds, sampler, active).map_err(|x| e(&x))?;
        let img = policy.decode(&stack_x0(&samples)).map_err(|x| e(&x))?;
        // As saved: 8 bits per channel.
        Ok((img.to_device(tch::Device::Cpu).clamp(0.0, 1.0) * 255.0).round() / 255.0)
    })
}
