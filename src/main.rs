//! The `cocoflow` binary — the torch-free front end: the engine's command line, every task kind
//! (kinds that need libtorch are declared here and run in `cocoflow-worker`), and the
//! task-level commands (`judge`, `segment`; `score` and `bench-metrics` run in the worker).
//! It links no libtorch: `plan`, `status`, `gc`, `export` and shell workflows start in
//! milliseconds and work where libtorch is missing.

fn main() {
    let mut registry = cocoflow_engine::kind::Registry::with_builtins();
    cocoflow_tasks::declare(&mut registry);
    std::process::exit(cocoflow_engine::cli::main_with_extensions(
        registry,
        cocoflow_tasks::cli::front_end_extensions(),
    ));
}
