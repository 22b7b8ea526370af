//! Work directories of attempts. Creating and removing a directory are among the costliest
//! filesystem operations a short task does, so while a runner has recycling on, the
//! directory of a successful in-process attempt is emptied and handed to the next attempt
//! that asks for one (under the same parent). A failed attempt's directory is kept under its
//! own name (`work/<key>-<run>-<attempt>`), renamed there if it was a reused one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static RECYCLE: AtomicBool = AtomicBool::new(false);
static SPARE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Turns reuse on or off for this process (the runner turns it on for its in-process
/// attempts and removes the spare directories with [`drop_spares`] when the run ends).
pub fn recycle(on: bool) {
    RECYCLE.store(on, Ordering::Relaxed);
}

/// A directory for an attempt whose own directory would be `canonical`.
pub(crate) fn take(canonical: &Path) -> std::io::Result<PathBuf> {
    if RECYCLE.load(Ordering::Relaxed) {
        let mut spare = SPARE.lock().unwrap();
        if let Some(i) = spare.iter().rposition(|d| d.parent() == canonical.parent()) {
            return Ok(spare.swap_remove(i));
        }
    }
    std::fs::create_dir_all(canonical)?;
    Ok(canonical.to_path_buf())
}

fn empty(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// After an attempt: a success's directory is emptied for reuse (or removed); a failure's
/// stays, under `canonical`.
pub(crate) fn release(dir: &Path, canonical: &Path, success: bool) {
    if !success {
        if dir != canonical {
            let _ = std::fs::rename(dir, canonical);
        }
        return;
    }
    if RECYCLE.load(Ordering::Relaxed) && empty(dir).is_ok() {
        SPARE.lock().unwrap().push(dir.to_path_buf());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes the spare directories (and turns reuse off).
pub fn drop_spares() {
    recycle(false);
    for d in std::mem::take(&mut *SPARE.lock().unwrap()) {
        let _ = std::fs::remove_dir(d);
    }
}
