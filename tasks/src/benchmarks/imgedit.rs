//! ImgEdit-Bench's `basic_edit.json` (key → {id, prompt, edit_type}, `id` an image path under
//! the image root).

use super::{ImageSrc, Item, Writer, short};
use crate::data::manifest::confined;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Numeric keys in numeric order, then the others in text order.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

pub(crate) fn read_imgedit(
    path: &Path,
    images: Option<&str>,
    w: &mut Writer,
) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_then_as_text() {
        let mut k = vec!["10", "b", "2", "a", "1"];
        k.sort_by(|a, b| key_order(a, b));
        assert_eq!(k, vec!["1", "2", "10", "a", "b"]);
    }
}
