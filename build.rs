//! Keeps `libtorch_cuda.so` in the `cocoflow-worker` binary (the only one that links libtorch) so
//! CUDA is available where there is a GPU.
//!
//! Nothing in the binary uses a symbol of libtorch_cuda directly, so rustc's default
//! `--as-needed` drops it and libtorch never registers its CUDA backend (tch-rs issue #980).
//! Linking it with `--no-as-needed` fixes that. The flag is only emitted when the libtorch
//! being linked has libtorch_cuda.so, so a CPU-only libtorch still links. The lib dir is the
//! one torch-sys found, forwarded by cocoflow-torch's build script. Also adds that dir as an
//! absolute rpath (on top of the `$ORIGIN` ones in .cargo/config.toml).
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Where torch-sys looks; a change re-runs torch-sys and cocoflow-torch's build scripts and,
    // through them, this one. Listed for clarity.
    for var in ["LIBTORCH", "LIBTORCH_LIB", "LIBTORCH_USE_PYTORCH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let Some(lib) = env::var_os("DEP_COCOFLOW_TORCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!(
            "cargo:warning=cocoflow-torch did not report its libtorch lib dir; not linking libtorch_cuda"
        );
        return;
    };
    // Re-run when libtorch_cuda.so appears or goes (torch reinstalled, CPU <-> CUDA build).
    println!("cargo:rerun-if-changed={}", lib.display());
    let dir = lib.to_string_lossy();
    if !dir.contains(',') {
        println!("cargo:rustc-link-arg-bin=cocoflow-worker=-Wl,-rpath,{dir}");
    }
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={dir}");
        println!(
            "cargo:rustc-link-arg-bin=cocoflow-worker=-Wl,--no-as-needed,-ltorch_cuda,--as-needed"
        );
    }
}
