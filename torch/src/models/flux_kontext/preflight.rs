//! Checks of a LoRA adapter against a FLUX.1 Kontext repository from file headers alone, before
//! the pipeline is loaded: the shapes every LoRA matrix must have follow from the transformer's
//! safetensors headers (`<module>.weight` is `(out, in)`: `lora_A` `(r, in)`, `lora_B`
//! `(out, r)` for every module the adapter targets), so an adapter trained for another model
//! (another backend, another width, another rank than its config says) is reported with its
//! file and keys before any weights are read.

use super::super::checkpoint::compare_shapes;
use super::super::error::ModelError;
use super::super::lora::LoraConfig;
use super::super::peft;
use super::weights::{Checkpoint, DIFFUSERS_STEM};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Kind;

/// `(shape, kind)` of every LoRA matrix `cfg` adds to the transformer of repository `dir`, by
/// PEFT key, from the transformer's headers.
pub fn adapter_shapes(
    dir: &Path,
    cfg: &LoraConfig,
) -> Result<BTreeMap<String, (Vec<i64>, Kind)>, ModelError> {
    let ckpt = Checkpoint::open(&dir.join("transformer"), DIFFUSERS_STEM)?;
    let mut out = BTreeMap::new();
    for (_, header) in &ckpt.files {
        for (key, h) in header {
            let (Some(path), [o, i]) = (key.strip_suffix(".weight"), h.shape.as_slice()) else {
                continue;
            };
            if cfg.targets(path) {
                let kind = h.float_kind().unwrap_or(Kind::Float);
                out.insert(format!("{path}.lora_A.weight"), (vec![cfg.r, *i], kind));
                out.insert(format!("{path}.lora_B.weight"), (vec![*o, cfg.r], kind));
            }
        }
    }
    Ok(out)
}

/// Checks the adapter directory `adapter` (PEFT or diffusers layout) against repository `dir`
/// as [`super::FluxKontext`]'s `load_adapter` would, without loading the pipeline.
pub fn check_adapter(dir: &Path, adapter: &Path) -> Result<(), ModelError> {
    let imp = peft::import(adapter)?;
    let expected = adapter_shapes(dir, &imp.config)?;
    let mut diff = compare_shapes(&imp.tensors, &expected);
    if !imp.explicit_targets && expected.is_empty() {
        diff.unexpected = imp.tensors.keys().cloned().collect();
    }
    if diff.is_empty() {
        return Ok(());
    }
    let file = [peft::ADAPTER_WEIGHTS, peft::DIFFUSERS_LORA_WEIGHTS]
        .iter()
        .map(|f| adapter.join(f))
        .find(|p| p.is_file())
        .unwrap_or_else(|| adapter.join(peft::ADAPTER_WEIGHTS));
    Err(ModelError::Checkpoint { path: file, diff })
}
