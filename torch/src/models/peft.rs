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
/// The file diffusers' `save_lora_weights` writes and `load_lora_weights` reads by default.
pub const DIFFUSERS_LORA_WEIGHTS: &str = "pytorch_lora_weights.safetensors";
/// diffusers' key of the adapter config in that file's `__metadata__`.
pub const DIFFUSERS_METADATA_KEY: &str = "lora_adapter_metadata";

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

/// Reads a PEFT-layout adapter directory, or a diffusers one (`pytorch_lora_weights.safetensors`
/// and no `adapter_config.json`; the config from the file's `lora_adapter_metadata`). Unknown
/// config keys are ignored (PEFT writes many); features that change the math and are not
/// implemented (DoRA, per-module ranks) are errors.
pub fn import(dir: &Path) -> Result<ImportedAdapter, ModelError> {
    let cpath = dir.join(ADAPTER_CONFIG);
    let diffusers = dir.join(DIFFUSERS_LORA_WEIGHTS);
    if !cpath.exists() && diffusers.is_file() {
        return import_diffusers(&diffusers);
    }
    let v: Value = read_json(&cpath)?;
    let wpath = dir.join(ADAPTER_WEIGHTS);
    from_config(&cpath, &v, &wpath)
}

/// The `__metadata__` map of a safetensors file's header.
pub fn safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>, ModelError> {
    use std::io::Read;
    let err = |message: String| ModelError::Safetensors {
        path: path.to_owned(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|source| ModelError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|e| err(format!("no header: {e}")))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 {
        return Err(err(format!("header of {n} bytes")));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h)
        .map_err(|e| err(format!("truncated header: {e}")))?;
    let v: Value = serde_json::from_slice(&h).map_err(|e| err(format!("header: {e}")))?;
    Ok(v.get("__metadata__")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// A diffusers LoRA file: the `transformer.`-prefixed fields of its metadata as the config
/// (α = r when there is none, as diffusers takes it).
fn import_diffusers(wpath: &Path) -> Result<ImportedAdapter, ModelError> {
    let meta = safetensors_metadata(wpath)?;
    let mut config = serde_json::Map::new();
    config.insert("peft_type".into(), Value::from("LORA"));
    if let Some(raw) = meta.get(DIFFUSERS_METADATA_KEY) {
        let m: Value = serde_json::from_str(raw).map_err(|e| ModelError::Safetensors {
            path: wpath.to_owned(),
            message: format!("`{DIFFUSERS_METADATA_KEY}`: {e}"),
        })?;
        for (k, v) in m.as_object().into_iter().flatten() {
            if let Some(k) = k.strip_prefix(DIFFUSERS_PREFIX) {
                config.insert(k.to_string(), v.clone());
            }
        }
    }
    if !config.contains_key("r") {
        let raw = read_safetensors(wpath)?;
        let r = raw
            .iter()
            .find(|(k, _)| k.ends_with(".lora_A.weight"))
            .map(|(_, t)| t.size()[0])
            .ok_or_else(|| ModelError::UnsupportedAdapter {
                path: wpath.to_owned(),
                message: "no `lora_A` matrix and no rank in the metadata".into(),
            })?;
        config.insert("r".into(), Value::from(r));
        config.insert("lora_alpha".into(), Value::from(r as f64));
    }
    from_config(wpath, &Value::Object(config), wpath)
}

fn from_config(cpath: &Path, v: &Value, wpath: &Path) -> Result<ImportedAdapter, ModelError> {
    let bad = |message: String| ModelError::UnsupportedAdapter {
        path: cpath.to_owned(),
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

    let raw = read_safetensors(wpath)?;
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
