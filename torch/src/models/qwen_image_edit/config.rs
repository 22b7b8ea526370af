//! The configs of a diffusers Qwen-Image-Edit repository, read straight from its JSON files:
//! `transformer/config.json`, `vae/config.json`, `text_encoder/config.json` (Qwen2.5-VL, in
//! transformers 5's nested layout or the flat layout transformers 4 wrote),
//! `processor/processor_config.json` (transformers 5) or `processor/preprocessor_config.json`
//! (transformers 4), `processor/tokenizer_config.json` and `scheduler/scheduler_config.json`.
//! Field names are the files' keys; keys cocoflow does not use are ignored. Defaults are the
//! values of the Python classes' constructors.

use super::super::error::ModelError;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

pub use super::super::flux_kontext::config::{
    FlowMatchEulerDiscreteSchedulerConfig, ModelIndex, read_config,
};

fn bad(m: String) -> Result<(), ModelError> {
    Err(ModelError::InvalidConfig(m))
}

fn positive(fields: &[(&str, i64)]) -> Result<(), ModelError> {
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

fn two() -> i64 {
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
fn sixteen_i() -> i64 {
    16
}
fn dim_mult() -> Vec<i64> {
    vec![1, 2, 4, 4]
}
fn temperal() -> Vec<bool> {
    vec![false, true, true]
}
fn three() -> i64 {
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
        if self.latents_std.iter().any(|s| *s == 0.0) {
            return bad("`latents_std` has a zero entry".into());
        }
        Ok(())
    }
}

// --- Qwen2.5-VL -------------------------------------------------------------------------

/// RoPE of Qwen2.5-VL's language model: the default (unscaled) rotary embedding with base θ,
/// its `head_dim / 2` frequencies split into M-RoPE sections (time, height, width).
#[derive(Debug, Clone, PartialEq)]
pub struct TextRope {
    pub theta: f64,
    /// Frequencies per section; they sum to `head_dim / 2` (7B: 16, 24, 24).
    pub mrope_section: Vec<i64>,
}

/// transformers' `Qwen25VlTextConfig`. Defaults are the Python class's.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen25VlTextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Grouped-query attention: key/value heads (each serves `heads / kv_heads` query heads).
    pub num_key_value_heads: i64,
    /// The MLP's activation (`silu`).
    pub hidden_act: String,
    pub rms_norm_eps: f64,
    pub rope: TextRope,
}

impl Qwen25VlTextConfig {
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}

/// transformers' `Qwen25VlVisionConfig`. Defaults are the Python class's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Qwen25VlVisionConfig {
    #[serde(default = "depth")]
    pub depth: i64,
    #[serde(default = "v_hidden")]
    pub hidden_size: i64,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default = "v_inter")]
    pub intermediate_size: i64,
    #[serde(default = "sixteen_i")]
    pub num_heads: i64,
    #[serde(default = "three", alias = "in_chans")]
    pub in_channels: i64,
    #[serde(default = "fourteen", alias = "spatial_patch_size")]
    pub patch_size: i64,
    #[serde(default = "two")]
    pub spatial_merge_size: i64,
    #[serde(default = "two")]
    pub temporal_patch_size: i64,
    /// Pixels per side of an attention window (windowed blocks).
    #[serde(default = "window")]
    pub window_size: i64,
    /// Width of the merged tokens (the language model's hidden size).
    #[serde(default = "v_hidden")]
    pub out_hidden_size: i64,
    /// Blocks with full attention over each image; the others attend within windows.
    #[serde(default = "fullatt")]
    pub fullatt_block_indexes: Vec<i64>,
    #[serde(default)]
    pub rope_parameters: Option<Value>,
}

fn depth() -> i64 {
    32
}
fn v_hidden() -> i64 {
    3584
}
fn silu() -> String {
    "silu".into()
}
fn v_inter() -> i64 {
    3420
}
fn fourteen() -> i64 {
    14
}
fn window() -> i64 {
    112
}
fn fullatt() -> Vec<i64> {
    vec![7, 15, 23, 31]
}

impl Qwen25VlVisionConfig {
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_heads
    }

    /// The 2-D rotary base θ (`rope_parameters.rope_theta`, 10000 by default).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0)
    }
}

/// transformers' `Qwen25VlConfig` (`text_encoder/config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen25VlConfig {
    pub text: Qwen25VlTextConfig,
    pub vision: Qwen25VlVisionConfig,
    /// `<|image_pad|>`: one per merged vision token.
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub vision_start_token_id: i64,
    pub vision_end_token_id: i64,
}

fn get_i64(v: &Value, key: &str, default: i64) -> Result<i64, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_i64()
            .ok_or_else(|| format!("`{key}` must be an integer, got {x}")),
    }
}

