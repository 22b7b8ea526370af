//! Forwards where torch-sys found libtorch, and links it properly into this crate's tests.
//!
//! - `cargo:libtorch_lib=<dir>` reaches the root package's build.rs as
//!   `DEP_COCOFLOW_TORCH_LIBTORCH_LIB` (this crate has `links = "cocoflow-torch"`).
//! - `COCOFLOW_LIBTORCH_VERSION` / `COCOFLOW_LIBTORCH_HAS_CUDA`: what was linked, for
//!   `device::torch_info()` (tch has no runtime version query).
//! - Tests and examples of this crate get an rpath to that dir and keep `libtorch_cuda.so`
//!   (rustc's `--as-needed` drops it otherwise and CUDA is never available: tch-rs #980).
//! - `csrc/cuda_memory.cpp` (the CUDA caching allocator's statistics, which tch does not
//!   expose) is compiled against that libtorch's headers, as torch-sys compiles its wrapper.
use std::{env, fs, path::PathBuf};

/// The libtorch version tch 0.24.0 is written for (see torch/Cargo.toml).
const TORCH_VERSION: &str = "2.11.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "LIBTORCH",
        "LIBTORCH_LIB",
        "LIBTORCH_USE_PYTORCH",
        "LIBTORCH_BYPASS_VERSION_CHECK",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // Set by torch-sys's build script (`links = "tch"`, `cargo:libtorch_lib=...`).
    let lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report DEP_TCH_LIBTORCH_LIB"),
    );
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:libtorch_lib={}", lib.display());

    // pip wheels have torch/version.py, libtorch zips have build-version.
    let version = fs::read_to_string(lib.join("../version.py"))
        .ok()
        .and_then(|py| {
            py.lines().find_map(|l| {
                let v = l.strip_prefix("__version__ = ")?;
                Some(v.trim().trim_matches(['\'', '"']).to_owned())
            })
        })
        .or_else(|| fs::read_to_string(lib.join("../build-version")).ok())
        .map(|v| v.trim().to_owned());
    if let Some(v) = &version {
        let base = v.split('+').next().unwrap_or(v);
        if base != TORCH_VERSION && env::var_os("LIBTORCH_BYPASS_VERSION_CHECK").is_none() {
            panic!(
                "cocoflow-torch needs libtorch {TORCH_VERSION} (tch 0.24.0) but {} is {v}; \
                 run `bash scripts/setup.sh` or point LIBTORCH at torch {TORCH_VERSION}",
                lib.display()
            );
        }
        println!("cargo:rustc-env=COCOFLOW_LIBTORCH_VERSION={v}");
    }

    compile_cuda_memory(&lib);

    let has_cuda = lib.join("libtorch_cuda.so").exists();
    println!("cargo:rustc-env=COCOFLOW_LIBTORCH_HAS_CUDA={has_cuda}");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let dir = lib.to_string_lossy();
        if !dir.contains(',') {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        if has_cuda {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}

/// `csrc/cuda_memory.cpp` with the flags torch-sys uses for its own C++ (C++17, the libtorch's
/// C++11 ABI, `LIBTORCH_CXX11_ABI` as torch-sys reads it, default 1). Only c10 core headers:
/// it builds with a CPU-only libtorch as well.
fn compile_cuda_memory(lib: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/cuda_memory.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = env::var_os("LIBTORCH_INCLUDE")
        .map(|p| PathBuf::from(p).join("include"))
        .unwrap_or_else(|| lib.join("../include"));
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("csrc/cuda_memory.cpp")
        .include(include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false)
        .compile("cocoflow_cuda_memory");
}
