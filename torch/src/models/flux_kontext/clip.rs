//! transformers' `CLIPTextModel` (`text_encoder/`): token + learned position embeddings,
//! pre-LayerNorm causal self-attention blocks, `final_layer_norm`; FLUX uses only the pooled
//! output (the final state at the end-of-text token).
//!
//! State-dict keys are `text_model.embeddings.token_embedding.weight`,
//! `text_model.encoder.layers.N.self_attn.q_proj.weight`, ... in checkpoints written by
//! transformers 4 (the FLUX repos); transformers 5 writes them without the `text_model.`
//! prefix. Both load: the variables take the prefix the checkpoint uses.

use super::super::error::ModelError;
use super::super::lora::LoraLinear;
use super::config::{ClipTextConfig, read_config};
use super::layers::{
    Activation, Embedding, LayerNorm, activation, check_weight_kind, linear, var_store,
};
use super::weights::{Checkpoint, PendingWeights, TRANSFORMERS_STEM};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

/// The position of the pooled state in each row of `ids (B, L)`: with the legacy
/// `eos_token_id == 2` the first position of the row's largest id (original CLIP: the
/// end-of-text token has the largest id), otherwise the first position of `eos_token_id`
/// (0 when absent), as transformers' `CLIPTextModel` picks it. → `(B,)` int64
pub fn pooled_positions(ids: &Tensor, eos_token_id: i64) -> Tensor {
    if eos_token_id == 2 {
        ids.to_kind(Kind::Int).argmax(-1, false)
    } else {
        ids.eq(eos_token_id).to_kind(Kind::Int).argmax(-1, false)
    }
}

#[derive(Debug)]
pub struct ClipEncoderLayer {
    pub layer_norm1: LayerNorm,
    pub q_proj: LoraLinear,
    pub k_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub out_proj: LoraLinear,
    pub layer_norm2: LayerNorm,
    pub fc1: LoraLinear,
    pub fc2: LoraLinear,
}

impl ClipEncoderLayer {
    fn new(p: &nn::Path, cfg: &ClipTextConfig, kind: Kind) -> Self {
        let d = cfg.hidden_size;
        let a = p / "self_attn";
        let lin = |q: &nn::Path, i: i64, o: i64| linear(q, i, o, true, kind);
        ClipEncoderLayer {
            layer_norm1: LayerNorm::new(&(p / "layer_norm1"), d, cfg.layer_norm_eps, kind),
            q_proj: lin(&(&a / "q_proj"), d, d),
            k_proj: lin(&(&a / "k_proj"), d, d),
            v_proj: lin(&(&a / "v_proj"), d, d),
            out_proj: lin(&(&a / "out_proj"), d, d),
            layer_norm2: LayerNorm::new(&(p / "layer_norm2"), d, cfg.layer_norm_eps, kind),
            fc1: lin(&(p / "mlp" / "fc1"), d, cfg.intermediate_size),
            fc2: lin(&(p / "mlp" / "fc2"), cfg.intermediate_size, d),
        }
    }

    fn forward(&self, x: &Tensor, heads: i64, act: Activation) -> Tensor {
        let (b, l, d) = x.size3().expect("(B, L, d)");
        let h = self.layer_norm1.forward(x);
        let split = |t: Tensor| t.view([b, l, heads, d / heads]).transpose(1, 2);
        let q = split(self.q_proj.forward(&h, None));
        let k = split(self.k_proj.forward(&h, None));
        let v = split(self.v_proj.forward(&h, None));
        // causal: position i attends to 0..=i; scale 1/√head_dim
        let o = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, true, None, false,
        )
        .transpose(1, 2)
        .reshape([b, l, d]);
        let x = x + self.out_proj.forward(&o, None);
        let h = act.forward(&self.fc1.forward(&self.layer_norm2.forward(&x), None));
        &x + self.fc2.forward(&h, None)
    }
}

/// `CLIPTextModel`'s outputs.
#[derive(Debug)]
pub struct ClipTextOutput {
    /// `(B, L, hidden)` after `final_layer_norm`.
    pub last_hidden_state: Tensor,
    /// `(B, hidden)`
    pub pooler_output: Tensor,
}

