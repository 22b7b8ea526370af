//! LoRA adapters in the layout diffusers' `FluxKontextPipeline.load_lora_weights` reads (what
//! `save_lora_weights` writes): one `pytorch_lora_weights.safetensors` with keys
//! `transformer.<module>.lora_A.weight` / `.lora_B.weight` and, in the file's `__metadata__`,
//! `lora_adapter_metadata` = JSON `{"transformer.r": r, "transformer.lora_alpha": α,
//! "transformer.target_modules": [...], ...}` — without it diffusers would take α = r.
//!
//! [`export_diffusers`] converts a PEFT-layout adapter directory (an RL state's `theta/`, or
//! what [`crate::models::EditPolicy::save_adapter`] writes) into that file. cocoflow reads
//! either layout back ([`crate::models::peft::import`] strips the `transformer.` prefix).

use super::super::checkpoint::create_dir;
use super::super::error::ModelError;
use super::super::lora::LoraConfig;
use super::super::peft::{self, DIFFUSERS_PREFIX};
pub use super::super::peft::{DIFFUSERS_LORA_WEIGHTS, DIFFUSERS_METADATA_KEY as METADATA_KEY};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// diffusers' `transformer_lora_adapter_metadata` of an adapter config, keys prefixed.
pub fn adapter_metadata(cfg: &LoraConfig) -> Value {
    let fields = json!({
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "target_modules": cfg.target_modules,
        "use_rslora": cfg.use_rslora,
        "use_dora": false,
        "lora_dropout": 0.0,
        "lora_bias": false,
        "init_lora_weights": true,
    });
    let mut out = Map::new();
    for (k, v) in fields.as_object().expect("object") {
        out.insert(format!("transformer.{k}"), v.clone());
    }
    Value::Object(out)
}

/// Writes the PEFT-layout adapter in `peft_dir` as `out_dir/pytorch_lora_weights.safetensors`
/// (float32) with diffusers' metadata; returns the file's path.
pub fn export_diffusers(peft_dir: &Path, out_dir: &Path) -> Result<std::path::PathBuf, ModelError> {
    let imp = peft::import(peft_dir)?;
    let tensors: BTreeMap<String, Tensor> = imp
        .tensors
        .iter()
        .map(|(k, t)| (format!("{DIFFUSERS_PREFIX}{k}"), t.shallow_clone()))
        .collect();
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            METADATA_KEY.to_string(),
            serde_json::to_string_pretty(&adapter_metadata(&imp.config)).expect("json"),
        ),
    ]);
    create_dir(out_dir)?;
    let path = out_dir.join(DIFFUSERS_LORA_WEIGHTS);
    write_with_metadata(&path, &tensors, &metadata)?;
    Ok(path)
}

/// A safetensors file of float32 tensors with a `__metadata__` map (the `tch` writer has
/// none): 8-byte little-endian header length, the JSON header padded with spaces to a
/// multiple of 8, the data in key order.
pub fn write_with_metadata(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut data: Vec<u8> = Vec::new();
    for (k, t) in tensors {
        let t = tch::no_grad(|| {
            t.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
        });
        let v = Vec::<f32>::try_from(t.reshape([-1])).map_err(|e| ModelError::Safetensors {
            path: path.to_owned(),
            message: format!("tensor `{k}`: {e}"),
        })?;
        let start = data.len();
        for x in v {
            data.extend_from_slice(&x.to_le_bytes());
        }
        header.insert(
            k.clone(),
            json!({"dtype": "F32", "shape": t.size(), "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).expect("json");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(&data);
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| ModelError::Io {
            op: "write",
            path: path.to_owned(),
            source,
        })
}
