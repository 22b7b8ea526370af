//! Where the curation pipeline reads (source, edited, instruction) triplets from: a dataset
//! in the manifest format (the `data` input, or a directory on disk), or parquet files with
//! embedded image bytes (the Hugging Face `datasets` layout).
//!
//! Samples are addressed by their position, so a shard is a contiguous range that can be
//! read on its own. Lines or rows that cannot be used never stop the pipeline: a manifest
//! line that does not parse, escapes the dataset root or names a missing file is listed in
//! [`Source::rejected`]; a row or record whose images cannot be read is an `Err` of
//! [`Source::load`] for that sample alone.

use crate::data::manifest::{Dataset, confined};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The column names of a parquet dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    /// Unique sample id; when the column is absent: `<file stem>-<row>`.
    #[serde(default = "d_key")]
    pub key: String,
    /// The source image: binary, or a `datasets` Image struct `{bytes, path}`.
    #[serde(default = "d_source")]
    pub source: String,
    /// The edited image (same forms).
    #[serde(default = "d_edited")]
    pub edited: String,
    /// The instruction: a string, or a list of strings (the first is used).
    #[serde(default = "d_instruction")]
    pub instruction: String,
    /// The dataset's own edit type, a hint for the judge (optional column).
    #[serde(default = "d_edit_type")]
    pub edit_type: String,
}

fn d_key() -> String {
    "key".into()
}
fn d_source() -> String {
    "source_image".into()
}
fn d_edited() -> String {
    "edited_image".into()
}
fn d_instruction() -> String {
    "instruction".into()
}
fn d_edit_type() -> String {
    "edit_type".into()
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            key: d_key(),
            source: d_source(),
            edited: d_edited(),
            instruction: d_instruction(),
            edit_type: d_edit_type(),
        }
    }
}

/// One triplet, with its images still encoded (PNG/JPEG bytes as stored).
#[derive(Debug, Clone)]
pub struct Sample {
    pub key: String,
    /// Where it came from, for messages: `line 12` or `row 5 of shard-0.parquet`.
    pub origin: String,
    pub source: Vec<u8>,
    pub edited: Vec<u8>,
    pub instruction: String,
    pub edit_type: Option<String>,
}

impl Sample {
    /// BLAKE3 over everything the pipeline reads of the sample.
    pub fn digest(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for part in [
            self.key.as_bytes(),
            &self.source,
            &self.edited,
            self.instruction.as_bytes(),
            self.edit_type.as_deref().unwrap_or("\u{0}").as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize()
    }
}

/// A sample that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReadError {
    /// The sample's key, when it is known.
    pub key: Option<String>,
    pub origin: String,
    /// `manifest` (the line was rejected), `missing-target`, `unreadable` (a file or a field).
    pub reason: String,
    pub message: String,
}

enum Kind {
    Manifest(Dataset),
    Parquet(ParquetIndex),
}

/// An opened dataset.
pub struct Source {
    kind: Kind,
    /// Lines or rows left out before any sample was read (bad manifest lines).
    pub rejected: Vec<ReadError>,
    pub description: String,
}

impl Source {
    /// A dataset directory with `manifest.jsonl`; records need `source`, `target` (or
    /// `edited`) and `instruction`.
    pub fn manifest(root: &Path) -> Result<Source, String> {
        let ds = Dataset::open(root).map_err(|e| e.to_string())?;
        let rejected = ds
            .rejected
            .iter()
            .map(|e| ReadError {
                key: None,
                origin: format!("line {}", e.line),
                reason: "manifest".into(),
                message: e.reason.clone(),
            })
            .collect();
        Ok(Source {
            description: format!(
                "manifest `{}` ({} records)",
                root.display(),
                ds.records.len()
            ),
            kind: Kind::Manifest(ds),
            rejected,
        })
    }

    /// A `.parquet` file, or a directory searched recursively for them (sorted by path).
    pub fn parquet(path: &Path, columns: &Columns) -> Result<Source, String> {
        let index = ParquetIndex::open(path, columns)?;
        Ok(Source {
            description: format!(
                "parquet `{}` ({} files, {} rows)",
                path.display(),
                index.files.len(),
                index.total
            ),
            kind: Kind::Parquet(index),
            rejected: Vec::new(),
        })
    }

    /// Number of samples (rejected manifest lines not counted).
    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Manifest(ds) => ds.records.len(),
            Kind::Parquet(p) => p.total,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `range` (positions), each read or the reason it cannot be.
    pub fn load(&self, range: std::ops::Range<usize>) -> Vec<Result<Sample, ReadError>> {
        match &self.kind {
            Kind::Manifest(ds) => range.map(|i| load_record(ds, i)).collect(),
            Kind::Parquet(p) => p.load(range),
        }
    }
}

