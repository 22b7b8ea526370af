//! Qwen-Image's joint attention (diffusers' `Attention` with `QwenDoubleStreamAttnProcessor2_0`):
//! image and text streams have their own q/k/v projections (`to_q`, ... and the text twins
//! `add_q_proj`, ...), per-head RMSNorm of q and k (eps 1e-6), RoPE on both streams, then one
//! softmax over the sequence `[text; image]`, with padded text tokens masked out as keys.
//!
//! Every projection is a [`LoraLinear`] named as PEFT targets it (`attn.to_q`,
//! `attn.to_out.0`, `attn.add_q_proj`, `attn.to_add_out`, ...).

use super::super::flux_kontext::layers::{linear, var};
use super::super::lora::LoraLinear;
use super::layers::rms_norm_diffusers;
use super::rope::apply_rope;
use tch::{Kind, Tensor, nn};

/// RMSNorm eps of the q/k norms.
const QK_EPS: f64 = 1e-6;

#[derive(Debug)]
pub struct QwenAttention {
    pub heads: i64,
    pub head_dim: i64,
    pub to_q: LoraLinear,
    pub to_k: LoraLinear,
    pub to_v: LoraLinear,
    /// `to_out.0` (diffusers' `to_out` is `[Linear, Dropout]`).
    pub to_out: LoraLinear,
    pub add_q_proj: LoraLinear,
    pub add_k_proj: LoraLinear,
    pub add_v_proj: LoraLinear,
    pub to_add_out: LoraLinear,
    /// RMSNorm weights `(head_dim,)`.
    pub norm_q: Tensor,
    pub norm_k: Tensor,
    pub norm_added_q: Tensor,
    pub norm_added_k: Tensor,
}

impl QwenAttention {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, head_dim: i64, kind: Kind) -> Self {
        let inner = heads * head_dim;
        let lin = |name: &str, i: i64, o: i64| linear(&(p / name), i, o, true, kind);
        let norm = |name: &str| var(&(p / name), "weight", &[head_dim], kind);
        QwenAttention {
            heads,
            head_dim,
            to_q: lin("to_q", dim, inner),
            to_k: lin("to_k", dim, inner),
            to_v: lin("to_v", dim, inner),
            to_out: linear(&(p / "to_out" / 0), inner, dim, true, kind),
            add_q_proj: lin("add_q_proj", dim, inner),
            add_k_proj: lin("add_k_proj", dim, inner),
            add_v_proj: lin("add_v_proj", dim, inner),
            to_add_out: lin("to_add_out", inner, dim),
            norm_q: norm("norm_q"),
            norm_k: norm("norm_k"),
            norm_added_q: norm("norm_added_q"),
            norm_added_k: norm("norm_added_k"),
        }
    }

    /// Every linear layer, in state-dict order (LoRA bookkeeping).
    pub fn projections(&self) -> Vec<&LoraLinear> {
        vec![
            &self.to_q,
            &self.to_k,
            &self.to_v,
            &self.to_out,
            &self.add_q_proj,
            &self.add_k_proj,
            &self.add_v_proj,
            &self.to_add_out,
        ]
    }

    pub fn projections_mut(&mut self) -> Vec<&mut LoraLinear> {
        vec![
            &mut self.to_q,
            &mut self.to_k,
            &mut self.to_v,
            &mut self.to_out,
            &mut self.add_q_proj,
            &mut self.add_k_proj,
            &mut self.add_v_proj,
            &mut self.to_add_out,
        ]
    }

    /// `(B, n, heads·head_dim)` → `(B, n, heads, head_dim)`, RMS-normalised with `norm`.
    fn heads_of(&self, x: Tensor, norm: Option<&Tensor>) -> Tensor {
        let (b, n, _) = x.size3().expect("(B, n, inner)");
        let x = x.view([b, n, self.heads, self.head_dim]);
        match norm {
            Some(w) => rms_norm_diffusers(&x, w, QK_EPS),
            None => x,
        }
    }

    /// `img (B, N, dim)`, `txt (B, L, dim)`; RoPE angles of the image tokens `(N, D/2)` and
    /// the text tokens `(L, D/2)`; `mask`: `(B, 1, 1, L + N)` bool (true = attend) or `None`.
    /// Returns `(img_out (B, N, dim), txt_out (B, L, dim))`.
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        rope: (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        adapter: Option<&str>,
    ) -> (Tensor, Tensor) {
        let q = self.heads_of(self.to_q.forward(img, adapter), Some(&self.norm_q));
        let k = self.heads_of(self.to_k.forward(img, adapter), Some(&self.norm_k));
        let v = self.heads_of(self.to_v.forward(img, adapter), None);
        let cq = self.heads_of(
            self.add_q_proj.forward(txt, adapter),
            Some(&self.norm_added_q),
        );
        let ck = self.heads_of(
            self.add_k_proj.forward(txt, adapter),
            Some(&self.norm_added_k),
        );
        let cv = self.heads_of(self.add_v_proj.forward(txt, adapter), None);
        let (img_angles, txt_angles) = rope;
        let (q, k) = (apply_rope(&q, img_angles), apply_rope(&k, img_angles));
        let (cq, ck) = (apply_rope(&cq, txt_angles), apply_rope(&ck, txt_angles));
        let l = txt.size()[1];
        let n = img.size()[1];
        let kind = q.kind();
        // [text; image] along the sequence, heads first: (B, heads, L + N, head_dim)
        let joint = |a: Tensor, b: Tensor| Tensor::cat(&[a, b], 1).transpose(1, 2);
        let o = Tensor::scaled_dot_product_attention(
            &joint(cq, q),
            &joint(ck, k),
            &joint(cv, v),
            mask,
            0.0,
            false,
            None,
            false,
        )
        .transpose(1, 2); // (B, L + N, heads, head_dim)
        let (b, s) = (o.size()[0], o.size()[1]);
        let o = o.reshape([b, s, self.heads * self.head_dim]).to_kind(kind);
        let txt_o = o.narrow(1, 0, l).contiguous();
        let img_o = o.narrow(1, l, n).contiguous();
        (
            self.to_out.forward(&img_o, adapter),
            self.to_add_out.forward(&txt_o, adapter),
        )
    }
}
