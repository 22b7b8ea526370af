//! Masked PSNR, SSIM and r_sim of a batch (method-spec §1): the public entry points.
//!
//! ```text
//! MSE_K  = Σ_p K_p Σ_c (a_cp − b_cp)² / (C · Σ_p K_p)
//! PSNR   = 10·log10(1 / MSE_K)  (+∞ when MSE_K = 0),   PSNR̄ = clip(PSNR / τ_db, 0, 1)
//! SSIM_K = (1/C) Σ_c Σ_p S_cp K_p / Σ_p K_p            (S: see `native` / `torch_ops`)
//! r_sim  = w_s·SSIM_K + (1 − w_s)·PSNR̄
//! ```
//!
//! `source` and `edited` are `(B, C, H, W)` floats in [0, 1] (C = 1 or 3), `keep_mask` is
//! `(B, 1, H, W)`. A sample whose keep mask is empty has no value: [`Undefined`] in the
//! per-sample results, `defined = false` (and NaN) in [`MetricTensors`].

use tch::{Device, Kind, Tensor};

use super::error::{MetricsError, Undefined};
use super::native::{self, Dims};
use super::torch_ops;
use super::validate::{self, Checked};
use super::{Backend, MetricsConfig};

/// The metrics of one sample with a non-empty keep mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleMetrics {
    /// `Σ_p K_p`: pixels in the keep region (> 0).
    pub keep_pixels: u64,
    /// `MSE_K`, over the keep region and the channels.
    pub mse: f64,
    /// Masked PSNR in dB; `f64::INFINITY` when the keep regions are identical.
    pub psnr_db: f64,
    /// `PSNR̄ = clip(PSNR / τ_db, 0, 1)`.
    pub psnr_norm: f64,
    /// `SSIM_K`, in [−1, 1].
    pub ssim: f64,
    /// `r_sim = w_s·SSIM_K + (1 − w_s)·PSNR̄`.
    pub r_sim: f64,
}

/// One sample's metrics, or why it has none.
pub type SampleResult = Result<SampleMetrics, Undefined>;

/// The metrics of a batch as `(B,)` tensors on the inputs' device (for training code).
#[derive(Debug)]
pub struct MetricTensors {
    /// Int64: `Σ_p K_p` per sample.
    pub keep_pixels: Tensor,
    /// Bool: false where the keep mask is empty. Every float tensor below is NaN there, so a
    /// mean taken without this mask is NaN rather than silently wrong.
    pub defined: Tensor,
    /// Float64 `MSE_K`.
    pub mse: Tensor,
    /// Float64 masked PSNR in dB (+∞ for identical keep regions).
    pub psnr_db: Tensor,
    /// Float64 `PSNR̄`.
    pub psnr_norm: Tensor,
    /// Float64 `SSIM_K`.
    pub ssim: Tensor,
    /// Float64 `r_sim`.
    pub r_sim: Tensor,
}

/// The full SSIM map of a batch.
#[derive(Debug)]
pub struct SsimMap {
    /// `(B, C, H, W)` float64 S; 0 where there is no support.
    pub s: Tensor,
    /// `(B, 1, H, W)` bool: A = G*K > 0 (some keep pixel within the window).
    pub support: Tensor,
}

