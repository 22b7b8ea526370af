//! The configs of a diffusers FLUX.1 Kontext repository, read straight from its JSON files:
//! `model_index.json`, `transformer/config.json`, `vae/config.json`,
//! `text_encoder/config.json` (CLIP), `text_encoder_2/config.json` (T5) and
//! `scheduler/scheduler_config.json`. Field names are the files' keys; keys cocoflow does not
//! use (`_diffusers_version`, `torch_dtype`, dropout rates, ...) are ignored. Defaults are the
//! values of the Python classes' constructors.

use super::super::error::ModelError;
use serde::Deserialize;
use std::path::Path;

// The text encoders' activations live with the layers; named here too, where the configs'
// `hidden_act` and `feed_forward_proj` are read into them.
pub use super::layers::{Activation, activation};

/// `model_index.json`: the pipeline class and its components' `[library, class]` pairs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelIndex {
    /// `FluxKontextPipeline` for a Kontext repository.
    #[serde(rename = "_class_name")]
    pub class_name: String,
    /// Every other key: component name → `[library, class]` (or `[null, null]` when unset).
    #[serde(flatten)]
    pub components: std::collections::BTreeMap<String, serde_json::Value>,
}

impl ModelIndex {
    /// The `[library, class]` of component `name`, `None` when absent or `[null, null]`.
    pub fn component(&self, name: &str) -> Option<(String, String)> {
        let v = self.components.get(name)?.as_array()?;
        match (v.first()?.as_str(), v.get(1)?.as_str()) {
            (Some(lib), Some(class)) => Some((lib.to_string(), class.to_string())),
            _ => None,
        }
    }
}

fn one() -> i64 {
    1
}
fn yes() -> bool {
    true
}

/// diffusers' `FluxTransformer2DModel` (`transformer/config.json`). Defaults are FLUX.1's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FluxTransformer2DModelConfig {
    /// Side of a latent patch per token. FLUX packs 2×2 in the pipeline and uses 1 here.
    #[serde(default = "one")]
    pub patch_size: i64,
    /// Channels of one packed token: latent channels × 4 (FLUX: 16 × 4 = 64).
    #[serde(default = "in_ch")]
    pub in_channels: i64,
    /// Output channels per token; `null` means `in_channels`.
    #[serde(default)]
    pub out_channels: Option<i64>,
    /// Double-stream blocks (`transformer_blocks.N`); FLUX: 19.
    #[serde(default = "n_double")]
    pub num_layers: i64,
    /// Single-stream blocks (`single_transformer_blocks.N`); FLUX: 38.
    #[serde(default = "n_single")]
    pub num_single_layers: i64,
    /// Width of one attention head; FLUX: 128.
    #[serde(default = "head_dim")]
    pub attention_head_dim: i64,
    /// Heads; the model width is `num_attention_heads · attention_head_dim` (FLUX: 3072).
    #[serde(default = "heads")]
    pub num_attention_heads: i64,
    /// Width of the text states fed to `context_embedder` (T5's `d_model`; FLUX: 4096).
    #[serde(default = "joint_dim")]
    pub joint_attention_dim: i64,
    /// Width of the pooled text embedding (CLIP's `hidden_size`; FLUX: 768).
    #[serde(default = "pooled_dim")]
    pub pooled_projection_dim: i64,
    /// Whether the model embeds a guidance value (`time_text_embed.guidance_embedder`):
    /// true for the guidance-distilled FLUX.1 [dev] and Kontext [dev].
    #[serde(default)]
    pub guidance_embeds: bool,
    /// RoPE widths of the 3 position axes (must sum to `attention_head_dim`); FLUX: 16, 56, 56.
    #[serde(default = "axes")]
    pub axes_dims_rope: Vec<i64>,
}

fn in_ch() -> i64 {
    64
}
fn n_double() -> i64 {
    19
}
fn n_single() -> i64 {
    38
}
fn head_dim() -> i64 {
    128
}
fn heads() -> i64 {
    24
}
fn joint_dim() -> i64 {
    4096
}
fn pooled_dim() -> i64 {
    768
}
fn axes() -> Vec<i64> {
    vec![16, 56, 56]
}

