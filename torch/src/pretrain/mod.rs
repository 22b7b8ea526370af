//! Supervised flow matching of a base editing model (what the `pretrain` kind runs): the
//! training set in memory, the batch and noise of every step from `(seed, step)` alone, the
//! edit-weighted loss, the learning-rate schedule, and the checkpoint that holds all the state
//! (weights, AdamW moments, step, loss curve), so an interrupted pretrain ends with the weights
//! of an uninterrupted one.

use crate::data::{Dataset, RecordTensors as _};
use crate::models::random::normal_tensor;
use crate::models::{ActiveAdapter, Conditioning, EditPolicy, flow_matching_loss};
use crate::rng::StreamRng;
use cocoflow_engine::kind::TaskError;
pub use cocoflow_tasks::pretrain::*;
use tch::{Device, Kind, Tensor};

pub mod state;

/// The learning rate: linear warm-up over `warmup` steps, then cosine decay to
/// `lr·min_lr_fraction` at step `steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub warmup: u64,
    pub steps: u64,
    pub min_lr_fraction: f64,
}

impl LrSchedule {
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup.min(self.steps)).max(1) as f64;
        let x = ((step - self.warmup) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_fraction;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
    }
}

/// The whole training set in memory: `(N, 3, H, W)` sources and targets, instructions.
pub struct TrainSet {
    pub sources: Tensor,
    pub targets: Tensor,
    /// `(N, 1, H, W)` edit masks (1 = changes); zeros where a record has none.
    pub masks: Tensor,
    pub instructions: Vec<String>,
    /// Each record's refined instruction, where it has one.
    pub refined: Vec<Option<String>>,
}

impl TrainSet {
    /// The instruction of each drawn record `idx` at `step`: the refined one with probability
    /// `refined_fraction` where the record has one (stream `(seed, pretrain/phrasing/<step>)`,
    /// one draw per sample), else the original.
    pub fn phrasings(&self, seed: u64, step: u64, idx: &[i64], refined_fraction: f64) -> Vec<&str> {
        let mut rng = StreamRng::derive(seed, &format!("pretrain/phrasing/{step}"));
        idx.iter()
            .map(|&i| {
                let i = i as usize;
                let u = rng.uniform();
                match &self.refined[i] {
                    Some(r) if u < refined_fraction => r.as_str(),
                    _ => self.instructions[i].as_str(),
                }
            })
            .collect()
    }
}

