//! The work of `encode-prompts` (declared in [`cocoflow_tasks::kinds::encode_prompts`]): every
//! distinct instruction of the `data` inputs (the original and, where a record has one, the
//! refined wording) through the model's text encoders
//! ([`crate::models::open::prompt_encoder`], loaded on their own and freed when the task ends:
//! they are not kept in the worker's model cache), written as the
//! [`crate::artifacts::prompts`] artifact. Qwen-Image-Edit: every record's instructions and the
//! negative prompt, each with the record's condition image
//! ([`crate::models::qwen_image_edit::QwenConditionEncoder`]), keyed by (prompt, image digest).

use super::{device_of, set_threads};
use crate::artifacts::prompts::{
    write_encodings, write_entry, write_manifest, write_manifest_with_images,
};
use crate::data::{Dataset, RecordTensors};
use crate::error::fail;
use crate::models::Backend;
use crate::models::qwen_image_edit::QwenConditionEncoder;
use crate::models::qwen_image_edit::edit_policy::CACHED_STATES;
use crate::models::qwen_image_edit::pipeline::NEGATIVE_PROMPT;
use cocoflow_engine::kind::{TaskCtx, TaskError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::Device;

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
    if backend == Backend::QwenImageEdit {
        return run_qwen(ctx, &model_dir, &digest, device, &out);
    }
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

/// Qwen-Image-Edit: the Qwen2.5-VL states of every (prompt, condition image) pair the RL kinds
/// will ask for — each record's instruction and refined instruction and the negative prompt,
/// with the record's source image through the VAE round trip — one file per pair.
fn run_qwen(
    ctx: &mut TaskCtx,
    model_dir: &Path,
    digest: &str,
    device: Device,
    out: &Path,
) -> Result<(), TaskError> {
    let mut datasets: Vec<(String, Dataset)> = Vec::new();
    for item in ctx.input_items("data")?.to_vec() {
        let path = ctx.item_path("data", &item)?;
        let ds = Dataset::open(&path)
            .map_err(|e| TaskError::Failed(format!("input `data` (`{}`): {e}", path.display())))?;
        datasets.push((path.display().to_string(), ds));
    }
    let enc = QwenConditionEncoder::load(model_dir, device)?;
    // (prompt, image digest) -> states; a source image shared by records is encoded once.
    let mut entries: BTreeMap<(String, String), tch::Tensor> = BTreeMap::new();
    let mut images: BTreeMap<std::path::PathBuf, (String, tch::Tensor)> = BTreeMap::new();
    let total: u64 = datasets.iter().map(|(_, d)| d.records.len() as u64).sum();
    let mut done = 0;
    for (label, ds) in &datasets {
        for r in &ds.records {
            ctx.check_cancelled()?;
            let fail = |e: &dyn std::fmt::Display| {
                TaskError::Failed(format!("input `data` (`{label}`), record `{}`: {e}", r.key))
            };
            let src_path = ds.path(&r.source);
            let (img, key) = match images.get(&src_path) {
                Some((key, img)) => (img.shallow_clone(), key.clone()),
                None => {
                    let src = ds.source(r).map_err(|e| fail(&e))?;
                    let (img, key) = enc.condition_image(&src).map_err(|e| fail(&e))?;
                    images.insert(src_path, (key.clone(), img.shallow_clone()));
                    (img, key)
                }
            };
            for prompt in [
                r.instruction.as_str(),
                r.training_instruction(),
                NEGATIVE_PROMPT,
            ] {
                let k = (prompt.to_string(), key.clone());
                if !entries.contains_key(&k) {
                    let states = enc.encode(prompt, &img).map_err(|e| fail(&e))?;
                    entries.insert(k, states);
                }
            }
            done += 1;
            ctx.progress(done, total, "records");
        }
    }
    let mut prompts = Vec::with_capacity(entries.len());
    let mut digests = Vec::with_capacity(entries.len());
    let mut files = Vec::with_capacity(entries.len());
    for (i, ((prompt, image), states)) in entries.into_iter().enumerate() {
        let parts = BTreeMap::from([(CACHED_STATES.to_string(), states)]);
        files.push(write_entry(out, i, &parts)?);
        prompts.push(prompt);
        digests.push(image);
    }
    ctx.log(format!(
        "encode-prompts: {} (prompt, condition image) pairs of {total} records encoded by \
         qwen-image-edit's Qwen2.5-VL",
        prompts.len()
    ));
    let m = write_manifest_with_images(
        out,
        crate::models::qwen_image_edit::BACKEND,
        digest,
        &prompts,
        &digests,
        Some(&enc.made_on()),
        Some(files),
    )
    .map_err(fail)?;
    ctx.metric("instructions", m.instructions.len() as u64);
    ctx.metric("encoded", m.encoded);
    ctx.output_dir("prompts", out)
}