/// `PSNR = 10·log10(1 / MSE)` in dB, `+∞` for `mse == 0` (images in [0, 1], MAX_I = 1).
pub fn psnr_db(mse: f64) -> f64 {
    if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

/// `PSNR̄ = clip(PSNR / τ_db, 0, 1)`; `+∞` gives 1.
pub fn psnr_norm(psnr_db: f64, tau_db: f64) -> f64 {
    (psnr_db / tau_db).clamp(0.0, 1.0)
}

/// `r_sim = w_s·SSIM_K + (1 − w_s)·PSNR̄` with `w_s` and `τ_db` from `cfg`.
pub fn r_sim(ssim: f64, psnr_db: f64, cfg: &MetricsConfig) -> f64 {
    cfg.w_s * ssim + (1.0 - cfg.w_s) * psnr_norm(psnr_db, cfg.tau_db)
}

/// Masked PSNR, SSIM and r_sim per sample.
pub fn masked_metrics(
    source: &Tensor,
    edited: &Tensor,
    keep_mask: &Tensor,
    cfg: &MetricsConfig,
) -> Result<Vec<SampleResult>, MetricsError> {
    let t = masked_metrics_tensors(source, edited, keep_mask, cfg)?;
    let n = Vec::<i64>::try_from(t.keep_pixels.to_device(Device::Cpu)).expect("int64 (B,)");
    let get = |t: &Tensor| Vec::<f64>::try_from(t.to_device(Device::Cpu)).expect("float64 (B,)");
    let (mse, psnr, norm, ssim, r) = (
        get(&t.mse),
        get(&t.psnr_db),
        get(&t.psnr_norm),
        get(&t.ssim),
        get(&t.r_sim),
    );
    Ok((0..n.len())
        .map(|i| {
            if n[i] == 0 {
                return Err(Undefined::EmptyKeepMask);
            }
            Ok(SampleMetrics {
                keep_pixels: n[i] as u64,
                mse: mse[i],
                psnr_db: psnr[i],
                psnr_norm: norm[i],
                ssim: ssim[i],
                r_sim: r[i],
            })
        })
        .collect())
}

/// Masked PSNR, SSIM and r_sim per sample as `(B,)` tensors on the inputs' device.
pub fn masked_metrics_tensors(
    source: &Tensor,
    edited: &Tensor,
    keep_mask: &Tensor,
    cfg: &MetricsConfig,
) -> Result<MetricTensors, MetricsError> {
    let checked = validate::check(source, edited, keep_mask, cfg)?;
    let (sse, ssim_sum, _) = sums(source, edited, &checked, cfg, false)?;
    let keep_pixels = checked
        .keep
        .sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Int64);
    let defined = keep_pixels.gt(0);
    let nan = Tensor::from(f64::NAN).to_device(source.device());
    // C·Σ_p K_p, NaN where the mask is empty so that nothing below is ever 0 there.
    let denom =
        (keep_pixels.to_kind(Kind::Double) * checked.channels as f64).where_self(&defined, &nan);
    let mse = sse / &denom;
    let psnr_db = mse.log10() * -10.0; // log10(0) = −∞, so MSE = 0 gives +∞
    let psnr_norm = (&psnr_db / cfg.tau_db).clamp(0.0, 1.0);
    let ssim = ssim_sum / &denom;
    let r_sim = &ssim * cfg.w_s + &psnr_norm * (1.0 - cfg.w_s);
    Ok(MetricTensors {
        keep_pixels,
        defined,
        mse,
        psnr_db,
        psnr_norm,
        ssim,
        r_sim,
    })
}

/// Masked PSNR per sample (dB), without computing SSIM.
pub fn masked_psnr(
    source: &Tensor,
    edited: &Tensor,
    keep_mask: &Tensor,
    cfg: &MetricsConfig,
) -> Result<Vec<Result<f64, Undefined>>, MetricsError> {
    let checked = validate::check(source, edited, keep_mask, cfg)?;
    let k = checked.keep.to_kind(Kind::Double);
    let diff = source.to_kind(Kind::Double) - edited.to_kind(Kind::Double);
    let sse = (&diff * &diff * &k).sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Double);
    let n = k.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Double);
    let sse = Vec::<f64>::try_from(sse.to_device(Device::Cpu)).expect("float64 (B,)");
    let n = Vec::<f64>::try_from(n.to_device(Device::Cpu)).expect("float64 (B,)");
    let c = checked.channels as f64;
    Ok(sse
        .iter()
        .zip(&n)
        .map(|(&s, &n)| {
            if n == 0.0 {
                Err(Undefined::EmptyKeepMask)
            } else {
                Ok(psnr_db(s / (c * n)))
            }
        })
        .collect())
}

/// Masked SSIM per sample.
pub fn masked_ssim(
    source: &Tensor,
    edited: &Tensor,
    keep_mask: &Tensor,
    cfg: &MetricsConfig,
) -> Result<Vec<Result<f64, Undefined>>, MetricsError> {
    Ok(masked_metrics(source, edited, keep_mask, cfg)?
        .into_iter()
        .map(|r| r.map(|m| m.ssim))
        .collect())
}