fn get_f64(v: &Value, key: &str, default: f64) -> Result<f64, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x
            .as_f64()
            .ok_or_else(|| format!("`{key}` must be a number, got {x}")),
    }
}

impl Qwen25VlConfig {
    /// Reads `config.json` in either layout: transformers 5 nests the language model's keys
    /// under `text_config` (with `rope_parameters`); transformers 4 wrote them at the top
    /// level (with `rope_scaling: {type: mrope, mrope_section}` and `rope_theta`).
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let text = match v.get("text_config") {
            Some(t) if t.is_object() => t,
            _ => v,
        };
        let rope = text
            .get("rope_parameters")
            .filter(|r| r.is_object())
            .or_else(|| text.get("rope_scaling").filter(|r| r.is_object()));
        let rope_type = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" && rope_type != "mrope" {
            return Err(format!(
                "rope type `{rope_type}` is not supported (Qwen2.5-VL uses the default M-RoPE)"
            ));
        }
        let theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .map_or_else(|| get_f64(text, "rope_theta", 1_000_000.0), Ok)?;
        let mrope_section: Vec<i64> = match rope.and_then(|r| r.get("mrope_section")) {
            Some(s) => {
                serde_json::from_value(s.clone()).map_err(|e| format!("`mrope_section`: {e}"))?
            }
            None => vec![16, 24, 24],
        };
        if text
            .get("use_sliding_window")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Err("`use_sliding_window: true` is not supported".into());
        }
        let heads = get_i64(text, "num_attention_heads", 64)?;
        let text_cfg = Qwen25VlTextConfig {
            vocab_size: get_i64(text, "vocab_size", 152064)?,
            hidden_size: get_i64(text, "hidden_size", 8192)?,
            intermediate_size: get_i64(text, "intermediate_size", 29568)?,
            num_hidden_layers: get_i64(text, "num_hidden_layers", 80)?,
            num_attention_heads: heads,
            num_key_value_heads: get_i64(text, "num_key_value_heads", heads)?,
            hidden_act: text
                .get("hidden_act")
                .and_then(Value::as_str)
                .unwrap_or("silu")
                .to_string(),
            rms_norm_eps: get_f64(text, "rms_norm_eps", 1e-5)?,
            rope: TextRope {
                theta,
                mrope_section,
            },
        };
        let vision: Qwen25VlVisionConfig = match v.get("vision_config") {
            Some(vc) => {
                serde_json::from_value(vc.clone()).map_err(|e| format!("`vision_config`: {e}"))?
            }
            None => serde_json::from_value(Value::Object(Default::default()))
                .map_err(|e| e.to_string())?,
        };
        Ok(Qwen25VlConfig {
            text: text_cfg,
            vision,
            image_token_id: get_i64(v, "image_token_id", 151655)?,
            video_token_id: get_i64(v, "video_token_id", 151656)?,
            vision_start_token_id: get_i64(v, "vision_start_token_id", 151652)?,
            vision_end_token_id: get_i64(v, "vision_end_token_id", 151653)?,
        })
    }

    /// Reads and validates `path`, naming it on any error.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let v: Value = read_config(path)?;
        let cfg = Self::from_value(&v).map_err(|message| ModelError::Config {
            path: path.to_owned(),
            message,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let t = &self.text;
        positive(&[
            ("vocab_size", t.vocab_size),
            ("hidden_size", t.hidden_size),
            ("intermediate_size", t.intermediate_size),
            ("num_attention_heads", t.num_attention_heads),
            ("num_key_value_heads", t.num_key_value_heads),
        ])?;
        if t.hidden_size % t.num_attention_heads != 0
            || t.num_attention_heads % t.num_key_value_heads != 0
        {
            return bad(format!(
                "text `hidden_size` {} / `num_attention_heads` {} / `num_key_value_heads` {} do not divide",
                t.hidden_size, t.num_attention_heads, t.num_key_value_heads
            ));
        }
        if t.head_dim() % 2 != 0 || t.rope.mrope_section.iter().sum::<i64>() * 2 != t.head_dim() {
            return bad(format!(
                "`mrope_section` {:?} must sum to head_dim / 2 = {}",
                t.rope.mrope_section,
                t.head_dim() / 2
            ));
        }
        let v = &self.vision;
        positive(&[
            ("vision hidden_size", v.hidden_size),
            ("vision num_heads", v.num_heads),
            ("vision patch_size", v.patch_size),
            ("vision spatial_merge_size", v.spatial_merge_size),
            ("vision temporal_patch_size", v.temporal_patch_size),
        ])?;
        if v.hidden_size % v.num_heads != 0 || v.head_dim() % 4 != 0 {
            return bad(format!(
                "vision `hidden_size` {} / `num_heads` {}: the head width must be a multiple of 4",
                v.hidden_size, v.num_heads
            ));
        }
        if v.out_hidden_size != t.hidden_size {
            return bad(format!(
                "vision `out_hidden_size` {} differs from the text `hidden_size` {}",
                v.out_hidden_size, t.hidden_size
            ));
        }
        let unit = v.spatial_merge_size * v.patch_size;
        if v.window_size < unit || v.window_size % unit != 0 {
            return bad(format!(
                "vision `window_size` {} must be a multiple of spatial_merge_size · patch_size = {unit}",
                v.window_size
            ));
        }
        for act in [&t.hidden_act, &v.hidden_act] {
            super::super::flux_kontext::config::activation(act)?;
        }
        Ok(())
    }
}

