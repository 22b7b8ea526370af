//! FLUX attention (diffusers' `FluxAttention` with `FluxAttnProcessor`): per-head RMSNorm of
//! q and k, RoPE on q and k, one softmax over the whole sequence. Double-stream blocks have
//! text-stream twins of the projections (`add_{q,k,v}_proj`, `norm_added_{q,k}`,
//! `to_add_out`) and attend over `[text; image]`; single-stream blocks (`pre_only`) have no
//! output projection (their `proj_out` mixes attention and MLP).
//!
//! Every projection is a [`LoraLinear`], named as PEFT targets them
//! (`attn.to_q`, `attn.to_out.0`, `attn.add_q_proj`, `attn.to_add_out`, ...).

use super::super::lora::LoraLinear;
use super::layers::{linear, var};
use super::rope::apply_rope;
use tch::{Kind, Tensor, nn};

/// RMSNorm eps of the q/k norms.
const QK_EPS: f64 = 1e-6;

/// The text-stream projections of a double-stream block.
#[derive(Debug)]
pub struct AddedProjections {
    pub add_q_proj: LoraLinear,
    pub add_k_proj: LoraLinear,
    pub add_v_proj: LoraLinear,
    /// `(head_dim,)`
    pub norm_added_q: Tensor,
    pub norm_added_k: Tensor,
    pub to_add_out: LoraLinear,
}

#[derive(Debug)]
pub struct FluxAttention {
    pub heads: i64,
    pub head_dim: i64,
    pub to_q: LoraLinear,
    pub to_k: LoraLinear,
    pub to_v: LoraLinear,
    /// RMSNorm weights `(head_dim,)`.
    pub norm_q: Tensor,
    pub norm_k: Tensor,
    /// `to_out.0` (diffusers' `to_out` is `[Linear, Dropout]`); `None` for `pre_only`.
    pub to_out: Option<LoraLinear>,
    /// Text-stream twins; `None` in single-stream blocks.
    pub added: Option<AddedProjections>,
}

impl FluxAttention {
    /// `double`: a double-stream block's attention (text twins and `to_out`), else a
    /// single-stream block's (`pre_only`).
    pub fn new(
        p: &nn::Path,
        dim: i64,
        heads: i64,
        head_dim: i64,
        double: bool,
        kind: Kind,
    ) -> Self {
        let inner = heads * head_dim;
        let lin = |name: &str, i: i64, o: i64| linear(&(p / name), i, o, true, kind);
        let norm = |name: &str| var(&(p / name), "weight", &[head_dim], kind);
        FluxAttention {
            heads,
            head_dim,
            to_q: lin("to_q", dim, inner),
            to_k: lin("to_k", dim, inner),
            to_v: lin("to_v", dim, inner),
            norm_q: norm("norm_q"),
            norm_k: norm("norm_k"),
            to_out: double.then(|| linear(&(p / "to_out" / 0), inner, dim, true, kind)),
            added: double.then(|| AddedProjections {
                add_q_proj: lin("add_q_proj", dim, inner),
                add_k_proj: lin("add_k_proj", dim, inner),
                add_v_proj: lin("add_v_proj", dim, inner),
                norm_added_q: norm("norm_added_q"),
                norm_added_k: norm("norm_added_k"),
                to_add_out: lin("to_add_out", inner, dim),
            }),
        }
    }

    /// Every linear layer (for LoRA bookkeeping).
    pub fn projections(&self) -> Vec<&LoraLinear> {
        let mut v = vec![&self.to_q, &self.to_k, &self.to_v];
        v.extend(self.to_out.as_ref());
        if let Some(a) = &self.added {
            v.extend([&a.add_q_proj, &a.add_k_proj, &a.add_v_proj, &a.to_add_out]);
        }
        v
    }

    pub fn projections_mut(&mut self) -> Vec<&mut LoraLinear> {
        let mut v = vec![&mut self.to_q, &mut self.to_k, &mut self.to_v];
        v.extend(self.to_out.as_mut());
        if let Some(a) = &mut self.added {
            v.extend([
                &mut a.add_q_proj,
                &mut a.add_k_proj,
                &mut a.add_v_proj,
                &mut a.to_add_out,
            ]);
        }
        v
    }

    /// `(B, n, heads·head_dim)` → `(B, heads, n, head_dim)`, RMS-normalised with `norm`.
    fn heads_of(&self, x: Tensor, norm: Option<&Tensor>) -> Tensor {
        let (b, n, _) = x.size3().expect("(B, n, inner)");
        let x = x.view([b, n, self.heads, self.head_dim]);
        let x = match norm {
            Some(w) => x.rms_norm([self.head_dim], Some(w), QK_EPS),
            None => x,
        };
        x.transpose(1, 2)
    }

    /// Softmax attention of `(B, heads, n, head_dim)` q/k/v after RoPE → `(B, n, inner)`.
    fn attend(&self, q: Tensor, k: Tensor, v: Tensor, rope: &(Tensor, Tensor)) -> Tensor {
        let q = apply_rope(&q, &rope.0, &rope.1);
        let k = apply_rope(&k, &rope.0, &rope.1);
        let (b, _, n, _) = q.size4().expect("(B, heads, n, head_dim)");
        let kind = q.kind();
        Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)
            .transpose(1, 2)
            .reshape([b, n, self.heads * self.head_dim])
            .to_kind(kind)
    }

    /// Double-stream attention. `img (B, N, dim)`, `txt (B, L, dim)`, `rope` over the `L + N`
    /// tokens `[text; image]`. Returns `(img_out (B, N, dim), txt_out (B, L, dim))`.
    pub fn forward_joint(
        &self,
        img: &Tensor,
        txt: &Tensor,
        rope: &(Tensor, Tensor),
        adapter: Option<&str>,
    ) -> (Tensor, Tensor) {
        let a = self.added.as_ref().expect("a double-stream attention");
        let to_out = self.to_out.as_ref().expect("a double-stream attention");
        let q = self.heads_of(self.to_q.forward(img, adapter), Some(&self.norm_q));
        let k = self.heads_of(self.to_k.forward(img, adapter), Some(&self.norm_k));
        let v = self.heads_of(self.to_v.forward(img, adapter), None);
        let cq = self.heads_of(a.add_q_proj.forward(txt, adapter), Some(&a.norm_added_q));
        let ck = self.heads_of(a.add_k_proj.forward(txt, adapter), Some(&a.norm_added_k));
        let cv = self.heads_of(a.add_v_proj.forward(txt, adapter), None);
        let l = txt.size()[1];
        let n = img.size()[1];
        // [text; image] along the sequence: (B, heads, L + N, head_dim)
        let o = self.attend(
            Tensor::cat(&[cq, q], 2),
            Tensor::cat(&[ck, k], 2),
            Tensor::cat(&[cv, v], 2),
            rope,
        );
        let txt_o = o.narrow(1, 0, l).contiguous();
        let img_o = o.narrow(1, l, n).contiguous();
        (
            to_out.forward(&img_o, adapter),
            a.to_add_out.forward(&txt_o, adapter),
        )
    }

    /// Single-stream attention over `x (B, L + N, dim)` → `(B, L + N, inner)` (no output
    /// projection).
    pub fn forward_single(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        adapter: Option<&str>,
    ) -> Tensor {
        let q = self.heads_of(self.to_q.forward(x, adapter), Some(&self.norm_q));
        let k = self.heads_of(self.to_k.forward(x, adapter), Some(&self.norm_k));
        let v = self.heads_of(self.to_v.forward(x, adapter), None);
        self.attend(q, k, v, rope)
    }
}
