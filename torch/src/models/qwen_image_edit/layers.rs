//! The layers Qwen-Image's components add to the FLUX ones ([`super::super::flux_kontext::layers`]):
//! the two RMSNorm variants (diffusers' and transformers'), the timestep projection and the
//! timestep MLP. Variables are named as the state dicts (`<path>.weight`).

use super::super::flux_kontext::layers::var;
use tch::{Kind, Tensor, nn};

/// diffusers' `RMSNorm` over the last dimension: `x · rsqrt(mean(x²) + eps)` with the mean in
/// float32, then (half-precision weights: after casting to them) `· weight`.
pub fn rms_norm_diffusers(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let var = x
        .to_kind(Kind::Float)
        .square()
        .mean_dim(-1, true, Kind::Float);
    let y = x * (var + eps).rsqrt();
    match weight.kind() {
        Kind::Half | Kind::BFloat16 => y.to_kind(weight.kind()) * weight,
        _ => y * weight,
    }
}

/// transformers' Qwen2 `RMSNorm` (`Qwen2_5_VLRMSNorm`): normalised in float32, cast back to
/// the input's kind, then `weight ·`.
#[derive(Debug)]
pub struct RmsNorm {
    /// `(dim,)`
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(p: &nn::Path, dim: i64, eps: f64, kind: Kind) -> RmsNorm {
        RmsNorm {
            weight: var(p, "weight", &[dim], kind),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = x.to_kind(Kind::Float);
        let var = h.square().mean_dim(-1, true, Kind::Float);
        &self.weight * (h * (var + self.eps).rsqrt()).to_kind(x.kind())
    }
}

/// Channels of the sinusoidal timestep projection (`Timesteps(num_channels=256)`).
pub const TIME_PROJ_DIM: i64 = 256;

/// diffusers' `Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0, scale=1000)`:
/// `[cos(1000·(t·f_k)), sin(1000·(t·f_k))]`, `f_k = exp(−ln(10000)·k / 128)`, in float32 and
/// in diffusers' order of operations (σ times the frequency, then the scale).
/// `t (B,)` → `(B, 256)`.
pub fn timestep_proj(t: &Tensor) -> Tensor {
    let half = TIME_PROJ_DIM / 2;
    let exponent =
        Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln())) / half as f64;
    let args = (t.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0)) * 1000.0;
    Tensor::cat(&[args.cos(), args.sin()], -1)
}
