//! The work of `pretrain` (declared in [`cocoflow_tasks::kinds::pretrain`]): the run function the
//! worker binary registers.

use crate::device::select_device;
use crate::models::{EditPolicy, TinyKontext, checkpoint};
use crate::pretrain::state::{restore, save_state};
use crate::pretrain::{LrSchedule, draw_batch, load_train_set, loss, loss_weights, model_config};
use crate::rl::adamw::{AdamW, AdamWConfig, clip_grad_norm};
use cocoflow_engine::kind::{TaskCtx, TaskError};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::Tensor;

pub use cocoflow_tasks::kinds::pretrain::*;

const CKPT: &str = "pretrain-state";

fn io_err(what: &str) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |e| TaskError::Failed(format!("{what}: {e}"))
}

/// The learning-rate schedule of the params.
pub fn lr_schedule(p: &PretrainParams) -> LrSchedule {
    LrSchedule {
        lr: p.lr,
        warmup: p.warmup,
        steps: p.steps,
        min_lr_fraction: p.min_lr_fraction,
    }
}

pub fn run(_: &Pretrain, p: PretrainParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
    if let (Some(dir), Some(digest)) = (&p.reference, &p.reference_digest)
        && !dir.is_empty()
    {
        // by reference: no training, no copy of the weights
        let r = cocoflow_tasks::weights::ModelRef {
            format: cocoflow_tasks::weights::REF_FORMAT.into(),
            path: dir.into(),
            digest: digest.clone(),
        };
        let out = ctx.workdir()?.join("model");
        r.write(&out)
            .map_err(io_err("cannot write the model reference"))?;
        ctx.log(format!("model by reference: {dir} ({})", &digest[..12]));
        return ctx.output_dir("model", &out);
    }
    let cfg = model_config(&p.model)
        .map_err(|e| TaskError::Failed(format!("param `{}`: {}", e.path, e.message)))?;
    // A fixed intra-op thread count (CPU results depend on it): the param, else the cores.
    let threads = p
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads);
    let ordinals: Vec<usize> = ctx.cuda_ordinals.iter().map(|&o| o as usize).collect();
    let device = select_device(&ordinals);
    let root = ctx.input_path("data")?;
    let data = load_train_set(&root, &|line| ctx.log(line))?;
    let n = data.instructions.len();
    let mut model = TinyKontext::new(&cfg, device, p.seed)
        .map_err(|e| TaskError::Failed(format!("model: {e}")))?;
    let params = model.trainable_variables();
    let adam_cfg = AdamWConfig {
        lr: p.lr,
        weight_decay: p.weight_decay,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::fresh(adam_cfg.clone(), &params);
    let work = ctx.workdir()?;
    let mut history: Vec<f64> = Vec::new();
    // Resume from the engine's checkpoint when an earlier attempt left one.
    if let Some(bytes) = ctx.checkpoint_load(CKPT)? {
        let f = work.join("resume.safetensors");
        std::fs::write(&f, &bytes).map_err(io_err("cannot write the checkpoint"))?;
        let step = restore(&model, &params, &mut opt, &f, &mut history)?;
        ctx.log(format!("resumed from the checkpoint at step {step}"));
    }
    let sources = data.sources.to_device(device);
    let targets = data.targets.to_device(device);
    let (src_lat, tgt_lat) = tch::no_grad(|| -> Result<_, TaskError> {
        let e = |e| TaskError::Failed(format!("encode: {e}"));
        Ok((
            model.encode(&sources).map_err(e)?,
            model.encode(&targets).map_err(e)?,
        ))
    })?;
    let lat_shape = tgt_lat.size()[1..].to_vec();
    let weights = loss_weights(
        &data.masks.to_device(device),
        lat_shape[1],
        lat_shape[2],
        p.edit_weight,
    );
    // Data parallelism: replicas 1.. (copies of the model, one per further granted GPU, or
    // `cpu_replicas` − 1 more on the CPU) each take a contiguous part of every batch.
    let devices = super::replica_devices(&ctx.cuda_ordinals, p.cpu_replicas);
    let mut replicas: Vec<TinyKontext> = Vec::new();
    for &d in &devices[1..] {
        let r = TinyKontext::new(&cfg, d, p.seed)
            .map_err(|e| TaskError::Failed(format!("model: {e}")))?;
        replicas.push(r);
    }
    sync_replicas(&params, &replicas);
    if !replicas.is_empty() {
        ctx.log(format!(
            "pretrain: data-parallel over {} replicas ({devices:?})",
            devices.len()
        ));
    }
    let schedule = lr_schedule(&p);
    let bsz = p.batch_size.min(n);
    let started = Instant::now();
    let start_step = opt.t;
    let mut window = Vec::new();
    for step in start_step..p.steps {
        ctx.check_cancelled()?;
        let (idx, tt, eps) = draw_batch(p.seed, step, n, bsz, &lat_shape, p.t_sampling, device);
        let index = Tensor::from_slice(&idx).to_device(device);
        let x0 = tgt_lat.index_select(0, &index);
        let src = src_lat.index_select(0, &index);
        let ins = data.phrasings(p.seed, step, &idx, p.refined_fraction);
        for v in params.values() {
            v.shallow_clone().zero_grad();
        }
        let w = weights.as_ref().map(|w| w.index_select(0, &index));
        let lv = if replicas.is_empty() {
            let cond = model
                .condition(&src, &ins)
                .map_err(|e| TaskError::Failed(format!("conditioning: {e}")))?;
            let loss = loss(&model, &x0, &eps, &tt, &cond, w.as_ref())
                .map_err(|e| TaskError::Failed(format!("forward: {e}")))?;
            let lv = loss.double_value(&[]);
            if lv.is_finite() {
                loss.backward();
            }
            lv
        } else {
            data_parallel_step(
                &mut model,
                &mut replicas,
                &params,
                &x0,
                &src,
                &eps,
                &tt,
                &ins,
                w.as_ref(),
            )?
        };
        if !lv.is_finite() {
            return Err(TaskError::Failed(format!(
                "the loss is {lv} at step {step}; lower `lr` (now {})",
                p.lr
            )));
        }
        let grads: BTreeMap<String, Tensor> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.grad()))
            .filter(|(_, g)| g.defined())
            .collect();
        clip_grad_norm(&grads, p.grad_clip);
        opt.cfg.lr = schedule.at(step);
        opt.step(&params, &grads);
        sync_replicas(&params, &replicas);
        window.push(lv);
        let done = step + 1;
        if done % p.log_every == 0 || done == p.steps {
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            history.push(mean);
            ctx.log(format!(
                "step {done}/{}: loss {mean:.5} lr {:.2e}",
                p.steps,
                schedule.at(step)
            ));
        }
        ctx.progress(done, p.steps, format!("loss {lv:.4}"));
        if done % p.checkpoint_every == 0 && done < p.steps {
            let f = work.join("ckpt.safetensors");
            save_state(&model, &opt, &history, &f)?;
            let bytes = std::fs::read(&f).map_err(io_err("cannot read the checkpoint"))?;
            ctx.checkpoint_save(CKPT, bytes)?;
        }
    }
    let out = work.join("model");
    model
        .save(&out)
        .map_err(|e| TaskError::Failed(format!("saving the model: {e}")))?;
    let secs = started.elapsed().as_secs_f64();
    let final_loss = history.last().copied().unwrap_or(f64::NAN);
    let report = json!({
        "backend": model.backend(),
        "params": serde_json::to_value(&p).expect("serialisable"),
        "parameters": model.base_variables().values().map(|t| t.numel()).sum::<usize>(),
        "train_samples": n,
        "loss_every": p.log_every,
        "loss": history,
        "final_loss": final_loss,
    });
    checkpoint::write_json(&out.join("pretrain.json"), &report)
        .map_err(|e| TaskError::Failed(e.to_string()))?;
    ctx.log(format!(
        "{} steps in this attempt, {secs:.1} s",
        p.steps - start_step
    ));
    ctx.metric("final_loss", final_loss);
    ctx.metric("train_samples", n as u64);
    ctx.metric("steps_this_attempt", p.steps - start_step);
    ctx.metric("seconds", secs);
    ctx.output_dir("model", &out)
}

