//! The RL state artifact: the loop carry of `rollout → reward → nft-train → ema`.
//!
//! A directory holding everything needed to continue bit-for-bit (method-spec §5):
//!
//! ```text
//! state.json               StateInfo: format, counters, configs, RNG scheme, reward
//!                          normalisation records, banned groups, per-iteration history
//! theta/                   θ, adapter `default`, PEFT layout (adapter_model.safetensors +
//!                          adapter_config.json)
//! theta_old/               θ_old, adapter `old`, PEFT layout
//! optimizer.safetensors    AdamW moments `exp_avg/<param>` and `exp_avg_sq/<param>`
//!                          (the step count is `optimizer.t` in state.json)
//! ```
//!
//! The loop's carry starts as the base model directory itself (`config.json` +
//! `model.safetensors`, no `state.json`): that is "iteration 0" — fresh adapters (B = 0, so
//! θ = θ_old = θ_ref in outputs), θ_old a copy of θ, zero moments.
//!
//! Randomness: no kind uses libtorch's global generator. Every random draw comes from a
//! [`StreamRng`](crate::rng::StreamRng) derived from `(seed param, tag)` where the
//! tag names the purpose and the position (`rollout/<iteration>/...`,
//! `nft/<step>/eps/<sample>/<slot>`), so the stream state is fully determined by the seeds and
//! the counters `iteration`/`step` stored here.

use super::RlError;
use super::adamw::{AdamW, AdamWConfig};
use crate::models::checkpoint::{self, CONFIG_FILE, WEIGHTS_FILE};
use crate::models::{BaseModel, EditPolicy, LoraConfig, THETA, THETA_OLD, Trainable};
use crate::rl::reward::GroupKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Device;

