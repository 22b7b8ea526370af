//! The plain layers the FLUX components are built from, as variables of an `nn::VarStore`
//! named like the PyTorch modules' state-dict keys (`<path>.weight`, `<path>.bias`).
//! Variables start as zeros of the component's weight kind, are not trainable, and are
//! filled from a checkpoint ([`super::weights::Checkpoint`]). Linear layers are
//! [`LoraLinear`]s, so LoRA adapters can be added to any of them later.
//! The text encoders' [`Activation`]s (named by their configs' `hidden_act`) are here too.

use super::super::error::ModelError;
use super::super::lora::LoraLinear;
use std::collections::BTreeMap;
use tch::{Kind, Tensor, nn};

/// A non-trainable variable `p.name` of `dims` and `kind`, zero until loaded.
pub fn var(p: &nn::Path, name: &str, dims: &[i64], kind: Kind) -> Tensor {
    p.add(name, Tensor::zeros(dims, (kind, p.device())), false)
}

/// `torch.nn.Linear(in_dim, out_dim, bias)` at `p`: `weight (out, in)`, `bias (out,)`.
pub fn linear(p: &nn::Path, in_dim: i64, out_dim: i64, bias: bool, kind: Kind) -> LoraLinear {
    LoraLinear {
        path: p.components().collect::<Vec<_>>().join("."),
        weight: var(p, "weight", &[out_dim, in_dim], kind),
        bias: bias.then(|| var(p, "bias", &[out_dim], kind)),
        in_dim,
        out_dim,
        adapters: BTreeMap::new(),
    }
}

/// `torch.nn.Conv2d(in, out, k, stride, padding)` with bias.
#[derive(Debug)]
pub struct Conv2d {
    /// `(out, in, k, k)`
    pub weight: Tensor,
    pub bias: Tensor,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    pub fn new(
        p: &nn::Path,
        in_ch: i64,
        out_ch: i64,
        k: i64,
        stride: i64,
        padding: i64,
        kind: Kind,
    ) -> Conv2d {
        Conv2d {
            weight: var(p, "weight", &[out_ch, in_ch, k, k], kind),
            bias: var(p, "bias", &[out_ch], kind),
            stride,
            padding,
        }
    }

    /// `(B, in, H, W)` → `(B, out, H', W')`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.weight,
            Some(&self.bias),
            [self.stride],
            [self.padding],
            [1],
            1,
        )
    }
}

/// `torch.nn.GroupNorm(groups, channels, eps, affine=True)`.
#[derive(Debug)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: i64,
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(p: &nn::Path, groups: i64, channels: i64, eps: f64, kind: Kind) -> GroupNorm {
        GroupNorm {
            weight: var(p, "weight", &[channels], kind),
            bias: var(p, "bias", &[channels], kind),
            groups,
            eps,
        }
    }

    /// `(B, C, ...)` → same shape.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            false,
        )
    }
}

/// `torch.nn.LayerNorm(dim, eps)` with affine weight and bias over the last dimension.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(p: &nn::Path, dim: i64, eps: f64, kind: Kind) -> LayerNorm {
        LayerNorm {
            weight: var(p, "weight", &[dim], kind),
            bias: var(p, "bias", &[dim], kind),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let d = self.weight.size()[0];
        x.layer_norm([d], Some(&self.weight), Some(&self.bias), self.eps, false)
    }
}

/// LayerNorm without affine parameters over the last dimension (diffusers'
/// `nn.LayerNorm(dim, elementwise_affine=False, eps)`).
pub fn layer_norm_plain(x: &Tensor, eps: f64) -> Tensor {
    let d = *x.size().last().expect("non-scalar");
    x.layer_norm([d], None::<Tensor>, None::<Tensor>, eps, false)
}

/// `torch.nn.Embedding(n, dim)`: `weight (n, dim)`.
#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(p: &nn::Path, n: i64, dim: i64, kind: Kind) -> Embedding {
        Embedding {
            weight: var(p, "weight", &[n, dim], kind),
        }
    }

    /// int64 ids `(...)` → `(..., dim)`
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }
}

/// A variable store on `device` whose new variables default to `kind`.
pub fn var_store(device: tch::Device, kind: Kind) -> nn::VarStore {
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(kind);
    vs
}

/// Checks that `kind` is a float kind the components can hold weights in.
pub fn check_weight_kind(kind: Kind) -> Result<(), super::super::error::ModelError> {
    match kind {
        Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double => Ok(()),
        other => Err(super::super::error::ModelError::InvalidConfig(format!(
            "weights must be a float kind, got {other:?}"
        ))),
    }
}

/// The activations the text encoders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(1.702·x)`.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// Tanh-approximated GELU written out as transformers' `NewGELUActivation` does
    /// (`gelu_new`, T5's): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, op by op (it
    /// rounds differently from the fused kernel in half precision).
    GeluNew,
    /// The fused tanh-approximated GELU (`gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
    Silu,
}

pub fn activation(name: &str) -> Result<Activation, ModelError> {
    Ok(match name {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::Gelu,
        "gelu_new" => Activation::GeluNew,
        "gelu_pytorch_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => {
            return Err(ModelError::InvalidConfig(format!(
                "unsupported activation `{other}`"
            )));
        }
    })
}

impl Activation {
    pub fn forward(self, x: &tch::Tensor) -> tch::Tensor {
        match self {
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::Gelu => x.gelu("none"),
            Activation::GeluNew => {
                let inner =
                    (x + x.pow_tensor_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
                (x * 0.5) * (inner.tanh() + 1.0)
            }
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}
