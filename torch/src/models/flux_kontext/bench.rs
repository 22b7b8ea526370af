//! Throughput and memory of the FLUX.1 Kontext transformer with random weights
//! (`cocoflow bench-flux`, issue 14's GPU acceptance); `bench/flux_pytorch.py` measures the
//! same with diffusers + peft, and both print JSON with the same keys.
//!
//! - **rollout**: K samples of one prompt, `dpm2` over the FLUX σ schedule, embedded
//!   guidance, the Kontext source tokens appended, θ_old's adapter active, no grad; latents
//!   only. A warm-up batch of a few steps, then timed batches of `steps` steps.
//! - **nft**: one DiffusionNFT training step on a micro-batch at one timestep (method-spec §4):
//!   θ_old and reference (adapters off) forwards without grad, θ's forward with block-wise
//!   gradient checkpointing, [`crate::nft::nft_loss`] with the FLUX preset's λ_ner = λ_er =
//!   0.2, backward, gradient clipping at norm 1 and one AdamW step on θ's LoRA matrices
//!   (module `nft`).
//! - **vae**: one decode of K latents at the rollout size (optional).
//!
//! Weights are drawn on the device from libtorch's seeded generator with PyTorch's default
//! initialisation (linear and conv weights and biases `U(±1/√fan_in)`, norm weights 1, norm
//! biases 0), not from [`crate::rng::StreamRng`]: 12 billion values would take minutes on the
//! CPU, and the figures do not depend on them. LoRA `A` is PEFT's init; `B` is `U(±1e−3)`
//! instead of zero, so no matrix product runs on zeros. Every timed region starts and ends
//! with a device synchronisation; warm-ups are not timed. Peak memory is the CUDA caching
//! allocator's ([`crate::device::cuda_memory`]), reset at the start of each phase.

use super::super::error::ModelError;
use super::super::lora::{LoraConfig, THETA, THETA_OLD};
use super::config::{AutoencoderKLConfig, FluxTransformer2DModelConfig};
use super::rope::{latent_image_ids, text_ids};
use super::transformer::{FluxInputs, FluxTransformer2DModel};
use super::vae::AutoencoderKL;
use crate::device::{cuda_memory, reset_cuda_peak_memory};
use crate::sampling::{SamplerKind, SchedulerConfig, integrate};
use serde_json::{Value, json};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

mod nft;

pub use nft::bench_nft;

/// Which transformer (and VAE) to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSize {
    /// FLUX.1 Kontext [dev]: 19 double + 38 single blocks, 24 heads × 128, ~12 B parameters.
    Full,
    /// The shapes of the checked-in tiny repository (`tasks/tests/golden/flux`), for CPU tests.
    Tiny,
}

