//! transformers' `T5EncoderModel` (`text_encoder_2/`): token embedding (`shared`), blocks of
//! RMS-normalised self-attention with a bucketed relative position bias (computed by block 0,
//! shared by all) and a gated-GELU feed-forward, `final_layer_norm`. No attention mask: the
//! FLUX pipeline encodes padded prompts without one, so padding tokens are attended.
//!
//! transformers keeps `wo` in float32 when T5 is loaded in float16 (`_keep_in_fp32_modules`,
//! which transformers 5 applies to float16 only, not bfloat16); the feed-forward casts into
//! it as transformers does, and the residual sum is then float32.

use super::super::error::ModelError;
use super::super::lora::LoraLinear;
use super::config::{T5Config, read_config};
use super::layers::{Activation, Embedding, check_weight_kind, linear, var, var_store};
use super::weights::{Checkpoint, PendingWeights, TRANSFORMERS_STEM};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

/// T5's RMS norm ("T5LayerNorm"): variance in float32, no mean subtraction, no bias; the
/// normalised states return to the weight's kind when that is half precision.
fn t5_layer_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let var = x
        .to_kind(Kind::Float)
        .pow_tensor_scalar(2)
        .mean_dim(-1, true, None);
    let h = x * (var + eps).rsqrt();
    let h = if matches!(weight.kind(), Kind::Half | Kind::BFloat16) {
        h.to_kind(weight.kind())
    } else {
        h
    };
    weight * h
}

/// transformers' `T5Attention._relative_position_bucket(bidirectional=True)` of
/// `key − query` offsets `(Lq, Lk)` int64: half the buckets per direction, exact below
/// `nb/4` then logarithmic up to `max_distance` (computed in float32 as transformers does).
pub fn relative_position_bucket(rel: &Tensor, num_buckets: i64, max_distance: i64) -> Tensor {
    let nb = num_buckets / 2;
    let sign = rel.gt(0).to_kind(Kind::Int64) * nb;
    let rel = rel.abs();
    let max_exact = nb / 2;
    let is_small = rel.lt(max_exact);
    let large = (rel.to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (nb - max_exact) as f64;
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(nb - 1);
    sign + rel.where_self(&is_small, &large)
}

#[derive(Debug)]
pub struct T5Block {
    /// `layer.0.layer_norm`
    pub attn_norm: Tensor,
    pub q: LoraLinear,
    pub k: LoraLinear,
    pub v: LoraLinear,
    pub o: LoraLinear,
    /// `layer.0.SelfAttention.relative_attention_bias` `(buckets, heads)`, block 0 only.
    pub relative_attention_bias: Option<Embedding>,
    /// `layer.1.layer_norm`
    pub ff_norm: Tensor,
    /// `wi` (ungated) or `wi_0` (gated, through the activation)
    pub wi_0: LoraLinear,
    /// `wi_1` (gated only)
    pub wi_1: Option<LoraLinear>,
    pub wo: LoraLinear,
}

impl T5Block {
    fn new(p: &nn::Path, cfg: &T5Config, gated: bool, first: bool, kind: Kind) -> Self {
        let (d, inner, ff) = (cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff);
        let a = p / "layer" / 0 / "SelfAttention";
        let f = p / "layer" / 1;
        let dense = &f / "DenseReluDense";
        let lin = |q: nn::Path, i: i64, o: i64| linear(&q, i, o, false, kind);
        // `_keep_in_fp32_modules = ["wo"]`, honoured for float16 only
        let wo_kind = if kind == Kind::Half {
            Kind::Float
        } else {
            kind
        };
        T5Block {
            attn_norm: var(&(p / "layer" / 0 / "layer_norm"), "weight", &[d], kind),
            q: lin(&a / "q", d, inner),
            k: lin(&a / "k", d, inner),
            v: lin(&a / "v", d, inner),
            o: lin(&a / "o", inner, d),
            relative_attention_bias: first.then(|| {
                Embedding::new(
                    &(&a / "relative_attention_bias"),
                    cfg.relative_attention_num_buckets,
                    cfg.num_heads,
                    kind,
                )
            }),
            ff_norm: var(&(&f / "layer_norm"), "weight", &[d], kind),
            wi_0: lin(&dense / if gated { "wi_0" } else { "wi" }, d, ff),
            wi_1: gated.then(|| lin(&dense / "wi_1", d, ff)),
            wo: linear(&(&dense / "wo"), ff, d, false, wo_kind),
        }
    }

    /// `x (B, L, d)`, `bias (1, heads, L, L)` → `(B, L, d)` (float32 after `wo` when it is
    /// kept in float32, as transformers' residual sum promotes).
    fn forward(&self, x: &Tensor, bias: &Tensor, cfg: &T5Config, act: Activation) -> Tensor {
        let (b, l, _) = x.size3().expect("(B, L, d)");
        let (h, dk) = (cfg.num_heads, cfg.d_kv);
        let n = t5_layer_norm(x, &self.attn_norm, cfg.layer_norm_epsilon);
        let split = |t: Tensor| t.view([b, l, h, dk]).transpose(1, 2);
        let q = split(self.q.forward(&n, None));
        let k = split(self.k.forward(&n, None));
        let v = split(self.v.forward(&n, None));
        // no 1/√d scaling in T5; the position bias is the additive mask (transformers' SDPA
        // path, the default attention implementation)
        let o = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(bias),
            0.0,
            false,
            Some(1.0),
            false,
        )
        .transpose(1, 2)
        .reshape([b, l, h * dk]);
        let x = x + self.o.forward(&o, None);
        let n = t5_layer_norm(&x, &self.ff_norm, cfg.layer_norm_epsilon);
        let hidden = match &self.wi_1 {
            Some(wi_1) => act.forward(&self.wi_0.forward(&n, None)) * wi_1.forward(&n, None),
            None => act.forward(&self.wi_0.forward(&n, None)),
        };
        let y = self
            .wo
            .forward(&hidden.to_kind(self.wo.weight.kind()), None);
        &x + y
    }
}

