//! Qwen-Image-Edit on libtorch: the components of a diffusers `QwenImageEditPipeline`
//! repository, numerically matching diffusers 0.42 / transformers 5.25 (golden tests in
//! `torch/tests/it/qwen/`, references from `torch/tests/golden/qwen/gen.py`), and
//! [`QwenImageEdit`], the backend behind [`crate::models::open()`] ([`edit_policy`]).

pub mod attention;
pub mod config;
pub mod config_vl;
pub mod edit_policy;
pub mod image;
pub mod layers;
pub mod pipeline;
pub mod prompt;
pub mod rope;
pub mod text_model;
pub mod tokenizer;
pub mod transformer;
pub mod transformer_blocks;
pub mod vae;
pub mod vae_blocks;
pub mod vision;

pub use super::flux_kontext::vae::{pack_latents, unpack_latents};
pub use config::{AutoencoderKLQwenImageConfig, QwenImageTransformer2DModelConfig};
pub use config_vl::{Qwen2VLImageProcessorConfig, Qwen25VlConfig};
pub use edit_policy::{BACKEND, QwenConditionEncoder, QwenImageEdit};
pub use image::{Qwen2VlImageProcessor, calculate_dimensions, pil_lanczos_resize, smart_resize};
pub use pipeline::{QwenEditRequest, QwenImageEditPipeline, qwen_schedule, true_cfg};
pub use prompt::{PromptEncoding, QwenVlPromptEncoder};
pub use tokenizer::Qwen2Tokenizer;
pub use transformer::{QwenImageTransformer2DModel, QwenInputs};
pub use vae::AutoencoderKLQwenImage;
