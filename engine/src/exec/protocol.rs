//! The framed protocol between the engine and a long-lived worker (`cocoflow-worker
//! worker-serve`): one JSON message per line, each prefixed with [`super::WORKER_PREFIX`]
//! (other lines — a library printing to stdout — are ignored), over the worker's stdin and
//! stdout. The worker greets with [`FromWorker::Hello`]; a worker whose `protocol` differs
//! from [`PROTOCOL`] is refused.

use super::{Job, JobOutcome};
use crate::kind::Progress;
use serde::{Deserialize, Serialize};

/// Bumped when a message changes.
pub const PROTOCOL: u32 = 1;

/// Engine → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum ToWorker {
    /// Run one attempt; `seq` names it in the replies.
    Run { seq: u64, job: Box<Job> },
    /// Stop attempt `seq` at its next cancellation check.
    Cancel { seq: u64 },
}

/// Worker → engine.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum FromWorker {
    Hello {
        protocol: u32,
        /// The cocoflow version the worker was built from.
        version: String,
        pid: u32,
    },
    Progress {
        seq: u64,
        progress: Progress,
    },
    Done {
        seq: u64,
        outcome: JobOutcome,
        /// Models this attempt loaded from disk (the rest came from the worker's cache).
        model_loads: u64,
    },
}

/// One message as a line (prefix, JSON, newline).
pub fn line<T: Serialize>(msg: &T) -> String {
    format!(
        "{}{}\n",
        super::WORKER_PREFIX,
        serde_json::to_string(msg).expect("protocol messages serialise")
    )
}

/// The message of a line, if it is one.
pub fn parse<T: for<'de> Deserialize<'de>>(line: &str) -> Option<Result<T, String>> {
    let json = line.strip_prefix(super::WORKER_PREFIX)?;
    Some(serde_json::from_str(json).map_err(|e| e.to_string()))
}
