//! Errors of the model backends: bad checkpoints (every missing, unexpected and mis-shaped
//! tensor named), bad configs, bad inputs, unknown adapters.

use std::fmt::Write as _;
use std::path::PathBuf;

/// A tensor whose shape (or dtype) in a file differs from the model's.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub name: String,
    /// What the file holds, e.g. `[64, 48] Float`.
    pub found: String,
    /// What the model built from its config expects.
    pub expected: String,
}

/// The differences between a checkpoint's tensors and the model's variables.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorDiff {
    /// In the model, not in the file.
    pub missing: Vec<String>,
    /// In the file, not in the model.
    pub unexpected: Vec<String>,
    /// In both, with different shapes, or a dtype that is not a float.
    pub mismatched: Vec<Mismatch>,
}

/// How many names per category an error message spells out (the struct holds all of them).
const SHOWN: usize = 12;

impl TensorDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

/// `items` are already formatted (names in backticks).
fn list(out: &mut String, what: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let names = items;
    let _ = write!(out, "\n  {} {what}: ", names.len());
    let shown: Vec<String> = names.iter().take(SHOWN).cloned().collect();
    out.push_str(&shown.join(", "));
    if names.len() > SHOWN {
        let _ = write!(out, ", … ({} more)", names.len() - SHOWN);
    }
}

impl std::fmt::Display for TensorDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let quote = |v: &[String]| v.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>();
        list(&mut out, "missing", &quote(&self.missing));
        list(&mut out, "unexpected", &quote(&self.unexpected));
        let shapes: Vec<String> = self
            .mismatched
            .iter()
            .map(|m| format!("`{}` (file {}, model {})", m.name, m.found, m.expected))
            .collect();
        list(&mut out, "mis-shaped", &shapes);
        f.write_str(&out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing a file failed.
    #[error("cannot {op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON config (model or adapter) is malformed or has unknown keys.
    #[error("bad config `{}`: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A config's values are inconsistent (e.g. `dim` not divisible by `num_heads`).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The tensors of a checkpoint do not match the model its config describes.
    #[error(
        "checkpoint `{}` does not match the model its config describes:{diff}",
        path.display()
    )]
    Checkpoint { path: PathBuf, diff: TensorDiff },
    /// A safetensors file could not be read or written.
    #[error("safetensors `{}`: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },
    /// An adapter config the importer cannot honour (DoRA, rank patterns, ...).
    #[error("unsupported adapter `{}`: {message}", path.display())]
    UnsupportedAdapter { path: PathBuf, message: String },
    #[error("no adapter named `{0}` (known: {1})")]
    UnknownAdapter(String, String),
    /// Two adapters that should hold the same matrices (e.g. θ_old ← θ) do not.
    #[error("adapters `{from}` and `{to}` do not have the same matrices:{diff}")]
    AdapterMismatch {
        from: String,
        to: String,
        diff: TensorDiff,
    },
    #[error("an adapter named `{0}` exists already")]
    AdapterExists(String),
    #[error("bad adapter name `{0}`: use letters, digits, `_` and `-`")]
    BadAdapterName(String),
    /// An input tensor has the wrong shape.
    #[error("bad input `{what}`: {message}")]
    Input { what: &'static str, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl From<cocoflow_tasks::models::InvalidConfig> for ModelError {
    fn from(e: cocoflow_tasks::models::InvalidConfig) -> Self {
        ModelError::InvalidConfig(e.0)
    }
}
