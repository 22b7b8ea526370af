//! The image resizing and normalisation Qwen-Image-Edit's pipeline applies to a source image:
//!
//! - [`calculate_dimensions`]: the pipeline's condition size for an aspect ratio (a target
//!   area, sides rounded to multiples of 32);
//! - [`pil_lanczos_resize`]: `PIL.Image.resize(..., LANCZOS)` on 8-bit RGB, bit-exact (Pillow's
//!   two-pass fixed-point convolution, `Resample.c`), which `VaeImageProcessor.resize` does
//!   to a PIL source image before both the VAE and the prompt encoder see it;
//! - [`smart_resize`] and [`Qwen2VlImageProcessor`]: transformers 5's torchvision-backed
//!   `Qwen2VLImageProcessor` (bicubic antialiased resize of the uint8 image with libtorch's own
//!   kernel, fused rescale + normalise, the `(grid, C·T·P·P)` patch layout).
//!
//! Images are uint8 `(3, H, W)` tensors on the CPU.

use super::super::error::ModelError;
use super::config_vl::Qwen2VLImageProcessorConfig;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn input_err(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

/// diffusers' `calculate_dimensions(target_area, ratio)` (`ratio = width / height`):
/// `(width, height)`, each `round(side / 32) · 32` (Python's round: half to even).
pub fn calculate_dimensions(target_area: f64, ratio: f64) -> (i64, i64) {
    let width = (target_area * ratio).sqrt();
    let height = width / ratio;
    let r = |x: f64| (x / 32.0).round_ties_even() as i64 * 32;
    (r(width), r(height))
}

/// transformers' `smart_resize`: `(height, width)` multiples of `factor` with an area in
/// `[min_pixels, max_pixels]`, close to the input's aspect ratio.
pub fn smart_resize(
    height: i64,
    width: i64,
    factor: i64,
    min_pixels: i64,
    max_pixels: i64,
) -> Result<(i64, i64), ModelError> {
    if height <= 0 || width <= 0 {
        return Err(input_err(
            "image",
            format!("empty image ({width}×{height})"),
        ));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > 200.0 {
        return Err(input_err(
            "image",
            format!("absolute aspect ratio must be smaller than 200, got {ratio}"),
        ));
    }
    let mut h_bar = (h / f).round_ties_even() as i64 * factor;
    let mut w_bar = (w / f).round_ties_even() as i64 * factor;
    if h_bar * w_bar > max_pixels {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as i64 * factor);
        w_bar = factor.max((w / beta / f).floor() as i64 * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() as i64 * factor;
        w_bar = (w * beta / f).ceil() as i64 * factor;
    }
    Ok((h_bar, w_bar))
}

/// Pillow's fixed-point precision of 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Pillow's `lanczos_filter` (support 3).
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a resize of `in_size` samples to
/// `out_size`: per output sample, the first input index and the fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let w: Vec<f64> = (0..n)
                .map(|x| lanczos((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if ww != 0.0 { v / ww } else { v };
                    let s = v * (1u32 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (-0.5 + s) as i32
                    } else {
                        (0.5 + s) as i32
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// One Lanczos pass along `dim` of a `(C, H, W)` uint8 tensor to `out` samples, as Pillow's
/// 8-bit loops compute it: int32 sums from `2^21` of byte × fixed-point weight, then `clip8`;
/// one tap at a time over the whole image in libtorch ops.
fn pass(x: &Tensor, dim: i64, out: usize) -> Tensor {
    let n = x.size()[dim as usize] as usize;
    let coeffs = coefficients(n, out);
    let ksize = coeffs.iter().map(|(_, k)| k.len()).max().unwrap_or(0);
    let x = x.to_kind(Kind::Int);
    let mut shape = x.size();
    shape[dim as usize] = out as i64;
    let mut wshape = vec![1i64; shape.len()];
    wshape[dim as usize] = out as i64;
    let mut acc = Tensor::full(
        &shape[..],
        1i64 << (PRECISION_BITS - 1),
        (Kind::Int, Device::Cpu),
    );
    for t in 0..ksize {
        let (idx, w): (Vec<i64>, Vec<i32>) = coeffs
            .iter()
            .map(|(xmin, k)| match k.get(t) {
                Some(kv) => ((xmin + t) as i64, *kv),
                None => (*xmin as i64, 0),
            })
            .unzip();
        let taps = x.index_select(dim, &Tensor::from_slice(&idx));
        acc += taps * Tensor::from_slice(&w).view(&wshape[..]);
    }
    // clip8: ≥ 2^30 → 255, ≤ 0 → 0, else the top bits
    acc.clamp(0, (1i64 << (PRECISION_BITS + 8)) - 1)
        .bitwise_right_shift_tensor_scalar(PRECISION_BITS as i64)
        .to_kind(Kind::Uint8)
}

/// `PIL.Image.resize((width, height), Image.LANCZOS)` of an 8-bit image, bit-exact: two
/// separable passes with Pillow's 22-bit fixed-point weights, rounding and clipping
/// (`Resample.c`); the same size is a copy. Pillow 13 runs the vertical pass first when the
/// height shrinks by more than twice what the width shrinks (`H − h > 2·(W − w)`), else the
/// horizontal pass first (the order changes the 8-bit intermediate, hence the result).
pub fn pil_lanczos_resize(image: &Tensor, width: i64, height: i64) -> Result<Tensor, ModelError> {
    if width <= 0 || height <= 0 {
        return Err(input_err(
            "size",
            format!("resize target {width}×{height} is empty"),
        ));
    }
    let s = image.size();
    if s.len() != 3 || image.kind() != Kind::Uint8 || s[1] == 0 || s[2] == 0 {
        return Err(input_err(
            "image",
            format!(
                "expected a non-empty uint8 (C, H, W) image, got {:?} {:?}",
                s,
                image.kind()
            ),
        ));
    }
    let (h, w) = (s[1], s[2]);
    let x = image.to_device(Device::Cpu);
    if (width, height) == (w, h) {
        return Ok(x.copy());
    }
    let horizontal = |t: &Tensor| {
        if width == w {
            t.shallow_clone()
        } else {
            pass(t, 2, width as usize)
        }
    };
    let vertical = |t: &Tensor| {
        if height == h {
            t.shallow_clone()
        } else {
            pass(t, 1, height as usize)
        }
    };
    let out = if height < h && h - height > 2 * (w - width) {
        horizontal(&vertical(&x))
    } else {
        vertical(&horizontal(&x))
    };
    Ok(out.contiguous())
}

/// What the vision tower takes for a batch of images (the processor's outputs).
#[derive(Debug)]
pub struct VisionInputs {
    /// `(Σ grid_t·grid_h·grid_w, C·temporal_patch·patch²)` float32.
    pub pixel_values: Tensor,
    /// Per image `(grid_t, grid_h, grid_w)` in patches.
    pub grid_thw: Vec<(i64, i64, i64)>,
}

/// transformers 5's `Qwen2VLImageProcessor` (torchvision backend) on RGB uint8 images.
#[derive(Debug, Clone)]
pub struct Qwen2VlImageProcessor {
    pub cfg: Qwen2VLImageProcessorConfig,
}

impl Qwen2VlImageProcessor {
    /// Reads `dir/processor_config.json` (or `preprocessor_config.json`).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Ok(Qwen2VlImageProcessor {
            cfg: Qwen2VLImageProcessorConfig::read(dir)?.0,
        })
    }

    /// `(height, width)` the processor resizes an `height × width` image to.
    pub fn target_size(&self, height: i64, width: i64) -> Result<(i64, i64), ModelError> {
        let (min_p, max_p) = self.cfg.pixel_limits();
        smart_resize(
            height,
            width,
            self.cfg.patch_size * self.cfg.merge_size,
            min_p,
            max_p,
        )
    }

    /// The bicubic antialiased resize of a uint8 image (torchvision's `resize` on CPU: the
    /// native uint8 kernel; the same size is returned unchanged).
    pub fn resize(&self, image: &Tensor, height: i64, width: i64) -> Result<Tensor, ModelError> {
        let s = image.size();
        if (s[1], s[2]) == (height, width) {
            return Ok(image.shallow_clone());
        }
        // (1, C, H, W) channels-last, as torchvision hands a HWC-backed image to the kernel
        let x = image
            .to_device(Device::Cpu)
            .permute([1, 2, 0])
            .contiguous()
            .permute([2, 0, 1])
            .unsqueeze(0);
        let y = x.f_internal_upsample_bicubic2d_aa([height, width], false, None, None)?;
        Ok(y.squeeze_dim(0).contiguous())
    }

    /// Resize, rescale + normalise, patchify one image: `(grid_h·grid_w, C·T·P·P)` and its grid.
    pub fn preprocess_one(&self, image: &Tensor) -> Result<(Tensor, (i64, i64, i64)), ModelError> {
        let s = image.size();
        if s.len() != 3 || s[0] != 3 || image.kind() != Kind::Uint8 {
            return Err(input_err(
                "image",
                format!(
                    "expected a uint8 RGB image (3, H, W), got {:?} {:?}",
                    s,
                    image.kind()
                ),
            ));
        }
        let cfg = &self.cfg;
        let (th, tw) = self.target_size(s[1], s[2])?;
        let resized = self.resize(image, th, tw)?;
        // torchvision's fused rescale + normalise: (x − mean/r) / (std/r), float32
        let f = |v: &[f64]| {
            Tensor::from_slice(&v.iter().map(|x| *x as f32).collect::<Vec<_>>())
                * (1.0 / cfg.rescale_factor)
        };
        let mean = f(&cfg.image_mean).view([3, 1, 1]);
        let std = f(&cfg.image_std).view([3, 1, 1]);
        let x = (resized.to_kind(Kind::Float) - mean) / std; // (3, H, W)
        let (p, m, t) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
        let (gh, gw) = (th / p, tw / p);
        let patches = x
            .view(&[3, gh / m, m, p, gw / m, m, p][..])
            .permute([1, 4, 2, 5, 0, 3, 6]) // (gh/m, gw/m, m, m, C, P, P)
            .unsqueeze(5)
            .expand(&[gh / m, gw / m, m, m, 3, t, p, p][..], false)
            .reshape([gh * gw, 3 * t * p * p]);
        Ok((patches, (1, gh, gw)))
    }

    /// The processor on a batch of images: their patches concatenated, and the grids.
    pub fn preprocess(&self, images: &[&Tensor]) -> Result<VisionInputs, ModelError> {
        let mut all = Vec::new();
        let mut grids = Vec::new();
        for img in images {
            let (pv, g) = self.preprocess_one(img)?;
            all.push(pv);
            grids.push(g);
        }
        Ok(VisionInputs {
            pixel_values: Tensor::cat(&all, 0),
            grid_thw: grids,
        })
    }
}

/// diffusers' `VaeImageProcessor.preprocess` of an RGB uint8 image already at its size:
/// `(1, 3, H, W)` float32 in [−1, 1] (`x / 255 · 2 − 1`).
pub fn vae_preprocess(image: &Tensor) -> Tensor {
    (image.to_kind(Kind::Float) / 255.0 * 2.0 - 1.0).unsqueeze(0)
}
