//! `bench-import`: a published editing benchmark on local disk (GEdit-Bench-EN, ImgEdit-Bench)
//! as a dataset in the manifest format, which `eval` reads like the synthetic benchmark
//! (method-spec §8).
//!
//! Inputs: none. Output `data`: the dataset (`manifest.jsonl`, `images/<key>.png` sources,
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

use crate::data::manifest::confined;
use crate::data::{DatasetWriter, MaskPolarity, Record};
use crate::imageio;
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
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
struct Item {
    key: String,
    task_type: String,
    instruction: String,
    image: ImageSrc,
    extra: serde_json::Map<String, Value>,
}

enum ImageSrc {
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
            for file in parquet_files(&path)? {
                w.summary.files.push(file.display().to_string());
                if !read_gedit(&file, &p.language, &mut w)? {
                    break;
                }
            }
        }
        BenchFormat::Imgedit => read_imgedit(&path, p.images.as_deref(), &mut w)?,
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

struct Writer<'a> {
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

/// The columns read; `Intersection_exist` is kept in `extra` when present.
const GEDIT_COLUMNS: [&str; 5] = [
    "key",
    "task_type",
    "instruction",
    "instruction_language",
    "input_image",
];

/// `path` itself, or the `.parquet` files under it (recursively, sorted).
fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    fn walk(d: &Path, ext: &str, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let entries =
            std::fs::read_dir(d).map_err(|e| format!("cannot read `{}`: {e}", d.display()))?;
        for e in entries {
            let p = e
                .map_err(|e| format!("cannot read `{}`: {e}", d.display()))?
                .path();
            if p.is_dir() {
                walk(&p, ext, out)?;
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(path, "parquet", &mut files)?;
    files.sort();
    if files.is_empty() {
        let mut arrow = Vec::new();
        walk(path, "arrow", &mut arrow)?;
        return Err(if arrow.is_empty() {
            format!("no `.parquet` files under `{}`", path.display())
        } else {
            format!(
                "no `.parquet` files under `{}`, only `.arrow` files (the `datasets` save_to_disk layout); \
                 use the dataset's parquet export (`refs/convert/parquet`), or write one with `Dataset.to_parquet`",
                path.display()
            )
        });
    }
    Ok(files)
}

fn field_str<'a>(cols: &BTreeMap<&str, &'a Field>, name: &str) -> Result<&'a str, String> {
    match cols.get(name) {
        Some(Field::Str(s)) => Ok(s.as_str()),
        Some(Field::Null) | None => Err(format!("`{name}` is null")),
        Some(other) => Err(format!("`{name}` should be a string, got `{other}`")),
    }
}

/// The image bytes of a `datasets` Image struct {bytes, path} (a path relative to `dir`), or
/// of a plain binary column.
fn field_image(cols: &BTreeMap<&str, &Field>, name: &str, dir: &Path) -> Result<ImageSrc, String> {
    match cols.get(name) {
        Some(Field::Bytes(b)) => Ok(ImageSrc::Bytes(b.data().to_vec())),
        Some(Field::Group(g)) => {
            let mut bytes = None;
            let mut path = None;
            for (k, v) in g.get_column_iter() {
                match (k.as_str(), v) {
                    ("bytes", Field::Bytes(b)) => bytes = Some(b.data().to_vec()),
                    ("path", Field::Str(p)) => path = Some(p.clone()),
                    _ => {}
                }
            }
            match (bytes, path) {
                (Some(b), _) => Ok(ImageSrc::Bytes(b)),
                (None, Some(p)) => Ok(ImageSrc::File(dir.join(p))),
                (None, None) => Err(format!("`{name}` has neither `bytes` nor `path`")),
            }
        }
        Some(Field::Null) | None => Err(format!("`{name}` is null")),
        Some(other) => Err(format!(
            "`{name}` should be an image struct {{bytes, path}}, got `{}`",
            short(&other.to_string())
        )),
    }
}

fn short(s: &str) -> String {
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s.to_string()
    }
}