impl ModelSize {
    pub fn name(self) -> &'static str {
        match self {
            ModelSize::Full => "full",
            ModelSize::Tiny => "tiny",
        }
    }

    /// `FLUX.1-Kontext-dev/transformer/config.json`, or the tiny repository's.
    pub fn transformer(self) -> FluxTransformer2DModelConfig {
        match self {
            ModelSize::Full => FluxTransformer2DModelConfig::default(),
            ModelSize::Tiny => FluxTransformer2DModelConfig {
                in_channels: 16,
                num_layers: 2,
                num_single_layers: 2,
                attention_head_dim: 16,
                num_attention_heads: 2,
                joint_attention_dim: 32,
                pooled_projection_dim: 32,
                axes_dims_rope: vec![4, 6, 6],
                ..FluxTransformer2DModelConfig::default()
            },
        }
    }

    /// FLUX.1's `vae/config.json`, or a small VAE with the same 8× downsampling.
    pub fn vae(self) -> AutoencoderKLConfig {
        let blocks = match self {
            ModelSize::Full => vec![128, 256, 512, 512],
            ModelSize::Tiny => vec![8, 16, 16, 16],
        };
        let n = blocks.len();
        AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); n],
            up_block_types: vec!["UpDecoderBlock2D".into(); n],
            block_out_channels: blocks,
            layers_per_block: 2,
            act_fn: "silu".into(),
            latent_channels: self.transformer().in_channels / 4,
            norm_num_groups: if self == ModelSize::Full { 32 } else { 4 },
            scaling_factor: 0.3611,
            shift_factor: Some(0.1159),
            use_quant_conv: false,
            use_post_quant_conv: false,
            mid_block_add_attention: true,
        }
    }

    /// T5 tokens of the prompt (the pipeline's `max_sequence_length` 512 at full size).
    pub fn default_text_len(self) -> i64 {
        match self {
            ModelSize::Full => 512,
            ModelSize::Tiny => 16,
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub size: ModelSize,
    pub device: Device,
    /// Weight and activation kind (bf16 on the GPU).
    pub kind: Kind,
    /// Side in pixels of the target and of the source image (a multiple of 16).
    pub resolution: i64,
    /// Samples per prompt in a rollout batch.
    pub k: i64,
    /// Sampler steps of a rollout (and the schedule NFT timesteps come from).
    pub steps: usize,
    /// Embedded guidance (FLUX.1 Kontext [dev]: 2.5).
    pub guidance: f64,
    pub text_len: i64,
    /// θ's and θ_old's adapters (rank, α, targets).
    pub lora: LoraConfig,
    /// Steps of the untimed rollout warm-up batch.
    pub rollout_warmup_steps: usize,
    /// Timed rollout batches.
    pub rollout_repeats: usize,
    /// Samples in the NFT micro-batch.
    pub nft_batch: i64,
    pub nft_warmup: usize,
    pub nft_repeats: usize,
    /// Seed of libtorch's generator (weights, inputs, noise).
    pub seed: u64,
}

impl BenchSettings {
    /// Defaults of the issue: K = 12, 10 steps, guidance 2.5, LoRA r32/α64 on the attention
    /// projections, NFT micro-batch 2.
    pub fn new(size: ModelSize, device: Device, kind: Kind, resolution: i64) -> Self {
        BenchSettings {
            size,
            device,
            kind,
            resolution,
            k: 12,
            steps: 10,
            guidance: 2.5,
            text_len: size.default_text_len(),
            lora: LoraConfig::default(),
            rollout_warmup_steps: 2,
            rollout_repeats: 2,
            nft_batch: 2,
            nft_warmup: 1,
            nft_repeats: 3,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if self.resolution < 16 || self.resolution % 16 != 0 {
            return bad(format!(
                "`resolution` must be a positive multiple of 16 (8× VAE, 2×2 packing), got {}",
                self.resolution
            ));
        }
        if self.k < 1 || self.nft_batch < 1 || self.text_len < 1 {
            return bad("`k`, `nft_batch` and `text_len` must be at least 1".into());
        }
        if self.steps < 1 || self.rollout_warmup_steps < 1 {
            return bad("`steps` and the warm-up steps must be at least 1".into());
        }
        if self.rollout_repeats < 1 || self.nft_repeats < 1 {
            return bad("at least one timed repeat is needed".into());
        }
        Ok(())
    }

    /// Latent grid side (`resolution / 8`).
    fn latent_side(&self) -> i64 {
        self.resolution / 8
    }

    /// Packed tokens of one image (`(side/2)²`).
    fn tokens(&self) -> i64 {
        let s = self.latent_side() / 2;
        s * s
    }

    /// The FLUX σ schedule for `steps` steps on this image size.
    fn sigmas(&self, steps: usize) -> Vec<f64> {
        SchedulerConfig::default().sigmas(steps, self.tokens() as u64)
    }
}

/// Fills every variable of `vs` as PyTorch's default initialisation would (see the module
/// doc), from libtorch's generator, on the variables' device.
pub fn randomize(vs: &nn::VarStore) {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, v) in &vars {
            let mut v = v.shallow_clone();
            let fan_in = |w: &Tensor| {
                let s = w.size();
                (s.len() >= 2).then(|| s[1..].iter().product::<i64>() as f64)
            };
            let _ = if let Some(stem) = name.strip_suffix(".bias") {
                match vars.get(&format!("{stem}.weight")).and_then(fan_in) {
                    Some(f) => v.uniform_(-1.0 / f.sqrt(), 1.0 / f.sqrt()),
                    None => v.zero_(), // a norm's bias
                }
            } else {
                match fan_in(&v) {
                    Some(f) => v.uniform_(-1.0 / f.sqrt(), 1.0 / f.sqrt()),
                    None => v.fill_(1.0), // a norm's weight
                }
            };
        }
    });
}

