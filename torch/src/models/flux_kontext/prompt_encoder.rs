//! FLUX's prompt encoder: CLIP (pooled) + T5 (states) with their tokenizers — the part of a
//! `FluxKontextPipeline` that only `encode_prompt` uses. It loads on its own (the
//! `encode-prompts` kind needs nothing else) and the pipeline can leave it out when prompt
//! encodings come from a cached artifact (RL tasks), so the text encoders need not be on the
//! GPU while the transformer trains.

use super::super::error::ModelError;
use super::super::policy::{PromptEncoder, PromptEncodings};
use super::clip::ClipTextModel;
use super::edit_policy::{MAX_SEQUENCE_LENGTH, POOLED_PROMPT_EMBEDS, PROMPT_EMBEDS};
use super::pipeline::PromptEmbeds;
use super::rope::text_ids;
use super::t5::T5EncoderModel;
use super::tokenizers::{ClipTokenizer, T5Tokenizer};
use super::weights::PendingWeights;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub struct FluxPromptEncoder {
    /// CLIP (`text_encoder/`): the pooled embedding.
    pub text_encoder: ClipTextModel,
    /// T5 (`text_encoder_2/`): the hidden states.
    pub text_encoder_2: T5EncoderModel,
    pub tokenizer: ClipTokenizer,
    pub tokenizer_2: T5Tokenizer,
}

impl std::fmt::Debug for FluxPromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluxPromptEncoder")
            .field("text_encoder", &self.text_encoder)
            .field("text_encoder_2", &self.text_encoder_2)
            .finish_non_exhaustive()
    }
}

impl FluxPromptEncoder {
    /// Both encoders of repository `dir` with zero weights and their checkpoints (headers
    /// read, data not yet), and both tokenizers.
    pub fn unloaded(
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<(FluxPromptEncoder, Vec<PendingWeights>), ModelError> {
        let (text_encoder, w1) = ClipTextModel::unloaded(&dir.join("text_encoder"), device, kind)?;
        let (text_encoder_2, w2) =
            T5EncoderModel::unloaded(&dir.join("text_encoder_2"), device, kind)?;
        let enc = FluxPromptEncoder {
            text_encoder,
            text_encoder_2,
            tokenizer: ClipTokenizer::load(&dir.join("tokenizer"))?,
            tokenizer_2: T5Tokenizer::load(&dir.join("tokenizer_2"))?,
        };
        Ok((enc, vec![w1, w2]))
    }

    /// Loads both encoders and tokenizers of repository `dir` (checked as
    /// [`super::pipeline::check_repository`] checks it; every header before any weights).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<FluxPromptEncoder, ModelError> {
        super::pipeline::check_repository(dir)?;
        let (enc, pending) = Self::unloaded(dir, device, kind)?;
        for p in &pending {
            p.validate()?;
        }
        for p in pending {
            p.load()?;
        }
        for vs in [enc.text_encoder.var_store(), enc.text_encoder_2.var_store()] {
            for v in vs.trainable_variables() {
                let _ = v.set_requires_grad(false);
            }
        }
        Ok(enc)
    }

    pub fn device(&self) -> Device {
        self.text_encoder.device()
    }

    /// Bytes the encoders' weights hold.
    pub fn bytes(&self) -> u64 {
        [
            self.text_encoder.var_store(),
            self.text_encoder_2.var_store(),
        ]
        .iter()
        .flat_map(|vs| vs.variables().into_values())
        .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum()
    }

    /// CLIP pooled + T5 states of `prompts` (no true-CFG negatives), moved to `device`.
    pub fn encode(
        &self,
        prompts: &[&str],
        max_sequence_length: usize,
        device: Device,
    ) -> Result<PromptEmbeds, ModelError> {
        let dev = self.text_encoder.device();
        let clip_ids = self.tokenizer.encode(prompts, dev)?;
        let pooled = self
            .text_encoder
            .forward(&clip_ids)?
            .pooler_output
            .to_kind(self.text_encoder.kind());
        let t5_ids =
            self.tokenizer_2
                .encode(prompts, max_sequence_length, self.text_encoder_2.device())?;
        let embeds = self
            .text_encoder_2
            .forward(&t5_ids)?
            .to_kind(self.text_encoder_2.kind());
        Ok(PromptEmbeds {
            text_ids: text_ids(max_sequence_length as i64, device)
                .to_kind(self.text_encoder.kind()),
            prompt_embeds: embeds.to_device(device),
            pooled_prompt_embeds: pooled.to_device(device),
        })
    }
}

impl FluxPromptEncoder {
    /// [`Self::encode`] of each distinct instruction alone (batch 1), rows gathered back in
    /// the order of `instructions` and moved to `device`: the parts `prompt_embeds` and
    /// `pooled_prompt_embeds`. Encoding one at a time makes a row independent of its batch,
    /// so the `encode-prompts` artifact and the policy's inline encoding agree bit for bit.
    pub fn encode_each(
        &self,
        instructions: &[&str],
        max_sequence_length: usize,
        device: Device,
    ) -> Result<PromptEncodings, ModelError> {
        if instructions.is_empty() {
            return Err(ModelError::Input {
                what: "instructions",
                message: "nothing to encode".into(),
            });
        }
        tch::no_grad(|| {
            let mut distinct: Vec<&str> = Vec::new();
            let mut rows: Vec<i64> = Vec::with_capacity(instructions.len());
            for s in instructions {
                let i = match distinct.iter().position(|d| d == s) {
                    Some(i) => i,
                    None => {
                        distinct.push(s);
                        distinct.len() - 1
                    }
                };
                rows.push(i as i64);
            }
            let (mut embeds, mut pooled) = (Vec::new(), Vec::new());
            for s in &distinct {
                let e = self.encode(&[s], max_sequence_length, device)?;
                embeds.push(e.prompt_embeds);
                pooled.push(e.pooled_prompt_embeds);
            }
            let idx = Tensor::from_slice(&rows).to_device(device);
            Ok(PromptEncodings {
                parts: BTreeMap::from([
                    (
                        PROMPT_EMBEDS.to_string(),
                        Tensor::cat(&embeds, 0).index_select(0, &idx),
                    ),
                    (
                        POOLED_PROMPT_EMBEDS.to_string(),
                        Tensor::cat(&pooled, 0).index_select(0, &idx),
                    ),
                ]),
            })
        })
    }
}

impl PromptEncoder for FluxPromptEncoder {
    fn backend(&self) -> &str {
        super::BACKEND
    }

    fn encode_prompts(&self, instructions: &[&str]) -> Result<PromptEncodings, ModelError> {
        self.encode_each(instructions, MAX_SEQUENCE_LENGTH, self.device())
    }
}
