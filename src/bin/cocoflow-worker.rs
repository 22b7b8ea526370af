//! `cocoflow-worker` — the only binary that links libtorch: it runs the task kinds that need
//! tensors, as a long-lived worker of the `workers` executor (`worker-serve`), as a one-attempt
//! process of the `subprocess` executor (`worker --job FILE`), or as a whole single-process
//! `cocoflow` (`cocoflow-worker run W.yaml` runs every task in-process; the same command line).

fn main() {
    let mut registry = cocoflow_engine::kind::Registry::with_builtins();
    cocoflow_torch::register(&mut registry);
    std::process::exit(cocoflow_engine::cli::main_with_extensions(
        registry,
        cocoflow_torch::cli::extensions(),
    ));
}
