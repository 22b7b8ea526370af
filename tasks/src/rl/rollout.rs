//! `rollout`: K samples per prompt from θ_old (method-spec §6, Alg. 1 lines 3–5).
//!
//! Inputs: `model` (base model dir), `state` (RL state, or the base model dir at iteration 0),
//! `data` (dataset in the manifest format; records need an `edit_mask`).
//! Output `rollouts`, a directory:
//!
//! ```text
//! rollouts.json         RolloutManifest: iteration, seeds, sampler, groups (record key,
//!                       instruction, source digest, edit type), samples (group, k, seed, image)
//! tensors.safetensors   x0 (N, C, h, w) f32 · source_latents (G, C, h, w) f32 ·
//!                       edit_masks (G, 1, H, W) f32 · sigmas (N, steps + 1) f64
//! images/gGGG_kKK.png   decoded samples (8-bit RGB)
//! ```
//!
//! The iteration index comes from the state; the prompts of iteration i are the first
//! `groups` of a permutation of the eligible records drawn from `(seed, rollout/select/i)`
//! (no prompt twice in one iteration); sample (g, k) starts from the noise of its own seed
//! `(seed, rollout/i/g/k)`. Shards the samples across the granted GPUs (one model copy each).

use super::state::{self, StateInfo};
use super::{bad, check_input_names, check_threads, d_threads, device_of, fail, set_threads};
use crate::data::{Dataset, Record};
use crate::judge::JudgeImage;
use crate::models::checkpoint;
use crate::models::{ActiveAdapter, EditPolicy, THETA_OLD, TinyKontext, Trainable};
use crate::rng::StreamRng;
use crate::sampling::{SamplerConfig, SamplerKind, sample, stack_x0};
use cocoflow_engine::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const MANIFEST_FILE: &str = "rollouts.json";
pub const TENSORS_FILE: &str = "tensors.safetensors";
pub const IMAGES_DIR: &str = "images";
pub const FORMAT: &str = "cocoflow-rollouts";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutParams {
    /// Seed of prompt selection and sample noise.
    #[serde(default)]
    pub seed: u64,
    /// Prompts (groups) per iteration (paper: 24).
    #[serde(default = "d_groups")]
    pub groups: usize,
    /// Samples per prompt (paper: 12).
    #[serde(default = "d_k")]
    pub k: usize,
    /// `dpm2` (default) or `euler`.
    #[serde(default)]
    pub sampler: SamplerKind,
    /// Sampler steps N (paper: 10).
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Classifier-free guidance scale (none = off; the tiny model has no guidance).
    #[serde(default)]
    pub guidance: Option<f64>,
    /// Samples per forward batch.
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// libtorch intra-op threads (CPU determinism depends on it).
    #[serde(default = "d_threads")]
    pub threads: usize,
}

fn d_groups() -> usize {
    24
}
fn d_k() -> usize {
    12
}
fn d_steps() -> usize {
    10
}
fn d_batch() -> usize {
    32
}

impl RolloutParams {
    pub fn sampler_config(&self) -> SamplerConfig {
        SamplerConfig {
            sampler: self.sampler,
            steps: self.steps,
            guidance: self.guidance,
        }
    }
}

fn check(p: &RolloutParams) -> Result<(), ParamError> {
    if p.groups == 0 {
        return bad("groups", "must be at least 1");
    }
    if p.k == 0 {
        return bad("k", "must be at least 1");
    }
    if !(1..=1000).contains(&p.steps) {
        return bad("steps", format!("must be in 1..=1000, got {}", p.steps));
    }
    if p.batch == 0 {
        return bad("batch", "must be at least 1");
    }
    if let Some(g) = p.guidance
        && !(g.is_finite() && g > 0.0)
    {
        return bad("guidance", format!("must be a positive number, got {g}"));
    }
    check_threads(p.threads)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub index: usize,
    /// The dataset record's key.
    pub record: String,
    pub instruction: String,
    /// Pixel digest of the source image ([`JudgeImage::digest`]).
    pub source_digest: String,
    #[serde(default)]
    pub edit_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleEntry {
    pub index: usize,
    pub group: usize,
    pub k: usize,
    pub seed: u64,
    /// Relative path of the decoded image.
    pub image: String,
}

/// `rollouts.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutManifest {
    pub format: String,
    pub version: u32,
    /// 0-based RL iteration these rollouts belong to (the state's `iteration`).
    pub iteration: u64,
    /// Digest of the θ_old that sampled them (`fresh` at iteration 0).
    pub theta_old: String,
    pub base_model_digest: String,
    pub seed: u64,
    pub sampler: SamplerConfig,
    /// `[H, W]` of the images.
    pub image_size: [i64; 2],
    /// `[C, h, w]` of a latent.
    pub latent_shape: [i64; 3],
    pub k: usize,
    pub groups: Vec<GroupEntry>,
    pub samples: Vec<SampleEntry>,
}