/// Reads one parquet file; returns false once `limit` records are written.
fn read_gedit(file: &Path, language: &str, w: &mut Writer) -> Result<bool, String> {
    let f =
        std::fs::File::open(file).map_err(|e| format!("cannot open `{}`: {e}", file.display()))?;
    let reader = SerializedFileReader::new(f)
        .map_err(|e| format!("`{}` is not a readable parquet file: {e}", file.display()))?;
    let root = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema();
    let fields = root.get_fields();
    let names: Vec<&str> = fields.iter().map(|t| t.name()).collect();
    for c in GEDIT_COLUMNS {
        if !names.contains(&c) {
            return Err(format!(
                "`{}` has no column `{c}` (columns: {}); expected GEdit-Bench's parquet export",
                file.display(),
                names.join(", ")
            ));
        }
    }
    let wanted: Vec<_> = fields
        .iter()
        .filter(|t| GEDIT_COLUMNS.contains(&t.name()) || t.name() == "Intersection_exist")
        .cloned()
        .collect();
    let projection = parquet::schema::types::Type::group_type_builder(root.name())
        .with_fields(wanted)
        .build()
        .map_err(|e| format!("`{}`: {e}", file.display()))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| format!("`{}`: cannot read rows: {e}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    for (i, row) in rows.enumerate() {
        if w.full() {
            return Ok(false);
        }
        let row = row.map_err(|e| {
            format!(
                "`{}`: cannot read row {i}: {e}{}",
                file.display(),
                if e.to_string().contains("feature") {
                    " (this build reads snappy-compressed and uncompressed parquet)"
                } else {
                    ""
                }
            )
        })?;
        w.summary.rows += 1;
        let cols: BTreeMap<&str, &Field> = row
            .get_column_iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let at = |key: Option<&str>| match key {
            Some(k) => format!("key `{k}`"),
            None => format!("row {i} of `{}`", file.display()),
        };
        let key = match field_str(&cols, "key") {
            Ok(k) if !k.is_empty() => k.to_string(),
            Ok(_) => {
                w.row_error(at(None), "`key` is empty");
                continue;
            }
            Err(e) => {
                w.row_error(at(None), e);
                continue;
            }
        };
        let lang = match field_str(&cols, "instruction_language") {
            Ok(l) => l.to_string(),
            Err(e) => {
                w.row_error(at(Some(&key)), e);
                continue;
            }
        };
        if language != "all" && lang != language {
            w.summary.other_language += 1;
            continue;
        }
        let item = (|| -> Result<Item, String> {
            let task_type = field_str(&cols, "task_type")?.to_string();
            let instruction = field_str(&cols, "instruction")?.to_string();
            let image = field_image(&cols, "input_image", dir)?;
            let mut extra = serde_json::Map::new();
            extra.insert("instruction_language".into(), json!(lang));
            if let Some(Field::Bool(b)) = cols.get("Intersection_exist") {
                extra.insert("intersection_exist".into(), json!(b));
            }
            Ok(Item {
                key: key.clone(),
                task_type,
                instruction,
                image,
                extra,
            })
        })();
        match item {
            Ok(item) => {
                if !w.add(item)? {
                    return Ok(false);
                }
            }
            Err(e) => w.row_error(at(Some(&key)), e),
        }
    }
    Ok(!w.full())
}

// ------------------------------------------------------------------ ImgEdit-Bench (JSON)

/// Numeric keys in numeric order, then the others in text order.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

