//! GEdit-Bench-EN's parquet export (the Hugging Face dataset `stepfun-ai/GEdit-Bench`): columns
//! `key`, `task_type`, `instruction`, `instruction_language`, `input_image` (the `datasets`
//! Image struct {bytes, path}), optional `Intersection_exist`.

use super::{ImageSrc, Item, Writer, short};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The columns read; `Intersection_exist` is kept in `extra` when present.
const GEDIT_COLUMNS: [&str; 5] = [
    "key",
    "task_type",
    "instruction",
    "instruction_language",
    "input_image",
];

pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>, String> {
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
        Some(Field::Group(g)) => match crate::imageio::datasets_image_struct(g) {
            (Some(b), _) => Ok(ImageSrc::Bytes(b)),
            (None, Some(p)) => Ok(ImageSrc::File(dir.join(p))),
            (None, None) => Err(format!("`{name}` has neither `bytes` nor `path`")),
        },
        Some(Field::Null) | None => Err(format!("`{name}` is null")),
        Some(other) => Err(format!(
            "`{name}` should be an image struct {{bytes, path}}, got `{}`",
            short(&other.to_string())
        )),
    }
}

/// Reads one parquet file; returns false once `limit` records are written.
pub(crate) fn read_gedit(file: &Path, language: &str, w: &mut Writer) -> Result<bool, String> {
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