impl RolloutManifest {
    pub fn read(dir: &Path) -> Result<RolloutManifest, String> {
        let m: RolloutManifest =
            checkpoint::read_json(&dir.join(MANIFEST_FILE)).map_err(|e| e.to_string())?;
        if m.format != FORMAT {
            return Err(format!(
                "`{}` is not a rollouts manifest (format `{}`)",
                dir.join(MANIFEST_FILE).display(),
                m.format
            ));
        }
        Ok(m)
    }
}

/// The tensors of a rollouts directory (CPU).
pub struct RolloutTensors {
    pub x0: Tensor,
    pub source_latents: Tensor,
    pub edit_masks: Tensor,
    pub sigmas: Tensor,
}

impl RolloutTensors {
    pub fn read(dir: &Path, m: &RolloutManifest) -> Result<RolloutTensors, String> {
        let path = dir.join(TENSORS_FILE);
        let mut t = checkpoint::read_safetensors(&path).map_err(|e| e.to_string())?;
        let mut take = |name: &str, shape: Vec<i64>| -> Result<Tensor, String> {
            let x = t
                .remove(name)
                .ok_or_else(|| format!("`{}` has no tensor `{name}`", path.display()))?;
            if x.size() != shape {
                return Err(format!(
                    "`{}`: `{name}` has shape {:?}, expected {shape:?}",
                    path.display(),
                    x.size()
                ));
            }
            Ok(x)
        };
        let (n, g) = (m.samples.len() as i64, m.groups.len() as i64);
        let [c, h, w] = m.latent_shape;
        let [hh, ww] = m.image_size;
        Ok(RolloutTensors {
            x0: take("x0", vec![n, c, h, w])?,
            source_latents: take("source_latents", vec![g, c, h, w])?,
            edit_masks: take("edit_masks", vec![g, 1, hh, ww])?,
            sigmas: take("sigmas", vec![n, m.sampler.steps as i64 + 1])?,
        })
    }
}

/// Records usable for rollouts: those with an edit mask, in manifest order.
pub fn eligible(ds: &Dataset) -> Vec<&Record> {
    ds.records
        .iter()
        .filter(|r| r.edit_mask.is_some())
        .collect()
}

/// Indices (into `n` eligible records) of iteration `iteration`'s prompts: the first
/// `groups` of a seeded Fisher–Yates permutation.
pub fn select_prompts(seed: u64, iteration: u64, n: usize, groups: usize) -> Vec<usize> {
    let mut rng = StreamRng::derive(seed, &format!("rollout/select/{iteration}"));
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx.truncate(groups);
    idx
}

/// The noise seed of sample `k` of group `g` in iteration `iteration`.
pub fn sample_seed(seed: u64, iteration: u64, g: usize, k: usize) -> u64 {
    StreamRng::derive(seed, &format!("rollout/{iteration}/{g}/{k}")).next_u64()
}

/// Loads the rollout policy (θ_old) on `device`: the base with adapter `old` from a saved
/// state, or the base alone (adapters off) for a base-directory state, where θ_old has B = 0
/// and gives exactly the base model's outputs.
pub fn load_rollout_policy(
    model_dir: &Path,
    state_dir: &Path,
    device: Device,
) -> Result<(TinyKontext, ActiveAdapter), String> {
    let mut model = TinyKontext::load(model_dir, device).map_err(|e| e.to_string())?;
    model
        .set_trainable(Trainable::Nothing)
        .map_err(|e| e.to_string())?;
    if state::is_state(state_dir) {
        model
            .load_adapter(&state_dir.join(state::THETA_OLD_DIR), THETA_OLD)
            .map_err(|e| e.to_string())?;
        Ok((model, ActiveAdapter::theta_old()))
    } else {
        Ok((model, ActiveAdapter::Off))
    }
}

