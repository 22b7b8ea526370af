//! Input checks of the pixel metrics, and the mask rule that makes `keep_mask` binary.
//!
//! - `source`, `edited`: floating-point `(B, C, H, W)`, C ∈ {1, 3}, same shape and device,
//!   finite, values in [0, 1] give or take [`RANGE_TOLERANCE`] (used as they are, not clamped).
//! - `keep_mask`: `(B, 1, H, W)` on the same device, any real or boolean kind, values in [0, 1]
//!   (same tolerance); made binary by [`MaskRule`]: `Threshold` keeps a pixel whose value is
//!   ≥ 0.5, `Strict` refuses anything but 0 and 1.

use tch::{Kind, Tensor};

use super::error::{Input, MetricsError};
use super::{MaskRule, MetricsConfig};

/// How far image and mask values may stray outside [0, 1] (float rounding after resampling or
/// colour conversion): 1e−6. Such values are used as they are.
pub const RANGE_TOLERANCE: f64 = 1e-6;

/// Inputs that passed the checks.
pub(crate) struct Checked {
    /// `(B, 1, H, W)` bool: the binary keep mask K.
    pub keep: Tensor,
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

pub(crate) fn check_config(cfg: &MetricsConfig) -> Result<(), MetricsError> {
    if !(0.0..=1.0).contains(&cfg.w_s) {
        return Err(MetricsError::Config {
            field: "w_s",
            value: cfg.w_s,
            expected: "in [0, 1]",
        });
    }
    if !(cfg.tau_db.is_finite() && cfg.tau_db > 0.0) {
        return Err(MetricsError::Config {
            field: "tau_db",
            value: cfg.tau_db,
            expected: "a finite number of dB > 0",
        });
    }
    Ok(())
}

fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}

/// (min, max) as f64; NaN when the tensor holds a NaN.
fn min_max(t: &Tensor) -> (f64, f64) {
    let t = if is_float(t.kind()) {
        t.shallow_clone()
    } else {
        t.to_kind(Kind::Float)
    };
    let (lo, hi) = t.aminmax(None, false);
    (lo.double_value(&[]), hi.double_value(&[]))
}

fn check_values(t: &Tensor, input: Input) -> Result<(), MetricsError> {
    let (min, max) = min_max(t);
    if !(min.is_finite() && max.is_finite()) {
        return Err(MetricsError::NotFinite { input });
    }
    if min < -RANGE_TOLERANCE || max > 1.0 + RANGE_TOLERANCE {
        let hint = if max > 1.0 + RANGE_TOLERANCE && max <= 255.0 && min >= 0.0 {
            ": 8-bit values? divide by 255"
        } else if (-1.0 - RANGE_TOLERANCE..0.0).contains(&min) && max <= 1.0 + RANGE_TOLERANCE {
            ": values in [-1, 1]? map them with (x + 1) / 2"
        } else {
            ""
        };
        return Err(MetricsError::Range {
            input,
            min,
            max,
            hint,
        });
    }
    Ok(())
}

fn check_image(t: &Tensor, input: Input) -> Result<(), MetricsError> {
    let shape = t.size();
    if shape.len() != 4 {
        return Err(MetricsError::Shape {
            input,
            expected: "(B, C, H, W)",
            shape,
        });
    }
    if !is_float(t.kind()) {
        return Err(MetricsError::Kind {
            input,
            kind: format!("{:?}", t.kind()),
        });
    }
    if shape[1] != 1 && shape[1] != 3 {
        return Err(MetricsError::Channels {
            input,
            channels: shape[1],
        });
    }
    if shape.contains(&0) {
        return Err(MetricsError::Empty { input, shape });
    }
    Ok(())
}

fn check_device(t: &Tensor, source: &Tensor, input: Input) -> Result<(), MetricsError> {
    if t.device() != source.device() {
        return Err(MetricsError::Device {
            input,
            device: format!("{:?}", t.device()),
            source_device: format!("{:?}", source.device()),
        });
    }
    Ok(())
}

/// Checks the three inputs and the config; returns the binary keep mask and the sizes.
pub(crate) fn check(
    source: &Tensor,
    edited: &Tensor,
    keep_mask: &Tensor,
    cfg: &MetricsConfig,
) -> Result<Checked, MetricsError> {
    check_config(cfg)?;
    check_image(source, Input::Source)?;
    let src = source.size();
    let ed = edited.size();
    if ed.len() != 4 {
        return Err(MetricsError::Shape {
            input: Input::Edited,
            expected: "(B, C, H, W)",
            shape: ed,
        });
    }
    if ed != src {
        return Err(MetricsError::Mismatch {
            input: Input::Edited,
            shape: ed,
            source_shape: src,
            expected: "edited must have the same (B, C, H, W)",
        });
    }
    check_image(edited, Input::Edited)?;
    check_device(edited, source, Input::Edited)?;
    let km = keep_mask.size();
    if km.len() != 4 {
        return Err(MetricsError::Shape {
            input: Input::KeepMask,
            expected: "(B, 1, H, W)",
            shape: km,
        });
    }
    if km[0] != src[0] || km[1] != 1 || km[2] != src[2] || km[3] != src[3] {
        return Err(MetricsError::Mismatch {
            input: Input::KeepMask,
            shape: km,
            source_shape: src,
            expected: "keep_mask must be (B, 1, H, W)",
        });
    }
    if matches!(
        keep_mask.kind(),
        Kind::ComplexHalf | Kind::ComplexFloat | Kind::ComplexDouble
    ) {
        return Err(MetricsError::Kind {
            input: Input::KeepMask,
            kind: format!("{:?}", keep_mask.kind()),
        });
    }
    check_device(keep_mask, source, Input::KeepMask)?;

    check_values(source, Input::Source)?;
    check_values(edited, Input::Edited)?;
    let keep = if keep_mask.kind() == Kind::Bool {
        keep_mask.shallow_clone()
    } else {
        check_values(keep_mask, Input::KeepMask)?;
        if cfg.mask_rule == MaskRule::Strict {
            let other = keep_mask.ne(0.0).logical_and(&keep_mask.ne(1.0));
            if other.any().int64_value(&[]) != 0 {
                let value = keep_mask.masked_select(&other).double_value(&[0]);
                return Err(MetricsError::NonBinaryMask { value });
            }
        }
        keep_mask.ge(0.5)
    };
    Ok(Checked {
        keep,
        batch: src[0] as usize,
        channels: src[1] as usize,
        height: src[2] as usize,
        width: src[3] as usize,
    })
}
