//! The two block types of FLUX (diffusers' `FluxTransformerBlock` and
//! `FluxSingleTransformerBlock`), both adaLN-Zero modulated by `temb`.
//!
//! - Double-stream (`transformer_blocks.N`): image and text keep separate weights
//!   (`norm1`/`norm1_context`, `ff`/`ff_context`) and meet in one joint attention.
//! - Single-stream (`single_transformer_blocks.N`): one sequence `[text; image]`, attention
//!   and a GELU MLP in parallel, `proj_out` over their concatenation, one gate.

use super::super::lora::LoraLinear;
use super::attention::FluxAttention;
use super::layers::{layer_norm_plain, linear};
use super::normalization::{AdaLayerNormZero, AdaLayerNormZeroSingle, MlpModulation, NORM_EPS};
use tch::{Kind, Tensor, nn};

/// Rotary cosines and sines over the whole `[text; image]` sequence, each `(L + N, head_dim)`.
pub type Rope = (Tensor, Tensor);

/// float16 states are clipped to ±65504 as diffusers does (no-op for other kinds).
fn clip_half(x: Tensor) -> Tensor {
    if x.kind() == Kind::Half {
        x.clamp(-65504.0, 65504.0)
    } else {
        x
    }
}

/// diffusers' `FeedForward(dim, dim_out=dim, activation_fn="gelu-approximate")`:
/// `net.0.proj` (dim → 4·dim), GELU(tanh), `net.1` dropout, `net.2` (4·dim → dim).
#[derive(Debug)]
pub struct FeedForward {
    pub proj: LoraLinear,
    pub out: LoraLinear,
}

impl FeedForward {
    pub fn new(p: &nn::Path, dim: i64, kind: Kind) -> Self {
        let net = p / "net";
        FeedForward {
            proj: linear(&(&net / 0 / "proj"), dim, 4 * dim, true, kind),
            out: linear(&(&net / 2), 4 * dim, dim, true, kind),
        }
    }

    pub fn forward(&self, x: &Tensor, adapter: Option<&str>) -> Tensor {
        self.out
            .forward(&self.proj.forward(x, adapter).gelu("tanh"), adapter)
    }
}

#[derive(Debug)]
pub struct FluxTransformerBlock {
    pub norm1: AdaLayerNormZero,
    pub norm1_context: AdaLayerNormZero,
    pub attn: FluxAttention,
    pub ff: FeedForward,
    pub ff_context: FeedForward,
}

impl FluxTransformerBlock {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, head_dim: i64, kind: Kind) -> Self {
        FluxTransformerBlock {
            norm1: AdaLayerNormZero::new(&(p / "norm1"), dim, kind),
            norm1_context: AdaLayerNormZero::new(&(p / "norm1_context"), dim, kind),
            attn: FluxAttention::new(&(p / "attn"), dim, heads, head_dim, true, kind),
            ff: FeedForward::new(&(p / "ff"), dim, kind),
            ff_context: FeedForward::new(&(p / "ff_context"), dim, kind),
        }
    }

    /// One stream after attention: gated residual, then the modulated, gated MLP.
    fn mlp_half(
        x: &Tensor,
        attn_out: &Tensor,
        m: &MlpModulation,
        ff: &FeedForward,
        adapter: Option<&str>,
    ) -> Tensor {
        let x = x + m.gate_msa.unsqueeze(1) * attn_out;
        let n = layer_norm_plain(&x, NORM_EPS) * (m.scale_mlp.unsqueeze(1) + 1.0)
            + m.shift_mlp.unsqueeze(1);
        &x + m.gate_mlp.unsqueeze(1) * ff.forward(&n, adapter)
    }

    /// `img (B, N, dim)`, `txt (B, L, dim)`, `temb (B, dim)` → `(img, txt)`.
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        temb: &Tensor,
        rope: &Rope,
        adapter: Option<&str>,
    ) -> (Tensor, Tensor) {
        let (img_n, img_m) = self.norm1.forward(img, temb, adapter);
        let (txt_n, txt_m) = self.norm1_context.forward(txt, temb, adapter);
        let (img_a, txt_a) = self.attn.forward_joint(&img_n, &txt_n, rope, adapter);
        let img = Self::mlp_half(img, &img_a, &img_m, &self.ff, adapter);
        let txt = Self::mlp_half(txt, &txt_a, &txt_m, &self.ff_context, adapter);
        (img, clip_half(txt))
    }
}

#[derive(Debug)]
pub struct FluxSingleTransformerBlock {
    pub norm: AdaLayerNormZeroSingle,
    /// dim → 4·dim
    pub proj_mlp: LoraLinear,
    /// dim + 4·dim → dim
    pub proj_out: LoraLinear,
    pub attn: FluxAttention,
}

impl FluxSingleTransformerBlock {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, head_dim: i64, kind: Kind) -> Self {
        let mlp = 4 * dim;
        FluxSingleTransformerBlock {
            norm: AdaLayerNormZeroSingle::new(&(p / "norm"), dim, kind),
            proj_mlp: linear(&(p / "proj_mlp"), dim, mlp, true, kind),
            proj_out: linear(&(p / "proj_out"), heads * head_dim + mlp, dim, true, kind),
            attn: FluxAttention::new(&(p / "attn"), dim, heads, head_dim, false, kind),
        }
    }

    /// Same interface as the double-stream block: `[txt; img]` is one sequence inside.
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        temb: &Tensor,
        rope: &Rope,
        adapter: Option<&str>,
    ) -> (Tensor, Tensor) {
        let l = txt.size()[1];
        let n = img.size()[1];
        let x = Tensor::cat(&[txt, img], 1); // (B, L + N, dim)
        let (xn, gate) = self.norm.forward(&x, temb, adapter);
        let mlp = self.proj_mlp.forward(&xn, adapter).gelu("tanh");
        let attn = self.attn.forward_single(&xn, rope, adapter);
        let y = self
            .proj_out
            .forward(&Tensor::cat(&[attn, mlp], 2), adapter);
        let x = clip_half(&x + gate.unsqueeze(1) * y);
        (x.narrow(1, l, n), x.narrow(1, 0, l))
    }
}

/// Either block type, so the model can run its blocks as one list.
#[derive(Debug)]
pub enum Block {
    Double(Box<FluxTransformerBlock>),
    Single(Box<FluxSingleTransformerBlock>),
}

impl Block {
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        temb: &Tensor,
        rope: &Rope,
        adapter: Option<&str>,
    ) -> (Tensor, Tensor) {
        match self {
            Block::Double(b) => b.forward(img, txt, temb, rope, adapter),
            Block::Single(b) => b.forward(img, txt, temb, rope, adapter),
        }
    }

    pub fn attention(&self) -> &FluxAttention {
        match self {
            Block::Double(b) => &b.attn,
            Block::Single(b) => &b.attn,
        }
    }

    pub fn attention_mut(&mut self) -> &mut FluxAttention {
        match self {
            Block::Double(b) => &mut b.attn,
            Block::Single(b) => &mut b.attn,
        }
    }
}