/// Samples `samples` (global indices; sample n is group n / k) on one device; x0 on the CPU.
#[allow(clippy::too_many_arguments)]
fn sample_shard(
    model_dir: &Path,
    state_dir: &Path,
    device: Device,
    sources: &Tensor,
    instructions: &[String],
    samples: &[usize],
    k: usize,
    seeds: &[u64],
    cfg: &SamplerConfig,
    batch: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Tensor, String> {
    let (model, adapter) = load_rollout_policy(model_dir, state_dir, device)?;
    let latents = model.encode(sources).map_err(|e| e.to_string())?;
    let instr: Vec<&str> = instructions.iter().map(String::as_str).collect();
    let cond = model
        .condition(&latents, &instr)
        .map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    for chunk in samples.chunks(batch) {
        let groups: Vec<i64> = chunk.iter().map(|&n| (n / k) as i64).collect();
        let idx = Tensor::from_slice(&groups).to_device(device);
        let c = cond.select(&idx);
        let s: Vec<u64> = chunk.iter().map(|&n| seeds[n]).collect();
        let out = sample(&model, &c, &s, cfg, &adapter).map_err(|e| e.to_string())?;
        parts.push(stack_x0(&out).to_device(Device::Cpu));
        progress(chunk.len());
    }
    Ok(Tensor::cat(&parts, 0))
}

pub struct Rollout;

impl TaskKind for Rollout {
    fn name(&self) -> &'static str {
        "rollout"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "RL rollouts: K samples per prompt from θ_old (x0, σ schedule, seeds, decoded images)"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        let (p, v) = typed_params::<RolloutParams>(params)?;
        check(&p)?;
        Ok(v)
    }
    fn check_inputs(&self, _params: &Value, inputs: &[&str]) -> Result<(), String> {
        check_input_names("rollout", inputs, &["model", "state", "data"])
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["rollouts".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: RolloutParams = ctx.params()?;
        set_threads(p.threads);
        let model_dir = ctx.input_path("model")?;
        let state_dir = ctx.input_path("state")?;
        let data_dir = ctx.input_path("data")?;
        let info: Option<StateInfo> = state::read_info(&state_dir).map_err(fail)?;
        let base_digest = state::check_base(&state_dir, info.as_ref(), &model_dir).map_err(fail)?;
        let iteration = info.as_ref().map_or(0, |i| i.iteration);
        let theta_old = state::theta_old_digest(&state_dir).map_err(fail)?;

        let ds = Dataset::open(&data_dir).map_err(fail)?;
        let records = eligible(&ds);
        if records.is_empty() {
            return Err(fail(format!(
                "the `data` input has no record with an `edit_mask` ({} records, {} rejected lines)",
                ds.records.len(),
                ds.rejected.len()
            )));
        }
        if p.groups > records.len() {
            return Err(TaskError::Params(format!(
                "`groups`: {} prompts per iteration, but the dataset has only {} records with an edit mask",
                p.groups,
                records.len()
            )));
        }
        let chosen = select_prompts(p.seed, iteration, records.len(), p.groups);
        let mut groups = Vec::new();
        let mut sources = Vec::new();
        let mut masks = Vec::new();
        let mut size: Option<(i64, i64)> = None;
        for (g, &ri) in chosen.iter().enumerate() {
            let r = records[ri];
            let src = ds.source(r).map_err(fail)?;
            let mask = ds
                .edit_mask(r)
                .map_err(fail)?
                .ok_or_else(|| fail("eligible records have masks"))?;
            let s = src.size();
            let hw = (s[1], s[2]);
            match size {
                None => size = Some(hw),
                Some(prev) if prev != hw => {
                    return Err(fail(format!(
                        "record `{}` is {}×{} but earlier prompts are {}×{}: rollouts need one image size",
                        r.key, hw.1, hw.0, prev.1, prev.0
                    )));
                }
                Some(_) => {}
            }
            if mask.size()[1..] != s[1..] {
                return Err(fail(format!(
                    "record `{}`: mask {:?} does not match image {:?}",
                    r.key,
                    mask.size(),
                    s
                )));
            }
            let digest = JudgeImage::from_tensor(&src)
                .map_err(fail)?
                .digest()
                .to_string();
            groups.push(GroupEntry {
                index: g,
                record: r.key.clone(),
                instruction: r.instruction.clone(),
                source_digest: digest,
                edit_type: r.edit_type.clone(),
            });
            sources.push(src);
            masks.push(mask.to_kind(Kind::Float));
        }
        let (hh, ww) = size.expect("at least one group");
        let sources = Tensor::stack(&sources, 0);
        let masks = Tensor::stack(&masks, 0);
        let instructions: Vec<String> = groups.iter().map(|g| g.instruction.clone()).collect();

        let n = p.groups * p.k;
        let seeds: Vec<u64> = (0..n)
            .map(|i| sample_seed(p.seed, iteration, i / p.k, i % p.k))
            .collect();
        let cfg = p.sampler_config();
        let devices: Vec<Device> = if ctx.cuda_ordinals.len() > 1 && tch::Cuda::is_available() {
            ctx.cuda_ordinals
                .iter()
                .map(|&o| Device::Cuda(o as usize))
                .collect()
        } else {
            vec![device_of(&ctx.cuda_ordinals)]
        };
        let done = std::sync::atomic::AtomicUsize::new(0);
        let progress = |m: usize| {
            let d = done.fetch_add(m, std::sync::atomic::Ordering::Relaxed) + m;
            ctx.progress(d as u64, n as u64, "samples");
        };
        let all: Vec<usize> = (0..n).collect();
        let x0 = if devices.len() == 1 {
            sample_shard(
                &model_dir,
                &state_dir,
                devices[0],
                &sources,
                &instructions,
                &all,
                p.k,
                &seeds,
                &cfg,
                p.batch,
                &progress,
            )
            .map_err(fail)?
        } else {
            // Contiguous shards, one thread and one model copy per GPU, results in order.
            let per = n.div_ceil(devices.len());
            let shards: Vec<&[usize]> = all.chunks(per).collect();
            let results: Vec<Result<Tensor, String>> = std::thread::scope(|s| {
                let handles: Vec<_> = shards
                    .iter()
                    .zip(&devices)
                    .map(|(shard, &dev)| {
                        let src = sources.shallow_clone();
                        let (md, sd, ins, seeds, cfg, prog) = (
                            &model_dir,
                            &state_dir,
                            &instructions,
                            &seeds,
                            &cfg,
                            &progress,
                        );
                        s.spawn(move || {
                            set_threads(p.threads);
                            sample_shard(
                                md, sd, dev, &src, ins, shard, p.k, seeds, cfg, p.batch, prog,
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("a rollout shard panicked".into()))
                    })
                    .collect()
            });
            let parts: Vec<Tensor> = results
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(fail)?;
            Tensor::cat(&parts, 0)
        };
        ctx.check_cancelled()?;

        // Source latents and decoded images on the CPU (same affine codec on every device).
        let (codec, _) = load_rollout_policy(&model_dir, &state_dir, Device::Cpu).map_err(fail)?;
        let source_latents = codec.encode(&sources).map_err(fail)?;
        let images = codec.decode(&x0).map_err(fail)?;
        let sched = codec.scheduler().sigmas(
            p.steps,
            codec.image_seq_len(source_latents.size()[2], source_latents.size()[3]),
        );
        let sigmas = Tensor::from_slice(&sched)
            .to_kind(Kind::Double)
            .unsqueeze(0)
            .repeat([n as i64, 1]);
        let ls = source_latents.size();

        let out: PathBuf = ctx.workdir()?.join("rollouts");
        std::fs::create_dir_all(out.join(IMAGES_DIR)).map_err(fail)?;
        let mut samples = Vec::with_capacity(n);
        for (i, &seed) in seeds.iter().enumerate() {
            let (g, k) = (i / p.k, i % p.k);
            let rel = format!("{IMAGES_DIR}/g{g:03}_k{k:02}.png");
            crate::imageio::tensor::save_rgb(&out.join(&rel), &images.get(i as i64))
                .map_err(fail)?;
            samples.push(SampleEntry {
                index: i,
                group: g,
                k,
                seed,
                image: rel,
            });
        }
        let tensors: BTreeMap<String, Tensor> = [
            ("x0".to_string(), x0.to_kind(Kind::Float)),
            (
                "source_latents".to_string(),
                source_latents.to_kind(Kind::Float),
            ),
            ("edit_masks".to_string(), masks),
            ("sigmas".to_string(), sigmas),
        ]
        .into();
        checkpoint::write_safetensors(&out.join(TENSORS_FILE), &tensors).map_err(fail)?;
        let manifest = RolloutManifest {
            format: FORMAT.into(),
            version: 1,
            iteration,
            theta_old,
            base_model_digest: base_digest,
            seed: p.seed,
            sampler: cfg,
            image_size: [hh, ww],
            latent_shape: [ls[1], ls[2], ls[3]],
            k: p.k,
            groups,
            samples,
        };
        checkpoint::write_json(&out.join(MANIFEST_FILE), &manifest).map_err(fail)?;
        ctx.metric("iteration", iteration);
        ctx.metric("samples", n as u64);
        ctx.metric("groups", p.groups as u64);
        ctx.output_dir("rollouts", &out)
    }
}
