//! cocoflow-engine: YAML workflows → a DAG of cached, resumable task instances, run by a
//! pure scheduler core over in-process or subprocess executors, with a content-addressed
//! artifact store (file://, s3://, memory://) and a crash-safe run journal.
//!
//! This crate knows nothing about images or torch: task kinds plug in through
//! [`kind::TaskKind`] and a [`kind::Registry`].

pub mod cli;
pub mod core;
pub mod exec;
pub mod gpu;
pub mod kind;
pub mod kinds;
pub mod plan;
pub mod runner;
pub mod spec;
pub mod state;
pub mod store;
pub mod ui;
pub mod util;

pub use serde_json::Value;

/// mimalloc for every binary that links the engine (feature `mimalloc`, on by default):
/// planning and scheduling allocate many small objects, and glibc's malloc and free were
/// about a third of the instructions of a 10,000-task run.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
