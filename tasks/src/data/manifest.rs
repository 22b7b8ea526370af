//! The dataset manifest format every stage reads and writes, for real and synthetic data:
//! a directory with `manifest.jsonl` (one JSON record per line) and image files it names by
//! relative path. Paths are confined to the dataset root; a bad line is reported with its
//! number and skipped, never a crash.

use crate::imageio::ImageError;
use crate::imageio::tensor;
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

    /// Source image as a `(3, H, W)` float tensor in [0, 1].
    pub fn source(&self, r: &Record) -> Result<tch::Tensor, DataError> {
        Ok(tensor::load_rgb(&self.path(&r.source))?)
    }

    pub fn target(&self, r: &Record) -> Result<Option<tch::Tensor>, DataError> {
        r.target
            .as_ref()
            .map(|t| tensor::load_rgb(&self.path(t)))
            .transpose()
            .map_err(Into::into)
    }

    /// The record's `edit_mask` as `(1, H, W)` in {0, 1} (1 = changes), whatever its polarity on disk.
    pub fn edit_mask(&self, r: &Record) -> Result<Option<tch::Tensor>, DataError> {
        r.edit_mask
            .as_ref()
            .map(|m| tensor::load_mask(&self.path(m), r.mask_polarity))
            .transpose()
            .map_err(Into::into)
    }
}

impl Record {
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

    /// Saves an RGB `(3, H, W)` tensor in [0, 1] as `images/<name>.png`; returns its relative path.
    pub fn image(&self, name: &str, img: &tch::Tensor) -> Result<String, DataError> {
        let rel = format!("images/{name}.png");
        tensor::save_rgb(&self.root.join(&rel), img)?;
        Ok(rel)
    }

    /// Saves an `edit_mask` `(1, H, W)` in {0, 1} as `images/<name>.png` (white = edit).
    pub fn mask(&self, name: &str, mask: &tch::Tensor) -> Result<String, DataError> {
        let rel = format!("images/{name}.png");
        tensor::save_mask(&self.root.join(&rel), mask)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn rec(key: &str, src: &str) -> Record {
        Record {
            key: key.into(),
            source: src.into(),
            target: None,
            edit_mask: None,
            mask_polarity: MaskPolarity::Edit,
            instruction: "remove the red circle".into(),
            instruction_refined: None,
            edit_type: Some("remove".into()),
            extra: Default::default(),
        }
    }

    #[test]
    fn round_trip_and_rejections_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(dir.path()).unwrap();
        let img = Tensor::rand([3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let src = w.image("a_src", &img).unwrap();
        let mask = Tensor::zeros([1, 8, 8], (Kind::Float, tch::Device::Cpu));
        let _ = mask.narrow(1, 2, 3).narrow(2, 2, 3).fill_(1.0);
        let m = w.mask("a_mask", &mask).unwrap();
        let mut r = rec("a", &src);
        r.edit_mask = Some(m);
        w.push(&r).unwrap();
        w.push(&rec("b", "../outside.png")).unwrap();
        w.push(&rec("c", "/etc/passwd")).unwrap();
        w.push(&rec("d", "images/missing.png")).unwrap();
        w.push(&rec("a", &src)).unwrap();
        w.finish().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(MANIFEST))
            .unwrap()
            .write_all(b"{not json\n")
            .unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.records.len(), 1);
        let lines: Vec<(usize, &str)> = ds
            .rejected
            .iter()
            .map(|e| (e.line, e.reason.as_str()))
            .collect();
        assert_eq!(
            lines[0],
            (2, "`source`: path `../outside.png` leaves the dataset root")
        );
        assert_eq!(
            lines[1],
            (
                3,
                "`source`: path `/etc/passwd` is absolute; paths must be relative to the dataset root"
            )
        );
        assert_eq!(
            lines[2],
            (4, "`source`: file `images/missing.png` does not exist")
        );
        assert_eq!(lines[3], (5, "key `a` repeats an earlier line"));
        assert_eq!(lines[4].0, 6);
        let back = ds.source(&ds.records[0]).unwrap();
        // PNG stores 8 bits: within half a step.
        assert!((back - &img).abs().max().double_value(&[]) <= 0.5 / 255.0 + 1e-6);
        let em = ds.edit_mask(&ds.records[0]).unwrap().unwrap();
        assert_eq!(em.sum(Kind::Double).double_value(&[]), 9.0);
    }

    #[test]
    fn keep_polarity_masks_are_inverted_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let keep = Tensor::ones([1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let _ = keep.narrow(1, 0, 1).narrow(2, 0, 1).fill_(0.0);
        tensor::save_mask(&dir.path().join("k.png"), &keep).unwrap();
        let edit = tensor::load_mask(&dir.path().join("k.png"), MaskPolarity::Keep).unwrap();
        assert_eq!(edit.sum(Kind::Double).double_value(&[]), 1.0);
        assert_eq!(edit.double_value(&[0, 0, 0]), 1.0);
    }
}
