//! `cocoflow export-lora --adapter DIR --to OUT`: a LoRA adapter in diffusers' layout
//! ([`crate::models::flux_kontext::lora_export::export_diffusers`]). Exit codes: 0 ok · 2 bad
//! command line · 3 the adapter is missing or unreadable (the message names the file).

use crate::models::flux_kontext::lora_export::export_diffusers;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use cocoflow_engine::cli::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, Extension};
pub use cocoflow_tasks::cli::export_lora::*;

/// The `export-lora` subcommand.
pub fn extension() -> Extension {
    Extension {
        command: ExportLoraArgs::command(),
        run: run_export,
    }
}

fn run_export(matches: &ArgMatches) -> i32 {
    let args = match ExportLoraArgs::from_arg_matches(matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    // an RL state exports θ
    let dir = if crate::rl::state::is_state(&args.adapter) {
        args.adapter.join(crate::rl::state::THETA_DIR)
    } else {
        args.adapter.clone()
    };
    match export_diffusers(&dir, &args.to) {
        Ok(file) => {
            println!("{}", file.display());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}
