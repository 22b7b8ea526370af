//! diffusers' `QwenImageTransformerBlock`: the MMDiT double-stream block. Image and text keep
//! separate weights (`img_mod`/`txt_mod`, `img_mlp`/`txt_mlp`) and meet in one joint attention;
//! each stream is adaLN-modulated by `temb` twice (before attention, before the MLP) with
//! `shift, scale, gate` chunks, gated residuals after both.
//!
//! `zero_cond_t` (Qwen-Image-Edit-2511): `temb` holds `2B` rows, the embeddings of the real
//! timestep and of timestep 0; image tokens with `modulate_index` 1 (the source image) take
//! the second half's modulation, the text stream always the first half's.

use super::super::flux_kontext::layers::{layer_norm_plain, linear};
use super::super::flux_kontext::transformer_blocks::FeedForward;
use super::super::lora::LoraLinear;
use super::attention::QwenAttention;
use tch::{Kind, Tensor, nn};

/// LayerNorm eps of `img_norm1/2`, `txt_norm1/2` (no affine parameters).
pub const NORM_EPS: f64 = 1e-6;

/// float16 states are clipped to ±65504 as diffusers does (no-op for other kinds).
fn clip_half(x: Tensor) -> Tensor {
    if x.kind() == Kind::Half {
        x.clamp(-65504.0, 65504.0)
    } else {
        x
    }
}

/// `Sequential(SiLU, Linear(dim, 6·dim))` (`img_mod`, `txt_mod`; the linear is `.1`).
#[derive(Debug)]
pub struct Modulation {
    pub linear: LoraLinear,
}

impl Modulation {
    pub fn new(p: &nn::Path, dim: i64, kind: Kind) -> Self {
        Modulation {
            linear: linear(&(p / 1), dim, 6 * dim, true, kind),
        }
    }

    /// `temb (B', dim)` → the two `(B', 3·dim)` halves (before attention, before the MLP).
    pub fn forward(&self, temb: &Tensor, adapter: Option<&str>) -> (Tensor, Tensor) {
        let m = self.linear.forward(&temb.silu(), adapter).chunk(2, -1);
        (m[0].shallow_clone(), m[1].shallow_clone())
    }
}

/// diffusers' `_modulate`: `x·(1 + scale) + shift` and the gate, from `(shift, scale, gate)`
/// chunks of `params (B', 3·dim)`. With `index (B, n, 1)` bool (true = the second half of a
/// `2B` batch of parameters), each token picks its half.
fn modulate(x: &Tensor, params: &Tensor, index: Option<&Tensor>) -> (Tensor, Tensor) {
    let c = params.chunk(3, -1);
    let (shift, scale, gate) = match index {
        None => (c[0].unsqueeze(1), c[1].unsqueeze(1), c[2].unsqueeze(1)),
        Some(second) => {
            let b = params.size()[0] / 2;
            // torch.where(second, t[B:], t[:B]) per token
            let pick = |t: &Tensor| {
                t.narrow(0, b, b)
                    .unsqueeze(1)
                    .where_self(second, &t.narrow(0, 0, b).unsqueeze(1))
            };
            (pick(&c[0]), pick(&c[1]), pick(&c[2]))
        }
    };
    (x * (scale + 1.0) + shift, gate)
}

#[derive(Debug)]
pub struct QwenImageTransformerBlock {
    pub img_mod: Modulation,
    pub attn: QwenAttention,
    pub img_mlp: FeedForward,
    pub txt_mod: Modulation,
    pub txt_mlp: FeedForward,
}

impl QwenImageTransformerBlock {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, head_dim: i64, kind: Kind) -> Self {
        QwenImageTransformerBlock {
            img_mod: Modulation::new(&(p / "img_mod"), dim, kind),
            attn: QwenAttention::new(&(p / "attn"), dim, heads, head_dim, kind),
            img_mlp: FeedForward::new(&(p / "img_mlp"), dim, kind),
            txt_mod: Modulation::new(&(p / "txt_mod"), dim, kind),
            txt_mlp: FeedForward::new(&(p / "txt_mlp"), dim, kind),
        }
    }

    /// Every linear layer, in state-dict order.
    pub fn linears_mut(&mut self) -> Vec<&mut LoraLinear> {
        let mut v = vec![&mut self.img_mod.linear];
        v.extend(self.attn.projections_mut());
        v.extend([&mut self.img_mlp.proj, &mut self.img_mlp.out]);
        v.push(&mut self.txt_mod.linear);
        v.extend([&mut self.txt_mlp.proj, &mut self.txt_mlp.out]);
        v
    }

    /// `img (B, N, dim)`, `txt (B, L, dim)`, `temb (B, dim)` (or `(2B, dim)` with
    /// `modulate_index (B, N, 1)` bool); RoPE angles of image and text tokens; `mask`
    /// `(B, 1, 1, L + N)` bool. Returns `(img, txt)`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        temb: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        modulate_index: Option<&Tensor>,
        adapter: Option<&str>,
    ) -> (Tensor, Tensor) {
        let (img_mod1, img_mod2) = self.img_mod.forward(temb, adapter);
        let temb_txt = match modulate_index {
            Some(_) => temb.narrow(0, 0, temb.size()[0] / 2),
            None => temb.shallow_clone(),
        };
        let (txt_mod1, txt_mod2) = self.txt_mod.forward(&temb_txt, adapter);

        let (img_in, img_gate1) =
            modulate(&layer_norm_plain(img, NORM_EPS), &img_mod1, modulate_index);
        let (txt_in, txt_gate1) = modulate(&layer_norm_plain(txt, NORM_EPS), &txt_mod1, None);
        let (img_attn, txt_attn) = self.attn.forward(&img_in, &txt_in, rope, mask, adapter);
        let img = img + img_gate1 * img_attn;
        let txt = txt + txt_gate1 * txt_attn;

        let (img_in2, img_gate2) =
            modulate(&layer_norm_plain(&img, NORM_EPS), &img_mod2, modulate_index);
        let img = &img + img_gate2 * self.img_mlp.forward(&img_in2, adapter);
        let (txt_in2, txt_gate2) = modulate(&layer_norm_plain(&txt, NORM_EPS), &txt_mod2, None);
        let txt = &txt + txt_gate2 * self.txt_mlp.forward(&txt_in2, adapter);
        (clip_half(img), clip_half(txt))
    }
}
