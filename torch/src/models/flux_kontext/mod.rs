//! FLUX.1 Kontext on libtorch: the components of a diffusers `FluxKontextPipeline`
//! repository, numerically matching diffusers 0.42 / transformers 5 (golden tests in
//! `tasks/tests/it/flux.rs`, references from `torch/tests/golden/flux/gen.py`).
//!
//! One file per diffusers / transformers module:
//! - [`transformer`]: `FluxTransformer2DModel` (with [`transformer_blocks`], [`attention`],
//!   [`normalization`], [`embeddings`], [`rope`]); [`checkpointing`]: its block-wise
//!   gradient checkpointing.
//! - [`vae`] (+ [`vae_blocks`]): `AutoencoderKL`, FLUX's latent normalisation and packing.
//! - [`clip`]: `CLIPTextModel`; [`t5`]: `T5EncoderModel`; [`tokenizers`]: both tokenizers;
//!   [`prompt_encoder`]: the four together (`encode_prompt`), loadable on their own.
//! - [`scheduler`]: the pipeline's shifted σ schedule; [`pipeline`]: a whole edit and its
//!   pieces (`encode_prompt`, `prepare_source`, `velocity`, `decode`).
//! - [`preflight`]: a LoRA adapter checked against a repository from headers alone, before
//!   the pipeline is loaded.
//! - [`config`]: every `config.json` as a struct; [`weights`]: sharded safetensors loading
//!   with per-file, per-key errors; [`layers`]: the plain layers.
//! - [`bench`]: throughput and memory of the full-size transformer with random weights
//!   (`cocoflow bench-flux`; `bench/flux_pytorch.py` is the diffusers + peft baseline).
//!
//! A repository directory is what `FluxKontextPipeline.save_pretrained` writes:
//! `model_index.json`, `transformer/` (`config.json`, `diffusion_pytorch_model.safetensors`
//! or shards + `diffusion_pytorch_model.safetensors.index.json`), `vae/`, `text_encoder/`
//! (`model.safetensors`), `text_encoder_2/`, `tokenizer/` (`vocab.json`, `merges.txt`,
//! `tokenizer_config.json`), `tokenizer_2/` (`tokenizer.json`), `scheduler/`.
//!
//! Every linear layer is a [`super::lora::LoraLinear`]; [`edit_policy`] makes the pipeline an
//! [`super::EditPolicy`] with LoRA adapters (PEFT targets `attn.to_q`, ..., `attn.to_add_out`),
//! and [`lora_export`] writes them in the layout diffusers' `load_lora_weights` reads.

pub mod attention;
pub mod bench;
pub mod checkpointing;
pub mod clip;
pub mod config;
pub mod edit_policy;
pub mod embeddings;
pub mod layers;
pub mod lora_export;
pub mod normalization;
pub mod pipeline;
pub mod preflight;
pub mod prompt_encoder;
pub mod rope;
pub mod scheduler;
pub mod t5;
pub mod tokenizers;
pub mod transformer;
pub mod transformer_blocks;
pub mod vae;
pub mod vae_blocks;
pub mod weights;

pub use checkpointing::Checkpointed;
pub use clip::{ClipTextModel, ClipTextOutput};
pub use config::{
    AutoencoderKLConfig, ClipTextConfig, FlowMatchEulerDiscreteSchedulerConfig,
    FluxTransformer2DModelConfig, T5Config,
};
pub use edit_policy::{BACKEND, FluxKontext, PROMPT_EMBEDS_KEYS};
pub use pipeline::{EditRequest, FluxKontextPipeline, PromptEmbeds, SourceLatents};
pub use prompt_encoder::FluxPromptEncoder;
pub use scheduler::{FlowMatchSchedule, flux_schedule};
pub use t5::T5EncoderModel;
pub use tokenizers::{ClipTokenizer, T5Tokenizer};
pub use transformer::{FluxInputs, FluxTransformer2DModel};
pub use vae::{AutoencoderKL, pack_latents, unpack_latents};
