//! Joint attention of a double-stream block (diffusers' FLUX `Attention` with
//! `FluxAttnProcessor`): image tokens and text tokens get their own q/k/v/out projections
//! (`to_*` and the text-stream twins `add_*_proj`, `to_add_out`), RMS-normalised q and k per
//! head, and one softmax over the concatenated sequence `[text; image]`.

use super::lora::LoraLinear;
use tch::{Tensor, nn};

#[derive(Debug)]
pub struct JointAttention {
    pub heads: i64,
    pub head_dim: i64,
    pub to_q: LoraLinear,
    pub to_k: LoraLinear,
    pub to_v: LoraLinear,
    /// diffusers' `to_out` is `[Linear, Dropout]`: the linear is `to_out.0`.
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

const RMS_EPS: f64 = 1e-6;

impl JointAttention {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, seed: u64) -> JointAttention {
        let lin = |name: &str| LoraLinear::new(&(p / name), dim, dim, true, seed);
        let head_dim = dim / heads;
        let norm = |name: &str| (p / name).ones("weight", &[head_dim]);
        JointAttention {
            heads,
            head_dim,
            to_q: lin("to_q"),
            to_k: lin("to_k"),
            to_v: lin("to_v"),
            to_out: LoraLinear::new(&(p / "to_out" / 0), dim, dim, true, seed),
            add_q_proj: lin("add_q_proj"),
            add_k_proj: lin("add_k_proj"),
            add_v_proj: lin("add_v_proj"),
            to_add_out: lin("to_add_out"),
            norm_q: norm("norm_q"),
            norm_k: norm("norm_k"),
            norm_added_q: norm("norm_added_q"),
            norm_added_k: norm("norm_added_k"),
        }
    }

    /// The LoRA-capable projections, for adapter bookkeeping.
    pub fn projections_mut(&mut self) -> [&mut LoraLinear; 8] {
        [
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

    pub fn projections(&self) -> [&LoraLinear; 8] {
        [
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

    /// `(B, n, dim)` → `(B, heads, n, head_dim)`
    fn split(&self, x: &Tensor) -> Tensor {
        let (b, n, _) = x.size3().expect("(B, n, dim)");
        x.view([b, n, self.heads, self.head_dim]).transpose(1, 2)
    }

    /// `img`: `(B, N, dim)`, `txt`: `(B, L, dim)`, `mask`: `(B, 1, 1, L + N)` bool (true =
    /// attend). Returns `(img_out (B, N, dim), txt_out (B, L, dim))`.
    pub fn forward(
        &self,
        img: &Tensor,
        txt: &Tensor,
        mask: &Tensor,
        active: Option<&str>,
    ) -> (Tensor, Tensor) {
        let (b, n, dim) = img.size3().expect("(B, N, dim)");
        let l = txt.size()[1];
        let rms = |x: Tensor, w: &Tensor| x.rms_norm([self.head_dim], Some(w), RMS_EPS);
        let q = rms(self.split(&self.to_q.forward(img, active)), &self.norm_q);
        let k = rms(self.split(&self.to_k.forward(img, active)), &self.norm_k);
        let v = self.split(&self.to_v.forward(img, active));
        let cq = rms(
            self.split(&self.add_q_proj.forward(txt, active)),
            &self.norm_added_q,
        );
        let ck = rms(
            self.split(&self.add_k_proj.forward(txt, active)),
            &self.norm_added_k,
        );
        let cv = self.split(&self.add_v_proj.forward(txt, active));
        // [text; image] along the sequence: (B, heads, L + N, head_dim)
        let q = Tensor::cat(&[cq, q], 2);
        let k = Tensor::cat(&[ck, k], 2);
        let v = Tensor::cat(&[cv, v], 2);
        let o =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false);
        let o = o.transpose(1, 2).reshape([b, l + n, dim]);
        let txt_o = o.narrow(1, 0, l);
        let img_o = o.narrow(1, l, n);
        (
            self.to_out.forward(&img_o, active),
            self.to_add_out.forward(&txt_o, active),
        )
    }
}
