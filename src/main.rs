//! The `cocoflow` binary: the engine's command line with every task kind and the
//! task-level commands (`judge serve`, `score`, `bench-metrics`).

fn main() {
    let mut registry = cocoflow_engine::kind::Registry::with_builtins();
    cocoflow_tasks::register(&mut registry);
    let extensions = vec![
        cocoflow_tasks::judge::server::extension(),
        cocoflow_tasks::score::extension(),
        cocoflow_tasks::score::bench_extension(),
        cocoflow_tasks::segment::server::extension(),
    ];
    std::process::exit(cocoflow_engine::cli::main_with_extensions(
        registry, extensions,
    ));
}