/// Copies the model's trainable weights into every replica (after each step).
fn sync_replicas(params: &BTreeMap<String, Tensor>, replicas: &[TinyKontext]) {
    tch::no_grad(|| {
        for r in replicas {
            let rv = r.trainable_variables();
            for (k, v) in params {
                if let Some(t) = rv.get(k) {
                    t.shallow_clone().copy_(&v.to_device(t.device()));
                }
            }
        }
    });
}

/// One step's loss and gradient over the model and its replicas: the batch split into
/// contiguous parts (part 0 for the model), each part's [`partial_loss`] over the whole
/// batch's denominator back-propagated in its own thread, the replicas' gradients then added
/// into the model's. Returns the batch's loss.
#[allow(clippy::too_many_arguments)]
fn data_parallel_step(
    model: &mut TinyKontext,
    replicas: &mut [TinyKontext],
    params: &BTreeMap<String, Tensor>,
    x0: &Tensor,
    src: &Tensor,
    eps: &Tensor,
    tt: &Tensor,
    ins: &[&str],
    w: Option<&Tensor>,
) -> Result<f64, TaskError> {
    use crate::pretrain::partial_loss;
    let b = x0.size()[0];
    let c = x0.size()[1] as f64;
    let denominator = match w {
        None => x0.numel() as f64,
        Some(w) => w.sum(tch::Kind::Double).double_value(&[]) * c,
    };
    let n = (replicas.len() + 1) as i64;
    let per = (b + n - 1) / n;
    let models: Vec<&mut TinyKontext> = std::iter::once(model).chain(replicas.iter_mut()).collect();
    // Tensors are not `Sync`: each part is cut here and moved into its thread.
    let mut parts = Vec::new();
    for (r, m) in models.into_iter().enumerate() {
        let start = r as i64 * per;
        if start >= b {
            break;
        }
        let len = per.min(b - start);
        let dev = m.device();
        let cut = |t: &Tensor| t.narrow(0, start, len).to_device(dev);
        parts.push((
            m,
            cut(x0),
            cut(src),
            cut(eps),
            cut(tt),
            w.map(&cut),
            ins[start as usize..(start + len) as usize]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<String>>(),
        ));
    }
    let results: Vec<Result<f64, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|(m, x0, src, eps, tt, w, ins)| {
                s.spawn(move || -> Result<f64, String> {
                    let m: &TinyKontext = m;
                    let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
                    let cond = m.condition(&src, &ins).map_err(|e| e.to_string())?;
                    let loss = partial_loss(m, &x0, &eps, &tt, &cond, w.as_ref(), denominator)
                        .map_err(|e| e.to_string())?;
                    let lv = loss.double_value(&[]);
                    if lv.is_finite() {
                        loss.backward();
                    }
                    Ok(lv)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a data-parallel replica panicked".into()))
            })
            .collect()
    });
    let mut total = 0.0;
    for (r, res) in results.into_iter().enumerate() {
        total += res.map_err(|e| TaskError::Failed(format!("replica {r}: {e}")))?;
    }
    tch::no_grad(|| {
        for rep in replicas.iter() {
            for (k, t) in rep.trainable_variables() {
                let g = t.grad();
                if !g.defined() {
                    continue;
                }
                if let Some(v) = params.get(&k) {
                    let mut mg = v.grad();
                    if mg.defined() {
                        let _ = mg.g_add_(&g.to_device(v.device()));
                    }
                }
                let _ = g.shallow_clone().zero_();
            }
        }
    });
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn params(v: Value) -> PretrainParams {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn lr_warms_up_then_decays_to_the_floor() {
        let p = lr_schedule(&params(
            json!({"steps": 100, "warmup": 10, "lr": 1.0, "min_lr_fraction": 0.1}),
        ));
        assert!((p.at(0) - 0.1).abs() < 1e-12);
        assert!((p.at(9) - 1.0).abs() < 1e-12);
        assert!((p.at(10) - 1.0).abs() < 1e-12);
        assert!((p.at(100) - 0.1).abs() < 1e-12);
        assert!(p.at(50) < 1.0 && p.at(50) > 0.1);
    }
}
