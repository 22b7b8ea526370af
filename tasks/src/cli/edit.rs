//! The command line of `cocoflow edit`: one edit from a model directory, as one diffusers
//! pipeline call makes it (the work is tensor code: `cocoflow_torch::cli::edit` runs it; the
//! front end forwards it there).

use clap::{CommandFactory, Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Solver {
    /// The pipeline's `FlowMatchEulerDiscreteScheduler` (default).
    Euler,
    /// cocoflow's rollout sampler (method-spec §6).
    Dpm2,
}

/// One edit of one image by one instruction, with any backend's model directory (tiny-kontext,
/// a diffusers FLUX.1 Kontext or Qwen-Image-Edit repository) and optionally a LoRA adapter.
#[derive(Debug, Parser)]
#[command(name = "edit", max_term_width = 100)]
pub struct EditArgs {
    /// The model directory: a diffusers FLUX.1 Kontext or Qwen-Image-Edit repository
    /// (`model_index.json`) or a tiny-kontext model (`config.json` + `model.safetensors`).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The source image (PNG or JPEG).
    #[arg(long, value_name = "SRC.png")]
    pub image: PathBuf,
    /// The edit instruction.
    #[arg(long)]
    pub instruction: String,
    /// A LoRA adapter: a PEFT directory (`adapter_config.json` + `adapter_model.safetensors`,
    /// e.g. an RL state's `theta/`) or a diffusers one (`pytorch_lora_weights.safetensors`).
    #[arg(long, value_name = "DIR")]
    pub lora: Option<PathBuf>,
    /// Sampling steps.
    #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub steps: u32,
    /// Embedded guidance for models with a guidance embedding (FLUX.1 [dev]; default 3.5 as
    /// the pipeline's), the true-CFG scale for Qwen-Image-Edit (default 4.0 as the pipeline's),
    /// classifier-free guidance scale otherwise (default: none).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Seed of the initial noise (drawn as a rollout sample's noise).
    #[arg(long, default_value_t = 0, conflicts_with = "latents")]
    pub seed: u64,
    /// The initial noise: a safetensors file with one tensor, `(1, C, h, w)` in the model's
    /// latent layout or, for FLUX.1 Kontext and Qwen-Image-Edit, diffusers' packed
    /// `(1, (h/2)(w/2), 4·C)`.
    #[arg(long, value_name = "FILE.safetensors")]
    pub latents: Option<PathBuf>,
    /// Target height in pixels (default: the source's).
    #[arg(long, requires = "width")]
    pub height: Option<i64>,
    /// Target width in pixels (default: the source's).
    #[arg(long, requires = "height")]
    pub width: Option<i64>,
    /// The solver.
    #[arg(long, value_enum, default_value = "euler")]
    pub sampler: Solver,
    /// Where the edited image goes (PNG).
    #[arg(long, value_name = "OUT.png")]
    pub out: PathBuf,
    /// Also write the final latents `(1, C, h, w)` (float32, key `latents`) here.
    #[arg(long, value_name = "FILE.safetensors")]
    pub save_latents: Option<PathBuf>,
    /// `cpu`, `cuda` (device 0) or `auto` (CUDA when available).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// The `edit` command line.
pub fn command() -> clap::Command {
    EditArgs::command()
}
