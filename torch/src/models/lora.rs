//! LoRA (Hu et al. 2021) on a linear layer, PEFT-style: `y = W x + b + (α/r)·B A x`, with
//! `A` kaiming-uniform (PEFT's `init_lora_weights=True`) and `B` zero, so a fresh adapter
//! leaves the layer's output bit-identical. Several named adapters share one base layer; the
//! caller picks which one is active (or none) per forward.

use super::random::uniform_tensor;
use crate::rng::StreamRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Tensor, nn};

/// Adapter names of the policy roles (method-spec §4–§5).
pub const THETA: &str = "default";
/// θ_old, the EMA of θ.
pub const THETA_OLD: &str = "old";

/// The attention projections LoRA targets by default: image stream and text-stream twins
/// (diffusers' FLUX attention naming).
pub const DEFAULT_TARGETS: [&str; 8] = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
];

/// One adapter's settings (PEFT `LoraConfig` subset; dropout is always 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r of `A (r × in)` and `B (out × r)`.
    #[serde(default = "rank")]
    pub r: i64,
    /// α: the update is scaled by α/r (α/√r with `use_rslora`).
    #[serde(default = "alpha")]
    pub lora_alpha: f64,
    /// Module names to adapt, matched as PEFT does: equal to, or a `.`-suffix of, the
    /// module path (`to_q` matches `transformer_blocks.0.attn.to_q`).
    #[serde(default = "targets")]
    pub target_modules: Vec<String>,
    /// Rank-stabilised scaling α/√r.
    #[serde(default)]
    pub use_rslora: bool,
    /// Seed of `A`'s initialisation (not exported: PEFT has no such field).
    #[serde(default)]
    pub init_seed: u64,
}

fn rank() -> i64 {
    32
}
fn alpha() -> f64 {
    64.0
}
fn targets() -> Vec<String> {
    DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect()
}

impl Default for LoraConfig {
    /// Method-spec §5: rank 32, α 64 on the attention projections.
    fn default() -> Self {
        LoraConfig {
            r: rank(),
            lora_alpha: alpha(),
            target_modules: targets(),
            use_rslora: false,
            init_seed: 0,
        }
    }
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Whether the module at `path` is a target (PEFT's suffix rule).
    pub fn targets(&self, path: &str) -> bool {
        self.target_modules
            .iter()
            .any(|t| path == t || path.ends_with(&format!(".{t}")))
    }
}

/// One adapter's matrices on one layer.
#[derive(Debug)]
pub struct LoraPair {
    /// `(r, in)`
    pub a: Tensor,
    /// `(out, r)`
    pub b: Tensor,
    pub scaling: f64,
}

/// A linear layer with any number of named LoRA adapters.
#[derive(Debug)]
pub struct LoraLinear {
    /// Module path, e.g. `transformer_blocks.0.attn.to_q`.
    pub path: String,
    /// `(out, in)`
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub in_dim: i64,
    pub out_dim: i64,
    pub adapters: BTreeMap<String, LoraPair>,
}

impl LoraLinear {
    /// A plain linear layer at `p` (`p / "weight"`, `p / "bias"`), initialised like
    /// `torch.nn.Linear` (uniform ±1/√in) from a stream derived from `(seed, path)`.
    pub fn new(p: &nn::Path, in_dim: i64, out_dim: i64, bias: bool, seed: u64) -> LoraLinear {
        let path = p.components().collect::<Vec<_>>().join(".");
        let bound = 1.0 / (in_dim as f64).sqrt();
        let mut rng = StreamRng::derive(seed, &path);
        let weight = p.var_copy(
            "weight",
            &uniform_tensor(&mut rng, &[out_dim, in_dim], bound),
        );
        let bias = bias.then(|| p.var_copy("bias", &uniform_tensor(&mut rng, &[out_dim], bound)));
        LoraLinear {
            path,
            weight,
            bias,
            in_dim,
            out_dim,
            adapters: BTreeMap::new(),
        }
    }

    /// Adds adapter `name` with `A` kaiming-uniform(a=√5) = U(±1/√in) and `B` = 0, as
    /// variables `<path>.lora_A.<name>.weight` / `<path>.lora_B.<name>.weight` under `root`.
    pub fn add_adapter(&mut self, root: &nn::Path, name: &str, cfg: &LoraConfig) {
        let p = self.path.split('.').fold(root.clone(), |p, s| p / s);
        let mut rng = StreamRng::derive(cfg.init_seed, &format!("lora/{name}/{}", self.path));
        let a0 = uniform_tensor(
            &mut rng,
            &[cfg.r, self.in_dim],
            1.0 / (self.in_dim as f64).sqrt(),
        );
        let a = (&p / "lora_A" / name).var_copy("weight", &a0);
        let b = (&p / "lora_B" / name).zeros("weight", &[self.out_dim, cfg.r]);
        self.adapters.insert(
            name.to_string(),
            LoraPair {
                a,
                b,
                scaling: cfg.scaling(),
            },
        );
    }

    /// `x W^T + b`, plus the active adapter's `(α/r)·x A^T B^T` when it adapts this layer.
    pub fn forward(&self, x: &Tensor, active: Option<&str>) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match active.and_then(|n| self.adapters.get(n)) {
            Some(l) => y + x.linear::<Tensor>(&l.a, None).linear::<Tensor>(&l.b, None) * l.scaling,
            None => y,
        }
    }
}
