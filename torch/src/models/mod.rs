//! Editing policies: the `EditPolicy` backend trait, tiny-kontext (built in), LoRA adapters.
//!
//! - [`policy`]: the backend trait rollout, training and evaluation use; [`Conditioning`],
//!   [`ActiveAdapter`] (θ = `default`, θ_old = `old`, θ_ref = `Off`), [`Trainable`].
//! - [`tiny_kontext`]: the built-in backend; [`config`] its `TinyKontextConfig`, and one
//!   file per component: [`embeddings`], [`attention`], [`block`], [`text_encoder`],
//!   [`tokenizer`].
//! - [`open`]: the backend seam — [`open()`] picks a directory's backend and returns a boxed
//!   [`EditPolicy`]; [`flux_kontext`]: FLUX.1 Kontext ([`flux_kontext::FluxKontext`]);
//!   [`qwen_image_edit`]: Qwen-Image-Edit ([`qwen_image_edit::QwenImageEdit`]).
//! - [`lora::AdapterSet`]: the adapter bookkeeping (names, configs, active, trainable) every
//!   backend shares.
//! - [`base`]: [`BaseModel`], a base loaded per task or shared through the model cache.
//! - [`lora`]: LoRA layers and configs; [`peft`]: the PEFT file layout.
//! - [`checkpoint`]: safetensors and JSON I/O with name/shape validation; [`flow`]: the
//!   flow-matching interpolation and loss; [`random`]: random tensors from [`crate::rng::StreamRng`].
//!
//! A model directory holds `config.json` (the config) and `model.safetensors` (base weights,
//! keys = `nn::Path` names, diffusers-like: `x_embedder.weight`,
//! `transformer_blocks.0.attn.to_q.weight`, `time_text_embed.timestep_embedder.linear_1.weight`,
//! `norm_out.linear.weight`, `proj_out.weight`, `text_encoder.encoder.layers.0.self_attn.q_proj.weight`).
//! An adapter directory holds PEFT's `adapter_model.safetensors` + `adapter_config.json`.
//!
//! Default size: 1.49 M parameters (width 96, 4 blocks, patch 4, text encoder 64 wide × 2).
//! One training step (forward + backward + AdamW) on 32 images of 32×32, release build on the
//! 2-core reference machine: median 0.20–0.26 s with libtorch's 2 threads (0.4–0.6
//! CPU-seconds), 0.36 s with one thread, when little else ran. When the cores are shared
//! (load ≈ 7), 2 intra-op threads collapse to 3–5 s a step while `tch::set_num_threads(1)`
//! keeps 0.7–0.9 s. Reproduce with
//! `cargo test -p cocoflow-torch --release --test it -- --ignored --nocapture step_time`
//! (`STEP_TIME_THREADS=1` for one thread).

pub mod attention;
pub mod base;
pub mod block;
pub mod checkpoint;
pub mod embeddings;
pub mod error;
pub mod flow;
pub mod flux_kontext;
pub mod lease;
pub mod lora;
pub mod open;
pub mod peft;
pub mod policy;
pub mod qwen_image_edit;
pub mod random;
pub mod text_encoder;
pub mod tiny_kontext;
pub mod tokenizer;

pub use cocoflow_tasks::models::{
    DEFAULT_VOCAB, InvalidConfig, TextEncoderConfig, TinyKontextConfig,
};
/// The model configurations (re-exported from [`cocoflow_tasks::models`]).
pub mod config {
    pub use cocoflow_tasks::models::*;
}
pub use base::BaseModel;
pub use error::{Mismatch, ModelError, TensorDiff};
pub use flow::{flow_matching_loss, interpolate, x0_from_velocity};
pub use lora::{LoraConfig, THETA, THETA_OLD};
pub use open::{Backend, open, weights_digest};
pub use policy::{
    ActiveAdapter, Conditioning, EditPolicy, Encoded, PromptEncoder, PromptEncodings, PromptSource,
    Trainable, TrainingVelocity,
};
pub use tiny_kontext::{SharedBase, TinyKontext};
pub use tokenizer::WordTokenizer;