// --- processor --------------------------------------------------------------------------

/// transformers' `Qwen2VLImageProcessor` settings (the `image_processor` of
/// `processor_config.json`, or `preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Qwen2VLImageProcessorConfig {
    #[serde(default = "clip_mean")]
    pub image_mean: Vec<f64>,
    #[serde(default = "clip_std")]
    pub image_std: Vec<f64>,
    #[serde(default = "fourteen")]
    pub patch_size: i64,
    #[serde(default = "two")]
    pub temporal_patch_size: i64,
    #[serde(default = "two")]
    pub merge_size: i64,
    /// transformers 4 keys; they win over `size` as in transformers 5's constructor.
    #[serde(default)]
    pub min_pixels: Option<i64>,
    #[serde(default)]
    pub max_pixels: Option<i64>,
    /// `{shortest_edge: min_pixels, longest_edge: max_pixels}`.
    #[serde(default)]
    pub size: Option<Value>,
    /// PIL resampling filter id; 3 = bicubic (the only one supported).
    #[serde(default = "bicubic")]
    pub resample: i64,
    #[serde(default = "rescale")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "yes")]
    pub do_normalize: bool,
}

fn clip_mean() -> Vec<f64> {
    vec![0.48145466, 0.4578275, 0.40821073]
}
fn clip_std() -> Vec<f64> {
    vec![0.26862954, 0.26130258, 0.27577711]
}
fn bicubic() -> i64 {
    3
}
fn rescale() -> f64 {
    1.0 / 255.0
}
fn yes() -> bool {
    true
}

impl Qwen2VLImageProcessorConfig {
    /// Reads `processor/processor_config.json` (its `image_processor` entry) or, when absent,
    /// `processor/preprocessor_config.json`.
    pub fn read(dir: &Path) -> Result<(Self, std::path::PathBuf), ModelError> {
        let v5 = dir.join("processor_config.json");
        let v4 = dir.join("preprocessor_config.json");
        let (path, value) = if v5.exists() {
            let v: Value = read_config(&v5)?;
            match v.get("image_processor") {
                Some(ip) => (v5, ip.clone()),
                None if v4.exists() => (v4.clone(), read_config(&v4)?),
                None => {
                    return Err(ModelError::Config {
                        path: v5,
                        message: "no `image_processor` entry".into(),
                    });
                }
            }
        } else {
            (v4.clone(), read_config(&v4)?)
        };
        let cfg: Self = serde_json::from_value(value).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|e| ModelError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok((cfg, path))
    }

    /// `(min_pixels, max_pixels)` of `smart_resize`.
    pub fn pixel_limits(&self) -> (i64, i64) {
        let size = |k: &str| {
            self.size
                .as_ref()
                .and_then(|s| s.get(k))
                .and_then(Value::as_i64)
        };
        (
            self.min_pixels
                .or_else(|| size("shortest_edge"))
                .unwrap_or(56 * 56),
            self.max_pixels
                .or_else(|| size("longest_edge"))
                .unwrap_or(28 * 28 * 1280),
        )
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.resample != 3 {
            return bad(format!(
                "`resample` {} is not supported (Qwen2-VL resizes bicubically: 3)",
                self.resample
            ));
        }
        if !(self.do_resize && self.do_rescale && self.do_normalize) {
            return bad("`do_resize`, `do_rescale` and `do_normalize` must be true".into());
        }
        if self.image_mean.len() != 3 || self.image_std.len() != 3 {
            return bad("`image_mean` and `image_std` need 3 entries".into());
        }
        positive(&[
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("merge_size", self.merge_size),
        ])
    }
}

/// What cocoflow reads of `tokenizer_config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenizerConfig {
    /// `right` (transformers' default) or `left`.
    #[serde(default = "right")]
    pub padding_side: String,
    #[serde(default)]
    pub pad_token: Option<Value>,
}

fn right() -> String {
    "right".into()
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
