//! The command lines of `cocoflow score` and `cocoflow bench-metrics` (their work is tensor
//! code: `cocoflow_torch::cli::score` runs them; the front end forwards them there).

use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};

/// What white means in a mask file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Polarity {
    /// White = the edited region; the metrics run over the black pixels.
    Edit,
    /// White = the region that must stay (CoCoEdit's published masks).
    Keep,
}

/// Masked PSNR (dB), SSIM and r_sim of an edit over the region that must stay (method-spec §1).
#[derive(Debug, Parser)]
#[command(name = "score", max_term_width = 100)]
pub struct ScoreArgs {
    /// The source image (PNG or JPEG).
    #[arg(long, required_unless_present = "dir", conflicts_with = "dir", requires_all = ["edited", "mask"])]
    pub source: Option<PathBuf>,
    /// The edited image, same size as the source.
    #[arg(long, conflicts_with = "dir")]
    pub edited: Option<PathBuf>,
    /// The mask, same size as the source; see --mask-polarity.
    #[arg(long, conflicts_with = "dir")]
    pub mask: Option<PathBuf>,
    /// Score every `<key>_SRCIMG.png` / `<key>.png` / `<key>_mask.png` triplet of this folder
    /// (.jpg and .jpeg too) and print per-file values and means over the defined samples.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// What white (grey ≥ 128) means in the mask: `edit` = the edited region, `keep` = the
    /// region that must stay (CoCoEdit's published masks).
    #[arg(long, value_enum, default_value = "edit")]
    pub mask_polarity: Polarity,
    /// Print JSON (PSNR of identical keep regions is the string "inf").
    #[arg(long)]
    pub json: bool,
    /// Weight of SSIM in r_sim = w_s·SSIM + (1 − w_s)·clip(PSNR/τ, 0, 1), in [0, 1].
    #[arg(long, default_value_t = 0.5)]
    pub w_s: f64,
    /// τ in dB: the PSNR that counts as perfect in r_sim.
    #[arg(long, default_value_t = 40.0)]
    pub tau_db: f64,
}

/// The `score` command line.
pub fn command() -> clap::Command {
    ScoreArgs::command()
}

/// The `bench-metrics` command line.
pub fn bench_command() -> clap::Command {
    BenchArgs::command()
}

/// Throughput of masked PSNR + SSIM in megapixels per second, next to a NumPy/SciPy
/// implementation of the same formulas run on the same images (not a test: prints figures).
#[derive(Debug, Parser)]
#[command(name = "bench-metrics", max_term_width = 100)]
pub struct BenchArgs {
    /// Images in the batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i64).range(1..=4096))]
    pub batch: i64,
    /// Height and width of the RGB images.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(i64).range(1..=16384))]
    pub size: i64,
    /// Timed runs per implementation (the best counts), after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Python for the baseline (default: the repository's .venv/bin/python, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The baseline script (default: the repository's scripts/bench_metrics.py).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
