//! Errors of the pixel metrics: invalid inputs (`MetricsError`) and undefined results (`Undefined`).

use std::fmt;

/// Which argument an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Source,
    Edited,
    KeepMask,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::Source => "source",
            Input::Edited => "edited",
            Input::KeepMask => "keep_mask",
        })
    }
}

/// An input the metrics cannot be computed on. Nothing is computed for the whole batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A tensor does not have the rank (B, C, H, W) / (B, 1, H, W) needs.
    #[error("`{input}` must have shape {expected}, got {shape:?}")]
    Shape {
        input: Input,
        expected: &'static str,
        shape: Vec<i64>,
    },
    /// Images must be grey (1 channel) or RGB (3 channels).
    #[error("`{input}` has {channels} channels; 1 (grey) or 3 (RGB) are allowed")]
    Channels { input: Input, channels: i64 },
    /// `edited` or `keep_mask` does not match `source`.
    #[error(
        "`{input}` has shape {shape:?}, which does not match `source` {source_shape:?} ({expected})"
    )]
    Mismatch {
        input: Input,
        shape: Vec<i64>,
        source_shape: Vec<i64>,
        expected: &'static str,
    },
    /// An empty batch or an image without pixels.
    #[error("`{input}` is empty (shape {shape:?})")]
    Empty { input: Input, shape: Vec<i64> },
    /// Integer, boolean or complex tensors are refused: images are floats in [0, 1].
    #[error("`{input}` must be a floating-point tensor in [0, 1], got {kind}")]
    Kind { input: Input, kind: String },
    #[error("`{input}` is on {device} but `source` is on {source_device}")]
    Device {
        input: Input,
        device: String,
        source_device: String,
    },
    #[error("`{input}` contains NaN or infinite values")]
    NotFinite { input: Input },
    /// Values beyond [0, 1] by more than [`RANGE_TOLERANCE`](super::RANGE_TOLERANCE).
    #[error("`{input}` has values outside [0, 1] (min {min}, max {max}){hint}")]
    Range {
        input: Input,
        min: f64,
        max: f64,
        hint: &'static str,
    },
    /// A mask value strictly between 0 and 1 under [`MaskRule::Strict`](super::MaskRule::Strict).
    #[error("`keep_mask` must be binary (0 or 1) under `mask_rule: strict`, found {value}")]
    NonBinaryMask { value: f64 },
    /// The requested backend cannot run on these tensors.
    #[error("backend `{backend}` cannot run on {device} tensors")]
    Backend {
        backend: &'static str,
        device: String,
    },
    #[error("invalid metrics config: `{field}` = {value} ({expected})")]
    Config {
        field: &'static str,
        value: f64,
        expected: &'static str,
    },
}

/// Why one sample has no metric value. A caller must handle it: it is never 0 or NaN in a mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undefined {
    /// The keep mask has no pixel, so masked PSNR, SSIM and r_sim are undefined.
    #[error("the keep mask is empty: masked PSNR/SSIM are undefined")]
    EmptyKeepMask,
}