pub struct ClipTextModel {
    pub cfg: ClipTextConfig,
    vs: nn::VarStore,
    kind: Kind,
    act: Activation,
    pub token_embedding: Embedding,
    pub position_embedding: Embedding,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: LayerNorm,
}

impl std::fmt::Debug for ClipTextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextModel")
            .field("cfg", &self.cfg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ClipTextModel {
    /// A model with zero weights under `prefix` (`"text_model"` or `""`).
    pub fn new(
        cfg: &ClipTextConfig,
        prefix: &str,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        check_weight_kind(kind)?;
        let vs = var_store(device, kind);
        let root = if prefix.is_empty() {
            vs.root()
        } else {
            vs.root() / prefix
        };
        let e = &root / "embeddings";
        let d = cfg.hidden_size;
        Ok(ClipTextModel {
            token_embedding: Embedding::new(&(&e / "token_embedding"), cfg.vocab_size, d, kind),
            position_embedding: Embedding::new(
                &(&e / "position_embedding"),
                cfg.max_position_embeddings,
                d,
                kind,
            ),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| ClipEncoderLayer::new(&(&root / "encoder" / "layers" / i), cfg, kind))
                .collect(),
            final_layer_norm: LayerNorm::new(
                &(&root / "final_layer_norm"),
                d,
                cfg.layer_norm_eps,
                kind,
            ),
            act: activation(&cfg.hidden_act)?,
            cfg: cfg.clone(),
            vs,
            kind,
        })
    }

    /// Loads a transformers `text_encoder/` directory (`config.json` + `model.safetensors`).
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
        check_architecture(&config, "CLIPTextModel")?;
        let cfg: ClipTextConfig = read_config(&config)?;
        let ckpt = Checkpoint::open(dir, TRANSFORMERS_STEM)?;
        let prefix = if ckpt.keys().any(|k| k.starts_with("text_model.")) {
            "text_model"
        } else {
            ""
        };
        let model = Self::new(&cfg, prefix, device, kind)?;
        // `position_ids` is a buffer some checkpoints carry; it is `arange`.
        let rename = |k: &str| (!k.ends_with("embeddings.position_ids")).then(|| k.to_string());
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

    /// `ids (B, L)` int64, `L ≤ max_position_embeddings`; no padding mask (as the pipeline).
    pub fn forward(&self, ids: &Tensor) -> Result<ClipTextOutput, ModelError> {
        let s = ids.size();
        if s.len() != 2
            || s[1] == 0
            || s[1] > self.cfg.max_position_embeddings
            || ids.kind() != Kind::Int64
        {
            return Err(ModelError::Input {
                what: "input_ids",
                message: format!(
                    "expected int64 (B, L) with 0 < L ≤ {}, got {s:?} {:?}",
                    self.cfg.max_position_embeddings,
                    ids.kind()
                ),
            });
        }
        let ids = ids.to_device(self.device());
        let pos = Tensor::arange(s[1], (Kind::Int64, self.device()));
        let mut x =
            self.token_embedding.forward(&ids) + self.position_embedding.forward(&pos).unsqueeze(0);
        for layer in &self.layers {
            x = layer.forward(&x, self.cfg.num_attention_heads, self.act);
        }
        let x = self.final_layer_norm.forward(&x);
        let at = pooled_positions(&ids, self.cfg.eos_token_id).to_kind(Kind::Int64);
        let rows = Tensor::arange(s[0], (Kind::Int64, self.device()));
        let pooled = x.index(&[Some(rows), Some(at)]);
        Ok(ClipTextOutput {
            last_hidden_state: x,
            pooler_output: pooled,
        })
    }
}

/// Checks a transformers config's `architectures` (when present) names `expected`.
pub(crate) fn check_architecture(config: &Path, expected: &str) -> Result<(), ModelError> {
    let v: serde_json::Value = read_config(config)?;
    match v.get("architectures").and_then(|a| a.as_array()) {
        Some(a) if !a.iter().any(|x| x.as_str() == Some(expected)) => Err(ModelError::Config {
            path: config.to_owned(),
            message: format!("`architectures` is {a:?}, expected `{expected}`"),
        }),
        _ => Ok(()),
    }
}
