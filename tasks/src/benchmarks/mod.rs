//! Published editing benchmarks on local disk (GEdit-Bench-EN, ImgEdit-Bench) as datasets in
//! the manifest format, which `eval` reads like the synthetic benchmark (method-spec §8); the
//! `bench-import` kind ([`crate::kinds::bench_import`]) runs [`import`]. The readers of each
//! benchmark's published layout: [`gedit`], [`imgedit`].
//!
//! The dataset (`manifest.jsonl`, `images/<key>.png` sources,
//! `images/<key>_mask.png` masks with `mask_polarity: keep`) plus `import.json` (counts, the
//! rows left out and why). Each record has `edit_type` = the benchmark's task type and
//! `extra.benchmark` = the format. Resources: CPU only.
//!
//! Params:
//! - `format`: `gedit` — the parquet export of the Hugging Face dataset `stepfun-ai/GEdit-Bench`
//!   (columns `key`, `task_type`, `instruction`, `instruction_language`, `input_image` as the
//!   `datasets` Image struct {bytes, path}, optional `Intersection_exist`); `path` is a
//!   `.parquet` file or a directory searched recursively for them (snappy or uncompressed).
//!   `imgedit` — ImgEdit-Bench's `basic_edit.json` (key → {id, prompt, edit_type}, `id` an
//!   image path under the image root); `path` is that file or a directory holding it.
//! - `language` (gedit; default `en`): the `instruction_language` kept (`all` keeps every row).
//! - `images` (imgedit): the image root; default: the JSON's directory, then its `singleturn/`.
//! - `masks`: a directory of CoCoEdit's mask annotations, `<key>_mask.png`, white = keep.
//!   A record without one has no mask; a mask that does not decode or differs in size from its
//!   image is counted in `mask_errors` and left out (the record stays).
//! - `limit`: keep the first N records (after the language filter).
//! - `size`: resize sources (and masks, nearest) to `size`×`size` (for small policies).
//!
//! A row that cannot be used (a missing or mistyped field, an image that does not decode or
//! does not exist, a repeated key) is counted and reported in `import.json`, never a crash; a
//! file that cannot be read at all (missing, not parquet/JSON, a missing column) fails the task
//! with the file and column named. Paths are absolute or relative to the directory cocoflow
//! runs in. The cache key holds the params, not the files' contents: point `path` elsewhere
//! (or re-run with a fresh store) when the files change.

use crate::data::{DatasetWriter, MaskPolarity, Record};
use crate::imageio;
pub mod gedit;
pub mod imgedit;

use cocoflow_engine::kind::ParamError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Which benchmark's published layout `path` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BenchFormat {
    Gedit,
    Imgedit,
}

impl BenchFormat {
    pub fn name(self) -> &'static str {
        match self {
            BenchFormat::Gedit => "gedit",
            BenchFormat::Imgedit => "imgedit",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchImportParams {
    pub format: BenchFormat,
    /// A file, or a directory holding the benchmark's files.
    pub path: String,
    /// A directory of `<key>_mask.png` (white = keep).
    #[serde(default)]
    pub masks: Option<String>,
    /// ImgEdit's image root (default: the JSON's directory, then its `singleturn/`).
    #[serde(default)]
    pub images: Option<String>,
    /// GEdit's `instruction_language` to keep, or `all`.
    #[serde(default = "d_language")]
    pub language: String,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Resize to `size`×`size` pixels.
    #[serde(default)]
    pub size: Option<u32>,
}

fn d_language() -> String {
    "en".into()
}

/// A row left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RowError {
    /// `key `k`` or `row N of `file``.
    pub row: String,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImportSummary {
    pub format: String,
    /// The files read.
    pub files: Vec<String>,
    /// Rows (GEdit) or keys (ImgEdit) seen.
    pub rows: usize,
    pub imported: usize,
    /// GEdit rows of another `instruction_language`.
    pub other_language: usize,
    pub row_errors: Vec<RowError>,
    /// Records with a mask.
    pub masks: usize,
    pub mask_errors: Vec<RowError>,
    /// Records per task type.
    pub types: BTreeMap<String, usize>,
}

/// One usable row, before its image is decoded.
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) task_type: String,
    pub(crate) instruction: String,
    pub(crate) image: ImageSrc,
    pub(crate) extra: serde_json::Map<String, Value>,
}

