//! LoRA (Hu et al. 2021) on a linear layer, PEFT-style: `y = W x + b + (α/r)·B A x`, with
//! `A` kaiming-uniform (PEFT's `init_lora_weights=True`) and `B` zero, so a fresh adapter
//! leaves the layer's output bit-identical. Several named adapters share one base layer; the
//! caller picks which one is active (or none) per forward.

use super::checkpoint;
use super::error::{ModelError, TensorDiff};
use super::peft;
use super::policy::{ActiveAdapter, Trainable};
use super::random::uniform_tensor;
use crate::rng::StreamRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor, nn};

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

/// The LoRA bookkeeping every [`EditPolicy`](super::policy::EditPolicy) backend shares: the
/// adapters' configs by name, the active adapter (θ, θ_old or off) and which variables train.
/// A backend keeps one and forwards the trait's adapter methods to it; the matrices stay in the
/// backend's variable store, named `<module path>.lora_{A,B}.<adapter>.weight`
/// ([`LoraLinear::add_adapter`]).
#[derive(Debug, Clone)]
pub struct AdapterSet {
    configs: BTreeMap<String, LoraConfig>,
    active: ActiveAdapter,
    trainable: Trainable,
}

impl AdapterSet {
    /// No adapters, none active, `trainable` as the backend starts.
    pub fn new(trainable: Trainable) -> AdapterSet {
        AdapterSet {
            configs: BTreeMap::new(),
            active: ActiveAdapter::Off,
            trainable,
        }
    }

