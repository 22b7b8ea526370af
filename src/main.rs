//! The `cocoflow` binary: the engine's command line with every task kind and the
//! task-level commands (`judge serve`, `segment serve`, `score`, `bench-metrics`).

fn main() {
    let mut registry = cocoflow_engine::kind::Registry::with_builtins();
    cocoflow_tasks::register(&mut registry);
    std::process::exit(cocoflow_engine::cli::main_with_extensions(
        registry,
        cocoflow_tasks::cli::extensions(),
    ));
}