pub struct T5EncoderModel {
    pub cfg: T5Config,
    vs: nn::VarStore,
    kind: Kind,
    act: Activation,
    /// `shared` (tied with `encoder.embed_tokens`)
    pub shared: Embedding,
    pub blocks: Vec<T5Block>,
    /// `encoder.final_layer_norm`
    pub final_layer_norm: Tensor,
}

impl std::fmt::Debug for T5EncoderModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5EncoderModel")
            .field("cfg", &self.cfg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl T5EncoderModel {
    pub fn new(cfg: &T5Config, device: Device, kind: Kind) -> Result<Self, ModelError> {
        check_weight_kind(kind)?;
        let (gated, act) = cfg.feed_forward()?;
        let vs = var_store(device, kind);
        let root = vs.root();
        let enc = &root / "encoder";
        Ok(T5EncoderModel {
            shared: Embedding::new(&(&root / "shared"), cfg.vocab_size, cfg.d_model, kind),
            blocks: (0..cfg.num_layers)
                .map(|i| T5Block::new(&(&enc / "block" / i), cfg, gated, i == 0, kind))
                .collect(),
            final_layer_norm: var(&(&enc / "final_layer_norm"), "weight", &[cfg.d_model], kind),
            act,
            cfg: cfg.clone(),
            vs,
            kind,
        })
    }

    /// Loads a transformers `text_encoder_2/` directory. The embedding may be stored as
    /// `shared.weight`, `encoder.embed_tokens.weight` or both (tied).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        let (model, weights) = Self::unloaded(dir, device, kind)?;
        weights.load()?;
        Ok(model)
    }

    /// The model of `dir`'s `config.json` with zero weights, and its checkpoint (headers read,
    /// data not yet).
    pub fn unloaded(
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<(Self, PendingWeights), ModelError> {
        let config = dir.join("config.json");
        super::clip::check_architecture(&config, "T5EncoderModel")?;
        let cfg: T5Config = read_config(&config)?;
        let ckpt = Checkpoint::open(dir, TRANSFORMERS_STEM)?;
        let model = Self::new(&cfg, device, kind)?;
        let has_shared = ckpt.contains("shared.weight");
        let rename = move |k: &str| match k {
            "encoder.embed_tokens.weight" if has_shared => None,
            "encoder.embed_tokens.weight" => Some("shared.weight".to_string()),
            _ => Some(k.to_string()),
        };
        let vars = model.vs.variables().into_iter().collect();
        Ok((model, PendingWeights::new(ckpt, vars, rename)))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// `(1, heads, L, L)` relative position bias of block 0, in the model's kind.
    fn position_bias(&self, l: i64) -> Tensor {
        let dev = self.device();
        let ctx = Tensor::arange(l, (Kind::Int64, dev)).unsqueeze(1);
        let mem = Tensor::arange(l, (Kind::Int64, dev)).unsqueeze(0);
        let buckets = relative_position_bucket(
            &(mem - ctx),
            self.cfg.relative_attention_num_buckets,
            self.cfg.relative_attention_max_distance,
        );
        let emb = self.blocks[0]
            .relative_attention_bias
            .as_ref()
            .expect("block 0 has the bias");
        emb.forward(&buckets).permute([2, 0, 1]).unsqueeze(0)
    }

    /// `ids (B, L)` int64 → last hidden state `(B, L, d_model)` in the model's kind.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let s = ids.size();
        if s.len() != 2 || s[1] == 0 || ids.kind() != Kind::Int64 {
            return Err(ModelError::Input {
                what: "input_ids",
                message: format!(
                    "expected int64 (B, L) with L > 0, got {s:?} {:?}",
                    ids.kind()
                ),
            });
        }
        if self.blocks.is_empty() {
            return Err(ModelError::InvalidConfig("T5 has no blocks".into()));
        }
        let mut x = self.shared.forward(&ids.to_device(self.device()));
        let bias = self.position_bias(s[1]);
        for block in &self.blocks {
            x = block.forward(&x, &bias, &self.cfg, self.act);
        }
        Ok(
            t5_layer_norm(&x, &self.final_layer_norm, self.cfg.layer_norm_epsilon)
                .to_kind(self.kind),
        )
    }
}
