//! The configs of a diffusers Qwen-Image-Edit repository, read straight from its JSON files:
//! `transformer/config.json`, `vae/config.json`, `text_encoder/config.json` (Qwen2.5-VL, in
//! transformers 5's nested layout or the flat layout transformers 4 wrote),
//! `processor/processor_config.json` (transformers 5) or `processor/preprocessor_config.json`
//! (transformers 4), `processor/tokenizer_config.json` and `scheduler/scheduler_config.json`.
//! Field names are the files' keys; keys cocoflow does not use are ignored. Defaults are the
//! values of the Python classes' constructors.

use super::super::error::ModelError;
use serde::Deserialize;

pub use super::super::flux_kontext::config::{
    FlowMatchEulerDiscreteSchedulerConfig, ModelIndex, read_config,
};

pub(super) fn bad(m: String) -> Result<(), ModelError> {
    Err(ModelError::InvalidConfig(m))
}

pub(super) fn positive(fields: &[(&str, i64)]) -> Result<(), ModelError> {
    for (name, v) in fields {
        if *v <= 0 {
            return bad(format!("`{name}` must be positive, got {v}"));
        }
    }
    Ok(())
}

// --- transformer ------------------------------------------------------------------------

/// diffusers' `QwenImageTransformer2DModel` (`transformer/config.json`). Defaults are the
/// constructor's, which are Qwen-Image's (20B: 60 layers of width 3072).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QwenImageTransformer2DModelConfig {
    /// Side of the latent patch of one token; the pipeline packs 2×2 (`in_channels = 4·z_dim`).
    #[serde(default = "two")]
    pub patch_size: i64,
    /// Channels of one packed token (Qwen-Image: 16 × 4 = 64).
    #[serde(default = "sixty_four")]
    pub in_channels: i64,
    /// Latent channels of the output per patch cell; `null` means `in_channels`. The head
    /// outputs `patch_size² · out_channels` per token.
    #[serde(default = "sixteen")]
    pub out_channels: Option<i64>,
    /// Double-stream blocks (`transformer_blocks.N`); Qwen-Image: 60.
    #[serde(default = "sixty")]
    pub num_layers: i64,
    /// Width of one attention head; Qwen-Image: 128.
    #[serde(default = "head_dim")]
    pub attention_head_dim: i64,
    /// Heads; the model width is `num_attention_heads · attention_head_dim` (Qwen-Image: 3072).
    #[serde(default = "heads")]
    pub num_attention_heads: i64,
    /// Width of the prompt states (Qwen2.5-VL's hidden size; 7B: 3584).
    #[serde(default = "joint_dim")]
    pub joint_attention_dim: i64,
    /// A guidance embedding: not supported by diffusers' own forward either (it passes the
    /// guidance to an embedding that takes none), so cocoflow rejects it.
    #[serde(default)]
    pub guidance_embeds: bool,
    /// RoPE widths of the (frame, height, width) axes, summing to `attention_head_dim`.
    #[serde(default = "axes")]
    pub axes_dims_rope: Vec<i64>,
    /// Qwen-Image-Edit-2511: the source image tokens are modulated with the embedding of
    /// timestep 0 (`modulate_index`), the target tokens with the real timestep's.
    #[serde(default)]
    pub zero_cond_t: bool,
    /// Qwen-Image-Layered's extra timestep embedding: not supported.
    #[serde(default)]
    pub use_additional_t_cond: bool,
    /// Qwen-Image-Layered's layer RoPE: not supported.
    #[serde(default)]
    pub use_layer3d_rope: bool,
}

pub(super) fn two() -> i64 {
    2
}
fn sixty_four() -> i64 {
    64
}
fn sixteen() -> Option<i64> {
    Some(16)
}
fn sixty() -> i64 {
    60
}
fn head_dim() -> i64 {
    128
}
fn heads() -> i64 {
    24
}
fn joint_dim() -> i64 {
    3584
}
fn axes() -> Vec<i64> {
    vec![16, 56, 56]
}

impl Default for QwenImageTransformer2DModelConfig {
    /// Qwen-Image(-Edit)'s `transformer/config.json`.
    fn default() -> Self {
        QwenImageTransformer2DModelConfig {
            patch_size: 2,
            in_channels: 64,
            out_channels: Some(16),
            num_layers: 60,
            attention_head_dim: 128,
            num_attention_heads: 24,
            joint_attention_dim: 3584,
            guidance_embeds: false,
            axes_dims_rope: axes(),
            zero_cond_t: false,
            use_additional_t_cond: false,
            use_layer3d_rope: false,
        }
    }
}

