//! The task kinds, one thin file each: its params (one serde struct, defaults in its
//! `Default`), inputs, outputs and the steps it calls; the work itself lives in the topic
//! modules (`rl`, `models`, `metrics`, `curate`, `report`, ...).

pub mod synth_data;
pub mod torch_info;

use cocoflow_engine::kind::ParamError;

/// A param error at `path` (key path, e.g. `decay.rate`).
pub(crate) fn bad<T>(path: &str, message: impl Into<String>) -> Result<T, ParamError> {
    Err(ParamError {
        path: path.into(),
        message: message.into(),
    })
}