/// Every record with a `target` image of the dataset at `root` (one image size for all).
pub fn load_train_set(root: &std::path::Path, log: &dyn Fn(String)) -> Result<TrainSet, TaskError> {
    let ds = Dataset::open(&root).map_err(|e| TaskError::Failed(format!("input `data`: {e}")))?;
    if !ds.rejected.is_empty() {
        log(format!(
            "input `data`: {} manifest line(s) rejected, first: line {}: {}",
            ds.rejected.len(),
            ds.rejected[0].line,
            ds.rejected[0].reason
        ));
    }
    let (mut src, mut tgt, mut ins, mut masks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut refined = Vec::new();
    let mut size: Option<Vec<i64>> = None;
    for r in &ds.records {
        let Some(t) = ds
            .target(r)
            .map_err(|e| TaskError::Failed(format!("input `data`, record `{}`: {e}", r.key)))?
        else {
            continue;
        };
        let s = ds
            .source(r)
            .map_err(|e| TaskError::Failed(format!("input `data`, record `{}`: {e}", r.key)))?;
        match &size {
            None => size = Some(s.size()),
            Some(sz) if *sz != s.size() || *sz != t.size() => {
                return Err(TaskError::Failed(format!(
                    "input `data`, record `{}`: images of {:?} / {:?}, but the dataset's first record has {:?}; pretraining needs one size",
                    r.key,
                    s.size(),
                    t.size(),
                    sz
                )));
            }
            _ => {}
        }
        let m = ds
            .edit_mask(r)
            .map_err(|e| TaskError::Failed(format!("input `data`, record `{}`: {e}", r.key)))?;
        let (_, h, w) = s.size3().expect("(3, H, W)");
        masks.push(m.unwrap_or_else(|| Tensor::zeros([1, h, w], (Kind::Float, tch::Device::Cpu))));
        src.push(s);
        tgt.push(t);
        ins.push(r.instruction.clone());
        refined.push(
            r.instruction_refined
                .clone()
                .filter(|t| !t.trim().is_empty()),
        );
    }
    if src.is_empty() {
        return Err(TaskError::Failed(format!(
            "input `data` (`{}`): no record with a `target` image to learn from",
            root.display()
        )));
    }
    Ok(TrainSet {
        sources: Tensor::stack(&src, 0),
        targets: Tensor::stack(&tgt, 0),
        masks: Tensor::stack(&masks, 0),
        instructions: ins,
        refined,
    })
}

/// One step's batch: record indices, `t` `(B,)` and noise `ε` `(B, C, h, w)`, all from the
/// stream `(seed, pretrain/step/<step>)` in this order.
pub fn draw_batch(
    seed: u64,
    step: u64,
    n: usize,
    batch: usize,
    latent_shape: &[i64],
    t_sampling: TSampling,
    device: Device,
) -> (Vec<i64>, Tensor, Tensor) {
    let mut rng = StreamRng::derive(seed, &format!("pretrain/step/{step}"));
    let idx: Vec<i64> = (0..batch)
        .map(|_| (rng.next_u64() % n as u64) as i64)
        .collect();
    let t: Vec<f32> = (0..batch)
        .map(|_| match t_sampling {
            TSampling::Uniform => rng.uniform() as f32,
            TSampling::LogitNormal => (1.0 / (1.0 + (-rng.normal()).exp())) as f32,
        })
        .collect();
    let mut shape = vec![batch as i64];
    shape.extend_from_slice(latent_shape);
    let eps = normal_tensor(&mut rng, &shape, Kind::Float, device);
    (idx, Tensor::from_slice(&t).to_device(device), eps)
}

/// Per-cell loss weights on the latent grid: `1 + (edit_weight − 1)·Ẽ` with Ẽ the max-pooled
/// edit mask; `None` for `edit_weight = 1` (the plain mean).
pub fn loss_weights(masks: &Tensor, h: i64, w: i64, edit_weight: f64) -> Option<Tensor> {
    (edit_weight != 1.0).then(|| {
        let (edit, _) =
            crate::nft::loss::downsample_mask(masks, h, w, crate::nft::MaskDown::Maxpool);
        edit * (edit_weight - 1.0) + 1.0
    })
}

/// A part of a batch's flow-matching loss (data parallelism): the part's squared errors
/// summed (weighted by `weights`) and divided by `denominator`, the whole batch's — its
/// element count `B·C·h·w`, or `C·Σ w` with weights — so the parts of a batch add up to
/// [`loss`] of the whole batch.
pub fn partial_loss(
    model: &dyn EditPolicy,
    x0: &Tensor,
    eps: &Tensor,
    t: &Tensor,
    cond: &Conditioning,
    weights: Option<&Tensor>,
    denominator: f64,
) -> Result<Tensor, crate::models::ModelError> {
    let x_t = crate::models::interpolate(x0, eps, t);
    let v = model.velocity_with(&x_t, t, cond, &ActiveAdapter::Off, None)?;
    let d = (v - (eps - x0)).square();
    let d = match weights {
        None => d,
        Some(w) => d * w,
    };
    Ok(d.sum(Kind::Float) / denominator)
}

/// The flow-matching loss of the base model (adapters off): the plain mean, or with cell
/// weights `Σ w·(v − (ε − x0))² / (C·Σ w)`.
pub fn loss(
    model: &dyn EditPolicy,
    x0: &Tensor,
    eps: &Tensor,
    t: &Tensor,
    cond: &Conditioning,
    weights: Option<&Tensor>,
) -> Result<Tensor, crate::models::ModelError> {
    match weights {
        None => flow_matching_loss(model, x0, eps, t, cond, &ActiveAdapter::Off),
        Some(w) => {
            let x_t = crate::models::interpolate(x0, eps, t);
            let v = model.velocity_with(&x_t, t, cond, &ActiveAdapter::Off, None)?;
            let c = x0.size()[1] as f64;
            Ok(((v - (eps - x0)).square() * w).sum(Kind::Float) / (w.sum(Kind::Float) * c))
        }
    }
}
