//! Qwen2.5-VL's language model (transformers' `Qwen2_5_VLTextModel`) as the prompt encoder
//! runs it: token embeddings with the vision tower's merged tokens scattered over the
//! `<|image_pad|>` positions, decoder layers (RMSNorm, grouped-query attention with biased
//! q/k/v and M-RoPE, causal + padding mask, gated SiLU MLP) and the final RMSNorm, whose
//! output is `hidden_states[-1]`.
//!
//! Positions: the edit pipeline calls the model without `mm_token_type_ids`, so transformers
//! 5.25 uses 1-D positions `0..L` on all three M-RoPE axes (text and image tokens alike, pads
//! included); [`Qwen25VlTextModel::forward`] takes explicit `(3, B, L)` positions too.
//!
//! Variables are named as the checkpoint (`model.layers.0.self_attn.q_proj.weight`, ...).

use super::super::error::ModelError;
use super::super::flux_kontext::layers::{Activation, Embedding, activation, linear};
use super::super::lora::LoraLinear;
use super::config_vl::Qwen25VlTextConfig;
use super::layers::RmsNorm;
use super::vision::{GatedMlp, inv_freq, rotate_half};
use tch::{Kind, Tensor, nn};

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    o_proj: LoraLinear,
    mlp: GatedMlp,
}

#[derive(Debug)]
pub struct Qwen25VlTextModel {
    pub cfg: Qwen25VlTextConfig,
    pub embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
}

impl Qwen25VlTextModel {
    pub fn new(p: &nn::Path, cfg: &Qwen25VlTextConfig, kind: Kind) -> Result<Self, ModelError> {
        let d = cfg.hidden_size;
        let hd = cfg.head_dim();
        let act: Activation = activation(&cfg.hidden_act)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = p / "layers" / i;
                let a = &l / "self_attn";
                DecoderLayer {
                    input_layernorm: RmsNorm::new(
                        &(&l / "input_layernorm"),
                        d,
                        cfg.rms_norm_eps,
                        kind,
                    ),
                    post_attention_layernorm: RmsNorm::new(
                        &(&l / "post_attention_layernorm"),
                        d,
                        cfg.rms_norm_eps,
                        kind,
                    ),
                    q_proj: linear(
                        &(&a / "q_proj"),
                        d,
                        cfg.num_attention_heads * hd,
                        true,
                        kind,
                    ),
                    k_proj: linear(
                        &(&a / "k_proj"),
                        d,
                        cfg.num_key_value_heads * hd,
                        true,
                        kind,
                    ),
                    v_proj: linear(
                        &(&a / "v_proj"),
                        d,
                        cfg.num_key_value_heads * hd,
                        true,
                        kind,
                    ),
                    o_proj: linear(
                        &(&a / "o_proj"),
                        cfg.num_attention_heads * hd,
                        d,
                        false,
                        kind,
                    ),
                    mlp: GatedMlp::new(&(&l / "mlp"), d, cfg.intermediate_size, false, act, kind),
                }
            })
            .collect();
        Ok(Qwen25VlTextModel {
            embed_tokens: Embedding::new(&(p / "embed_tokens"), cfg.vocab_size, d, kind),
            layers,
            norm: RmsNorm::new(&(p / "norm"), d, cfg.rms_norm_eps, kind),
            cfg: cfg.clone(),
        })
    }

    /// `Qwen2_5_VLRotaryEmbedding`: cos/sin `(B, L, head_dim)` of `(3, B, L)` positions, the
    /// frequencies of section `i` taken from axis `i mod 3`, cast to `kind`.
    pub fn rope(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let hd = self.cfg.head_dim();
        let inv = inv_freq(self.cfg.rope.theta, hd, positions.device());
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv; // (3, B, L, hd/2)
        let recompose = |f: Tensor| {
            let parts = f.split_with_sizes(self.cfg.rope.mrope_section.as_slice(), -1);
            let picked: Vec<Tensor> = parts
                .iter()
                .enumerate()
                .map(|(i, m)| m.select(0, (i % 3) as i64))
                .collect();
            let f = Tensor::cat(&picked, -1);
            Tensor::cat(&[&f, &f], -1).to_kind(kind)
        };
        (recompose(freqs.cos()), recompose(freqs.sin()))
    }

    /// The final normed states `(B, L, hidden)` of `inputs_embeds (B, L, hidden)` with
    /// `attention_mask (B, L)` (1 = token, 0 = padding) at `positions (3, B, L)`
    /// (`None`: `0..L` on every axis).
    pub fn forward(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        positions: Option<&Tensor>,
    ) -> Tensor {
        let cfg = &self.cfg;
        let s = inputs_embeds.size();
        let (b, l) = (s[0], s[1]);
        let dev = inputs_embeds.device();
        let kind = inputs_embeds.kind();
        let pos = match positions {
            Some(p) => p.to_device(dev),
            None => Tensor::arange(l, (Kind::Int64, dev))
                .view([1, 1, l])
                .expand([3, b, l], false),
        };
        let (cos, sin) = self.rope(&pos, kind);
        let (cos, sin) = (cos.unsqueeze(1), sin.unsqueeze(1)); // (B, 1, L, hd)
        // additive mask: causal and key padding, the dtype's minimum where masked
        let causal = Tensor::ones([l, l], (Kind::Bool, dev)).tril(0);
        let keys = attention_mask.to_device(dev).ne(0).view([b, 1, 1, l]);
        let allowed = causal.view([1, 1, l, l]).logical_and(&keys);
        let min = match kind {
            Kind::Half => -65504.0,
            Kind::BFloat16 => -3.3895313892515355e38,
            Kind::Double => f64::MIN,
            _ => f32::MIN as f64,
        };
        let mask =
            Tensor::zeros([b, 1, l, l], (kind, dev)).masked_fill(&allowed.logical_not(), min);
        let (heads, kv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let groups = heads / kv;
        let repeat_kv = |t: Tensor| {
            if groups == 1 {
                t
            } else {
                t.unsqueeze(2)
                    .expand([b, kv, groups, l, hd], false)
                    .reshape([b, heads, l, hd])
            }
        };
        let mut x = inputs_embeds.shallow_clone();
        for layer in &self.layers {
            let h = layer.input_layernorm.forward(&x);
            let q = layer
                .q_proj
                .forward(&h, None)
                .view([b, l, heads, hd])
                .transpose(1, 2);
            let k = layer
                .k_proj
                .forward(&h, None)
                .view([b, l, kv, hd])
                .transpose(1, 2);
            let v = layer
                .v_proj
                .forward(&h, None)
                .view([b, l, kv, hd])
                .transpose(1, 2);
            let q = &q * &cos + rotate_half(&q) * &sin;
            let k = &k * &cos + rotate_half(&k) * &sin;
            let o = Tensor::scaled_dot_product_attention(
                &q,
                &repeat_kv(k),
                &repeat_kv(v),
                Some(&mask),
                0.0,
                false,
                None,
                false,
            );
            let o = o.transpose(1, 2).reshape([b, l, heads * hd]);
            x = &x + layer.o_proj.forward(&o, None);
            let h = layer.post_attention_layernorm.forward(&x);
            x = &x + layer.mlp.forward(&h);
        }
        self.norm.forward(&x)
    }
}
