//! A double-stream transformer block (diffusers' `FluxTransformerBlock`): adaLN-Zero
//! modulation of both streams from the timestep + pooled-text embedding (shift, scale and
//! gate for attention and for the MLP), joint attention, GELU(tanh) MLPs.

use super::attention::JointAttention;
use super::lora::LoraLinear;
use tch::{Tensor, nn};

const LN_EPS: f64 = 1e-6;

/// LayerNorm without affine parameters over the last dimension.
pub fn layer_norm(x: &Tensor) -> Tensor {
    let d = *x.size().last().expect("non-scalar");
    x.layer_norm([d], None::<Tensor>, None::<Tensor>, LN_EPS, false)
}

/// `x·(1 + scale) + shift` with `(B, dim)` modulation broadcast over tokens.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    x * (scale.unsqueeze(1) + 1.0) + shift.unsqueeze(1)
}

/// diffusers' `FeedForward(dim, activation_fn="gelu-approximate")`: `net.0.proj`, GELU(tanh),
/// (`net.1` dropout), `net.2`.
#[derive(Debug)]
pub struct FeedForward {
    pub proj: LoraLinear,
    pub out: LoraLinear,
}

impl FeedForward {
    pub fn new(p: &nn::Path, dim: i64, inner: i64, seed: u64) -> FeedForward {
        let net = p / "net";
        FeedForward {
            proj: LoraLinear::new(&(&net / 0 / "proj"), dim, inner, true, seed),
            out: LoraLinear::new(&(&net / 2), inner, dim, true, seed),
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.out
            .forward(&self.proj.forward(x, None).gelu("tanh"), None)
    }
}

/// `norm1`/`norm1_context` (diffusers' `AdaLayerNormZero`): `linear(silu(emb))` → 6 chunks.
#[derive(Debug)]
pub struct AdaNormZero {
    pub linear: LoraLinear,
}

impl AdaNormZero {
    pub fn new(p: &nn::Path, dim: i64, seed: u64) -> AdaNormZero {
        AdaNormZero {
            linear: LoraLinear::new(&(p / "linear"), dim, 6 * dim, true, seed),
        }
    }
    /// Returns `(modulated norm(x), gate_msa, shift_mlp, scale_mlp, gate_mlp)`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> (Tensor, [Tensor; 4]) {
        let m = self.linear.forward(&emb.silu(), None).chunk(6, 1);
        let [
            shift_msa,
            scale_msa,
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
        ]: [Tensor; 6] = m.try_into().expect("6 chunks");
        (
            modulate(&layer_norm(x), &shift_msa, &scale_msa),
            [gate_msa, shift_mlp, scale_mlp, gate_mlp],
        )
    }
}

#[derive(Debug)]
pub struct TransformerBlock {
    pub norm1: AdaNormZero,
    pub norm1_context: AdaNormZero,
    pub attn: JointAttention,
    pub ff: FeedForward,
    pub ff_context: FeedForward,
}

impl TransformerBlock {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, mlp_ratio: f64, seed: u64) -> TransformerBlock {
        let inner = (dim as f64 * mlp_ratio).round() as i64;
        TransformerBlock {
            norm1: AdaNormZero::new(&(p / "norm1"), dim, seed),
            norm1_context: AdaNormZero::new(&(p / "norm1_context"), dim, seed),
            attn: JointAttention::new(&(p / "attn"), dim, heads, seed),
            ff: FeedForward::new(&(p / "ff"), dim, inner, seed),
            ff_context: FeedForward::new(&(p / "ff_context"), dim, inner, seed),
        }
    }

    /// One stream's residual updates after attention.
    fn mlp_half(x: &Tensor, attn_out: &Tensor, m: &[Tensor; 4], ff: &FeedForward) -> Tensor {
        let [gate_msa, shift_mlp, scale_mlp, gate_mlp] = m;
        let x = x + gate_msa.unsqueeze(1) * attn_out;
        let y = ff.forward(&modulate(&layer_norm(&x), shift_mlp, scale_mlp));
        &x + gate_mlp.unsqueeze(1) * y
    }

    /// `img`: `(B, N, dim)`, `txt`: `(B, L, dim)`, `emb`: `(B, dim)`, `mask`: see attention.
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        emb: &Tensor,
        mask: &Tensor,
        active: Option<&str>,
    ) -> (Tensor, Tensor) {
        let (img_n, img_m) = self.norm1.forward(img, emb);
        let (txt_n, txt_m) = self.norm1_context.forward(txt, emb);
        let (img_a, txt_a) = self.attn.forward(&img_n, &txt_n, mask, active);
        (
            Self::mlp_half(img, &img_a, &img_m, &self.ff),
            Self::mlp_half(txt, &txt_a, &txt_m, &self.ff_context),
        )
    }
}