impl Default for FluxTransformer2DModelConfig {
    /// FLUX.1 Kontext [dev] (`black-forest-labs/FLUX.1-Kontext-dev/transformer/config.json`).
    fn default() -> Self {
        FluxTransformer2DModelConfig {
            patch_size: 1,
            in_channels: in_ch(),
            out_channels: None,
            num_layers: n_double(),
            num_single_layers: n_single(),
            attention_head_dim: head_dim(),
            num_attention_heads: heads(),
            joint_attention_dim: joint_dim(),
            pooled_projection_dim: pooled_dim(),
            guidance_embeds: true,
            axes_dims_rope: axes(),
        }
    }
}

impl FluxTransformer2DModelConfig {
    /// The model width (`inner_dim`).
    pub fn inner_dim(&self) -> i64 {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> i64 {
        self.out_channels.unwrap_or(self.in_channels)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
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
        if self.patch_size != 1 {
            return bad(format!(
                "`patch_size` {} is not supported (FLUX packs 2×2 patches in the pipeline and uses 1)",
                self.patch_size
            ));
        }
        let positive = [
            ("in_channels", self.in_channels),
            ("attention_head_dim", self.attention_head_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("joint_attention_dim", self.joint_attention_dim),
            ("pooled_projection_dim", self.pooled_projection_dim),
        ];
        for (name, v) in positive {
            if v <= 0 {
                return bad(format!("`{name}` must be positive, got {v}"));
            }
        }
        Ok(())
    }
}

/// diffusers' `AutoencoderKL` (`vae/config.json`). Defaults are the Python constructor's;
/// FLUX sets 4 blocks `[128, 256, 512, 512]`, 16 latent channels, `scaling_factor` 0.3611,
/// `shift_factor` 0.1159 and no `quant_conv`/`post_quant_conv`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AutoencoderKLConfig {
    /// Image channels in.
    #[serde(default = "three")]
    pub in_channels: i64,
    /// Image channels out.
    #[serde(default = "three")]
    pub out_channels: i64,
    /// One `DownEncoderBlock2D` per resolution level.
    #[serde(default = "down_types")]
    pub down_block_types: Vec<String>,
    /// One `UpDecoderBlock2D` per resolution level.
    #[serde(default = "up_types")]
    pub up_block_types: Vec<String>,
    /// Channels per level; every level but the last halves the resolution.
    #[serde(default = "block_out")]
    pub block_out_channels: Vec<i64>,
    /// ResNet blocks per encoder level (the decoder has one more).
    #[serde(default = "one")]
    pub layers_per_block: i64,
    /// Activation of the ResNet blocks and the output head: `silu` (= `swish`).
    #[serde(default = "silu")]
    pub act_fn: String,
    /// Channels of the latent z.
    #[serde(default = "four")]
    pub latent_channels: i64,
    /// Groups of every GroupNorm.
    #[serde(default = "groups")]
    pub norm_num_groups: i64,
    /// `z_model = (z − shift_factor) · scaling_factor`.
    #[serde(default = "scaling")]
    pub scaling_factor: f64,
    /// See `scaling_factor`; `null` means 0.
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// A 1×1 conv on the encoder's moments (`quant_conv`).
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// A 1×1 conv on z before the decoder (`post_quant_conv`).
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Self-attention in the encoder's and decoder's middle blocks.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn three() -> i64 {
    3
}
fn four() -> i64 {
    4
}
fn groups() -> i64 {
    32
}
fn scaling() -> f64 {
    0.18215
}
fn silu() -> String {
    "silu".into()
}
fn down_types() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn up_types() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn block_out() -> Vec<i64> {
    vec![64]
}

impl AutoencoderKLConfig {
    /// Pixels per latent cell along each side: `2^(levels − 1)` (FLUX: 8).
    pub fn scale_factor(&self) -> i64 {
        1 << (self.block_out_channels.len().max(1) - 1)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(format!(
                "`block_out_channels`, `down_block_types` and `up_block_types` must have the same \
                 positive length, got {}, {} and {}",
                n,
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return bad(format!(
                "unsupported down block `{t}` (only `DownEncoderBlock2D`)"
            ));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return bad(format!(
                "unsupported up block `{t}` (only `UpDecoderBlock2D`)"
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return bad(format!(
                "unsupported `act_fn` `{}` (only `silu`)",
                self.act_fn
            ));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| self.norm_num_groups <= 0 || *c % self.norm_num_groups != 0)
        {
            return bad(format!(
                "channels {c} are not divisible by `norm_num_groups` {}",
                self.norm_num_groups
            ));
        }
        Ok(())
    }
}

/// transformers' `CLIPTextConfig` (`text_encoder/config.json`); defaults are CLIP ViT-L/14's
/// text tower, which FLUX uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "clip_vocab")]
    pub vocab_size: i64,
    #[serde(default = "clip_hidden")]
    pub hidden_size: i64,
    #[serde(default = "clip_inter")]
    pub intermediate_size: i64,
    #[serde(default = "clip_layers")]
    pub num_hidden_layers: i64,
    #[serde(default = "clip_heads")]
    pub num_attention_heads: i64,
    /// Positions of the learned position embedding (77).
    #[serde(default = "clip_pos")]
    pub max_position_embeddings: i64,
    /// `quick_gelu` (x·σ(1.702x), CLIP's), `gelu` or `gelu_new`.
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "clip_eps")]
    pub layer_norm_eps: f64,
    /// Picks the pooled position: with the legacy value 2 the pooled state is at the
    /// *largest* input id of each row (the original CLIP rule: the end-of-text token has the
    /// largest id); otherwise at the first occurrence of this id.
    #[serde(default = "two")]
    pub eos_token_id: i64,
}

fn clip_vocab() -> i64 {
    49408
}
fn clip_hidden() -> i64 {
    768
}
fn clip_inter() -> i64 {
    3072
}
fn clip_layers() -> i64 {
    12
}
fn clip_heads() -> i64 {
    12
}
fn clip_pos() -> i64 {
    77
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn clip_eps() -> f64 {
    1e-5
}
fn two() -> i64 {
    2
}

impl ClipTextConfig {
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.num_attention_heads <= 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(ModelError::InvalidConfig(format!(
                "CLIP `hidden_size` {} is not divisible by `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        activation(&self.hidden_act).map(|_| ())
    }
}

/// transformers' `T5Config` (`text_encoder_2/config.json`), encoder side; defaults are
/// `google/t5-v1_1-xxl`'s, which FLUX uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct T5Config {
    #[serde(default = "t5_vocab")]
    pub vocab_size: i64,
    #[serde(default = "t5_d_model")]
    pub d_model: i64,
    /// Width of one head.
    #[serde(default = "t5_d_kv")]
    pub d_kv: i64,
    #[serde(default = "t5_d_ff")]
    pub d_ff: i64,
    /// Encoder blocks.
    #[serde(default = "t5_layers")]
    pub num_layers: i64,
    #[serde(default = "t5_heads")]
    pub num_heads: i64,
    #[serde(default = "t5_buckets")]
    pub relative_attention_num_buckets: i64,
    #[serde(default = "t5_max_dist")]
    pub relative_attention_max_distance: i64,
    #[serde(default = "t5_eps")]
    pub layer_norm_epsilon: f64,
    /// `gated-gelu` (T5 v1.1: `wo(gelu_new(wi_0 x) · wi_1 x)`), `relu`, `gated-silu`, ...
    #[serde(default = "t5_ff")]
    pub feed_forward_proj: String,
}

fn t5_vocab() -> i64 {
    32128
}
fn t5_d_model() -> i64 {
    4096
}
fn t5_d_kv() -> i64 {
    64
}
fn t5_d_ff() -> i64 {
    10240
}
fn t5_layers() -> i64 {
    24
}
fn t5_heads() -> i64 {
    64
}
fn t5_buckets() -> i64 {
    32
}
fn t5_max_dist() -> i64 {
    128
}
fn t5_eps() -> f64 {
    1e-6
}
fn t5_ff() -> String {
    "gated-gelu".into()
}

impl T5Config {
    /// `(gated, activation)` as transformers derives them from `feed_forward_proj`
    /// (`gated-gelu` means the tanh-approximated `gelu_new`).
    pub fn feed_forward(&self) -> Result<(bool, Activation), ModelError> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, act) = match parts.as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => {
                return Err(ModelError::InvalidConfig(format!(
                    "T5 `feed_forward_proj` `{}` is neither `ACT` nor `gated-ACT`",
                    self.feed_forward_proj
                )));
            }
        };
        let act = if self.feed_forward_proj == "gated-gelu" {
            "gelu_new"
        } else {
            act
        };
        Ok((gated, activation(act)?))
    }
}

/// diffusers' `FlowMatchEulerDiscreteScheduler` (`scheduler/scheduler_config.json`).
/// cocoflow supports the settings FLUX uses: dynamic (exponential) shifting, no Karras /
/// exponential / beta sigmas, no terminal stretch, no inversion, deterministic steps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FlowMatchEulerDiscreteSchedulerConfig {
    /// Timesteps are `σ · num_train_timesteps` (1000).
    #[serde(default = "thousand")]
    pub num_train_timesteps: i64,
    /// Static shift, used only without dynamic shifting.
    #[serde(default = "one_f")]
    pub shift: f64,
    /// μ from the image token count (FLUX: true).
    #[serde(default)]
    pub use_dynamic_shifting: bool,
    #[serde(default = "base_shift")]
    pub base_shift: f64,
    #[serde(default = "max_shift")]
    pub max_shift: f64,
    #[serde(default = "base_seq")]
    pub base_image_seq_len: u64,
    #[serde(default = "max_seq")]
    pub max_image_seq_len: u64,
    /// `exponential` (FLUX) or `linear`.
    #[serde(default = "exponential")]
    pub time_shift_type: String,
    #[serde(default)]
    pub shift_terminal: Option<f64>,
    #[serde(default)]
    pub invert_sigmas: bool,
    #[serde(default)]
    pub use_karras_sigmas: bool,
    #[serde(default)]
    pub use_exponential_sigmas: bool,
    #[serde(default)]
    pub use_beta_sigmas: bool,
    #[serde(default)]
    pub stochastic_sampling: bool,
}

