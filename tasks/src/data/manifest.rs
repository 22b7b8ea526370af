//! The dataset manifest format every stage reads and writes, for real and synthetic data:
//! a directory with `manifest.jsonl` (one JSON record per line) and image files it names by
//! relative path. Paths are confined to the dataset root; a bad line is reported with its
//! number and skipped, never a crash.

use crate::imageio::ImageError;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write as _};
use std::path::{Component, Path, PathBuf};

/// File name of the manifest inside a dataset directory.
pub const MANIFEST: &str = "manifest.jsonl";

/// How a mask file on disk is to be read (method-spec §0): white = the region that
/// changes (`edit`), or white = the region that must stay (`keep`, CoCoEdit's published masks).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MaskPolarity {
    #[default]
    Edit,
    Keep,
}

/// One sample. Image fields are paths relative to the dataset root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Unique within the dataset.
    pub key: String,
    pub source: String,
    /// The edited image (training target, or a model's output); absent for benchmarks.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "edited")]
    pub target: Option<String>,
    /// Mask image; its polarity is `mask_polarity`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "mask")]
    pub edit_mask: Option<String>,
    #[serde(default, skip_serializing_if = "is_edit")]
    pub mask_polarity: MaskPolarity,
    pub instruction: String,
    /// A longer instruction (paper appendix A.3), when the dataset has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction_refined: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_type: Option<String>,
    /// Free-form extras (scene description, scores, provenance).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_edit(p: &MaskPolarity) -> bool {
    *p == MaskPolarity::Edit
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset `{}` has no `{MANIFEST}`", .0.display())]
    NoManifest(PathBuf),
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Invalid(String),
}

/// A line of the manifest that was left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// A dataset on disk: its valid records and the lines that were rejected.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub records: Vec<Record>,
    pub rejected: Vec<LineError>,
}

/// Resolves a manifest path inside `root`, refusing anything that escapes it.
pub fn confined(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty() {
        return Err("empty path".into());
    }
    if p.is_absolute() {
        return Err(format!(
            "path `{rel}` is absolute; paths must be relative to the dataset root"
        ));
    }
    if p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    }) {
        return Err(format!("path `{rel}` leaves the dataset root"));
    }
    let full = root.join(p);
    // A symlink inside the dataset must not point outside it either.
    if let (Ok(real), Ok(root_real)) = (full.canonicalize(), root.canonicalize())
        && !real.starts_with(&root_real)
    {
        return Err(format!("path `{rel}` resolves outside the dataset root"));
    }
    Ok(full)
}

impl Dataset {
    /// Reads `root/manifest.jsonl`. Lines that do not parse, repeat a key, or name files that
    /// escape the root or do not exist are rejected with their line number.
    pub fn open(root: &Path) -> Result<Dataset, DataError> {
        let path = root.join(MANIFEST);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::NoManifest(root.to_path_buf()));
            }
            Err(source) => return Err(DataError::Io { path, source }),
        };
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let rec: Record = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(e) => {
                    rejected.push(LineError {
                        line: n,
                        reason: format!("not a valid record: {e}"),
                    });
                    continue;
                }
            };
            let mut problem = None;
            for (field, rel) in rec.files() {
                match confined(root, rel) {
                    Err(why) => problem = Some(format!("`{field}`: {why}")),
                    Ok(full) if !full.is_file() => {
                        problem = Some(format!("`{field}`: file `{rel}` does not exist"))
                    }
                    Ok(_) => {}
                }
                if problem.is_some() {
                    break;
                }
            }
            if problem.is_none() && !keys.insert(rec.key.clone()) {
                problem = Some(format!("key `{}` repeats an earlier line", rec.key));
            }
            match problem {
                Some(reason) => rejected.push(LineError { line: n, reason }),
                None => records.push(rec),
            }
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            records,
            rejected,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Record {
    /// The instruction a training sample is conditioned and judged on: the refined one of
    /// curation stage 2 when the record has one, else the original (paper §3.1,
    /// method-spec §6). Benchmarks keep their own wording (they have no refined one).
    pub fn training_instruction(&self) -> &str {
        match &self.instruction_refined {
            Some(r) if !r.trim().is_empty() => r,
            _ => &self.instruction,
        }
    }

    /// (field, relative path) of every file the record names.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![("source", self.source.as_str())];
        if let Some(t) = &self.target {
            v.push(("target", t));
        }
        if let Some(m) = &self.edit_mask {
            v.push(("edit_mask", m));
        }
        v
    }
}

/// Writes a dataset directory: images under `images/`, then the manifest.
pub struct DatasetWriter {
    root: PathBuf,
    lines: Vec<String>,
}

impl DatasetWriter {
    pub fn create(root: &Path) -> Result<DatasetWriter, DataError> {
        std::fs::create_dir_all(root.join("images")).map_err(|source| DataError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(DatasetWriter {
            root: root.to_path_buf(),
            lines: Vec::new(),
        })
    }

    /// The dataset directory being written.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Saves RGB pixels as `images/<name>.png`; returns its relative path.
    pub fn rgb(&self, name: &str, img: &image::RgbImage) -> Result<String, DataError> {
        let rel = format!("images/{name}.png");
        crate::imageio::save_png(&self.root.join(&rel), img)?;
        Ok(rel)
    }

    /// Saves an 8-bit grey mask (255 = edit) as `images/<name>.png`; returns its relative path.
    pub fn grey(&self, name: &str, img: &image::GrayImage) -> Result<String, DataError> {
        let rel = format!("images/{name}.png");
        crate::imageio::save_png(&self.root.join(&rel), img)?;
        Ok(rel)
    }

    pub fn push(&mut self, r: &Record) -> Result<(), DataError> {
        self.lines
            .push(serde_json::to_string(r).map_err(|e| DataError::Invalid(e.to_string()))?);
        Ok(())
    }

    /// Writes `manifest.jsonl` (last, so a half-written dataset has no manifest).
    pub fn finish(self) -> Result<PathBuf, DataError> {
        let path = self.root.join(MANIFEST);
        let mut f = std::fs::File::create(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        for l in &self.lines {
            writeln!(f, "{l}").map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(self.root)
    }
}