/// Seconds since `t0` once `device` has finished its queued work.
fn elapsed(device: Device, t0: Instant) -> f64 {
    sync(device);
    t0.elapsed().as_secs_f64()
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn reset_peak(device: Device) {
    if let Device::Cuda(i) = device {
        reset_cuda_peak_memory(i);
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// `{allocated_gib, peak_allocated_gib, reserved_gib, peak_reserved_gib}`, nulls on the CPU.
fn memory_json(device: Device) -> Value {
    let m = match device {
        Device::Cuda(i) => cuda_memory(i),
        _ => None,
    };
    let g = |v: Option<u64>| v.map(|b| b as f64 / GIB);
    json!({
        "allocated_gib": g(m.map(|m| m.allocated)),
        "peak_allocated_gib": g(m.map(|m| m.peak_allocated)),
        "reserved_gib": g(m.map(|m| m.reserved)),
        "peak_reserved_gib": g(m.map(|m| m.peak_reserved)),
    })
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        Kind::Float => "f32",
        Kind::Double => "f64",
        _ => "other",
    }
}

/// A transformer of `s.size` with random weights and adapters θ (`default`) and θ_old
/// (`old`); the seconds it took are in [`Built::build_s`].
#[derive(Debug)]
pub struct Built {
    pub model: FluxTransformer2DModel,
    pub build_s: f64,
    /// LoRA layers per adapter.
    pub lora_layers: usize,
    /// GiB allocated once built (weights and adapters), `None` on the CPU.
    pub weights_gib: Option<f64>,
}

pub fn build(s: &BenchSettings) -> Result<Built, ModelError> {
    s.validate()?;
    tch::manual_seed(s.seed as i64);
    let t0 = Instant::now();
    let mut model = FluxTransformer2DModel::new(&s.size.transformer(), s.device, s.kind)?;
    randomize(model.var_store());
    let lora_layers = model.add_lora(THETA, &s.lora);
    model.add_lora(THETA_OLD, &s.lora);
    tch::no_grad(|| {
        for (k, v) in model.var_store().variables() {
            if k.contains(".lora_B.") {
                let _ = v.shallow_clone().uniform_(-1e-3, 1e-3);
            }
        }
    });
    let build_s = elapsed(s.device, t0);
    let weights_gib = memory_json(s.device)["allocated_gib"].as_f64();
    Ok(Built {
        model,
        build_s,
        lora_layers,
        weights_gib,
    })
}

/// The fixed conditioning of a batch of `b` samples: T5 states, pooled CLIP, packed source
/// tokens, and the ids of text, target and source tokens.
struct Conditioning {
    txt: Tensor,
    pooled: Tensor,
    source: Tensor,
    txt_ids: Tensor,
    img_ids: Tensor,
}

fn conditioning(s: &BenchSettings, b: i64, one_prompt: bool) -> Conditioning {
    let cfg = s.size.transformer();
    let (dev, kind) = (s.device, s.kind);
    let rows = if one_prompt { 1 } else { b };
    // one prompt's embeddings repeated K times, as `num_images_per_prompt` does
    let txt = Tensor::randn([rows, s.text_len, cfg.joint_attention_dim], (kind, dev)).repeat([
        b / rows,
        1,
        1,
    ]);
    let pooled =
        Tensor::randn([rows, cfg.pooled_projection_dim], (kind, dev)).repeat([b / rows, 1]);
    let side = s.latent_side() / 2;
    let source =
        Tensor::randn([rows, s.tokens(), cfg.in_channels], (kind, dev)).repeat([b / rows, 1, 1]);
    let img_ids = Tensor::cat(
        &[
            latent_image_ids(side, side, 0.0, dev),
            latent_image_ids(side, side, 1.0, dev),
        ],
        0,
    );
    Conditioning {
        txt,
        pooled,
        source,
        txt_ids: text_ids(s.text_len, dev),
        img_ids,
    }
}

impl Conditioning {
    fn inputs<'a>(
        &'a self,
        x: &'a Tensor,
        t: &'a Tensor,
        g: &'a Tensor,
        adapter: Option<&'a str>,
    ) -> FluxInputs<'a> {
        FluxInputs {
            hidden_states: x,
            source: Some(&self.source),
            encoder_hidden_states: &self.txt,
            pooled_projections: &self.pooled,
            timestep: t,
            guidance: Some(g),
            txt_ids: &self.txt_ids,
            img_ids: &self.img_ids,
            adapter,
        }
    }
}

