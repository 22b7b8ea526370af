//! The engine's built-in task kinds: `noop` (benchmarks, tests, joins) and `shell`
//! (existing scripts as DAG tasks).

pub mod noop;
pub mod shell;

pub fn register(r: &mut crate::kind::Registry) {
    r.register(noop::Noop);
    r.register(shell::Shell);
}
