//! The work of `rollout` (declared in [`cocoflow_tasks::kinds::rollout`]): the run function the
//! worker binary registers.

use super::{base_model, device_of, set_threads};
use crate::artifacts::rollouts::{
    FORMAT, GroupEntry, IMAGES_DIR, MANIFEST_FILE, RolloutManifest, RolloutTensors, SampleEntry,
    VERSION,
};
use crate::data::{Dataset, Record, RecordTensors as _};
use crate::error::fail;
use crate::judge::{JudgeImage, JudgeImageTensor as _};
use crate::models::{BaseModel, checkpoint};
use crate::rl::rollout::{
    eligible, load_rollout_policy, sample_seed, sample_shard, select_prompts,
};
use crate::rl::state::{self, StateInfo};
use crate::sampling::SamplerConfig;
use cocoflow_engine::kind::{TaskCtx, TaskError};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

pub use cocoflow_tasks::kinds::rollout::*;

pub fn run(_: &Rollout, p: RolloutParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
    set_threads(p.threads);
    let model_dir = super::model_dir(ctx)?;
    let state_dir = super::resolved_input(ctx, "state")?;
    let data_dir = ctx.input_path("data")?;
    let info: Option<StateInfo> = state::read_info(&state_dir)?;
    let base_digest = state::check_base(&state_dir, info.as_ref(), &model_dir)?;
    let iteration = info.as_ref().map_or(0, |i| i.iteration);
    let theta_old = state::theta_old_digest(&state_dir)?;
    ctx.log(format!(
        "rollout: iteration {iteration}, {} groups x {} samples, {} steps",
        p.groups, p.k, p.steps
    ));

    let ds = Dataset::open(&data_dir)?;
    let prompts = gather_prompts(&ds, &p, iteration)?;
    let n = p.groups * p.k;
    let seeds: Vec<u64> = (0..n)
        .map(|i| sample_seed(p.seed, iteration, i / p.k, i % p.k))
        .collect();
    let cfg = p.sampler_config();
    let base = base_model(ctx, &model_dir)?;
    let x0 = sample_all(ctx, &p, &base, &state_dir, &prompts, &seeds, &cfg)?;
    ctx.check_cancelled()?;

    // Source latents and decoded images: tiny-kontext's affine codec on the CPU (the same on
    // every device); a FLUX or Qwen VAE on the task's device (a second CPU copy of the pipeline would
    // cost tens of GB at full size).
    let codec_device = match crate::models::Backend::detect(&model_dir)? {
        crate::models::Backend::TinyKontext => Device::Cpu,
        crate::models::Backend::FluxKontext | crate::models::Backend::QwenImageEdit => {
            device_of(&ctx.cuda_ordinals)
        }
    };
    let (codec, _) = load_rollout_policy(&base, &state_dir, codec_device).map_err(fail)?;
    let source_latents = codec.encode(&prompts.sources)?.to_device(Device::Cpu);
    let images = codec.decode(&x0)?.to_device(Device::Cpu);
    let sched = codec.scheduler().sigmas(
        p.steps,
        codec.image_seq_len(source_latents.size()[2], source_latents.size()[3]),
    );
    let sigmas = Tensor::from_slice(&sched)
        .to_kind(tch::Kind::Double)
        .unsqueeze(0)
        .repeat([n as i64, 1]);
    let ls = source_latents.size();

    let out: PathBuf = ctx.workdir()?.join("rollouts");
    std::fs::create_dir_all(out.join(IMAGES_DIR)).map_err(fail)?;
    let mut samples = Vec::with_capacity(n);
    for (i, &seed) in seeds.iter().enumerate() {
        let (g, k) = (i / p.k, i % p.k);
        let rel = format!("{IMAGES_DIR}/g{g:03}_k{k:02}.png");
        crate::imageio::tensor::save_rgb(&out.join(&rel), &images.get(i as i64))?;
        samples.push(SampleEntry {
            index: i,
            group: g,
            k,
            seed,
            image: rel,
        });
    }
    RolloutTensors {
        x0,
        source_latents,
        edit_masks: prompts.masks,
        sigmas,
    }
    .write(&out)
    .map_err(fail)?;
    let (hh, ww) = prompts.size;
    let manifest = RolloutManifest {
        format: FORMAT.into(),
        version: VERSION,
        iteration,
        theta_old,
        base_model_digest: base_digest,
        seed: p.seed,
        sampler: cfg,
        image_size: [hh, ww],
        latent_shape: [ls[1], ls[2], ls[3]],
        k: p.k,
        groups: prompts.groups,
        samples,
    };
    checkpoint::write_json(&out.join(MANIFEST_FILE), &manifest)?;
    ctx.metric("iteration", iteration);
    ctx.metric("samples", n as u64);
    ctx.metric("groups", p.groups as u64);
    ctx.output_dir("rollouts", &out)
}