/// The JSON fields every phase prints.
fn common(s: &BenchSettings, phase: &str) -> serde_json::Map<String, Value> {
    let v = json!({
        "impl": "cocoflow",
        "phase": phase,
        "config": s.size.name(),
        "resolution": s.resolution,
        "k": s.k,
        "steps": s.steps,
        "dtype": kind_name(s.kind),
        "lora_rank": s.lora.r,
        "lora_alpha": s.lora.lora_alpha,
        "text_len": s.text_len,
        "device": format!("{:?}", s.device),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// One rollout batch of `steps` steps from fresh noise; returns the final packed latents.
fn rollout_batch(
    model: &FluxTransformer2DModel,
    s: &BenchSettings,
    c: &Conditioning,
    steps: usize,
) -> Result<Tensor, ModelError> {
    let cfg = &model.cfg;
    let (k, dev) = (s.k, s.device);
    let g = Tensor::full([k], s.guidance, (Kind::Float, dev));
    tch::no_grad(|| {
        // float32 latents in the solver; the model casts its inputs to its kind
        let noise = Tensor::randn([k, s.tokens(), cfg.in_channels], (Kind::Float, dev));
        integrate(SamplerKind::Dpm2, noise, &s.sigmas(steps), |x, sigma| {
            let t = Tensor::full([k], sigma, (Kind::Float, dev));
            let v = model.forward(&c.inputs(x, &t, &g, Some(THETA_OLD)))?;
            Ok(v.to_kind(Kind::Float))
        })
    })
}

/// Rollout throughput: `images_per_s = k / median(batch_s)`.
pub fn bench_rollout(built: &Built, s: &BenchSettings) -> Result<Value, ModelError> {
    let model = &built.model;
    let c = conditioning(s, s.k, true);
    reset_peak(s.device);
    let t0 = Instant::now();
    let warm = rollout_batch(model, s, &c, s.rollout_warmup_steps)?;
    let warmup_s = elapsed(s.device, t0);
    drop(warm);
    let mut batch_s = Vec::new();
    let mut finite = true;
    for _ in 0..s.rollout_repeats {
        let t0 = Instant::now();
        let x = rollout_batch(model, s, &c, s.steps)?;
        batch_s.push(elapsed(s.device, t0));
        finite &= x.isfinite().all().int64_value(&[]) != 0;
    }
    let med = median(&batch_s);
    let mut m = common(s, "rollout");
    m.insert("tokens".into(), json!([s.tokens(), s.tokens(), s.text_len]));
    m.insert("build_s".into(), json!(built.build_s));
    m.insert("weights_gib".into(), json!(built.weights_gib));
    m.insert("lora_layers".into(), json!(built.lora_layers));
    m.insert("warmup_steps".into(), json!(s.rollout_warmup_steps));
    m.insert("warmup_s".into(), json!(warmup_s));
    m.insert("batch_s".into(), json!(batch_s));
    m.insert("batch_s_median".into(), json!(med));
    m.insert("step_s".into(), json!(med / s.steps as f64));
    m.insert("images_per_s".into(), json!(s.k as f64 / med));
    m.insert("finite".into(), json!(finite));
    m.extend(as_map(memory_json(s.device)));
    Ok(Value::Object(m))
}

fn as_map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// One VAE decode of K latents at the rollout size (random FLUX VAE, no grad).
pub fn bench_vae(s: &BenchSettings) -> Result<Value, ModelError> {
    s.validate()?;
    let cfg = s.size.vae();
    let t0 = Instant::now();
    let vae = AutoencoderKL::new(&cfg, s.device, s.kind)?;
    randomize(vae.var_store());
    let build_s = elapsed(s.device, t0);
    let side = s.latent_side();
    let z = Tensor::randn([s.k, cfg.latent_channels, side, side], (s.kind, s.device));
    reset_peak(s.device);
    let decode = || tch::no_grad(|| vae.decode(&vae.denormalize(&z)));
    let t0 = Instant::now();
    drop(decode()?);
    let warmup_s = elapsed(s.device, t0);
    let t0 = Instant::now();
    let img = decode()?;
    let decode_s = elapsed(s.device, t0);
    let mut m = common(s, "vae");
    m.insert("build_s".into(), json!(build_s));
    m.insert("warmup_s".into(), json!(warmup_s));
    m.insert("decode_s".into(), json!(decode_s));
    m.insert("images_per_s".into(), json!(s.k as f64 / decode_s));
    m.insert("output".into(), json!(img.size()));
    m.extend(as_map(memory_json(s.device)));
    Ok(Value::Object(m))
}