fn load_record(ds: &Dataset, i: usize) -> Result<Sample, ReadError> {
    let r = &ds.records[i];
    let origin = format!("record `{}`", r.key);
    let err = |reason: &str, message: String| ReadError {
        key: Some(r.key.clone()),
        origin: origin.clone(),
        reason: reason.into(),
        message,
    };
    let Some(target) = &r.target else {
        return Err(err(
            "missing-target",
            "the record has no `target` (or `edited`) image".into(),
        ));
    };
    let read = |field: &str, rel: &str| -> Result<Vec<u8>, ReadError> {
        let path =
            confined(&ds.root, rel).map_err(|m| err("unreadable", format!("`{field}`: {m}")))?;
        std::fs::read(&path)
            .map_err(|e| err("unreadable", format!("`{field}`: cannot read `{rel}`: {e}")))
    };
    Ok(Sample {
        key: r.key.clone(),
        source: read("source", &r.source)?,
        edited: read("target", target)?,
        origin: origin.clone(),
        instruction: r.instruction.clone(),
        edit_type: r.edit_type.clone(),
    })
}

// ------------------------------------------------------------------------------ parquet

struct ParquetFile {
    path: PathBuf,
    /// Rows of each row group.
    groups: Vec<usize>,
    /// Global position of the file's first row.
    start: usize,
    has_key: bool,
    has_type: bool,
}

struct ParquetIndex {
    files: Vec<ParquetFile>,
    total: usize,
    columns: Columns,
}

fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let rd = std::fs::read_dir(d).map_err(|e| format!("cannot list `{}`: {e}", d.display()))?;
        for e in rd {
            let p = e
                .map_err(|e| format!("cannot list `{}`: {e}", d.display()))?
                .path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
        Ok(())
    }
    if !path.exists() {
        return Err(format!("`{}` does not exist", path.display()));
    }
    let mut files = Vec::new();
    walk(path, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no `.parquet` files under `{}`", path.display()));
    }
    Ok(files)
}

fn open_reader(path: &Path) -> Result<SerializedFileReader<std::fs::File>, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    SerializedFileReader::new(f)
        .map_err(|e| format!("`{}` is not a readable parquet file: {e}", path.display()))
}

impl ParquetIndex {
    fn open(path: &Path, columns: &Columns) -> Result<ParquetIndex, String> {
        let mut files = Vec::new();
        let mut total = 0;
        for p in parquet_files(path)? {
            let reader = open_reader(&p)?;
            let meta = reader.metadata();
            let names: Vec<String> = meta
                .file_metadata()
                .schema_descr()
                .root_schema()
                .get_fields()
                .iter()
                .map(|t| t.name().to_string())
                .collect();
            for (what, c) in [
                ("source", &columns.source),
                ("edited", &columns.edited),
                ("instruction", &columns.instruction),
            ] {
                if !names.contains(c) {
                    return Err(format!(
                        "`{}` has no column `{c}` (the {what} column; columns: {}); set `columns.{what}`",
                        p.display(),
                        names.join(", ")
                    ));
                }
            }
            let groups: Vec<usize> = meta
                .row_groups()
                .iter()
                .map(|g| g.num_rows().max(0) as usize)
                .collect();
            let n: usize = groups.iter().sum();
            files.push(ParquetFile {
                has_key: names.contains(&columns.key),
                has_type: names.contains(&columns.edit_type),
                path: p,
                groups,
                start: total,
            });
            total += n;
        }
        Ok(ParquetIndex {
            files,
            total,
            columns: columns.clone(),
        })
    }

    fn load(&self, range: std::ops::Range<usize>) -> Vec<Result<Sample, ReadError>> {
        let mut out = Vec::with_capacity(range.len());
        for f in &self.files {
            let n: usize = f.groups.iter().sum();
            let (lo, hi) = (range.start.max(f.start), range.end.min(f.start + n));
            if lo >= hi {
                continue;
            }
            self.load_file(f, lo - f.start..hi - f.start, &mut out);
        }
        out
    }

