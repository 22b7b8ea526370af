//! `encode-prompts`: every instruction of some datasets through the model's text encoders,
//! once, as a cached artifact — so that `rollout`, `nft-train` and `eval` condition on the
//! stored encodings and need not load the text encoders (FLUX.1 Kontext: T5-XXL and CLIP-L,
//! ~10 GB in bf16, stay off the GPU during RL).
//!
//! Inputs: `model` (the base model directory), `data` (one dataset or a list of them: every
//! record's instruction is encoded). Output `prompts`: the `cocoflow-prompt-encodings`
//! artifact (`cocoflow_torch::artifacts::prompts`), keyed by instruction; its cache key is the
//! model's and the datasets' keys. For a backend that encodes instructions inline
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
    const VERSION: u32 = 1;
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