fn thousand() -> i64 {
    1000
}
fn one_f() -> f64 {
    1.0
}
fn base_shift() -> f64 {
    0.5
}
fn max_shift() -> f64 {
    1.15
}
fn base_seq() -> u64 {
    256
}
fn max_seq() -> u64 {
    4096
}
fn exponential() -> String {
    "exponential".into()
}

impl Default for FlowMatchEulerDiscreteSchedulerConfig {
    /// FLUX.1's `scheduler_config.json`.
    fn default() -> Self {
        FlowMatchEulerDiscreteSchedulerConfig {
            num_train_timesteps: 1000,
            shift: 3.0,
            use_dynamic_shifting: true,
            base_shift: 0.5,
            max_shift: 1.15,
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
            time_shift_type: exponential(),
            shift_terminal: None,
            invert_sigmas: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            stochastic_sampling: false,
        }
    }
}

impl FlowMatchEulerDiscreteSchedulerConfig {
    pub fn validate(&self) -> Result<(), ModelError> {
        let unsupported = [
            ("use_dynamic_shifting: false", !self.use_dynamic_shifting),
            (
                "time_shift_type other than `exponential`",
                self.time_shift_type != "exponential",
            ),
            ("shift_terminal", self.shift_terminal.is_some()),
            ("invert_sigmas", self.invert_sigmas),
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("stochastic_sampling", self.stochastic_sampling),
        ];
        match unsupported.iter().find(|(_, on)| *on) {
            Some((what, _)) => Err(ModelError::InvalidConfig(format!(
                "scheduler setting {what} is not supported (FLUX uses exponential dynamic shifting)"
            ))),
            None => Ok(()),
        }
    }
}

/// Reads a JSON config, naming the file on any error.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    super::super::checkpoint::read_json(path)
}
