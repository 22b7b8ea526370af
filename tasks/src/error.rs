//! Errors of this crate's libraries as task errors: each converts into the engine's
//! [`TaskError`] with `?` (its message kept, its type kept as the source), so a kind's `run`
//! needs no `map_err` at the seams. Bad params are [`crate::kinds::bad`]'s.

use cocoflow_engine::kind::TaskError;

/// `impl From<E> for TaskError` for library error types: the task fails with `E`'s message
/// and `E` kept as the error (`TaskError::Other`). `cocoflow_torch` uses it for its own.
#[macro_export]
macro_rules! task_errors {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for cocoflow_engine::kind::TaskError {
            fn from(e: $t) -> Self {
                cocoflow_engine::kind::TaskError::Other(Box::new(e))
            }
        })*
    };
}

task_errors!(
    crate::data::manifest::DataError,
    crate::imageio::ImageError,
    crate::judge::JudgeError,
    crate::segment::SegmentError,
    crate::synth::judge::RuleError,
);

/// A task failure with this message (for errors that are only text).
pub fn fail(e: impl std::fmt::Display) -> TaskError {
    TaskError::Failed(e.to_string())
}
