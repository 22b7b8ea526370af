//! The engine's built-in task kinds: `noop` (benchmarks, tests, joins) and `shell`
//! (existing scripts as DAG tasks).

pub mod child;
pub mod noop;
pub mod shell;

pub fn register(r: &mut crate::kind::Registry) {
    r.register_kind(noop::Noop, noop::Noop::run);
    r.register_kind(shell::Shell, shell::Shell::run);
}
