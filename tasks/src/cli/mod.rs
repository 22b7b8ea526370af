//! The task-level subcommands of the `cocoflow` command line: `cocoflow judge serve`
//! ([`crate::judge::server`]) and `cocoflow segment serve` ([`crate::segment::server`]) run in
//! the front end; `cocoflow score` and `cocoflow bench-metrics` ([`score`]: their command
//! lines), `cocoflow edit` ([`edit`]) and `cocoflow export-lora` ([`export_lora`]) are forwarded to the worker binary, where
//! `cocoflow_torch::cli` runs them.

pub mod edit;
pub mod export_lora;
pub mod score;

use cocoflow_engine::cli::Extension;

/// The subcommands of the front end (`cocoflow`, no libtorch): `judge` and `segment` run
/// here; `score` and `bench-metrics` (tensor code) run in the worker binary, with the same
/// arguments.
pub fn front_end_extensions() -> Vec<Extension> {
    vec![
        crate::judge::server::extension(),
        Extension {
            command: score::command(),
            run: forward_to_worker,
        },
        Extension {
            command: score::bench_command(),
            run: forward_to_worker,
        },
        crate::segment::server::extension(),
        crate::ui::extension(),
        crate::study::extension(),
        Extension {
            command: edit::command(),
            run: forward_to_worker,
        },
        Extension {
            command: export_lora::command(),
            run: forward_to_worker,
        },
    ]
}

/// Runs this command line in the worker binary (`cocoflow-worker`, next to this program or
/// `$COCOFLOW_WORKER`); returns its exit code.
fn forward_to_worker(_: &clap::ArgMatches) -> i32 {
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this program's path: {e}");
            return cocoflow_engine::cli::EXIT_ENVIRONMENT;
        }
    };
    let worker = cocoflow_engine::cli::commands::worker_exe(&me);
    match std::process::Command::new(&worker)
        .args(std::env::args_os().skip(1))
        .status()
    {
        Ok(s) => s.code().unwrap_or(cocoflow_engine::cli::EXIT_INTERNAL),
        Err(e) => {
            eprintln!(
                "error: this command runs in the worker program `{}` (it links libtorch): {e}; \
                 build it with `cargo build --release` or set COCOFLOW_WORKER",
                worker.display()
            );
            cocoflow_engine::cli::EXIT_ENVIRONMENT
        }
    }
}
