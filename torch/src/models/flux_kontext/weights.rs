//! Loading a component's weights from a diffusers / transformers directory: one
//! `<stem>.safetensors`, or shards `<stem>-0000N-of-0000M.safetensors` listed in
//! `<stem>.safetensors.index.json` (`weight_map`: tensor key → shard file). The safetensors
//! headers of every file are checked against the model's variables first (names, shapes, float
//! dtypes; every problem named with its file and key); nothing is copied unless all match.
//! Then each file is read once and copied into the variables, converted to their kinds.

use super::super::error::{Mismatch, ModelError, TensorDiff};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// diffusers' weight files: `diffusion_pytorch_model.safetensors[.index.json]`.
pub const DIFFUSERS_STEM: &str = "diffusion_pytorch_model";
/// transformers' weight files: `model.safetensors[.index.json]`.
pub const TRANSFORMERS_STEM: &str = "model";

/// One tensor as a safetensors header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorHeader {
    /// safetensors dtype name: `F32`, `BF16`, `F16`, `I64`, ...
    pub dtype: String,
    pub shape: Vec<i64>,
}

impl TensorHeader {
    /// The float kind of the dtype; `None` for integer, bool and 8-bit dtypes.
    pub fn float_kind(&self) -> Option<Kind> {
        match self.dtype.as_str() {
            "F32" => Some(Kind::Float),
            "F16" => Some(Kind::Half),
            "BF16" => Some(Kind::BFloat16),
            "F64" => Some(Kind::Double),
            _ => None,
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn st_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Safetensors {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The tensor headers of a safetensors file (8-byte little-endian header length, then a JSON
/// object `name → {dtype, shape, data_offsets}` plus an optional `__metadata__`), without
/// reading the data.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorHeader>, ModelError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err("read", path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| st_err(path, "file too short for a safetensors header"))?;
    let n = u64::from_le_bytes(len);
    let size = f.metadata().map_err(|e| io_err("read", path, e))?.len();
    if n > size.saturating_sub(8) || n > 100 << 20 {
        return Err(st_err(
            path,
            format!("header length {n} does not fit the file"),
        ));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf)
        .map_err(|e| io_err("read", path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&buf).map_err(|e| st_err(path, format!("bad header JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| st_err(path, "header is not a JSON object"))?;
    let mut out = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str();
        let shape: Option<Vec<i64>> = v["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_i64()).collect());
        match (dtype, shape) {
            (Some(dtype), Some(shape)) => {
                out.insert(
                    name.clone(),
                    TensorHeader {
                        dtype: dtype.to_string(),
                        shape,
                    },
                );
            }
            _ => return Err(st_err(path, format!("bad header entry for `{name}`"))),
        }
    }
    Ok(out)
}

/// The weight files of one component directory and their headers.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The index file of a sharded checkpoint, else the single weights file.
    pub source: PathBuf,
    /// Each file with the tensors it holds.
    pub files: Vec<(PathBuf, BTreeMap<String, TensorHeader>)>,
}

#[derive(serde::Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Finds `<stem>.safetensors.index.json` (sharded) or `<stem>.safetensors` in `dir` and
    /// reads every header. A shard the index lists but that is missing, or a key the index
    /// places in a shard that does not hold it, is an error naming both files.
    pub fn open(dir: &Path, stem: &str) -> Result<Checkpoint, ModelError> {
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        let single = dir.join(format!("{stem}.safetensors"));
        if index.exists() {
            let idx: Index = super::config::read_config(&index)?;
            let mut shards: Vec<&String> = idx.weight_map.values().collect();
            shards.sort();
            shards.dedup();
            let mut files = Vec::new();
            for shard in shards {
                let path = dir.join(shard);
                if !path.exists() {
                    return Err(io_err(
                        "read",
                        &path,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("shard listed in `{}` is missing", index.display()),
                        ),
                    ));
                }
                let header = read_header(&path)?;
                files.push((path, header));
            }
            for (key, shard) in &idx.weight_map {
                let (path, header) = files
                    .iter()
                    .find(|(p, _)| p == &dir.join(shard))
                    .expect("every shard was opened");
                if !header.contains_key(key) {
                    return Err(st_err(
                        path,
                        format!(
                            "`{key}` is not in this shard, but `{}` places it here",
                            index.display()
                        ),
                    ));
                }
            }
            Ok(Checkpoint {
                source: index,
                files,
            })
        } else if single.exists() {
            let header = read_header(&single)?;
            Ok(Checkpoint {
                source: single.clone(),
                files: vec![(single, header)],
            })
        } else {
            Err(io_err(
                "read",
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither it nor `{stem}.safetensors.index.json` exists"),
                ),
            ))
        }
    }

    /// Every tensor key of every file.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.files.iter().flat_map(|(_, h)| h.keys())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.files.iter().any(|(_, h)| h.contains_key(key))
    }

    /// Compares the files with the model's variables. `rename` maps a file key to the
    /// variable it fills (`None`: a key the model knowingly ignores, e.g. a tied copy).
    /// The first file with unexpected, mis-shaped or non-float tensors is reported (keys
    /// missing from every file are added to that report, or reported against `source`).
    pub fn validate(
        &self,
        vars: &BTreeMap<String, Tensor>,
        rename: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ModelError> {
        let mut filled = std::collections::BTreeSet::new();
        let mut first: Option<(PathBuf, TensorDiff)> = None;
        for (path, header) in &self.files {
            let mut diff = TensorDiff::default();
            for (key, h) in header {
                let Some(name) = rename(key) else { continue };
                match vars.get(&name) {
                    None => diff.unexpected.push(key.clone()),
                    Some(v) => {
                        if h.shape != v.size() || h.float_kind().is_none() {
                            diff.mismatched.push(Mismatch {
                                name: key.clone(),
                                found: format!("{:?} {}", h.shape, h.dtype),
                                expected: format!("{:?} {:?}", v.size(), v.kind()),
                            });
                        }
                        filled.insert(name);
                    }
                }
            }
            if first.is_none() && !diff.is_empty() {
                first = Some((path.clone(), diff));
            }
        }
        let missing: Vec<String> = vars
            .keys()
            .filter(|k| !filled.contains(*k))
            .cloned()
            .collect();
        let (path, mut diff) = match first {
            Some(f) => f,
            None if missing.is_empty() => return Ok(()),
            None => (self.source.clone(), TensorDiff::default()),
        };
        diff.missing = missing;
        Err(ModelError::Checkpoint { path, diff })
    }

    /// [`Self::validate`], then copies every file's tensors into `vars` (converted to each
    /// variable's kind and device), one file in memory at a time.
    pub fn load_into(
        &self,
        vars: &BTreeMap<String, Tensor>,
        rename: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ModelError> {
        self.validate(vars, rename)?;
        for (path, _) in &self.files {
            let tensors =
                Tensor::read_safetensors(path).map_err(|e| st_err(path, e.to_string()))?;
            tch::no_grad(|| -> Result<(), ModelError> {
                for (key, t) in tensors {
                    let Some(name) = rename(&key) else { continue };
                    let mut v = vars[&name].shallow_clone();
                    v.f_copy_(&t.to_kind(v.kind()))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Identity renaming for [`Checkpoint::load_into`].
pub fn same_name(key: &str) -> Option<String> {
    Some(key.to_string())
}

/// Maps a checkpoint key to the variable it fills (`None`: a key the model ignores).
pub type Rename = Box<dyn Fn(&str) -> Option<String>>;

/// A component built with zero weights whose checkpoint's headers were read but whose data was
/// not: [`Self::validate`] compares the headers with the variables (no tensor data is read),
/// [`Self::load`] validates and copies. The pipeline builds every component this way and
/// validates all of them before reading any weights, so a bad file of the last component is
/// reported before the first one's weights are read.
pub struct PendingWeights {
    pub checkpoint: Checkpoint,
    vars: BTreeMap<String, Tensor>,
    rename: Rename,
}

impl std::fmt::Debug for PendingWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingWeights")
            .field("source", &self.checkpoint.source)
            .field("variables", &self.vars.len())
            .finish_non_exhaustive()
    }
}

impl PendingWeights {
    /// `vars` (by name) to be filled from `checkpoint`, file keys mapped by `rename`.
    pub fn new(
        checkpoint: Checkpoint,
        vars: BTreeMap<String, Tensor>,
        rename: impl Fn(&str) -> Option<String> + 'static,
    ) -> PendingWeights {
        PendingWeights {
            checkpoint,
            vars,
            rename: Box::new(rename),
        }
    }

    /// [`Checkpoint::validate`]: headers only.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.checkpoint.validate(&self.vars, &*self.rename)
    }

    /// [`Checkpoint::load_into`]: validates, then reads and copies every file.
    pub fn load(self) -> Result<(), ModelError> {
        self.checkpoint.load_into(&self.vars, &*self.rename)
    }
}
