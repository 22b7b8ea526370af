//! The task-level subcommands of the worker binary: those of the front end
//! ([`cocoflow_tasks::cli`]) run here, `score` and `bench-metrics` included ([`score`]).

pub mod bench_flux;
pub mod edit;
pub mod export_lora;
pub mod score;

use cocoflow_engine::cli::Extension;

/// Every subcommand, run here (the worker binary).
pub fn extensions() -> Vec<Extension> {
    vec![
        crate::judge::server::extension(),
        score::extension(),
        score::bench_extension(),
        crate::segment::server::extension(),
        bench_flux::extension(),
        edit::extension(),
        export_lora::extension(),
    ]
}
