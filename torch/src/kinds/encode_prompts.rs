//! The work of `encode-prompts` (declared in [`cocoflow_tasks::kinds::encode_prompts`]): every
//! distinct instruction of the `data` inputs (the original and, where a record has one, the
//! refined wording) through the model's text encoders
//! ([`crate::models::open::prompt_encoder`], loaded on their own and freed when the task ends:
//! they are not kept in the worker's model cache), written as the
//! [`crate::artifacts::prompts`] artifact.

use super::{device_of, set_threads};
use crate::artifacts::prompts::{write_encodings, write_manifest};
use crate::data::Dataset;
use crate::error::fail;
use crate::models::Backend;
use cocoflow_engine::kind::{TaskCtx, TaskError};
use std::collections::BTreeSet;

pub use cocoflow_tasks::kinds::encode_prompts::*;

/// Instructions encoded per call (progress and memory: one chunk's encodings at a time).
const CHUNK: usize = 16;

pub fn run(_: &EncodePrompts, p: EncodePromptsParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
    set_threads(p.threads);
    let device = device_of(&ctx.cuda_ordinals);
    let model_dir = super::model_dir(ctx)?;
    let digest = ctx
        .input_items("model")?
        .first()
        .ok_or_else(|| TaskError::Params("input `model` is empty".into()))?
        .artifact
        .digest
        .clone();
    let mut distinct = BTreeSet::new();
    for item in ctx.input_items("data")?.to_vec() {
        let path = ctx.item_path("data", &item)?;
        let ds = Dataset::open(&path)
            .map_err(|e| TaskError::Failed(format!("input `data` (`{}`): {e}", path.display())))?;
        // Both wordings: evaluations condition on `instruction`, rollouts and training on
        // the refined one where a record has it (`Record::training_instruction`).
        for r in ds.records {
            distinct.insert(r.training_instruction().to_string());
            distinct.insert(r.instruction);
        }
    }
    let instructions: Vec<String> = distinct.into_iter().collect();
    let backend = Backend::detect(&model_dir)?;
    let out = ctx.workdir()?.join("prompts");
    let files = match crate::models::open::prompt_encoder(&model_dir, device)? {
        None => {
            ctx.log(format!(
                "encode-prompts: {} encodes instructions inline; nothing to cache ({} instructions)",
                backend.name(),
                instructions.len()
            ));
            None
        }
        Some(enc) => {
            let mut files = Vec::with_capacity(instructions.len());
            for (c, chunk) in instructions.chunks(CHUNK).enumerate() {
                ctx.check_cancelled()?;
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let e = enc.encode_prompts(&refs)?;
                files.extend(write_encodings(&out, c * CHUNK, &e)?);
                ctx.progress(
                    files.len() as u64,
                    instructions.len() as u64,
                    "instructions",
                );
            }
            ctx.log(format!(
                "encode-prompts: {} instructions encoded by {}'s text encoders",
                instructions.len(),
                enc.backend()
            ));
            Some(files)
        }
    };
    let m = write_manifest(&out, backend.name(), &digest, &instructions, files).map_err(fail)?;
    ctx.metric("instructions", m.instructions.len() as u64);
    ctx.metric("encoded", m.encoded);
    ctx.output_dir("prompts", &out)
}
