//! LoRA adapters in the PEFT layout (`PeftModel.save_pretrained`): a directory with
//! `adapter_model.safetensors`, keys `base_model.model.<module path>.lora_A.weight` /
//! `.lora_B.weight` (PEFT strips the adapter name from the keys), and `adapter_config.json`
//! with `peft_type: "LORA"`, `r`, `lora_alpha`, `target_modules`. Import also accepts the
//! diffusers `save_lora_weights` prefix `transformer.`.

use super::checkpoint::{read_json, read_safetensors, write_json, write_safetensors};
use super::error::ModelError;
use super::lora::LoraConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's prefix of a wrapped model's modules.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// diffusers' prefix of transformer LoRA keys (`load_lora_weights`).
pub const DIFFUSERS_PREFIX: &str = "transformer.";

/// Writes `tensors` (keys `<module>.lora_A.weight`, without prefix or adapter name) and the
/// adapter config to `dir`.
pub fn export(
    dir: &Path,
    cfg: &LoraConfig,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<(), ModelError> {
    super::checkpoint::create_dir(dir)?;
    let keyed: BTreeMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (format!("{PEFT_PREFIX}{k}"), t.shallow_clone()))
        .collect();
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &keyed)?;
    let config = json!({
        "peft_type": "LORA",
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "target_modules": cfg.target_modules,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": cfg.use_rslora,
        "use_dora": false,
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "task_type": null,
        "base_model_name_or_path": null,
        "inference_mode": true,
    });
    write_json(&dir.join(ADAPTER_CONFIG), &config)
}

/// What [`import`] read: the config and the tensors keyed without prefix.
pub struct ImportedAdapter {
    pub config: LoraConfig,
    /// `None` when `target_modules` was a regex string: the file's modules decide.
    pub explicit_targets: bool,
    pub tensors: BTreeMap<String, Tensor>,
}

/// Reads a PEFT-layout adapter directory. Unknown config keys are ignored (PEFT writes many);
/// features that change the math and are not implemented (DoRA, per-module ranks) are errors.
pub fn import(dir: &Path) -> Result<ImportedAdapter, ModelError> {
    let cpath = dir.join(ADAPTER_CONFIG);
    let v: Value = read_json(&cpath)?;
    let bad = |message: String| ModelError::UnsupportedAdapter {
        path: cpath.clone(),
        message,
    };
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => return Err(bad(format!("`peft_type` is {other:?}, not \"LORA\""))),
    }
    let r = field("r")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(|| bad("`r` is not a positive integer".into()))?;
    let lora_alpha = field("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
    if field("use_dora").and_then(Value::as_bool) == Some(true) {
        return Err(bad("DoRA (`use_dora: true`) is not supported".into()));
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if field(k)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(format!(
                "`{k}` (per-module ranks or alphas) is not supported"
            )));
        }
    }
    if field("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
        return Err(bad("`fan_in_fan_out: true` is not supported".into()));
    }
    let use_rslora = field("use_rslora")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let wpath = dir.join(ADAPTER_WEIGHTS);
    let raw = read_safetensors(&wpath)?;
    let tensors: BTreeMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, t)| {
            let k = k
                .strip_prefix(PEFT_PREFIX)
                .or_else(|| k.strip_prefix(DIFFUSERS_PREFIX))
                .map(str::to_string)
                .unwrap_or(k);
            (k, t)
        })
        .collect();
    let (target_modules, explicit_targets) = match field("target_modules") {
        Some(Value::Array(a)) => (
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            true,
        ),
        _ => {
            // a regex or absent: the modules that have weights in the file
            let mut mods: Vec<String> = tensors
                .keys()
                .filter_map(|k| k.strip_suffix(".lora_A.weight").map(str::to_string))
                .collect();
            mods.dedup();
            (mods, false)
        }
    };
    Ok(ImportedAdapter {
        config: LoraConfig {
            r,
            lora_alpha,
            target_modules,
            use_rslora,
            init_seed: 0,
        },
        explicit_targets,
        tensors,
    })
}
