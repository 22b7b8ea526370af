//! `synth-data`: the synthetic edit world as two datasets in the manifest format.
//!
//! Inputs: none. Outputs: `train` (local edit types only; targets optionally degraded by
//! background drift, like model-generated editing data) and `bench` (local and global types,
//! exact targets; never an (image, instruction) pair of `train`). Params: `seed`, `n_train`,
//! `n_bench`, `size` (16–128), `max_objects` (1–4), `dilate_px`, `drift` (0–1, train only),
//! `raw` (default false: records without `edit_mask` and `instruction_refined`, for the
//! curation pipeline).
//! Resources: CPU only. Deterministic: the same params give byte-identical datasets.

use crate::data::{DatasetWriter, MaskPolarity, Record};
use crate::synth::{self, EditType};
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthParams {
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_train")]
    pub n_train: usize,
    #[serde(default = "d_bench")]
    pub n_bench: usize,
    #[serde(default = "d_size")]
    pub size: usize,
    #[serde(default = "d_objects")]
    pub max_objects: usize,
    #[serde(default = "d_dilate")]
    pub dilate_px: usize,
    #[serde(default)]
    pub drift: f32,
    /// Emit raw triplets, the curation pipeline's starting point: (source, target, short
    /// instruction, edit type), with no `edit_mask` and no refined instruction. Left out of
    /// the canonical params when false, so existing workflows keep their keys and outputs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

fn d_train() -> usize {
    512
}
fn d_bench() -> usize {
    96
}
fn d_size() -> usize {
    32
}
fn d_objects() -> usize {
    4
}
fn d_dilate() -> usize {
    1
}

pub struct SynthData;

fn check(p: &SynthParams) -> Result<(), ParamError> {
    let bad = |path: &str, message: String| {
        Err(ParamError {
            path: path.into(),
            message,
        })
    };
    if !(16..=128).contains(&p.size) {
        return bad("size", format!("must be in 16..=128, got {}", p.size));
    }
    if !(1..=4).contains(&p.max_objects) {
        return bad(
            "max_objects",
            format!("must be in 1..=4, got {}", p.max_objects),
        );
    }
    if !(0.0..=1.0).contains(&p.drift) {
        return bad("drift", format!("must be in [0, 1], got {}", p.drift));
    }
    if p.dilate_px > p.size / 4 {
        return bad(
            "dilate_px",
            format!(
                "must be at most size/4 = {}, got {}",
                p.size / 4,
                p.dilate_px
            ),
        );
    }
    Ok(())
}

/// Writes one split; returns the content keys (source digest + instruction) it used.
#[allow(clippy::too_many_arguments)]
fn write_split(
    ctx: &TaskCtx,
    dir: &std::path::Path,
    p: &SynthParams,
    split: &str,
    n: usize,
    types: &[EditType],
    drift: f32,
    avoid: &HashSet<String>,
) -> Result<HashSet<String>, TaskError> {
    let mut w = DatasetWriter::create(dir).map_err(|e| TaskError::Failed(e.to_string()))?;
    let mut used = HashSet::new();
    let mut attempt = 0u64;
    let mut i = 0usize;
    while i < n {
        ctx.check_cancelled()?;
        let t = types[i % types.len()];
        let mut rng = synth::stream(p.seed, split, attempt);
        attempt += 1;
        if attempt > (n as u64 + 10) * 50 {
            return Err(TaskError::Failed(format!(
                "could not generate {n} `{split}` samples (scene size {} too small?)",
                p.size
            )));
        }
        let scene = synth::random_scene(&mut rng, p.size, p.max_objects);
        let Some(edit) = synth::make_edit(&mut rng, &scene, t, p.dilate_px) else {
            continue;
        };
        let src = edit.source_image.to_tensor();
        let content = format!(
            "{}|{}",
            blake3::hash(&bytemuck_f32(&edit.source_image.data)).to_hex(),
            edit.instruction
        );
        if avoid.contains(&content) || !used.insert(content) {
            continue;
        }
        let target = if drift > 0.0 {
            synth::drift(&mut rng, &edit.target_image, &edit.edit_mask, drift)
        } else {
            edit.target_image.clone()
        };
        let key = format!("{split}-{i:06}");
        let io = |e: crate::data::manifest::DataError| TaskError::Failed(e.to_string());
        // written in this order (source, target, mask) as before `raw` existed
        let source = w.image(&format!("{key}_src"), &src).map_err(io)?;
        let target = w
            .image(&format!("{key}_tgt"), &target.to_tensor())
            .map_err(io)?;
        let edit_mask = if p.raw {
            None
        } else {
            let mask = tch::Tensor::from_slice(
                &edit
                    .edit_mask
                    .iter()
                    .map(|&b| if b { 1.0f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
            )
            .view([1, p.size as i64, p.size as i64]);
            Some(w.mask(&format!("{key}_mask"), &mask).map_err(io)?)
        };
        let record = Record {
            key: key.clone(),
            source,
            target: Some(target),
            edit_mask,
            mask_polarity: MaskPolarity::Edit,
            instruction: edit.instruction.clone(),
            instruction_refined: (!p.raw).then(|| edit.instruction_refined.clone()),
            edit_type: Some(t.name().to_string()),
            extra: serde_json::json!({"local": t.is_local(), "source_scene": edit.source, "target_scene": edit.target}).as_object().cloned().unwrap_or_default(),
        };
        w.push(&record).map_err(io)?;
        i += 1;
        if i % 32 == 0 || i == n {
            ctx.progress(i as u64, n as u64, format!("{split} samples"));
        }
    }
    w.finish().map_err(|e| TaskError::Failed(e.to_string()))?;
    Ok(used)
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl TaskKind for SynthData {
    fn name(&self) -> &'static str {
        "synth-data"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "the synthetic edit world: train and bench datasets (manifest + PNGs)"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<SynthParams>(params)?;
        check(&p)?;
        Ok(v)
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["train".into(), "bench".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: SynthParams = ctx.params()?;
        let work = ctx.workdir()?;
        let train_dir = work.join("train");
        let bench_dir = work.join("bench");
        let train = write_split(
            ctx,
            &train_dir,
            &p,
            "train",
            p.n_train,
            &EditType::LOCAL,
            p.drift,
            &HashSet::new(),
        )?;
        let mut all = EditType::LOCAL.to_vec();
        all.extend(EditType::GLOBAL);
        write_split(ctx, &bench_dir, &p, "bench", p.n_bench, &all, 0.0, &train)?;
        ctx.output_dir("train", &train_dir)?;
        ctx.output_dir("bench", &bench_dir)?;
        ctx.metric("n_train", p.n_train as u64);
        ctx.metric("n_bench", p.n_bench as u64);
        Ok(())
    }
}
