//! `cocoflow score` (masked PSNR, SSIM and r_sim of image files) and `cocoflow bench-metrics`.
//!
//! ```text
//! cocoflow score --source a.png --edited b.png --mask m.png [--mask-polarity edit|keep] [--json]
//!                [--w-s 0.5] [--tau-db 40]
//! cocoflow score --dir D [--mask-polarity edit|keep] [--json]     # <key>_SRCIMG / <key> / <key>_mask
//! cocoflow bench-metrics [--batch 8] [--size 512] [--repeat 3] [--json]
//! ```
//!
//! Masks: white = grey ≥ 128. `--mask-polarity edit` (default, like dataset manifests): white
//! is the edited region and the metrics run over the rest; `keep`: white is the kept region
//! (CoCoEdit's published masks). PNG and JPEG; grey images score like one channel. An empty
//! keep region is reported as undefined (exit 0); in folder mode means are over the defined
//! samples. Exit codes: 0 ok · 2 bad command line · 3 an input file is missing, unreadable or
//! of the wrong size (folder mode: after printing every other key) · 5 the benchmark's NumPy
//! baseline could not run. The library side is [`crate::metrics::files`] and
//! [`crate::metrics::bench`].

use crate::data::MaskPolarity;
use crate::metrics::MetricsConfig;
use crate::metrics::bench::{BenchConfig, run_bench};
use crate::metrics::files::{score_dir, score_files};
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Extension};
pub use cocoflow_tasks::cli::score::*;

/// The `score` subcommand.
pub fn extension() -> Extension {
    Extension {
        command: ScoreArgs::command(),
        run: run_score,
    }
}

fn run_score(matches: &ArgMatches) -> i32 {
    let args = match ScoreArgs::from_arg_matches(matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    if !(0.0..=1.0).contains(&args.w_s) {
        eprintln!("error: `--w-s` must be in [0, 1], got {}", args.w_s);
        return EXIT_USAGE;
    }
    if !(args.tau_db.is_finite() && args.tau_db > 0.0) {
        eprintln!(
            "error: `--tau-db` must be a number of dB > 0, got {}",
            args.tau_db
        );
        return EXIT_USAGE;
    }
    let cfg = MetricsConfig {
        w_s: args.w_s,
        tau_db: args.tau_db,
        ..MetricsConfig::default()
    };
    let polarity = match args.mask_polarity {
        Polarity::Edit => MaskPolarity::Edit,
        Polarity::Keep => MaskPolarity::Keep,
    };
    let print = |json: serde_json::Value, text: String| {
        if args.json {
            println!("{json}");
        } else {
            print!("{text}");
        }
    };
    if let Some(dir) = &args.dir {
        return match score_dir(dir, polarity, &cfg) {
            Ok(s) => {
                print(s.to_json(), s.to_text());
                if s.failed > 0 { EXIT_INVALID } else { EXIT_OK }
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_INVALID
            }
        };
    }
    let (Some(source), Some(edited), Some(mask)) = (&args.source, &args.edited, &args.mask) else {
        eprintln!("error: give `--source`, `--edited` and `--mask`, or `--dir`");
        return EXIT_USAGE;
    };
    match score_files(source, edited, mask, polarity, &cfg) {
        Ok(s) => {
            print(s.to_json(), s.to_text(&cfg));
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}

/// The `bench-metrics` subcommand.
pub fn bench_extension() -> Extension {
    Extension {
        command: BenchArgs::command(),
        run: run_bench_metrics,
    }
}

fn run_bench_metrics(matches: &ArgMatches) -> i32 {
    let args = match BenchArgs::from_arg_matches(matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return EXIT_USAGE;
        }
    };
    let cfg = BenchConfig {
        batch: args.batch,
        size: args.size,
        repeat: args.repeat,
        python: args.python,
        script: args.script,
    };
    let report = run_bench(&cfg);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    match &report.numpy {
        Ok(_) => EXIT_OK,
        Err(e) => {
            eprintln!("error: the NumPy baseline did not run: {e}");
            EXIT_ENVIRONMENT
        }
    }
}