pub(crate) enum ImageSrc {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// Reads the benchmark at `p.path` and writes the dataset into `out`.
pub fn import(p: &BenchImportParams, out: &Path) -> Result<ImportSummary, String> {
    let path = PathBuf::from(&p.path);
    if !path.exists() {
        return Err(format!("`path` `{}` does not exist", path.display()));
    }
    let mut w = Writer {
        p,
        out: out.to_path_buf(),
        writer: DatasetWriter::create(out).map_err(|e| e.to_string())?,
        masks: p.masks.as_ref().map(PathBuf::from),
        names: HashSet::new(),
        keys: HashSet::new(),
        summary: ImportSummary {
            format: p.format.name().into(),
            ..Default::default()
        },
    };
    if let Some(m) = &w.masks
        && !m.is_dir()
    {
        return Err(format!("`masks` `{}` is not a directory", m.display()));
    }
    match p.format {
        BenchFormat::Gedit => {
            for file in gedit::parquet_files(&path)? {
                w.summary.files.push(file.display().to_string());
                if !gedit::read_gedit(&file, &p.language, &mut w)? {
                    break;
                }
            }
        }
        BenchFormat::Imgedit => imgedit::read_imgedit(&path, p.images.as_deref(), &mut w)?,
    }
    let Writer {
        writer, summary, ..
    } = w;
    writer.finish().map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("import.json"),
        serde_json::to_vec_pretty(&summary).expect("json"),
    )
    .map_err(|e| format!("writing `import.json`: {e}"))?;
    Ok(summary)
}

pub(crate) struct Writer<'a> {
    p: &'a BenchImportParams,
    out: PathBuf,
    writer: DatasetWriter,
    masks: Option<PathBuf>,
    names: HashSet<String>,
    keys: HashSet<String>,
    summary: ImportSummary,
}

