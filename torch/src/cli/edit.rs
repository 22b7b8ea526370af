//! `cocoflow edit`: one edit from the command line ([`crate::edit`]), for every backend.
//!
//! ```text
//! cocoflow edit --model DIR --image SRC.png --instruction TEXT [--lora DIR] [--steps N]
//!               [--guidance G] [--seed S | --latents FILE.safetensors] [--height H --width W]
//!               [--sampler euler|dpm2] [--save-latents FILE] [--device auto|cpu|cuda]
//!               --out OUT.png
//! ```
//!
//! Exit codes: 0 ok · 2 bad command line · 3 an input (model, adapter, image, latents) is
//! missing or wrong — the message names the file and, for weights, the tensor key · 5 CUDA
//! asked for but not available.

use crate::edit::{EditSettings, Noise, edit, load_lora};
use crate::models::checkpoint::{read_safetensors, write_safetensors};
use crate::sampling::SamplerKind;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Extension};
pub use cocoflow_tasks::cli::edit::*;
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// The `edit` subcommand.
pub fn extension() -> Extension {
    Extension {
        command: EditArgs::command(),
        run: run_edit,
    }
}

fn run_edit(matches: &ArgMatches) -> i32 {
    let args = match EditArgs::from_arg_matches(matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => {
            eprintln!("error: `--device cuda` but CUDA is not available");
            return EXIT_ENVIRONMENT;
        }
        other => {
            eprintln!("error: `--device` is cpu, cuda or auto, got `{other}`");
            return EXIT_USAGE;
        }
    };
    match run(&args, device) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}

fn run(args: &EditArgs, device: Device) -> Result<(), String> {
    let noise = match &args.latents {
        None => Noise::Seed(args.seed),
        Some(p) => {
            let t = read_safetensors(p).map_err(|e| e.to_string())?;
            if t.len() != 1 {
                return Err(format!(
                    "`{}` must hold one tensor, it holds {:?}",
                    p.display(),
                    t.keys().collect::<Vec<_>>()
                ));
            }
            Noise::Latents(t.into_values().next().expect("one"))
        }
    };
    let image = crate::imageio::tensor::load_rgb(&args.image)
        .map_err(|e| format!("`{}`: {e}", args.image.display()))?;
    let mut policy = crate::models::open(&args.model, device).map_err(|e| e.to_string())?;
    if let Some(dir) = &args.lora {
        load_lora(&mut *policy, dir).map_err(|e| format!("`--lora`: {e}"))?;
    }
    let out = edit(
        &*policy,
        &EditSettings {
            image: &image,
            instruction: &args.instruction,
            height: args.height,
            width: args.width,
            steps: args.steps as usize,
            guidance: args.guidance,
            sampler: match args.sampler {
                Solver::Euler => SamplerKind::Euler,
                Solver::Dpm2 => SamplerKind::Dpm2,
            },
            noise,
        },
    )
    .map_err(|e| e.to_string())?;
    crate::imageio::tensor::save_rgb(&args.out, &out.image)
        .map_err(|e| format!("`{}`: {e}", args.out.display()))?;
    if let Some(p) = &args.save_latents {
        let m: BTreeMap<String, Tensor> = BTreeMap::from([("latents".to_string(), out.latents)]);
        write_safetensors(p, &m).map_err(|e| e.to_string())?;
    }
    eprintln!(
        "{}: {} ({}) → {}",
        policy.backend(),
        args.image.display(),
        args.instruction,
        args.out.display()
    );
    Ok(())
}
