//! Weights by reference: a model directory outside the store (a 30 GB diffusers repository)
//! is named by a digest of its files and never copied.
//!
//! - [`file_digest`]: a file's BLAKE3, remembered by (canonical path, size, mtime) in the
//!   process and in a small JSON file (`$COCOFLOW_DIGEST_CACHE`, else
//!   `$XDG_CACHE_HOME/cocoflow/file-digests.json`, else `~/.cache/cocoflow/...`), so a
//!   repository is hashed once per machine, not once per plan or task.
//! - [`dir_digest`]: BLAKE3 of the sorted lines `<relative path>\t<file digest>` of every file.
//! - [`ModelRef`]: what a task outputs instead of the weights (`model_ref.json`: path and
//!   digest); [`resolve`] turns such an output back into the directory, after checking that the
//!   files still have that digest.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const REF_FILE: &str = "model_ref.json";
pub const REF_FORMAT: &str = "cocoflow-model-ref";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Memo {
    size: u64,
    mtime_ns: u128,
    digest: String,
}

static MEMO: Mutex<Option<HashMap<PathBuf, Memo>>> = Mutex::new(None);

fn cache_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COCOFLOW_DIGEST_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("cocoflow").join("file-digests.json"))
}

fn read_disk() -> HashMap<PathBuf, Memo> {
    cache_file()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice::<BTreeMap<PathBuf, Memo>>(&b).ok())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// Best effort: a cache that cannot be written costs a re-hash, nothing else.
fn write_disk(memo: &HashMap<PathBuf, Memo>) {
    let Some(f) = cache_file() else { return };
    if let Some(d) = f.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let sorted: BTreeMap<&PathBuf, &Memo> = memo.iter().collect();
    let tmp = f.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, serde_json::to_vec(&sorted).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, &f);
    }
}

/// A file's BLAKE3 (hex), hashed once per (canonical path, size, mtime).
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let key = path.canonicalize()?;
    let mtime_ns = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let found = {
        let mut g = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        let memo = g.get_or_insert_with(read_disk);
        memo.get(&key)
            .filter(|m| m.size == meta.len() && m.mtime_ns == mtime_ns)
            .map(|m| m.digest.clone())
    };
    if let Some(d) = found {
        return Ok(d);
    }
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    let digest = hasher.finalize().to_hex().to_string();
    let mut g = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    let memo = g.get_or_insert_with(read_disk);
    memo.insert(
        key,
        Memo {
            size: meta.len(),
            mtime_ns,
            digest: digest.clone(),
        },
    );
    write_disk(memo);
    Ok(digest)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else if p.is_file() {
            let rel = p.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// BLAKE3 of the sorted lines `<relative path>\t<file digest>` of every file under `dir`.
pub fn dir_digest(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut h = blake3::Hasher::new();
    for rel in files {
        let d = file_digest(&dir.join(&rel))?;
        h.update(format!("{rel}\t{d}\n").as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

/// A model directory by reference (`model_ref.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub format: String,
    /// Absolute path of the directory.
    pub path: PathBuf,
    /// [`dir_digest`] of it.
    pub digest: String,
}

impl ModelRef {
    /// The reference of `dir` (made absolute), hashing what is not hashed yet.
    pub fn of(dir: &Path) -> Result<ModelRef, String> {
        let path = dir
            .canonicalize()
            .map_err(|e| format!("model directory `{}`: {e}", dir.display()))?;
        if !path.is_dir() {
            return Err(format!("`{}` is not a directory", path.display()));
        }
        let digest =
            dir_digest(&path).map_err(|e| format!("cannot hash `{}`: {e}", path.display()))?;
        Ok(ModelRef {
            format: REF_FORMAT.into(),
            path,
            digest,
        })
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(REF_FILE),
            serde_json::to_vec_pretty(self).expect("json"),
        )
    }
}

/// A `model` input as the directory to load: itself, or — when it holds `model_ref.json` — the
/// referenced directory, whose files must still have the recorded digest.
pub fn resolve(dir: &Path) -> Result<PathBuf, String> {
    let f = dir.join(REF_FILE);
    if !f.is_file() {
        return Ok(dir.to_path_buf());
    }
    let bytes = std::fs::read(&f).map_err(|e| format!("cannot read `{}`: {e}", f.display()))?;
    let r: ModelRef = serde_json::from_slice(&bytes)
        .map_err(|e| format!("`{}` is not a model reference: {e}", f.display()))?;
    if r.format != REF_FORMAT {
        return Err(format!("`{}`: format `{}`", f.display(), r.format));
    }
    let now = dir_digest(&r.path).map_err(|e| {
        format!(
            "the model `{}` referenced by `{}`: {e}",
            r.path.display(),
            f.display()
        )
    })?;
    if now != r.digest {
        return Err(format!(
            "the files of `{}` changed since the workflow referenced them (digest {} now, {} \
             then): plan the run again",
            r.path.display(),
            &now[..12],
            &r.digest[..12.min(r.digest.len())]
        ));
    }
    Ok(r.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_until_the_files_change() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::write(model.join("a.bin"), b"weights").unwrap();
        std::fs::write(model.join("sub/b.json"), b"{}").unwrap();
        let r = ModelRef::of(&model).unwrap();
        assert_eq!(r.digest, dir_digest(&model).unwrap());
        let out = tmp.path().join("out");
        r.write(&out).unwrap();
        assert_eq!(resolve(&out).unwrap(), model.canonicalize().unwrap());
        // a plain directory resolves to itself
        assert_eq!(resolve(&model).unwrap(), model);
        // changed files (new size): refused, naming the directory
        std::fs::write(model.join("a.bin"), b"other weights").unwrap();
        let e = resolve(&out).unwrap_err();
        assert!(
            e.contains("changed since the workflow referenced them"),
            "{e}"
        );
        assert_ne!(ModelRef::of(&model).unwrap().digest, r.digest);
    }
}