pub const STATE_FILE: &str = "state.json";
pub const THETA_DIR: &str = "theta";
pub const THETA_OLD_DIR: &str = "theta_old";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const FORMAT: &str = "cocoflow-rl-state";
pub const FORMAT_VERSION: u32 = 1;
/// How random streams are derived (recorded in every state for readers).
pub const RNG_SCHEME: &str = "StreamRng::derive(seed, tag): SplitMix64 seeded by BLAKE3(\"{seed}/{tag}\"); tags rollout/select/<iteration>, rollout/<iteration>/<group>/<k>, nft/<step>/perm/<sample>, nft/<step>/eps/<sample>/<slot>";

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateInfo {
    pub format: String,
    pub version: u32,
    /// BLAKE3 of the base model's `model.safetensors` this state was trained on.
    pub base_model_digest: String,
    /// Completed RL iterations: the next rollout is iteration `iteration` (0-based).
    pub iteration: u64,
    /// `nft-train` updates done (the global step η of the EMA is computed from).
    pub step: u64,
    /// The adapters' LoRA settings.
    pub lora: LoraConfig,
    pub optimizer: OptimizerInfo,
    pub ema: EmaInfo,
    pub rng: RngInfo,
    /// The reward normaliser `Z` and r_raw moments of each trained iteration.
    pub reward_norm: Vec<NormRecord>,
    /// Degenerate groups left out of the loss, per iteration.
    pub banned_groups: Vec<BannedGroup>,
    /// Canonical params of the last `nft-train` and `ema` that wrote this state.
    pub configs: BTreeMap<String, serde_json::Value>,
    /// Per-iteration training statistics.
    pub history: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizerInfo {
    pub config: AdamWConfig,
    /// AdamW steps taken (bias correction).
    pub t: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmaInfo {
    /// The `step` the last EMA update followed (None: never applied).
    pub last_step: Option<u64>,
    pub last_eta: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RngInfo {
    pub scheme: String,
    /// The `seed` param of the last `nft-train`.
    pub nft_seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormRecord {
    pub iteration: u64,
    pub z: f64,
    pub r_raw_mean: f64,
    pub r_raw_std: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BannedGroup {
    pub iteration: u64,
    #[serde(flatten)]
    pub group: GroupKey,
}

impl StateInfo {
    pub fn fresh(base_model_digest: String, lora: LoraConfig) -> StateInfo {
        StateInfo {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            base_model_digest,
            iteration: 0,
            step: 0,
            lora,
            optimizer: OptimizerInfo {
                config: AdamWConfig::default(),
                t: 0,
            },
            ema: EmaInfo::default(),
            rng: RngInfo {
                scheme: RNG_SCHEME.into(),
                nft_seed: None,
            },
            reward_norm: Vec::new(),
            banned_groups: Vec::new(),
            configs: BTreeMap::new(),
            history: Vec::new(),
        }
    }
}

/// BLAKE3 (hex) of a file's bytes.
pub fn file_digest(path: &Path) -> Result<String, RlError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RlError::Invalid(format!("cannot read `{}`: {e}", path.display())))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// The digest of a base model directory's weights ([`crate::models::weights_digest`]: for
/// tiny-kontext the BLAKE3 of `model.safetensors`).
pub fn base_digest(model_dir: &Path) -> Result<String, RlError> {
    Ok(crate::models::weights_digest(model_dir)?)
}

/// Whether `dir` is a saved RL state (else it should be a base model directory).
pub fn is_state(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// Reads `state.json` of a state directory, or `None` for a base model directory.
pub fn read_info(dir: &Path) -> Result<Option<StateInfo>, RlError> {
    if !is_state(dir) {
        if (dir.join(CONFIG_FILE).is_file() && dir.join(WEIGHTS_FILE).is_file())
            || dir.join("model_index.json").is_file()
        {
            return Ok(None);
        }
        return Err(RlError::Invalid(format!(
            "`{}` is neither an RL state (no `{STATE_FILE}`) nor a base model directory (`{CONFIG_FILE}` + `{WEIGHTS_FILE}`, or a diffusers repository's `model_index.json`)",
            dir.display()
        )));
    }
    let info: StateInfo = checkpoint::read_json(&dir.join(STATE_FILE))?;
    if info.format != FORMAT || info.version != FORMAT_VERSION {
        return Err(RlError::Invalid(format!(
            "`{}` has format {} v{}, expected {FORMAT} v{FORMAT_VERSION}",
            dir.join(STATE_FILE).display(),
            info.format,
            info.version
        )));
    }
    Ok(Some(info))
}

/// Checks that a state belongs to the base model `model_dir` (for a base-directory state:
/// that it is the same model).
pub fn check_base(
    state_dir: &Path,
    info: Option<&StateInfo>,
    model_dir: &Path,
) -> Result<String, RlError> {
    let digest = base_digest(model_dir)?;
    let theirs = match info {
        Some(i) => i.base_model_digest.clone(),
        None => base_digest(state_dir)?,
    };
    if theirs != digest {
        return Err(RlError::Invalid(format!(
            "the `state` input belongs to base model {} but the `model` input is {}",
            &theirs[..12.min(theirs.len())],
            &digest[..12.min(digest.len())]
        )));
    }
    Ok(digest)
}

/// A loaded state: the base model with adapters θ (`default`) and θ_old (`old`), the
/// optimiser and the bookkeeping.
pub struct LoadedState {
    pub model: Box<dyn EditPolicy>,
    pub info: StateInfo,
    pub optimizer: AdamW,
    /// Whether this came from a base model directory (iteration 0).
    pub fresh: bool,
}

/// Loads the base model and the state `state_dir` onto `device`. A base model directory as the
/// state gives fresh adapters with `lora` (θ_old = θ, B = 0) and zero moments. For a saved
/// state, `lora`'s rank and alpha must match the saved adapters (`lora_rank`/`lora_alpha`).
pub fn load(
    base: &BaseModel,
    state_dir: &Path,
    device: Device,
    lora: &LoraConfig,
) -> Result<LoadedState, RlError> {
    let info = read_info(state_dir)?;
    let digest = check_base(state_dir, info.as_ref(), base.dir())?;
    if info.is_some() {
        // the saved adapters against the base's files, before the base is loaded
        for sub in [THETA_DIR, THETA_OLD_DIR] {
            crate::models::open::check_adapter(base.dir(), &state_dir.join(sub))?;
        }
    }
    let mut model = base.load(device)?;
    model.set_trainable(Trainable::Nothing)?;
    match info {
        None => {
            model.add_adapter(THETA, lora)?;
            model.add_adapter(THETA_OLD, lora)?;
            model.copy_adapter(THETA, THETA_OLD)?;
            let params = model.adapter_variables(THETA)?;
            let optimizer = AdamW::fresh(AdamWConfig::default(), &params);
            Ok(LoadedState {
                model,
                info: StateInfo::fresh(digest, lora.clone()),
                optimizer,
                fresh: true,
            })
        }
        Some(info) => {
            if info.lora.r != lora.r {
                return Err(RlError::Invalid(format!(
                    "`lora_rank` is {} but the state's adapters have rank {}",
                    lora.r, info.lora.r
                )));
            }
            if info.lora.lora_alpha != lora.lora_alpha {
                return Err(RlError::Invalid(format!(
                    "`lora_alpha` is {} but the state's adapters have alpha {}",
                    lora.lora_alpha, info.lora.lora_alpha
                )));
            }
            model.load_adapter(&state_dir.join(THETA_DIR), THETA)?;
            model.load_adapter(&state_dir.join(THETA_OLD_DIR), THETA_OLD)?;
            let params = model.adapter_variables(THETA)?;
            let saved = checkpoint::read_safetensors(&state_dir.join(OPTIMIZER_FILE))?;
            let optimizer = AdamW::from_tensors(
                info.optimizer.config.clone(),
                info.optimizer.t,
                saved,
                &params,
            )
            .map_err(|m| format!("`{}`: {m}", state_dir.join(OPTIMIZER_FILE).display()))?;
            Ok(LoadedState {
                model,
                info,
                optimizer,
                fresh: false,
            })
        }
    }
}

impl LoadedState {
    /// Writes the state to `dir` (created). Output is byte-identical for identical state.
    pub fn save(&self, dir: &Path) -> Result<(), RlError> {
        checkpoint::create_dir(dir)?;
        self.model.save_adapter(THETA, &dir.join(THETA_DIR))?;
        self.model
            .save_adapter(THETA_OLD, &dir.join(THETA_OLD_DIR))?;
        checkpoint::write_safetensors(&dir.join(OPTIMIZER_FILE), &self.optimizer.tensors())?;
        let mut info = self.info.clone();
        info.optimizer = OptimizerInfo {
            config: self.optimizer.cfg.clone(),
            t: self.optimizer.t,
        };
        write_info(dir, &info)
    }
}

pub fn write_info(dir: &Path, info: &StateInfo) -> Result<(), RlError> {
    checkpoint::write_json(&dir.join(STATE_FILE), info).map_err(RlError::from)
}

/// A digest naming θ_old of a state (`fresh` for a base directory): rollouts record it and
/// `nft-train` checks it, so rollouts cannot be paired with the wrong state.
pub fn theta_old_digest(state_dir: &Path) -> Result<String, RlError> {
    if !is_state(state_dir) {
        return Ok("fresh".into());
    }
    file_digest(
        &state_dir
            .join(THETA_OLD_DIR)
            .join(crate::models::peft::ADAPTER_WEIGHTS),
    )
}

/// Copies every regular file of `from` (recursively) to `to`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), RlError> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create `{}`: {e}", to.display()))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| format!("cannot read `{}`: {e}", from.display()))?;
    for entry in entries {
        let entry = entry?;
        let ty = entry.file_type()?;
        let target = to.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("cannot copy `{}`: {e}", entry.path().display()))?;
            // Store files are read-only; the copy is edited in place.
            let mut perm = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&target, perm)?;
        }
    }
    Ok(())
}

/// Applies the EMA to a state directory in place: θ_old's adapter file and `state.json`.
pub fn apply_ema(
    dir: &Path,
    schedule: &crate::nft::ema::EmaSchedule,
    params_json: serde_json::Value,
) -> Result<f64, RlError> {
    let mut info = read_info(dir)?.ok_or_else(|| RlError::Invalid("not an RL state".into()))?;
    if info.ema.last_step == Some(info.step) {
        return Err(RlError::Invalid(format!(
            "the EMA was already applied after step {} (is the `state` input an `ema` output?)",
            info.step
        )));
    }
    let eta = schedule.eta(info.step);
    let new_path = dir
        .join(THETA_DIR)
        .join(crate::models::peft::ADAPTER_WEIGHTS);
    let old_path = dir
        .join(THETA_OLD_DIR)
        .join(crate::models::peft::ADAPTER_WEIGHTS);
    let new = crate::models::checkpoint::read_safetensors(&new_path)?;
    let old = crate::models::checkpoint::read_safetensors(&old_path)?;
    crate::nft::ema::ema_update(&old, &new, eta)?;
    crate::models::checkpoint::write_safetensors(&old_path, &old)?;
    info.ema.last_step = Some(info.step);
    info.ema.last_eta = Some(eta);
    info.configs.insert("ema".into(), params_json);
    write_info(dir, &info)?;
    Ok(eta)
}