fn read_imgedit(path: &Path, images: Option<&str>, w: &mut Writer) -> Result<(), String> {
    let file = if path.is_dir() {
        let f = path.join("basic_edit.json");
        if !f.is_file() {
            return Err(format!("`{}` has no `basic_edit.json`", path.display()));
        }
        f
    } else {
        path.to_path_buf()
    };
    w.summary.files.push(file.display().to_string());
    let bytes =
        std::fs::read(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("`{}` is not valid JSON: {e}", file.display()))?;
    let Value::Object(map) = v else {
        return Err(format!(
            "`{}` should be a JSON object mapping keys to {{id, prompt, edit_type}}",
            file.display()
        ));
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let roots: Vec<PathBuf> = match images {
        Some(r) => {
            let r = PathBuf::from(r);
            if !r.is_dir() {
                return Err(format!("`images` `{}` is not a directory", r.display()));
            }
            vec![r]
        }
        None => vec![dir.to_path_buf(), dir.join("singleturn")],
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by(|a, b| key_order(a, b));
    for key in keys {
        if w.full() {
            break;
        }
        w.summary.rows += 1;
        let row = format!("key `{key}`");
        let item = (|| -> Result<Item, String> {
            let Value::Object(e) = &map[key] else {
                return Err("the entry should be an object {id, prompt, edit_type}".into());
            };
            let get = |name: &str, what: &str| match e.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                None | Some(Value::Null) => Err(format!("no `{name}`")),
                Some(other) => Err(format!(
                    "`{name}` should be a string ({what}), got {}",
                    short(&other.to_string())
                )),
            };
            let id = get("id", "an image path")?;
            let instruction = get("prompt", "the instruction")?;
            let task_type = get("edit_type", "the edit type")?;
            let mut found = None;
            for r in &roots {
                let full = confined(r, &id).map_err(|e| format!("`id`: {e}"))?;
                if full.is_file() {
                    found = Some(full);
                    break;
                }
            }
            let image = found.ok_or_else(|| {
                let tried: Vec<String> =
                    roots.iter().map(|r| format!("`{}`", r.display())).collect();
                format!("image `{id}` not found under {}", tried.join(", "))
            })?;
            let mut extra = serde_json::Map::new();
            extra.insert("image".into(), json!(id));
            Ok(Item {
                key: key.clone(),
                task_type,
                instruction,
                image: ImageSrc::File(image),
                extra,
            })
        })();
        match item {
            Ok(item) => {
                w.add(item)?;
            }
            Err(e) => w.row_error(row, e),
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ the kind

fn check(p: &BenchImportParams) -> Result<(), ParamError> {
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

pub struct BenchImport;

impl TaskKind for BenchImport {
    fn name(&self) -> &'static str {
        "bench-import"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "GEdit-Bench (parquet) or ImgEdit-Bench (basic_edit.json) from local disk as a manifest dataset, with CoCoEdit's masks"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<BenchImportParams>(params)?;
        check(&p)?;
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["data".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: BenchImportParams = ctx.params()?;
        let out = ctx.workdir()?.join("data");
        let s = import(&p, &out).map_err(|e| TaskError::Failed(format!("bench-import: {e}")))?;
        ctx.log(format!(
            "{}: {} of {} rows imported ({} in another language, {} errors), {} masks ({} unusable); types: {}",
            s.format,
            s.imported,
            s.rows,
            s.other_language,
            s.row_errors.len(),
            s.masks,
            s.mask_errors.len(),
            s.types
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for e in s.row_errors.iter().chain(&s.mask_errors).take(20) {
            ctx.log(format!("  {}: {}", e.row, e.reason));
        }
        if s.imported == 0 {
            let first = s
                .row_errors
                .first()
                .map(|e| format!("; first error: {}: {}", e.row, e.reason))
                .unwrap_or_default();
            return Err(TaskError::Failed(format!(
                "bench-import: no usable records in `{}` ({} rows){first}",
                p.path, s.rows
            )));
        }
        ctx.metric("imported", s.imported as u64);
        ctx.metric("row_errors", s.row_errors.len() as u64);
        ctx.metric("other_language", s.other_language as u64);
        ctx.metric("masks", s.masks as u64);
        ctx.metric("mask_errors", s.mask_errors.len() as u64);
        ctx.output_dir("data", &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_then_as_text() {
        let mut k = vec!["10", "b", "2", "a", "1"];
        k.sort_by(|a, b| key_order(a, b));
        assert_eq!(k, vec!["1", "2", "10", "a", "b"]);
    }

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
