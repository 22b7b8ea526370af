//! The adaptive LayerNorms of FLUX (diffusers' `normalization.py`): a linear map of
//! `silu(temb)` gives per-sample shift/scale (and gates) for a LayerNorm without affine
//! parameters (eps 1e-6).

use super::super::lora::LoraLinear;
use super::layers::{layer_norm_plain, linear};
use tch::{Kind, Tensor, nn};

pub const NORM_EPS: f64 = 1e-6;

/// `x·(1 + scale) + shift`, `(B, dim)` modulation broadcast over the tokens of `x (B, n, dim)`.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    x * (scale.unsqueeze(1) + 1.0) + shift.unsqueeze(1)
}

/// `AdaLayerNormZero` (`norm1`, `norm1_context`): 6 chunks
/// `shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp`.
#[derive(Debug)]
pub struct AdaLayerNormZero {
    pub linear: LoraLinear,
}

/// What the MLP half of a double-stream block needs after attention.
#[derive(Debug)]
pub struct MlpModulation {
    pub gate_msa: Tensor,
    pub shift_mlp: Tensor,
    pub scale_mlp: Tensor,
    pub gate_mlp: Tensor,
}

impl AdaLayerNormZero {
    pub fn new(p: &nn::Path, dim: i64, kind: Kind) -> Self {
        AdaLayerNormZero {
            linear: linear(&(p / "linear"), dim, 6 * dim, true, kind),
        }
    }

    /// Returns `(LN(x)·(1 + scale_msa) + shift_msa, the rest)`.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        adapter: Option<&str>,
    ) -> (Tensor, MlpModulation) {
        let m = self.linear.forward(&temb.silu(), adapter).chunk(6, 1);
        let [
            shift_msa,
            scale_msa,
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
        ]: [Tensor; 6] = m.try_into().expect("6 chunks");
        (
            modulate(&layer_norm_plain(x, NORM_EPS), &shift_msa, &scale_msa),
            MlpModulation {
                gate_msa,
                shift_mlp,
                scale_mlp,
                gate_mlp,
            },
        )
    }
}

/// `AdaLayerNormZeroSingle` (`single_transformer_blocks.N.norm`): `shift, scale, gate`.
#[derive(Debug)]
pub struct AdaLayerNormZeroSingle {
    pub linear: LoraLinear,
}

impl AdaLayerNormZeroSingle {
    pub fn new(p: &nn::Path, dim: i64, kind: Kind) -> Self {
        AdaLayerNormZeroSingle {
            linear: linear(&(p / "linear"), dim, 3 * dim, true, kind),
        }
    }

    /// Returns `(LN(x)·(1 + scale) + shift, gate)`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, adapter: Option<&str>) -> (Tensor, Tensor) {
        let m = self.linear.forward(&temb.silu(), adapter).chunk(3, 1);
        let [shift, scale, gate]: [Tensor; 3] = m.try_into().expect("3 chunks");
        (
            modulate(&layer_norm_plain(x, NORM_EPS), &shift, &scale),
            gate,
        )
    }
}

/// `AdaLayerNormContinuous` (`norm_out`): chunks in the order `scale, shift`.
#[derive(Debug)]
pub struct AdaLayerNormContinuous {
    pub linear: LoraLinear,
}

impl AdaLayerNormContinuous {
    pub fn new(p: &nn::Path, dim: i64, kind: Kind) -> Self {
        AdaLayerNormContinuous {
            linear: linear(&(p / "linear"), dim, 2 * dim, true, kind),
        }
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, adapter: Option<&str>) -> Tensor {
        let m = self
            .linear
            .forward(&temb.silu().to_kind(x.kind()), adapter)
            .chunk(2, 1);
        modulate(&layer_norm_plain(x, NORM_EPS), &m[1], &m[0])
    }
}