    /// `must_exist`: `name` is a known adapter; else a valid name not taken yet.
    pub fn check_name(&self, name: &str, must_exist: bool) -> Result<(), ModelError> {
        if must_exist {
            if !self.configs.contains_key(name) {
                return Err(ModelError::UnknownAdapter(name.into(), self.known()));
            }
        } else {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ModelError::BadAdapterName(name.into()));
            }
            if self.configs.contains_key(name) {
                return Err(ModelError::AdapterExists(name.into()));
            }
        }
        Ok(())
    }

    fn known(&self) -> String {
        if self.configs.is_empty() {
            "none".into()
        } else {
            self.configs
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Checks a new adapter before the backend creates its matrices: a free valid name and a
    /// positive rank.
    pub fn check_new(&self, name: &str, cfg: &LoraConfig) -> Result<(), ModelError> {
        self.check_name(name, false)?;
        if cfg.r <= 0 {
            return Err(ModelError::InvalidConfig(format!(
                "LoRA rank `r` must be positive, got {}",
                cfg.r
            )));
        }
        Ok(())
    }

    /// Records adapter `name` (its matrices exist in the backend now).
    pub fn insert(&mut self, name: &str, cfg: &LoraConfig) {
        self.configs.insert(name.to_string(), cfg.clone());
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.configs.keys().cloned().collect()
    }

    pub fn config(&self, name: &str) -> Result<LoraConfig, ModelError> {
        self.check_name(name, true)?;
        Ok(self.configs[name].clone())
    }

    /// Checks that `adapter` names a known adapter (or is off).
    pub fn check_active(&self, adapter: &ActiveAdapter) -> Result<(), ModelError> {
        match adapter.name() {
            Some(n) => self.check_name(n, true),
            None => Ok(()),
        }
    }

    pub fn set_active(&mut self, adapter: ActiveAdapter) -> Result<(), ModelError> {
        self.check_active(&adapter)?;
        self.active = adapter;
        Ok(())
    }

    pub fn active(&self) -> ActiveAdapter {
        self.active.clone()
    }

    pub fn trainable(&self) -> &Trainable {
        &self.trainable
    }

    /// Checks `which` (a named adapter must exist) and records it; the backend then sets
    /// `requires_grad` with [`AdapterSet::trains`].
    pub fn set_trainable(&mut self, which: Trainable) -> Result<(), ModelError> {
        if let Trainable::Adapter(n) = &which {
            self.check_name(n, true)?;
        }
        self.trainable = which;
        Ok(())
    }

    /// Whether variable `key` of the store trains under the current [`Trainable`], given
    /// whether it is a base weight.
    pub fn trains(&self, key: &str, is_base: bool) -> bool {
        match &self.trainable {
            Trainable::Base => is_base,
            Trainable::Adapter(n) => is_lora_key(key, n),
            Trainable::Nothing => false,
        }
    }

    /// Adapter `name`'s matrices among a store's `variables`, keyed as PEFT does (the adapter
    /// name dropped: `<path>.lora_A.weight`).
    pub fn variables(
        &self,
        name: &str,
        variables: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Result<BTreeMap<String, Tensor>, ModelError> {
        self.check_name(name, true)?;
        let mut out = BTreeMap::new();
        for (k, v) in variables {
            for ab in ["lora_A", "lora_B"] {
                if let Some(path) = k.strip_suffix(&format!(".{ab}.{name}.weight")) {
                    out.insert(format!("{path}.{ab}.weight"), v);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every adapter matrix that requires grad, by PEFT key (`variables_of(name)`: the
    /// backend's [`AdapterSet::variables`]).
    pub fn trainable_variables(
        &self,
        variables_of: impl Fn(&str) -> Result<BTreeMap<String, Tensor>, ModelError>,
    ) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for name in self.configs.keys() {
            for (k, v) in variables_of(name).expect("known adapter") {
                if v.requires_grad() {
                    out.insert(k, v);
                }
            }
        }
        out
    }

    /// Writes adapter `name`'s `variables` (PEFT keys) to `dir` in the PEFT layout.
    pub fn save(
        &self,
        name: &str,
        dir: &Path,
        variables: &BTreeMap<String, Tensor>,
    ) -> Result<(), ModelError> {
        peft::export(dir, &self.config(name)?, variables)
    }

    /// Reads the PEFT- or diffusers-layout adapter in `dir` for a new adapter `name`, checked
    /// against the `(shape, kind)` by PEFT key that `expected(config)` says the backend would
    /// create (missing, unexpected and mis-shaped tensors are an error naming the file).
    pub fn read(
        &self,
        dir: &Path,
        name: &str,
        expected: impl Fn(&LoraConfig) -> BTreeMap<String, (Vec<i64>, Kind)>,
    ) -> Result<peft::ImportedAdapter, ModelError> {
        self.check_name(name, false)?;
        let imp = peft::import(dir)?;
        let expected = expected(&imp.config);
        let mut diff: TensorDiff = checkpoint::compare_shapes(&imp.tensors, &expected);
        if !imp.explicit_targets && expected.is_empty() {
            diff.unexpected = imp.tensors.keys().cloned().collect();
        }
        if !diff.is_empty() {
            return Err(ModelError::Checkpoint {
                path: dir.join(peft::ADAPTER_WEIGHTS),
                diff,
            });
        }
        Ok(imp)
    }
}

/// Whether store variable `key` is one of adapter `name`'s LoRA matrices.
pub fn is_lora_key(key: &str, name: &str) -> bool {
    key.contains(&format!(".lora_A.{name}.")) || key.contains(&format!(".lora_B.{name}."))
}

/// The `(shape, kind)` by PEFT key of the matrices adapter `cfg` adds to `layers`
/// (`(module path, in, out, kind)` of every LoRA-capable linear layer).
pub fn adapter_shapes<'a>(
    cfg: &LoraConfig,
    layers: impl IntoIterator<Item = (&'a str, i64, i64, Kind)>,
) -> BTreeMap<String, (Vec<i64>, Kind)> {
    let mut out = BTreeMap::new();
    for (path, i, o, kind) in layers {
        if cfg.targets(path) {
            out.insert(format!("{path}.lora_A.weight"), (vec![cfg.r, i], kind));
            out.insert(format!("{path}.lora_B.weight"), (vec![o, cfg.r], kind));
        }
    }
    out
}

/// `(module path, in, out, kind)` of every 2-D `<path>.weight` among a state dict's `base`
/// variables: the linear layers LoRA can target ([`adapter_shapes`]).
pub fn linear_layers(base: &BTreeMap<String, Tensor>) -> Vec<(&str, i64, i64, Kind)> {
    base.iter()
        .filter_map(|(k, w)| {
            let path = k.strip_suffix(".weight")?;
            match w.size().as_slice() {
                [o, i] => Some((path, *i, *o, w.kind())),
                _ => None,
            }
        })
        .collect()
}

/// Removes every adapter from `linears` and their matrices from the variable store `vars`
/// (a `VarStore`'s `variables_`): the model is its base again, as loaded, for the next task
/// that leases it from the per-worker model cache.
pub fn clear_adapters(
    linears: Vec<&mut LoraLinear>,
    vars: &std::sync::Arc<std::sync::Mutex<tch::nn::Variables>>,
) {
    for l in linears {
        l.adapters.clear();
    }
    let is_lora = |k: &str| k.contains(".lora_A.") || k.contains(".lora_B.");
    let mut vars = vars.lock().unwrap_or_else(|p| p.into_inner());
    let mut gone = std::collections::HashSet::new();
    vars.named_variables.retain(|k, t| {
        let keep = !is_lora(k);
        if !keep {
            gone.insert(t.data_ptr() as usize);
        }
        keep
    });
    vars.trainable_variables
        .retain(|v| !gone.contains(&(v.tensor.data_ptr() as usize)));
}
