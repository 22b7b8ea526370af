//! The small instruction encoder of tiny-kontext: a bidirectional transformer over word
//! tokens, laid out like transformers' `CLIPTextModel` (`embeddings.token_embedding`,
//! `embeddings.position_embedding`, `encoder.layers.N.{self_attn,layer_norm1,mlp,layer_norm2}`,
//! `final_layer_norm`), with a padding mask instead of CLIP's causal mask, and the pooled
//! output a masked mean over the real tokens.

use super::TextEncoderConfig;
use super::lora::LoraLinear;
use super::random::uniform_tensor;
use super::tokenizer::{PAD_ID, WordTokenizer};
use crate::rng::StreamRng;
use tch::{Kind, Tensor, nn};

#[derive(Debug)]
struct EncoderLayer {
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    out_proj: LoraLinear,
    ln1_w: Tensor,
    ln1_b: Tensor,
    fc1: LoraLinear,
    fc2: LoraLinear,
    ln2_w: Tensor,
    ln2_b: Tensor,
}

const LN_EPS: f64 = 1e-5;

fn ln(p: &nn::Path, d: i64) -> (Tensor, Tensor) {
    (p.ones("weight", &[d]), p.zeros("bias", &[d]))
}

#[derive(Debug)]
pub struct TextEncoder {
    pub tokenizer: WordTokenizer,
    heads: i64,
    hidden: i64,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_w: Tensor,
    final_b: Tensor,
}

impl TextEncoder {
    pub fn new(p: &nn::Path, cfg: &TextEncoderConfig, seed: u64) -> TextEncoder {
        let tokenizer = WordTokenizer::new(&cfg.vocab, cfg.max_position_embeddings as usize);
        let d = cfg.hidden_size;
        let emb = p / "embeddings";
        // transformers' CLIP initialises both tables N(0, 0.02); a uniform of the same
        // spread keeps everything on the one deterministic stream.
        let table = |name: &str, rows: i64| {
            let path = format!("text_encoder.embeddings.{name}");
            let t = uniform_tensor(
                &mut StreamRng::derive(seed, &path),
                &[rows, d],
                0.02 * 3f64.sqrt(),
            );
            (&emb / name).var_copy("weight", &t)
        };
        let token_embedding = table("token_embedding", tokenizer.len() as i64);
        let position_embedding = table("position_embedding", cfg.max_position_embeddings);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let lp = p / "encoder" / "layers" / i;
                let att = &lp / "self_attn";
                let lin = |q: &nn::Path, i, o| LoraLinear::new(q, i, o, true, seed);
                let (ln1_w, ln1_b) = ln(&(&lp / "layer_norm1"), d);
                let (ln2_w, ln2_b) = ln(&(&lp / "layer_norm2"), d);
                EncoderLayer {
                    q_proj: lin(&(&att / "q_proj"), d, d),
                    k_proj: lin(&(&att / "k_proj"), d, d),
                    v_proj: lin(&(&att / "v_proj"), d, d),
                    out_proj: lin(&(&att / "out_proj"), d, d),
                    ln1_w,
                    ln1_b,
                    fc1: lin(&(&lp / "mlp" / "fc1"), d, cfg.intermediate_size),
                    fc2: lin(&(&lp / "mlp" / "fc2"), cfg.intermediate_size, d),
                    ln2_w,
                    ln2_b,
                }
            })
            .collect();
        let (final_w, final_b) = ln(&(p / "final_layer_norm"), d);
        TextEncoder {
            tokenizer,
            heads: cfg.num_attention_heads,
            hidden: d,
            token_embedding,
            position_embedding,
            layers,
            final_w,
            final_b,
        }
    }

    /// `ids`: `(B, L)` int64 → `(states (B, L, hidden), pooled (B, hidden), mask (B, L) bool)`.
    // `x = x + f(x)`, not `x += f(x)`: an in-place add would clobber what autograd saved.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(&self, ids: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, l) = ids.size2().expect("(B, L)");
        let d = self.hidden;
        let hd = d / self.heads;
        let pos = Tensor::arange(l, (Kind::Int64, ids.device()));
        // real tokens, and always position 0 (`<bos>`), so that no attention row is empty
        let mask = ids.ne(PAD_ID).logical_or(&pos.eq(0).unsqueeze(0)); // (B, L)
        let mut x = Tensor::embedding(&self.token_embedding, ids, PAD_ID, false, false)
            + Tensor::embedding(&self.position_embedding, &pos, -1, false, false).unsqueeze(0);
        let attn_mask = mask.view([b, 1, 1, l]);
        let lnorm = |x: &Tensor, w: &Tensor, bias: &Tensor| {
            x.layer_norm([d], Some(w), Some(bias), LN_EPS, false)
        };
        for layer in &self.layers {
            let h = lnorm(&x, &layer.ln1_w, &layer.ln1_b);
            let split = |t: Tensor| t.view([b, l, self.heads, hd]).transpose(1, 2);
            let q = split(layer.q_proj.forward(&h, None));
            let k = split(layer.k_proj.forward(&h, None));
            let v = split(layer.v_proj.forward(&h, None));
            let o = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(&attn_mask),
                0.0,
                false,
                None,
                false,
            );
            x = x + layer
                .out_proj
                .forward(&o.transpose(1, 2).reshape([b, l, d]), None);
            let h = lnorm(&x, &layer.ln2_w, &layer.ln2_b);
            x = x + layer
                .fc2
                .forward(&layer.fc1.forward(&h, None).gelu("none"), None);
        }
        let x = lnorm(&x, &self.final_w, &self.final_b);
        let m = mask.to_kind(x.kind()).unsqueeze(-1); // (B, L, 1)
        let pooled = (&x * &m).sum_dim_intlist(1, false, None)
            / m.sum_dim_intlist(1, false, None).clamp_min(1.0);
        (x, pooled, mask)
    }
}
