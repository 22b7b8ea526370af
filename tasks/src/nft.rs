//! The settings of the DiffusionNFT objective with CoCoEdit's region regularisers
//! (method-spec §4), torch-free so the front end checks them; the loss itself is
//! `cocoflow_torch::nft`.

use serde::{Deserialize, Serialize};

/// How the pixel `edit_mask` becomes a mask on the latent grid.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum MaskDown {
    /// A latent cell touching the edit region counts as edit (default).
    #[default]
    Maxpool,
    Nearest,
    /// The reference code's: the edit mask eroded by radius 2, its ring weighted 0.2.
    ErodeRing,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Distance {
    /// `Σ W·(a−b)² / (channels·Σ W)` (default).
    #[default]
    Mse,
    /// The paper's `‖W⊙(a−b)‖₂`.
    L2,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// `z_src`, the source latent (paper; default).
    #[default]
    Source,
    /// The rollout's own clean latent (the reference code).
    X0,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "value")]
pub enum TauMinus {
    /// `τ⁻ = d(x0, z_src; Ẽ)` per sample (paper §B.3.2; default).
    #[default]
    Adaptive,
    /// A constant (the reference code: 0.03).
    Fixed(f64),
}

/// Settings of the loss; defaults are method-spec §4's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NftConfig {
    #[serde(default = "one")]
    pub beta: f64,
    #[serde(default = "five")]
    pub adv_clip: f64,
    #[serde(default = "kl_default")]
    pub kl_weight: f64,
    #[serde(default)]
    pub lambda_ner: f64,
    #[serde(default)]
    pub lambda_er: f64,
    #[serde(default = "tau_plus_default")]
    pub tau_plus: f64,
    #[serde(default)]
    pub tau_minus: TauMinus,
    #[serde(default)]
    pub distance: Distance,
    #[serde(default)]
    pub anchor: Anchor,
    #[serde(default)]
    pub mask_down: MaskDown,
    /// Toggle for L_ner⁺.
    #[serde(default = "yes")]
    pub ner: bool,
    /// Toggle for L_er⁻.
    #[serde(default = "yes")]
    pub er: bool,
}

fn one() -> f64 {
    1.0
}
fn five() -> f64 {
    5.0
}
fn kl_default() -> f64 {
    1e-4
}
fn tau_plus_default() -> f64 {
    1e-3
}
fn yes() -> bool {
    true
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            beta: 1.0,
            adv_clip: 5.0,
            kl_weight: 1e-4,
            lambda_ner: 0.0,
            lambda_er: 0.0,
            tau_plus: 1e-3,
            tau_minus: TauMinus::Adaptive,
            distance: Distance::Mse,
            anchor: Anchor::Source,
            mask_down: MaskDown::Maxpool,
            ner: true,
            er: true,
        }
    }
}
