//! The visual-quality half of the rule judge (noise, colour purity, clean backdrop) and
//! the pixel helpers both halves use.

use super::*;

pub(super) fn luma(p: [u8; 3]) -> f64 {
    0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64
}

pub(super) fn laplacian(img: &RgbImage, x: u32, y: u32) -> f64 {
    // 4·I(p) − I(n) − I(s) − I(e) − I(w), on luma
    let l = |x, y| luma(img.get_pixel(x, y).0);
    (4.0 * l(x, y) - l(x - 1, y) - l(x + 1, y) - l(x, y - 1) - l(x, y + 1)).abs()
}

pub(super) fn channel_means(img: &RgbImage) -> [f64; 3] {
    let n = (img.width() * img.height()) as f64;
    let mut m = [0.0; 3];
    for p in img.pixels() {
        for (m, v) in m.iter_mut().zip(p.0) {
            *m += v as f64 / n;
        }
    }
    m
}

/// `img` averaged over aligned b×b blocks.
pub(super) fn mosaic(img: &RgbImage, b: u32) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = img.dimensions();
    for by in (0..h).step_by(b as usize) {
        for bx in (0..w).step_by(b as usize) {
            let (x1, y1) = ((bx + b).min(w), (by + b).min(h));
            let mut acc = [0.0; 3];
            for y in by..y1 {
                for x in bx..x1 {
                    for (a, v) in acc.iter_mut().zip(img.get_pixel(x, y).0) {
                        *a += v as f64;
                    }
                }
            }
            let n = ((x1 - bx) * (y1 - by)) as f64;
            let avg = acc.map(|v| (v / n).round() as u8);
            for y in by..y1 {
                for x in bx..x1 {
                    out.put_pixel(x, y, image::Rgb(avg));
                }
            }
        }
    }
    out
}

pub(super) fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let n = (a.width() * a.height() * 3) as f64;
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / n
}

pub(super) fn noise_score(level: f64) -> f64 {
    1.0 / (1.0 + (level / 10.0).powi(2))
}

/// Mean |Laplacian| over backdrop pixels at least 3 pixels from any object pixel.
pub(super) fn backdrop_laplacian(
    img: &RgbImage,
    seg: &Segmentation,
    (x0, y0, x1, y1): (u32, u32, u32, u32),
) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if seg.uniform(x, y) && !seg.near_object(x, y, 2) {
                sum += laplacian(img, x, y);
                n += 1;
            }
        }
    }
    (n > 0).then(|| sum / n as f64)
}

/// Global edits: the edited image's mean |Laplacian| over the source's (+10 %, +2).
pub(super) fn global_noise(source: &RgbImage, edited: &RgbImage) -> f64 {
    let (w, h) = source.dimensions();
    if w < 3 || h < 3 {
        return 1.0;
    }
    let mean = |img: &RgbImage| {
        let mut sum = 0.0;
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                sum += laplacian(img, x, y);
            }
        }
        sum / ((w - 2) * (h - 2)) as f64
    };
    noise_score((mean(edited) - 1.1 * mean(source) - 2.0).max(0.0))
}

/// `(noise, purity, clean)` over the inclusive box `region` (module docs, step 3).
pub(super) fn quality_terms(
    source: &RgbImage,
    s: &Segmentation,
    edited: &RgbImage,
    t: &Segmentation,
    region: (u32, u32, u32, u32),
    compare_backdrop: bool,
) -> (f64, f64, f64) {
    let whole = (0, 0, s.w - 1, s.h - 1);
    let reference = backdrop_laplacian(source, s, whole).unwrap_or(0.0);
    let (mut excess, mut excess_n) = (0.0, 0usize);
    let (mut dev, mut dev_n) = (0.0, 0usize);
    let (mut bad, mut all) = (0usize, 0usize);
    let (x0, y0, x1, y1) = region;
    let (mut bg_sum, mut bg_n) = (0.0, 0usize);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let i = (y * t.w + x) as usize;
            all += 1;
            let p = edited.get_pixel(x, y).0;
            let class = t.class[i];
            // a speckle touching a blob is an object's anti-aliased edge, not an artefact
            let stray_speckle = t.speckle[i] && !t.near_blob(x, y, 1);
            let odd_backdrop = class.is_none()
                && !t.near_object(x, y, 1)
                && vision::nearest_tone(vision::rgb(p)).1 > 60.0;
            if stray_speckle || odd_backdrop {
                bad += 1;
            }
            if !t.uniform(x, y) {
                continue;
            }
            match class {
                // anti-aliased object edges next to the backdrop are not texture
                None if t.near_object(x, y, 2) => {}
                None => {
                    bg_sum += laplacian(edited, x, y);
                    bg_n += 1;
                }
                Some(c) => {
                    excess += (laplacian(edited, x, y) - 2.0).max(0.0);
                    excess_n += 1;
                    dev += vision::dist(vision::rgb(p), vision::rgb(c.rgb()));
                    dev_n += 1;
                }
            }
        }
    }
    if compare_backdrop && bg_n > 0 {
        excess += bg_n as f64 * (bg_sum / bg_n as f64 - 1.25 * reference - 2.0).max(0.0);
        excess_n += bg_n;
    }
    let mean = |s: f64, n: usize| if n == 0 { 0.0 } else { s / n as f64 };
    let noise = noise_score(mean(excess, excess_n));
    let purity = 1.0 / (1.0 + (mean(dev, dev_n) / 30.0).powi(2));
    let clean = 1.0 / (1.0 + (mean(bad as f64, all) / 0.05).powi(2));
    (noise, purity, clean)
}
