//! `encode-prompts`: every instruction of some datasets through the model's text encoders,
//! once, as a cached artifact — so that `rollout`, `nft-train` and `eval` condition on the
//! stored encodings and need not load the text encoders (FLUX.1 Kontext: T5-XXL and CLIP-L,
//! ~10 GB in bf16, stay off the GPU during RL).
//!
//! Inputs: `model` (the base model directory), `data` (one dataset or a list of them: every
//! record's instruction is encoded). Output `prompts`: the `cocoflow-prompt-encodings`
//! artifact (`cocoflow_torch::artifacts::prompts`), keyed by instruction; its cache key is the
//! model's and the datasets' keys. Qwen-Image-Edit's Qwen2.5-VL encoder sees the source image
//! with the instruction: there the artifact is keyed by (instruction, condition image) — each
//! record's instructions and the negative prompt `" "` with its source image as the RL kinds
//! derive it (the VAE round trip, 8-bit) — and the 7B encoder stays off the GPU in rollouts,
//! training and evaluation. For a backend that encodes instructions inline
//! (tiny-kontext) it loads nothing and writes an artifact without encodings, which the readers
//! pass through: their outputs are those of a workflow without this task. Resources: `gpus`
//! (optional; the encoders run on the task's device).

use super::check_threads;
use cocoflow_engine::kind::{Input, Kind, ParamError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EncodePromptsParams {
    /// libtorch intra-op threads (CPU results depend on the count).
    pub threads: usize,
}

impl Default for EncodePromptsParams {
    fn default() -> Self {
        EncodePromptsParams { threads: 1 }
    }
}

pub struct EncodePrompts;

impl Kind for EncodePrompts {
    type Params = EncodePromptsParams;
    const NAME: &'static str = "encode-prompts";
    // 2: Qwen-Image-Edit encodings (version 1 passed Qwen through).
    const VERSION: u32 = 2;
    const DESCRIBE: &'static str = "the instructions of some datasets through the model's text encoders, once (a cached artifact)";
    const INPUTS: Option<&'static [Input]> = Some(&[
        Input::required("model", "the base model directory"),
        Input::required(
            "data",
            "datasets (one or a list) whose instructions are encoded",
        ),
    ]);
    const OUTPUTS: &'static [&'static str] = &["prompts"];

    fn validate(&self, p: &EncodePromptsParams) -> Result<(), ParamError> {
        check_threads(p.threads)
    }
}
