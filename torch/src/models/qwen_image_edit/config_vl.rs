//! The Qwen2.5-VL prompt encoder's configs: `text_encoder/config.json` (transformers 5's
//! nested layout or the flat layout transformers 4 wrote), `processor/processor_config.json`
//! (transformers 5) or `processor/preprocessor_config.json` (transformers 4) and
//! `processor/tokenizer_config.json`. Defaults are the Python classes'.

use super::super::error::ModelError;
use super::config::{bad, positive, read_config, sixteen_i, three, two};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

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
    #[serde(default = "three")]
    pub in_channels: i64,
    #[serde(default = "fourteen")]
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
        // transformers 4 wrote `in_chans` and `spatial_patch_size` (beside `patch_size`)
        let mut vc = match v.get("vision_config") {
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(format!("`vision_config` must be an object, got {other}")),
            None => Default::default(),
        };
        for (old, new) in [
            ("in_chans", "in_channels"),
            ("spatial_patch_size", "patch_size"),
        ] {
            if let Some(x) = vc.remove(old) {
                vc.entry(new).or_insert(x);
            }
        }
        let vision: Qwen25VlVisionConfig = serde_json::from_value(Value::Object(vc))
            .map_err(|e| format!("`vision_config`: {e}"))?;
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
