//! The engine alone (built-in kinds only): what `cargo test -p cocoflow-engine` drives,
//! with no libtorch.

fn main() {
    std::process::exit(cocoflow_engine::cli::main_with(
        cocoflow_engine::kind::Registry::with_builtins(),
    ));
}