/// The prompts of one iteration: their manifest entries, sources `(G, 3, H, W)`, edit masks
/// `(G, 1, H, W)` and the common image size.
struct Prompts {
    groups: Vec<GroupEntry>,
    sources: Tensor,
    masks: Tensor,
    size: (i64, i64),
}

fn gather_prompts(ds: &Dataset, p: &RolloutParams, iteration: u64) -> Result<Prompts, TaskError> {
    let records: Vec<&Record> = eligible(ds);
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
        let src = ds.source(r)?;
        let mask = ds
            .edit_mask(r)?
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
        let digest = JudgeImage::from_tensor(&src)?.digest().to_string();
        groups.push(GroupEntry {
            index: g,
            record: r.key.clone(),
            instruction: r.training_instruction().to_string(),
            source_digest: digest,
            edit_type: r.edit_type.clone(),
        });
        sources.push(src);
        masks.push(mask.to_kind(tch::Kind::Float));
    }
    Ok(Prompts {
        groups,
        sources: Tensor::stack(&sources, 0),
        masks: Tensor::stack(&masks, 0),
        size: size.expect("at least one group"),
    })
}

/// Every sample's x0 `(N, C, h, w)` on the CPU, sharded over the granted GPUs (or
/// `cpu_replicas` CPU replicas): contiguous shards whose sizes are multiples of `batch` (every
/// sampler batch then holds the samples it holds on one device), one thread and one model
/// copy per replica, results in order; or on one device.
fn sample_all(
    ctx: &TaskCtx,
    p: &RolloutParams,
    base: &BaseModel,
    state_dir: &Path,
    prompts: &Prompts,
    seeds: &[u64],
    cfg: &SamplerConfig,
) -> Result<Tensor, TaskError> {
    let n = seeds.len();
    let instructions: Vec<String> = prompts
        .groups
        .iter()
        .map(|g| g.instruction.clone())
        .collect();
    let devices = super::replica_devices(&ctx.cuda_ordinals, p.cpu_replicas);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = |m: usize| {
        let d = done.fetch_add(m, std::sync::atomic::Ordering::Relaxed) + m;
        ctx.progress(d as u64, n as u64, "samples");
    };
    let all: Vec<usize> = (0..n).collect();
    if devices.len() == 1 {
        return sample_shard(
            base,
            state_dir,
            devices[0],
            &prompts.sources,
            &instructions,
            &all,
            p.k,
            seeds,
            cfg,
            p.batch,
            &progress,
        )
        .map_err(fail);
    }
    let per = n.div_ceil(devices.len()).div_ceil(p.batch.max(1)) * p.batch.max(1);
    let shards: Vec<&[usize]> = all.chunks(per).collect();
    ctx.log(format!(
        "rollout: data-parallel over {} replicas ({:?}), shards of {per} samples",
        shards.len(),
        &devices[..shards.len()]
    ));
    let results: Vec<Result<Tensor, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .iter()
            .zip(&devices)
            .map(|(shard, &dev)| {
                let src = prompts.sources.shallow_clone();
                let (ins, prog) = (&instructions, &progress);
                s.spawn(move || {
                    set_threads(p.threads);
                    sample_shard(
                        base, state_dir, dev, &src, ins, shard, p.k, seeds, cfg, p.batch, prog,
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
    Ok(Tensor::cat(&parts, 0))
}