/// The full SSIM map S (normalised convolution over `keep_mask`) and its support.
pub fn ssim_map(
    source: &Tensor,
    edited: &Tensor,
    keep_mask: &Tensor,
    cfg: &MetricsConfig,
) -> Result<SsimMap, MetricsError> {
    let checked = validate::check(source, edited, keep_mask, cfg)?;
    let (_, _, map) = sums(source, edited, &checked, cfg, true)?;
    let (s, support) = map.expect("asked for the map");
    Ok(SsimMap { s, support })
}

/// Which backend runs for these inputs.
fn resolve(backend: Backend, device: Device) -> Result<Backend, MetricsError> {
    Ok(match (backend, device) {
        (Backend::Auto, Device::Cpu) => Backend::Native,
        (Backend::Auto, _) => Backend::TorchF64,
        (Backend::Native, Device::Cpu) => Backend::Native,
        (Backend::Native, d) => {
            return Err(MetricsError::Backend {
                backend: "native",
                device: format!("{d:?}"),
            });
        }
        (b, _) => b,
    })
}

type Sums = (Tensor, Tensor, Option<(Tensor, Tensor)>);

/// `(Σ K Σ_c d², Σ_c Σ S K, map)` as float64 tensors on the inputs' device.
fn sums(
    source: &Tensor,
    edited: &Tensor,
    checked: &Checked,
    cfg: &MetricsConfig,
    want_map: bool,
) -> Result<Sums, MetricsError> {
    match resolve(cfg.backend, source.device())? {
        Backend::TorchF32 => {
            let out = torch_ops::run(source, edited, &checked.keep, Kind::Float, want_map);
            Ok((out.sse, out.ssim, out.map))
        }
        Backend::Native => Ok(native_sums(source, edited, checked, want_map)),
        _ => {
            let out = torch_ops::run(source, edited, &checked.keep, Kind::Double, want_map);
            Ok((out.sse, out.ssim, out.map))
        }
    }
}

/// A contiguous CPU tensor's elements, borrowed.
fn cpu_slice<T: tch::kind::Element>(t: &Tensor) -> &[T] {
    assert!(
        t.device() == Device::Cpu && t.is_contiguous() && t.kind() == T::KIND,
        "contiguous CPU {:?}",
        T::KIND
    );
    // SAFETY: `t` is a contiguous CPU tensor of `T` with `numel` elements starting at
    // `data_ptr`, and it outlives the returned borrow. The kernel only reads; a caller that
    // writes to the same storage from another thread meanwhile has a data race of its own.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}

fn native_sums(source: &Tensor, edited: &Tensor, checked: &Checked, want_map: bool) -> Sums {
    let d = Dims {
        batch: checked.batch,
        channels: checked.channels,
        height: checked.height,
        width: checked.width,
    };
    let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
    let keep = checked.keep.to_kind(Kind::Uint8).contiguous();
    let k = cpu_slice::<u8>(&keep);
    // Float stays float (read as f64 in the kernel); everything else becomes double.
    let kind = if source.kind() == Kind::Float && edited.kind() == Kind::Float {
        Kind::Float
    } else {
        Kind::Double
    };
    let a = source.to_kind(kind).contiguous();
    let b = edited.to_kind(kind).contiguous();
    let (sums, map) = match kind {
        Kind::Float => native::run(
            cpu_slice::<f32>(&a),
            cpu_slice::<f32>(&b),
            k,
            d,
            want_map,
            threads,
        ),
        _ => native::run(
            cpu_slice::<f64>(&a),
            cpu_slice::<f64>(&b),
            k,
            d,
            want_map,
            threads,
        ),
    };
    let (bn, c, h, w) = (
        d.batch as i64,
        d.channels as i64,
        d.height as i64,
        d.width as i64,
    );
    let map = map.map(|m| {
        let s = Tensor::from_slice(&m.s)
            .view([bn, h, c, w])
            .permute([0, 2, 1, 3])
            .contiguous();
        let support = Tensor::from_slice(&m.support)
            .view([bn, 1, h, w])
            .to_kind(Kind::Bool);
        (s, support)
    });
    (
        Tensor::from_slice(&sums.sse),
        Tensor::from_slice(&sums.ssim),
        map,
    )
}
