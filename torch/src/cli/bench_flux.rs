//! `cocoflow-worker bench-flux` (hidden): rollout throughput, one NFT training step and peak GPU
//! memory of the FLUX.1 Kontext transformer with random weights; the library side is
//! [`crate::models::flux_kontext::bench`], the PyTorch baseline `bench/flux_pytorch.py`, the
//! GPU script that runs both interleaved `bench/gpu_flux.sh`.
//!
//! ```text
//! cocoflow-worker bench-flux [--config full|tiny] [--resolution 512] [--k 12] [--steps 10]
//!                     [--dtype bf16] [--lora-rank 32 --lora-alpha 64] [--nft-batch 2]
//!                     [--phase rollout,nft,vae] [--device auto|cuda|cpu] [--json]
//! ```
//!
//! Prints one line (one JSON object with `--json`) per phase. Exit codes: 0 ok · 2 bad
//! command line · 3 invalid settings · 5 CUDA asked for but not available, or the run failed.

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Extension};
use serde_json::Value;
use tch::{Device, Kind};

use crate::models::LoraConfig;
use crate::models::flux_kontext::bench::{
    BenchSettings, ModelSize, bench_nft, bench_rollout, bench_vae, build,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Config {
    /// FLUX.1 Kontext [dev]: 19 + 38 blocks, 24 heads × 128 (~12 B parameters, 24 GB in bf16).
    Full,
    /// The tiny test repository's shapes (runs on a CPU in seconds).
    Tiny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    Bf16,
    F16,
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// K samples of one prompt, `--steps` dpm2 steps, θ_old active, no grad.
    Rollout,
    /// θ_old + reference forwards, θ's checkpointed forward + backward, AdamW on θ's LoRA.
    Nft,
    /// One VAE decode of K latents at the resolution.
    Vae,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    /// `cuda:0` when CUDA is available, else the CPU.
    Auto,
    Cuda,
    Cpu,
}

/// FLUX.1 Kontext transformer benchmark with random weights (rollout images/s, NFT s/step,
/// peak memory); `bench/flux_pytorch.py` measures the same with diffusers + peft.
#[derive(Debug, Parser)]
#[command(name = "bench-flux", hide = true, max_term_width = 100)]
struct BenchFluxArgs {
    #[arg(long, value_enum, default_value = "full")]
    config: Config,
    /// Side in pixels of the target and the source image (multiple of 16).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(i64).range(16..=4096))]
    resolution: i64,
    /// Samples per prompt in a rollout batch.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i64).range(1..=1024))]
    k: i64,
    /// dpm2 steps of a rollout.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    steps: u64,
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: Dtype,
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(i64).range(1..=4096))]
    lora_rank: i64,
    #[arg(long, default_value_t = 64.0)]
    lora_alpha: f64,
    /// Samples in the NFT micro-batch (one timestep each per step).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i64).range(1..=1024))]
    nft_batch: i64,
    /// Embedded guidance.
    #[arg(long, default_value_t = 2.5)]
    guidance: f64,
    /// T5 tokens (default: 512 full, 16 tiny).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=4096))]
    text_len: Option<i64>,
    /// Phases to run, comma-separated, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rollout,nft")]
    phase: Vec<Phase>,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Steps of the untimed rollout warm-up batch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000))]
    rollout_warmup_steps: u64,
    /// Timed rollout batches (the median counts).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000))]
    rollout_repeats: u64,
    /// Untimed NFT warm-up steps.
    #[arg(long, default_value_t = 1)]
    nft_warmup: u64,
    /// Timed NFT steps (the median counts).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    nft_repeats: u64,
    /// Seed of libtorch's generator (weights, inputs, noise).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object per phase.
    #[arg(long)]
    json: bool,
}

/// The `bench-flux` subcommand.
pub fn extension() -> Extension {
    Extension {
        command: BenchFluxArgs::command(),
        run: run_bench_flux,
    }
}

fn settings(args: &BenchFluxArgs, device: Device) -> BenchSettings {
    let size = match args.config {
        Config::Full => ModelSize::Full,
        Config::Tiny => ModelSize::Tiny,
    };
    let kind = match args.dtype {
        Dtype::Bf16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
    };
    let mut s = BenchSettings::new(size, device, kind, args.resolution);
    s.k = args.k;
    s.steps = args.steps as usize;
    s.guidance = args.guidance;
    s.text_len = args.text_len.unwrap_or(size.default_text_len());
    s.lora = LoraConfig {
        r: args.lora_rank,
        lora_alpha: args.lora_alpha,
        ..LoraConfig::default()
    };
    s.nft_batch = args.nft_batch;
    s.rollout_warmup_steps = args.rollout_warmup_steps as usize;
    s.rollout_repeats = args.rollout_repeats as usize;
    s.nft_warmup = args.nft_warmup as usize;
    s.nft_repeats = args.nft_repeats as usize;
    s.seed = args.seed;
    s
}

