//! The command line of `cocoflow export-lora`: a trained LoRA adapter in the layout diffusers'
//! `load_lora_weights` reads (the work reads safetensors through libtorch:
//! `cocoflow_torch::cli::export_lora` runs it; the front end forwards it there).

use clap::{CommandFactory, Parser};
use std::path::PathBuf;

/// Writes a LoRA adapter (a PEFT directory, or an RL state whose `theta/` holds θ) as
/// `pytorch_lora_weights.safetensors` for `FluxKontextPipeline.load_lora_weights(DIR)` or
/// `QwenImageEditPipeline.load_lora_weights(DIR)`: keys `transformer.<module>.lora_{A,B}.weight`,
/// rank and alpha in the file's metadata.
#[derive(Debug, Parser)]
#[command(name = "export-lora", max_term_width = 100)]
pub struct ExportLoraArgs {
    /// A PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`) or an RL
    /// state (its `theta/` is exported).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// The output directory (created).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

/// The `export-lora` command line.
pub fn command() -> clap::Command {
    ExportLoraArgs::command()
}
