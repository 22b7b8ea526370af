//! The settings of the masked pixel metrics (method-spec §1), torch-free so the front end
//! checks them; the metrics on tensors are `cocoflow_torch::metrics`.
//!
//! [`masked_rgb`]: masked PSNR and SSIM of one pair of 8-bit RGB images, torch-free (the
//! `correlate` kind scores dataset pairs with it). It runs the very kernel
//! `cocoflow_torch::metrics` runs on CPU tensors (`native.rs` and `window.rs` of that crate,
//! compiled here from the same source files), on the images as float64 in [0, 1] — the same
//! numbers `masked_metrics` gives for the same 8-bit images (checked to 1e-12 on `synth-data`
//! pairs in `torch/tests/it/report_eval.rs`).

mod config;
// The torch crate's fused CPU kernel and its window, the same source files (no copy).
#[path = "../../../torch/src/metrics/native.rs"]
#[allow(dead_code)]
mod native;
#[path = "../../../torch/src/metrics/window.rs"]
#[allow(dead_code)]
mod window;

pub use config::{Backend, MaskRule, MetricsConfig};

/// Masked PSNR and SSIM of one pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairMetrics {
    /// Pixels in the keep region (> 0).
    pub keep_pixels: u64,
    /// `MSE_K` over the keep region and the 3 channels, images in [0, 1].
    pub mse: f64,
    /// `10·log10(1 / MSE_K)`; `+∞` when the keep regions are identical.
    pub psnr_db: f64,
    /// `SSIM_K` (11×11 Gaussian window, σ = 1.5, normalised convolution over the keep mask).
    pub ssim: f64,
}

/// Why [`masked_rgb`] has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("the source is {0}×{1}, the edited image {2}×{3}")]
    ImageSize(u32, u32, u32, u32),
    #[error("the images are {0}×{1}, the keep mask has {2} pixels")]
    MaskSize(u32, u32, usize),
    #[error("the keep region is empty (the mask marks every pixel as edited)")]
    EmptyKeep,
}

/// Masked PSNR (dB) and SSIM of `source` and `edited` over `keep` (row-major, `true` = the
/// pixel must stay), the images read as `value / 255` (method-spec §1).
pub fn masked_rgb(
    source: &image::RgbImage,
    edited: &image::RgbImage,
    keep: &[bool],
) -> Result<PairMetrics, PairError> {
    let (w, h) = source.dimensions();
    if edited.dimensions() != (w, h) {
        let (ew, eh) = edited.dimensions();
        return Err(PairError::ImageSize(w, h, ew, eh));
    }
    let n = (w as usize) * (h as usize);
    if keep.len() != n {
        return Err(PairError::MaskSize(w, h, keep.len()));
    }
    let keep_pixels = keep.iter().filter(|&&k| k).count();
    if keep_pixels == 0 {
        return Err(PairError::EmptyKeep);
    }
    let chw = |img: &image::RgbImage| {
        let raw = img.as_raw();
        let mut out = vec![0f64; 3 * n];
        for p in 0..n {
            for c in 0..3 {
                out[c * n + p] = raw[3 * p + c] as f64 / 255.0;
            }
        }
        out
    };
    let (a, b) = (chw(source), chw(edited));
    let k: Vec<u8> = keep.iter().map(|&k| k as u8).collect();
    let dims = native::Dims {
        batch: 1,
        channels: 3,
        height: h as usize,
        width: w as usize,
    };
    let (sums, _) = native::run(&a, &b, &k, dims, false, 1);
    let denom = 3.0 * keep_pixels as f64;
    let mse = sums.sse[0] / denom;
    let psnr_db = if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    };
    Ok(PairMetrics {
        keep_pixels: keep_pixels as u64,
        mse,
        psnr_db,
        ssim: sums.ssim[0] / denom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    #[test]
    fn identical_keep_regions_give_infinite_psnr_and_ssim_one() {
        let a = RgbImage::from_fn(20, 16, |x, y| Rgb([(x * 12) as u8, (y * 15) as u8, 77]));
        let mut b = a.clone();
        // change only the edit region (x < 5)
        for y in 0..16 {
            for x in 0..5 {
                b.put_pixel(x, y, Rgb([255, 0, 0]));
            }
        }
        let keep: Vec<bool> = (0..16 * 20).map(|i| i % 20 >= 5).collect();
        let m = masked_rgb(&a, &b, &keep).unwrap();
        assert_eq!(m.keep_pixels, 15 * 16);
        assert_eq!(m.psnr_db, f64::INFINITY);
        assert_eq!(m.ssim, 1.0);
        // and over the whole image they differ
        let all = vec![true; 16 * 20];
        let m = masked_rgb(&a, &b, &all).unwrap();
        assert!(m.psnr_db.is_finite() && m.ssim < 1.0);
    }

    #[test]
    fn a_uniform_offset_gives_the_closed_form_psnr() {
        // every channel +10 of 255: MSE = (10/255)², PSNR = 20·log10(25.5)
        let a = RgbImage::from_fn(12, 12, |x, y| Rgb([(x * 9) as u8, (y * 7) as u8, 100]));
        let b = RgbImage::from_fn(12, 12, |x, y| {
            let p = a.get_pixel(x, y).0;
            Rgb([p[0] + 10, p[1] + 10, p[2] + 10])
        });
        let m = masked_rgb(&a, &b, &[true; 144]).unwrap();
        assert!((m.psnr_db - 20.0 * 25.5f64.log10()).abs() < 1e-9, "{m:?}");
        // a shift changes the luminance term only a little: SSIM just below 1
        assert!(m.ssim > 0.9 && m.ssim < 1.0, "{m:?}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = RgbImage::new(4, 4);
        assert_eq!(
            masked_rgb(&a, &RgbImage::new(4, 5), &[true; 16]),
            Err(PairError::ImageSize(4, 4, 4, 5))
        );
        assert_eq!(
            masked_rgb(&a, &a, &[true; 15]),
            Err(PairError::MaskSize(4, 4, 15))
        );
        assert_eq!(masked_rgb(&a, &a, &[false; 16]), Err(PairError::EmptyKeep));
    }
}
