//! `synth-data`: the synthetic edit world as two datasets in the manifest format.
//!
//! Inputs: none. Outputs: `train` (local edit types only; targets optionally degraded by
//! background drift, like model-generated editing data) and `bench` (local and global types,
//! exact targets; never an (image, instruction) pair of `train`). Params: `seed`, `n_train`,
//! `n_bench`, `size` (16–128), `max_objects` (1–4), `dilate_px`, `drift` (0–1, train only),
//! `raw` (default false: records without `edit_mask` and `instruction_refined`, for the
//! curation pipeline).
//! Resources: CPU only. Deterministic: the same params give byte-identical datasets.

use crate::kinds::bad;
use crate::synth::EditType;
use crate::synth::dataset::{World, write_split};
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SynthParams {
    pub seed: u64,
    /// Training samples (local edit types only).
    pub n_train: usize,
    /// Benchmark samples (local and global types).
    pub n_bench: usize,
    /// Image side in pixels (16..=128).
    pub size: usize,
    /// Objects per scene at most (1..=4).
    pub max_objects: usize,
    /// Edit masks are dilated by this many pixels (≤ size/4).
    pub dilate_px: usize,
    /// Background drift of training targets (0..=1), like model-generated editing data.
    pub drift: f32,
    /// Emit raw triplets, the curation pipeline's starting point: (source, target, short
    /// instruction, edit type), with no `edit_mask` and no refined instruction. Left out of
    /// the canonical params when false, so existing workflows keep their keys and outputs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

impl Default for SynthParams {
    fn default() -> Self {
        SynthParams {
            seed: 0,
            n_train: 512,
            n_bench: 96,
            size: 32,
            max_objects: 4,
            dilate_px: 1,
            drift: 0.0,
            raw: false,
        }
    }
}

pub struct SynthData;

impl Kind for SynthData {
    type Params = SynthParams;
    const NAME: &'static str = "synth-data";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str =
        "the synthetic edit world: train and bench datasets (manifest + PNGs)";
    const INPUTS: Option<&'static [Input]> = Some(&[]);
    const OUTPUTS: &'static [&'static str] = &["train", "bench"];

    fn validate(&self, p: &SynthParams) -> Result<(), ParamError> {
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
}

impl SynthData {
    /// Does the work (the kind's run function).
    pub fn run(&self, p: SynthParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let world = World {
            seed: p.seed,
            size: p.size,
            max_objects: p.max_objects,
            dilate_px: p.dilate_px,
            raw: p.raw,
        };
        let work = ctx.workdir()?;
        let train_dir = work.join("train");
        let bench_dir = work.join("bench");
        let train = write_split(
            ctx,
            &train_dir,
            &world,
            "train",
            p.n_train,
            &EditType::LOCAL,
            p.drift,
            &HashSet::new(),
        )?;
        let mut all = EditType::LOCAL.to_vec();
        all.extend(EditType::GLOBAL);
        write_split(
            ctx, &bench_dir, &world, "bench", p.n_bench, &all, 0.0, &train,
        )?;
        ctx.output_dir("train", &train_dir)?;
        ctx.output_dir("bench", &bench_dir)?;
        ctx.metric("n_train", p.n_train as u64);
        ctx.metric("n_bench", p.n_bench as u64);
        Ok(())
    }
}