impl Writer<'_> {
    fn full(&self) -> bool {
        self.p.limit.is_some_and(|l| self.summary.imported >= l)
    }

    fn row_error(&mut self, row: String, reason: impl Into<String>) {
        self.summary.row_errors.push(RowError {
            row,
            reason: reason.into(),
        });
    }

    /// Writes one item; returns false once `limit` records are written.
    fn add(&mut self, item: Item) -> Result<bool, String> {
        if self.full() {
            return Ok(false);
        }
        let row = format!("key `{}`", item.key);
        if !self.keys.insert(item.key.clone()) {
            self.row_error(row, "the key repeats an earlier row");
            return Ok(true);
        }
        let decoded = match &item.image {
            ImageSrc::Bytes(b) => imageio::decode(b),
            ImageSrc::File(f) => imageio::open(f),
        }
        .map_err(|e| e.reason());
        let img = match decoded {
            Ok(i) => i.to_rgb8(),
            Err(e) => {
                let what = match &item.image {
                    ImageSrc::Bytes(_) => "the source image".to_string(),
                    ImageSrc::File(f) => format!("image `{}`", f.display()),
                };
                self.row_error(row, format!("{what} does not decode: {e}"));
                return Ok(true);
            }
        };
        let (w0, h0) = img.dimensions();
        let img = match self.p.size {
            Some(s) => image::imageops::resize(&img, s, s, image::imageops::FilterType::Triangle),
            None => img,
        };
        let name = self.unique_name(&item.key);
        let src_rel = format!("images/{name}.png");
        imageio::save_png(&self.out.join(&src_rel), &img)
            .map_err(|e| format!("writing `{src_rel}`: {}", e.reason()))?;
        let mask_rel = self.mask(&item.key, &name, (w0, h0));
        let mut extra = item.extra;
        extra.insert("benchmark".into(), json!(self.p.format.name()));
        extra.insert("original_size".into(), json!([w0, h0]));
        let rec = Record {
            key: item.key,
            source: src_rel,
            target: None,
            mask_polarity: if mask_rel.is_some() {
                MaskPolarity::Keep
            } else {
                MaskPolarity::Edit
            },
            edit_mask: mask_rel,
            instruction: item.instruction,
            instruction_refined: None,
            edit_type: Some(item.task_type.clone()),
            extra,
        };
        self.writer.push(&rec).map_err(|e| e.to_string())?;
        self.summary.imported += 1;
        *self.summary.types.entry(item.task_type).or_default() += 1;
        Ok(true)
    }

    /// Copies `<masks>/<key>_mask.png` (white = keep) next to the source; `None` when absent
    /// or unusable (counted).
    fn mask(&mut self, key: &str, name: &str, (w0, h0): (u32, u32)) -> Option<String> {
        let file = self.masks.as_ref()?.join(format!("{key}_mask.png"));
        if !file.is_file() {
            return None;
        }
        let m = match imageio::open(&file).map_err(|e| e.reason()) {
            Ok(m) => m.to_luma8(),
            Err(e) => {
                self.mask_error(
                    key,
                    format!("mask `{}` does not decode: {e}", file.display()),
                );
                return None;
            }
        };
        if m.dimensions() != (w0, h0) {
            let (mw, mh) = m.dimensions();
            self.mask_error(
                key,
                format!(
                    "mask `{}` is {mw}×{mh}, its image {w0}×{h0}",
                    file.display()
                ),
            );
            return None;
        }
        let m = match self.p.size {
            Some(s) => image::imageops::resize(&m, s, s, image::imageops::FilterType::Nearest),
            None => m,
        };
        let rel = format!("images/{name}_mask.png");
        if let Err(e) = imageio::save_png(&self.out.join(&rel), &m) {
            self.mask_error(key, format!("writing `{rel}`: {}", e.reason()));
            return None;
        }
        self.summary.masks += 1;
        Some(rel)
    }

    fn mask_error(&mut self, key: &str, reason: String) {
        self.summary.mask_errors.push(RowError {
            row: format!("key `{key}`"),
            reason,
        });
    }

    /// A file name for `key`: its safe form, made unique.
    fn unique_name(&mut self, key: &str) -> String {
        let base = safe_name(key);
        let mut name = base.clone();
        let mut n = 1;
        while !self.names.insert(name.clone()) {
            n += 1;
            name = format!("{base}-{n}");
        }
        name
    }
}

fn safe_name(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

// ------------------------------------------------------------------ GEdit-Bench (parquet)

/// `path` itself, or the `.parquet` files under it (recursively, sorted).
/// A value as a short string for messages.
pub(crate) fn short(s: &str) -> String {
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s.to_string()
    }
}

/// Checks what the types cannot (a path, a limit, a size, a language).
pub fn check(p: &BenchImportParams) -> Result<(), ParamError> {
    let bad = |path: &str, message: String| {
        Err(ParamError {
            path: path.into(),
            message,
        })
    };
    if p.path.trim().is_empty() {
        return bad("path", "must name a file or directory".into());
    }
    if p.limit == Some(0) {
        return bad("limit", "must be at least 1".into());
    }
    if let Some(s) = p.size
        && !(8..=4096).contains(&s)
    {
        return bad("size", format!("must be in 8..=4096, got {s}"));
    }
    if p.language.trim().is_empty() {
        return bad(
            "language",
            "must be a language code (`en`, `cn`) or `all`".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoflow_engine::kind::typed_params;

    #[test]
    fn params_are_checked() {
        let e =
            typed_params::<BenchImportParams>(&json!({"format": "gedt", "path": "x"})).unwrap_err();
        assert_eq!(e.path, "format");
        let (p, _) =
            typed_params::<BenchImportParams>(&json!({"format": "gedit", "path": "x", "limit": 0}))
                .unwrap();
        assert_eq!(check(&p).unwrap_err().path, "limit");
    }
}