/// The line printed for one phase without `--json`.
fn text_line(v: &Value) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let mem = match v["peak_allocated_gib"].as_f64() {
        Some(p) => format!(
            ", peak {p:.2} GiB allocated / {:.2} GiB reserved",
            f("peak_reserved_gib")
        ),
        None => String::new(),
    };
    let head = format!(
        "{} {}² {}",
        v["phase"].as_str().unwrap_or("?"),
        v["resolution"],
        v["config"].as_str().unwrap_or("?")
    );
    match v["phase"].as_str() {
        Some("rollout") => format!(
            "{head}: K={} × {} steps in {:.3} s (median): {:.3} images/s{mem}",
            v["k"],
            v["steps"],
            f("batch_s_median"),
            f("images_per_s")
        ),
        Some("nft") => format!(
            "{head}: batch {}: {:.3} s/step (median; θ_old+ref {:.3}, θ fwd+bwd {:.3}, optimiser {:.3}){mem}",
            v["nft_batch"],
            f("step_s_median"),
            f("old_ref_s_median"),
            f("theta_s_median"),
            f("optim_s_median")
        ),
        _ => format!(
            "{head}: decode of {} latents in {:.3} s{mem}",
            v["k"],
            f("decode_s")
        ),
    }
}

fn run_bench_flux(matches: &ArgMatches) -> i32 {
    let args = match BenchFluxArgs::from_arg_matches(matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    let cuda = tch::Cuda::is_available();
    let device = match args.device {
        DeviceArg::Cuda if !cuda => {
            eprintln!("error: `--device cuda` but libtorch sees no CUDA device");
            return EXIT_ENVIRONMENT;
        }
        DeviceArg::Cuda => Device::Cuda(0),
        DeviceArg::Auto if cuda => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let s = settings(&args, device);
    if let Err(e) = s.validate() {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let gpu = match device {
        Device::Cuda(i) => cocoflow_engine::gpu::discover()
            .ok()
            .and_then(|g| g.into_iter().nth(i).map(|g| g.name)),
        _ => None,
    };
    let torch = crate::device::torch_info().libtorch_version;
    let print = |mut v: Value| {
        v["gpu"] = gpu.clone().into();
        v["torch"] = torch.into();
        if args.json {
            println!("{v}");
        } else {
            println!("{}", text_line(&v));
        }
    };
    let needs_model = args.phase.iter().any(|p| *p != Phase::Vae);
    let built = match needs_model.then(|| build(&s)).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: building the transformer: {e}");
            return EXIT_ENVIRONMENT;
        }
    };
    for phase in &args.phase {
        let result = match (phase, &built) {
            (Phase::Rollout, Some(b)) => bench_rollout(b, &s),
            (Phase::Nft, Some(b)) => bench_nft(b, &s),
            (Phase::Vae, _) => bench_vae(&s),
            (_, None) => unreachable!("the model is built for every phase but vae"),
        };
        match result {
            Ok(v) => print(v),
            Err(e) => {
                eprintln!("error: phase `{phase:?}`: {e}");
                return EXIT_ENVIRONMENT;
            }
        }
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issue_settings() {
        let m = BenchFluxArgs::command()
            .try_get_matches_from(["bench-flux"])
            .unwrap();
        let a = BenchFluxArgs::from_arg_matches(&m).unwrap();
        let s = settings(&a, Device::Cpu);
        assert_eq!(
            (s.size, s.resolution, s.k, s.steps),
            (ModelSize::Full, 512, 12, 10)
        );
        assert_eq!((s.lora.r, s.lora.lora_alpha, s.text_len), (32, 64.0, 512));
        assert_eq!(s.kind, Kind::BFloat16);
        assert_eq!(a.phase, vec![Phase::Rollout, Phase::Nft]);
        let m = BenchFluxArgs::command()
            .try_get_matches_from(["bench-flux", "--config", "tiny", "--phase", "nft,vae"])
            .unwrap();
        let a = BenchFluxArgs::from_arg_matches(&m).unwrap();
        assert_eq!(settings(&a, Device::Cpu).text_len, 16);
        assert_eq!(a.phase, vec![Phase::Nft, Phase::Vae]);
    }
}
