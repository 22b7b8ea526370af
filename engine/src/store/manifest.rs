//! What the store holds besides raw blobs: artifacts (a file, or a tree of files),
//! result manifests (written last, so a result is visible only once complete), run
//! summaries and pins (the roots `gc` keeps).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A content-addressed output: one file, or a directory tree (a JSON blob listing files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// BLAKE3 of the file's bytes, or of the tree listing.
    pub digest: String,
    /// Bytes of the file, or total bytes of the tree's files.
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree: bool,
    /// Small outputs (≤ [`super::INLINE_MAX`] bytes) live in the manifest itself, base64:
    /// one file less per task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// One file of a tree artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Relative path with `/` separators, no `..`.
    pub path: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
}

/// Where an input came from: the producing instance's key and output name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// Label of the item in a list input (arm name, `iter=3`, ...); empty for single inputs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    pub key: String,
    pub output: String,
}

/// A finished task instance: written after all its blobs, read by every later run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultManifest {
    pub key: String,
    pub kind: String,
    pub kind_version: u32,
    pub name: String,
    pub params: Value,
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    pub outputs: BTreeMap<String, Artifact>,
    #[serde(default)]
    pub metrics: serde_json::Map<String, Value>,
    /// The task's captured log.
    #[serde(default)]
    pub log: Option<Artifact>,
    /// The key-value records the task read or wrote: a JSON list of their store locations
    /// (`kv/<namespace>/<key>`). `gc` keeps the records a kept result lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<Artifact>,
    pub run_id: String,
    pub attempt: u32,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub host: String,
}

/// A run's record in the store: which results it produced or used (a `gc` root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub workflow: String,
    pub status: String,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    pub host: String,
    pub results: Vec<String>,
}

/// A named set of results kept by `gc` regardless of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub name: String,
    pub results: Vec<String>,
    pub created_ms: u64,
}

/// A live run's claim on the store, refreshed while it runs: `gc` refuses to delete while
/// a fresh lease exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub heartbeat_ms: u64,
}