    /// Rows `rows` (file positions) of one file.
    fn load_file(
        &self,
        f: &ParquetFile,
        rows: std::ops::Range<usize>,
        out: &mut Vec<Result<Sample, ReadError>>,
    ) {
        let name = f
            .path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = f
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let whole = |row: usize, message: String| ReadError {
            key: None,
            origin: format!("row {row} of `{name}`"),
            reason: "unreadable".into(),
            message,
        };
        let reader = match open_reader(&f.path) {
            Ok(r) => r,
            Err(m) => {
                out.extend(rows.map(|r| Err(whole(r, m.clone()))));
                return;
            }
        };
        let c = &self.columns;
        let dir = f.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut first = 0usize;
        for (g, &len) in f.groups.iter().enumerate() {
            let (lo, hi) = (rows.start.max(first), rows.end.min(first + len));
            if lo < hi {
                let group = reader
                    .get_row_group(g)
                    .map_err(|e| format!("cannot read row group {g}: {e}"));
                let iter = match &group {
                    Ok(rg) => rg
                        .get_row_iter(None)
                        .map_err(|e| format!("cannot read row group {g}: {e}")),
                    Err(m) => Err(m.clone()),
                };
                match iter {
                    Err(m) => out.extend((lo..hi).map(|r| Err(whole(r, m.clone())))),
                    Ok(it) => {
                        let mut it = it.skip(lo - first);
                        for r in lo..hi {
                            let row = match it.next() {
                                Some(Ok(row)) => row,
                                Some(Err(e)) => {
                                    out.push(Err(whole(r, format!("cannot decode the row: {e}"))));
                                    continue;
                                }
                                None => {
                                    out.push(Err(whole(r, "the row group ended early".into())));
                                    continue;
                                }
                            };
                            let cols: std::collections::BTreeMap<&str, &Field> = row
                                .get_column_iter()
                                .map(|(k, v)| (k.as_str(), v))
                                .collect();
                            let key = if f.has_key {
                                match cols.get(c.key.as_str()) {
                                    Some(Field::Str(s)) if !s.is_empty() => s.clone(),
                                    Some(Field::Long(v)) => v.to_string(),
                                    Some(Field::Int(v)) => v.to_string(),
                                    other => {
                                        out.push(Err(whole(
                                            r,
                                            format!(
                                                "`{}` is not a non-empty string or an integer: {}",
                                                c.key,
                                                other
                                                    .map(|v| v.to_string())
                                                    .unwrap_or("null".into())
                                            ),
                                        )));
                                        continue;
                                    }
                                }
                            } else {
                                format!("{stem}-{r}")
                            };
                            let origin = format!("row {r} of `{name}`");
                            let fields = (|| -> Result<Sample, String> {
                                let instruction = match cols.get(c.instruction.as_str()) {
                                    Some(Field::Str(s)) => s.clone(),
                                    Some(Field::ListInternal(l)) => match l.elements().first() {
                                        Some(Field::Str(s)) => s.clone(),
                                        _ => {
                                            return Err(format!(
                                                "`{}` is a list without a string first",
                                                c.instruction
                                            ));
                                        }
                                    },
                                    other => {
                                        return Err(format!(
                                            "`{}` should be a string, got {}",
                                            c.instruction,
                                            other.map(|v| v.to_string()).unwrap_or("null".into())
                                        ));
                                    }
                                };
                                let edit_type = if f.has_type {
                                    match cols.get(c.edit_type.as_str()) {
                                        Some(Field::Str(s)) => Some(s.clone()),
                                        _ => None,
                                    }
                                } else {
                                    None
                                };
                                Ok(Sample {
                                    key: key.clone(),
                                    origin: origin.clone(),
                                    source: image_bytes(&cols, &c.source, &dir)?,
                                    edited: image_bytes(&cols, &c.edited, &dir)?,
                                    instruction,
                                    edit_type,
                                })
                            })();
                            out.push(fields.map_err(|message| ReadError {
                                key: Some(key.clone()),
                                origin,
                                reason: "unreadable".into(),
                                message,
                            }));
                        }
                    }
                }
            }
            first += len;
        }
    }
}

/// The bytes of an image column: binary, or a `datasets` Image struct `{bytes, path}` (a
/// path is read relative to the parquet file's directory and must stay inside it).
fn image_bytes(
    cols: &std::collections::BTreeMap<&str, &Field>,
    name: &str,
    dir: &Path,
) -> Result<Vec<u8>, String> {
    match cols.get(name) {
        Some(Field::Bytes(b)) => Ok(b.data().to_vec()),
        Some(Field::Group(g)) => match crate::imageio::datasets_image_struct(g) {
            (Some(b), _) => Ok(b),
            (None, Some(p)) => {
                let full = confined(dir, &p).map_err(|m| format!("`{name}`: {m}"))?;
                std::fs::read(&full).map_err(|e| format!("`{name}`: cannot read `{p}`: {e}"))
            }
            (None, None) => Err(format!("`{name}` has neither `bytes` nor `path`")),
        },
        Some(Field::Null) | None => Err(format!("`{name}` is null")),
        Some(other) => {
            let s = other.to_string();
            Err(format!(
                "`{name}` should be image bytes or an image struct {{bytes, path}}, got `{}`",
                &s[..s.floor_char_boundary(60)]
            ))
        }
    }
}