impl QwenImageTransformer2DModelConfig {
    /// The model width (`inner_dim`).
    pub fn inner_dim(&self) -> i64 {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> i64 {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Channels per token of the output (`proj_out`): `patch_size² · out_channels`.
    pub fn out_dim(&self) -> i64 {
        self.patch_size * self.patch_size * self.out_channels()
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        positive(&[
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels()),
            ("attention_head_dim", self.attention_head_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("joint_attention_dim", self.joint_attention_dim),
        ])?;
        if self.axes_dims_rope.len() != 3 {
            return bad(format!(
                "`axes_dims_rope` must have 3 entries (frame, height, width), got {:?}",
                self.axes_dims_rope
            ));
        }
        if self.axes_dims_rope.iter().sum::<i64>() != self.attention_head_dim {
            return bad(format!(
                "`axes_dims_rope` {:?} must sum to `attention_head_dim` {}",
                self.axes_dims_rope, self.attention_head_dim
            ));
        }
        if self.axes_dims_rope.iter().any(|d| *d <= 0 || d % 2 != 0) {
            return bad(format!(
                "every `axes_dims_rope` entry must be positive and even, got {:?}",
                self.axes_dims_rope
            ));
        }
        let unsupported = [
            ("guidance_embeds", self.guidance_embeds),
            ("use_additional_t_cond", self.use_additional_t_cond),
            ("use_layer3d_rope", self.use_layer3d_rope),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, on)| *on) {
            return bad(format!(
                "`{name}: true` is not supported (Qwen-Image-Edit does not use it)"
            ));
        }
        Ok(())
    }
}

// --- VAE --------------------------------------------------------------------------------

/// diffusers' `AutoencoderKLQwenImage` (`vae/config.json`), the Wan-2.1 video VAE Qwen-Image
/// fine-tuned. Defaults are the constructor's (Qwen-Image's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AutoencoderKLQwenImageConfig {
    /// Channels of the first level; level `i` has `base_dim · dim_mult[i]`.
    #[serde(default = "base_dim")]
    pub base_dim: i64,
    /// Latent channels.
    #[serde(default = "sixteen_i")]
    pub z_dim: i64,
    #[serde(default = "dim_mult")]
    pub dim_mult: Vec<i64>,
    /// Residual blocks per encoder level (the decoder has one more).
    #[serde(default = "two")]
    pub num_res_blocks: i64,
    /// Scales (1, 1/2, ...) with self-attention after the encoder's residual blocks.
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    /// Per down level: also halve time (`downsample3d`, with a `time_conv`). An image is one
    /// frame, which no `time_conv` touches; the weights still load.
    #[serde(default = "temperal")]
    pub temperal_downsample: Vec<bool>,
    #[serde(default = "three")]
    pub input_channels: i64,
    /// Per-channel latent statistics: model latents are `(z − mean) / std`.
    #[serde(default = "latents_mean")]
    pub latents_mean: Vec<f64>,
    #[serde(default = "latents_std")]
    pub latents_std: Vec<f64>,
}

fn base_dim() -> i64 {
    96
}
pub(super) fn sixteen_i() -> i64 {
    16
}
fn dim_mult() -> Vec<i64> {
    vec![1, 2, 4, 4]
}
fn temperal() -> Vec<bool> {
    vec![false, true, true]
}
pub(super) fn three() -> i64 {
    3
}
fn latents_mean() -> Vec<f64> {
    vec![
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
        0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ]
}
fn latents_std() -> Vec<f64> {
    vec![
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652,
        1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ]
}

impl Default for AutoencoderKLQwenImageConfig {
    /// Qwen-Image's `vae/config.json`.
    fn default() -> Self {
        AutoencoderKLQwenImageConfig {
            base_dim: 96,
            z_dim: 16,
            dim_mult: dim_mult(),
            num_res_blocks: 2,
            attn_scales: vec![],
            temperal_downsample: temperal(),
            input_channels: 3,
            latents_mean: latents_mean(),
            latents_std: latents_std(),
        }
    }
}

impl AutoencoderKLQwenImageConfig {
    /// Pixels per latent cell along a side: `2^(levels − 1)` (Qwen-Image: 8).
    pub fn scale_factor(&self) -> i64 {
        1 << self.temperal_downsample.len()
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        positive(&[
            ("base_dim", self.base_dim),
            ("z_dim", self.z_dim),
            ("num_res_blocks", self.num_res_blocks),
            ("input_channels", self.input_channels),
        ])?;
        if self.dim_mult.is_empty() || self.dim_mult.iter().any(|m| *m <= 0) {
            return bad(format!(
                "`dim_mult` must be positive multipliers, got {:?}",
                self.dim_mult
            ));
        }
        if self.temperal_downsample.len() + 1 != self.dim_mult.len() {
            return bad(format!(
                "`temperal_downsample` has {} entries; `dim_mult` ({} levels) needs {}",
                self.temperal_downsample.len(),
                self.dim_mult.len(),
                self.dim_mult.len() - 1
            ));
        }
        // the decoder halves the channels in every upsampler
        let top = self.base_dim * self.dim_mult[self.dim_mult.len() - 1];
        if top % 2 != 0 {
            return bad(format!("the decoder's first width {top} must be even"));
        }
        for (name, v) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if v.len() as i64 != self.z_dim {
                return bad(format!(
                    "`{name}` has {} entries, `z_dim` is {}",
                    v.len(),
                    self.z_dim
                ));
            }
        }
        if self.latents_std.contains(&0.0) {
            return bad("`latents_std` has a zero entry".into());
        }
        Ok(())
    }
}

/// Checks a scheduler config for what the Qwen-Image-Edit schedule supports: exponential
/// dynamic shifting, optionally stretched to `shift_terminal`.
pub fn validate_scheduler(cfg: &FlowMatchEulerDiscreteSchedulerConfig) -> Result<(), ModelError> {
    let unsupported = [
        ("use_dynamic_shifting: false", !cfg.use_dynamic_shifting),
        (
            "time_shift_type other than `exponential`",
            cfg.time_shift_type != "exponential",
        ),
        ("invert_sigmas", cfg.invert_sigmas),
        ("use_karras_sigmas", cfg.use_karras_sigmas),
        ("use_exponential_sigmas", cfg.use_exponential_sigmas),
        ("use_beta_sigmas", cfg.use_beta_sigmas),
        ("stochastic_sampling", cfg.stochastic_sampling),
    ];
    if let Some((what, _)) = unsupported.iter().find(|(_, on)| *on) {
        return bad(format!(
            "scheduler setting {what} is not supported (Qwen-Image uses exponential dynamic shifting)"
        ));
    }
    if let Some(t) = cfg.shift_terminal
        && !(0.0..1.0).contains(&t)
    {
        return bad(format!("`shift_terminal` {t} must be in [0, 1)"));
    }
    Ok(())
}
