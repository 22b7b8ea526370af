//! The task-level subcommands this crate adds to the `cocoflow` command line:
//! `cocoflow score` and `cocoflow bench-metrics` ([`score`]), `cocoflow judge serve`
//! ([`crate::judge::server`]) and `cocoflow segment serve` ([`crate::segment::server`]).

pub mod score;

use cocoflow_engine::cli::Extension;

/// Every subcommand of this crate, for `main_with_extensions`.
pub fn extensions() -> Vec<Extension> {
    vec![
        crate::judge::server::extension(),
        score::extension(),
        score::bench_extension(),
        crate::segment::server::extension(),
    ]
}
