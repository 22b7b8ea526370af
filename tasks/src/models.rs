//! Model configurations, torch-free so the front end checks them. `TinyKontextConfig`: the
//! architecture of tiny-kontext, saved as `config.json` next to the
//! weights. Field names follow diffusers' `FluxTransformer2DModel` config where they mean
//! the same thing.

use crate::sampling::SchedulerConfig;
use serde::{Deserialize, Serialize};

/// Architecture of tiny-kontext. The default trains a step on 32 images of 32×32 in well
/// under a second on 2 CPU cores (the `models` module docs have the measurement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TinyKontextConfig {
    /// Latent channels; the tiny model's latent is the RGB image scaled to [−1, 1], so 3.
    pub in_channels: i64,
    /// Side of the square latent patch that becomes one token (`p·p·in_channels` values).
    pub patch_size: i64,
    /// Number of double-stream transformer blocks (`transformer_blocks.N`).
    pub num_layers: i64,
    /// Attention heads per block.
    pub num_attention_heads: i64,
    /// Width of one head; the model width is `num_attention_heads · attention_head_dim`.
    pub attention_head_dim: i64,
    /// MLP width as a multiple of the model width.
    pub mlp_ratio: f64,
    /// Channels of the sinusoidal timestep embedding before its MLP.
    pub timestep_freq_dim: i64,
    /// The instruction encoder (its width is FLUX's `joint_attention_dim` and
    /// `pooled_projection_dim`).
    pub text_encoder: TextEncoderConfig,
    /// Time-shift settings the samplers read (method-spec §6).
    pub scheduler: SchedulerConfig,
}

impl Default for TinyKontextConfig {
    fn default() -> Self {
        TinyKontextConfig {
            in_channels: 3,
            patch_size: 4,
            num_layers: 4,
            num_attention_heads: 4,
            attention_head_dim: 24,
            mlp_ratio: 4.0,
            timestep_freq_dim: 128,
            text_encoder: TextEncoderConfig::default(),
            scheduler: SchedulerConfig::default(),
        }
    }
}

impl TinyKontextConfig {
    /// Model width.
    pub fn dim(&self) -> i64 {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Values per token: `p·p·in_channels`.
    pub fn patch_dim(&self) -> i64 {
        self.patch_size * self.patch_size * self.in_channels
    }

    /// Rejects sizes that would fail (or panic) when building or running the model.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let t = &self.text_encoder;
        let positive = [
            ("in_channels", self.in_channels),
            ("patch_size", self.patch_size),
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("attention_head_dim", self.attention_head_dim),
            ("timestep_freq_dim", self.timestep_freq_dim),
            (
                "text_encoder.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("text_encoder.hidden_size", t.hidden_size),
            ("text_encoder.num_hidden_layers", t.num_hidden_layers),
            ("text_encoder.num_attention_heads", t.num_attention_heads),
            ("text_encoder.intermediate_size", t.intermediate_size),
        ];
        for (name, v) in positive {
            if v <= 0 {
                return Err(InvalidConfig(format!("`{name}` must be positive, got {v}")));
            }
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 {
            return Err(InvalidConfig(format!(
                "`mlp_ratio` must be positive, got {}",
                self.mlp_ratio
            )));
        }
        if t.hidden_size % t.num_attention_heads != 0 {
            return Err(InvalidConfig(format!(
                "`text_encoder.hidden_size` ({}) must divide by `text_encoder.num_attention_heads` ({})",
                t.hidden_size, t.num_attention_heads
            )));
        }
        if self.timestep_freq_dim % 2 != 0 {
            return Err(InvalidConfig(format!(
                "`timestep_freq_dim` must be even, got {}",
                self.timestep_freq_dim
            )));
        }
        Ok(())
    }
}

/// Settings of the instruction encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderConfig {
    /// Words of the vocabulary (lowercase); `<pad>`, `<unk>`, `<bos>` are added in front.
    pub vocab: Vec<String>,
    /// Token sequence length, `<bos>` included; longer instructions are truncated.
    pub max_position_embeddings: i64,
    /// Width of the token states.
    pub hidden_size: i64,
    /// Number of encoder layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer (`hidden_size` must divide by it).
    pub num_attention_heads: i64,
    /// Width of each layer's MLP.
    pub intermediate_size: i64,
}

/// Words of the synthetic edit world's instructions (`synth`), refined variants included.
pub const DEFAULT_VOCAB: &str = "a about add an and apply are area as away background bigger \
    blocks blue bottom centre change changing circle coarse colour colours darken darker delete \
    down else empty enlarge erase evenly every everything exactly existing fill for from give \
    green grey how image in into is it its keeping lavender leaving left light little look make \
    mint mosaic move moving name nothing object objects of on one or orange other paint part \
    picture pixelated place position purple put red remove render replace rest restoring right \
    same sand shape shift shrink size slide smaller square style surrounding swap take texture \
    the they to tone tones top towards triangle turn unchanged up warm warmer was where while \
    whole with without yellow";

impl Default for TextEncoderConfig {
    fn default() -> Self {
        TextEncoderConfig {
            vocab: DEFAULT_VOCAB
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            max_position_embeddings: 32,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
        }
    }
}

/// A model config whose sizes cannot work (the message names the field).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid config: {0}")]
pub struct InvalidConfig(pub String);
