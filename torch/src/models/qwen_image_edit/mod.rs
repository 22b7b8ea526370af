//! Qwen-Image-Edit on libtorch: the components of a diffusers `QwenImageEditPipeline`
//! repository, numerically matching diffusers 0.42 / transformers 5.25 (golden tests in
//! `torch/tests/it/qwen.rs`, references from `torch/tests/golden/qwen/gen.py`).

pub mod attention;
pub mod config;
pub mod layers;
pub mod rope;
pub mod transformer;
pub mod transformer_blocks;
pub mod vae;
pub mod vae_blocks;

pub use super::flux_kontext::vae::{pack_latents, unpack_latents};
pub use config::{AutoencoderKLQwenImageConfig, QwenImageTransformer2DModelConfig};
pub use transformer::{QwenImageTransformer2DModel, QwenInputs};
pub use vae::AutoencoderKLQwenImage;
