//! Mask operations of the curation stages: box masks, changed-pixel masks, square dilation,
//! areas, PNG encodings (8-bit grey, white = edit).

use crate::imageio::{self, Png};
use crate::judge::JudgeImage;
use crate::segment::BoxPx;
use image::{GrayImage, RgbImage};

pub fn mask_rgb(m: &GrayImage) -> JudgeImage {
    JudgeImage::from_rgb(RgbImage::from_fn(m.width(), m.height(), |x, y| {
        let v = m.get_pixel(x, y).0[0];
        image::Rgb([v, v, v])
    }))
}

/// Square (Chebyshev) dilation by `px`, as the synthetic world dilates its masks.
pub fn dilate(m: &GrayImage, px: u32) -> GrayImage {
    if px == 0 {
        return m.clone();
    }
    let (w, h) = m.dimensions();
    // rows, then columns (separable for a square element)
    let mut rows = GrayImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let lo = x.saturating_sub(px);
            let hi = (x + px).min(w - 1);
            if (lo..=hi).any(|xx| m.get_pixel(xx, y).0[0] >= 128) {
                rows.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    let mut out = GrayImage::new(w, h);
    for y in 0..h {
        let lo = y.saturating_sub(px);
        let hi = (y + px).min(h - 1);
        for x in 0..w {
            if (lo..=hi).any(|yy| rows.get_pixel(x, yy).0[0] >= 128) {
                out.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    out
}

/// The box as a mask (pixels whose centre lies inside).
pub fn box_mask(w: u32, h: u32, b: BoxPx) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        image::Luma([if b.contains(x, y) { 255 } else { 0 }])
    })
}

/// Pixels that differ by more than `t` (max over channels, in [0, 1]).
pub fn difference_mask(a: &RgbImage, b: &RgbImage, t: f64) -> GrayImage {
    let lim = (t * 255.0).round() as i32;
    GrayImage::from_fn(a.width(), a.height(), |x, y| {
        let (p, q) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
        let d = (0..3)
            .map(|c| (p[c] as i32 - q[c] as i32).abs())
            .max()
            .unwrap_or(0);
        image::Luma([if d > lim { 255 } else { 0 }])
    })
}

pub fn encode_png(m: &GrayImage) -> String {
    imageio::to_base64(&imageio::grey_png(m, Png::Default))
}

pub fn area(m: &GrayImage) -> usize {
    m.as_raw().iter().filter(|v| **v >= 128).count()
}
