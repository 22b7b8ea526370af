//! safetensors checkpoints (never pickle) and JSON configs. Loading compares the file's
//! tensors with the model's variables first and reports every missing, unexpected and
//! mis-shaped tensor at once; nothing is copied unless all of them match.

use super::error::{Mismatch, ModelError, TensorDiff};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Weights file name of a model directory (next to [`CONFIG_FILE`]).
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

fn describe(t: &Tensor) -> String {
    format!("{:?} {:?}", t.size(), t.kind())
}

/// How the tensors of a file (`found`) differ from what a model holds (`expected`).
pub fn compare(
    found: &BTreeMap<String, Tensor>,
    expected: &BTreeMap<String, Tensor>,
) -> TensorDiff {
    let shapes: BTreeMap<String, (Vec<i64>, Kind)> = expected
        .iter()
        .map(|(k, t)| (k.clone(), (t.size(), t.kind())))
        .collect();
    compare_shapes(found, &shapes)
}

/// As [`compare`], against names, shapes and kinds only.
pub fn compare_shapes(
    found: &BTreeMap<String, Tensor>,
    expected: &BTreeMap<String, (Vec<i64>, Kind)>,
) -> TensorDiff {
    let mut diff = TensorDiff::default();
    for (name, (shape, kind)) in expected {
        match found.get(name) {
            None => diff.missing.push(name.clone()),
            Some(t) if t.size() != *shape || !is_float(t.kind()) => {
                diff.mismatched.push(Mismatch {
                    name: name.clone(),
                    found: describe(t),
                    expected: format!("{shape:?} {kind:?}"),
                })
            }
            Some(_) => {}
        }
    }
    diff.unexpected = found
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .cloned()
        .collect();
    diff
}

/// Every tensor of a safetensors file, on the CPU.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, ModelError> {
    if !path.exists() {
        return Err(ModelError::Io {
            op: "read",
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let items = Tensor::read_safetensors(path).map_err(|e| ModelError::Safetensors {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(items.into_iter().collect())
}

/// Writes `tensors` (moved to the CPU, made contiguous) as one safetensors file, atomically
/// (a temporary file, then a rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<(), ModelError> {
    let items: Vec<(String, Tensor)> = tch::no_grad(|| {
        tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.detach().to_device(Device::Cpu).contiguous()))
            .collect()
    });
    let tmp = path.with_extension("safetensors.tmp");
    Tensor::write_safetensors(&items, &tmp).map_err(|e| ModelError::Safetensors {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    })
}

/// Copies the file's tensors into `vars` (converted to each variable's kind and device)
/// after checking that names and shapes match exactly.
pub fn load_into(vars: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    let found = read_safetensors(path)?;
    let diff = compare(&found, vars);
    if !diff.is_empty() {
        return Err(ModelError::Checkpoint {
            path: path.to_owned(),
            diff,
        });
    }
    copy_all(vars, &found)
}

/// `dst[k] ← src[k]` under `no_grad`; names and shapes must have been checked.
pub fn copy_all(
    dst: &BTreeMap<String, Tensor>,
    src: &BTreeMap<String, Tensor>,
) -> Result<(), ModelError> {
    tch::no_grad(|| {
        for (k, d) in dst {
            let mut d = d.shallow_clone();
            d.f_copy_(&src[k].to_kind(d.kind()))?;
        }
        Ok::<(), tch::TchError>(())
    })?;
    Ok(())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ModelError> {
    let text = serde_json::to_string_pretty(value).expect("configs serialise");
    std::fs::write(path, text + "\n").map_err(|source| ModelError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    })
}

pub fn create_dir(dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        op: "create",
        path: dir.to_owned(),
        source,
    })
}
