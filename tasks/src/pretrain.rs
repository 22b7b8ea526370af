//! The torch-free part of supervised pretraining: the timestep sampling option and the model
//! config a `pretrain` task's params describe (checked by the front end). The training itself
//! is `cocoflow_torch::pretrain`.

use crate::models::TinyKontextConfig;
use cocoflow_engine::kind::ParamError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
