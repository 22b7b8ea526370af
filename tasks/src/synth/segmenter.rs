//! [`ColorSegmenter`]: the built-in segmenter for the synthetic world (flat coloured shapes
//! on muted, textured backgrounds, `crate::synth`). No model, deterministic.
//!
//! 1. **Reference colours**: the pixels of a 2-pixel ring just outside the box (what the
//!    object is not); when the box covers the whole image, the box's own 1-pixel border.
//! 2. **Object colour**: among the 64 most frequent exact colours of the box's central area
//!    (its middle half on each axis), the one with the largest `count × distance to the
//!    nearest reference pixel`, if that distance is at least `min_contrast`; otherwise no
//!    object (an error, never a guessed mask). Reference pixels within `core_tol` of the
//!    candidate (another object of the same colour next to the box) are left out of the
//!    distance, unless they lie on 3 or more sides of the box (on all sides there are, for a
//!    box at the image border): then the colour is background; otherwise the distance is
//!    taken on the sides free of the colour.
//! 3. **Core**: pixels in the box within `core_tol` of the object colour, 8-connected,
//!    keeping the components that reach the central area (another object of the same colour
//!    elsewhere in the box is left out).
//! 4. **Edges**: each pixel in the box up to 2 pixels from the core is a mix
//!    `α·object + (1−α)·background`; the background is the local one that best explains the
//!    pixel (the candidate in a 7×7 window, away from the core, with the smallest residual
//!    off the line background → object colour). The pixel is object when `α ≥ min_alpha` and
//!    the residual is small, which recovers anti-aliased edges at half coverage.
//!
//! The score is `min(1, contrast / 128) · (0.5 + 0.5 · core / mask)` (contrast: the object
//! colour's distance to the references in 8-bit RGB): a heuristic confidence.

use crate::segment::{BoxPx, SegmentError, Segmentation, Segmenter};
use image::{GrayImage, RgbImage};
use std::collections::{HashMap, VecDeque};

/// The colour-region segmenter (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ColorSegmenter {
    /// Core tolerance, Euclidean distance in 8-bit RGB (default 24).
    pub core_tol: f32,
    /// Least distance of the object colour from every reference colour (default 40).
    pub min_contrast: f32,
    /// Least object share `α` of an edge pixel (default 0.375: the synthetic world renders
    /// with 2×2 sub-samples, so coverage comes in quarters, and this keeps pixels at least
    /// half covered while dropping quarter-covered ones).
    pub min_alpha: f32,
}

impl Default for ColorSegmenter {
    fn default() -> Self {
        ColorSegmenter {
            core_tol: 24.0,
            min_contrast: 40.0,
            min_alpha: 0.375,
        }
    }
}

type Rgb = [f32; 3];

fn px(img: &RgbImage, x: u32, y: u32) -> Rgb {
    img.get_pixel(x, y).0.map(|v| v as f32)
}

fn dist(a: Rgb, b: Rgb) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Sides of the box a reference pixel lies on (bits: left, right, top, bottom).
fn sides(b: BoxPx, x: u32, y: u32, inner: bool) -> u8 {
    let (l, r, t, bo) = if inner {
        (x == b.x0, x + 1 == b.x1, y == b.y0, y + 1 == b.y1)
    } else {
        (x < b.x0, x >= b.x1, y < b.y0, y >= b.y1)
    };
    l as u8 | (r as u8) << 1 | (t as u8) << 2 | (bo as u8) << 3
}

/// The reference pixels with their sides (module docs, step 1), at most 1024 (strided).
fn reference_colours(img: &RgbImage, b: BoxPx) -> Vec<(Rgb, u8)> {
    let (w, h) = img.dimensions();
    let mut all = Vec::new();
    let (ox0, oy0) = (b.x0.saturating_sub(2), b.y0.saturating_sub(2));
    let (ox1, oy1) = ((b.x1 + 2).min(w), (b.y1 + 2).min(h));
    for y in oy0..oy1 {
        for x in ox0..ox1 {
            if !b.contains(x, y) {
                all.push((px(img, x, y), sides(b, x, y, false)));
            }
        }
    }
    if all.len() < 4 {
        all.clear();
        for y in b.y0..b.y1 {
            for x in b.x0..b.x1 {
                let s = sides(b, x, y, true);
                if s != 0 {
                    all.push((px(img, x, y), s));
                }
            }
        }
    }
    let step = all.len().div_ceil(1024).max(1);
    all.into_iter().step_by(step).collect()
}

impl Segmenter for ColorSegmenter {
    fn describe(&self) -> String {
        format!(
            "color(core_tol={}, min_contrast={}, min_alpha={})",
            self.core_tol, self.min_contrast, self.min_alpha
        )
    }

    fn segment(&self, img: &RgbImage, b: BoxPx) -> Result<Segmentation, SegmentError> {
        let (w, h) = img.dimensions();
        b.validate(w, h)?;
        let refs = reference_colours(img, b);
        // Step 2: the object colour from the central area.
        let (bw, bh) = (b.width(), b.height());
        let central = BoxPx::new(
            b.x0 + bw / 4,
            b.y0 + bh / 4,
            (b.x1 - bw / 4).max(b.x0 + bw / 4 + 1),
            (b.y1 - bh / 4).max(b.y0 + bh / 4 + 1),
        );
        let mut counts: HashMap<[u8; 3], u32> = HashMap::new();
        for y in central.y0..central.y1 {
            for x in central.x0..central.x1 {
                *counts.entry(img.get_pixel(x, y).0).or_default() += 1;
            }
        }
        // The 64 most frequent colours are the candidates (flat objects are frequent).
        let mut candidates: Vec<([u8; 3], u32)> = counts.into_iter().collect();
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        candidates.truncate(64);
        let mut best: Option<([u8; 3], f32, f32)> = None; // colour, weight, contrast
        for (c, n) in candidates {
            let cf = c.map(|v| v as f32);
            // Reference pixels of this colour are left out of the distance (another object
            // of the same colour next to the box), unless they lie on 3 or more sides of the
            // box (all of the sides there are, if fewer): then the colour is background.
            let (mut hit, mut avail) = (0u8, 0u8);
            for &(r, side) in &refs {
                avail |= side;
                if dist(cf, r) <= self.core_tol {
                    hit |= side;
                }
            }
            if hit != 0 && hit.count_ones() >= avail.count_ones().min(3) {
                continue;
            }
            // The contrast is measured on the sides free of the colour (its neighbour's
            // anti-aliased edge is on the others), or on every pixel not of the colour.
            let free = |side: u8| side & hit == 0;
            let pool = if refs.iter().any(|&(_, side)| free(side)) {
                refs.iter()
                    .filter(|&&(_, side)| free(side))
                    .collect::<Vec<_>>()
            } else {
                refs.iter().collect()
            };
            let d = pool
                .iter()
                .map(|&&(r, _)| dist(cf, r))
                .filter(|&d| d > self.core_tol)
                .fold(f32::INFINITY, f32::min);
            if d < self.min_contrast {
                continue;
            }
            let weight = n as f32 * d;
            let better = match best {
                None => true,
                Some((bc, bwt, _)) => weight > bwt || (weight == bwt && c < bc),
            };
            if better {
                best = Some((c, weight, d));
            }
        }
        let Some((seed, _, contrast)) = best else {
            return Err(SegmentError::NoObject(format!(
                "no colour at the box centre differs by {} or more from the colours around the box",
                self.min_contrast
            )));
        };
        let seed = seed.map(|v| v as f32);
        // Step 3: the core, 8-connected components reaching the central area.
        let (bw, bh) = (bw as usize, bh as usize);
        let idx = |x: u32, y: u32| (y - b.y0) as usize * bw + (x - b.x0) as usize;
        let near: Vec<bool> = (0..bw * bh)
            .map(|i| {
                let (x, y) = (b.x0 + (i % bw) as u32, b.y0 + (i / bw) as u32);
                dist(px(img, x, y), seed) <= self.core_tol
            })
            .collect();
        let mut core = vec![false; bw * bh];
        let mut queue = VecDeque::new();
        for y in central.y0..central.y1 {
            for x in central.x0..central.x1 {
                let i = idx(x, y);
                if near[i] && !core[i] {
                    core[i] = true;
                    queue.push_back((x, y));
                }
            }
        }
        while let Some((x, y)) = queue.pop_front() {
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < b.x0 as i64
                        || ny < b.y0 as i64
                        || nx >= b.x1 as i64
                        || ny >= b.y1 as i64
                    {
                        continue;
                    }
                    let i = idx(nx as u32, ny as u32);
                    if near[i] && !core[i] {
                        core[i] = true;
                        queue.push_back((nx as u32, ny as u32));
                    }
                }
            }
        }
        // Step 4: distance (Chebyshev, ≤ 2) from the core over the whole image.
        let (wu, hu) = (w as usize, h as usize);
        let mut band = vec![u8::MAX; wu * hu]; // 0 = core, 1..=2 = near it
        for (i, _) in core.iter().enumerate().filter(|(_, c)| **c) {
            let (x, y) = (b.x0 as usize + i % bw, b.y0 as usize + i / bw);
            for ny in y.saturating_sub(2)..(y + 3).min(hu) {
                for nx in x.saturating_sub(2)..(x + 3).min(wu) {
                    let d = (nx.abs_diff(x)).max(ny.abs_diff(y)) as u8;
                    let cell = &mut band[ny * wu + nx];
                    *cell = (*cell).min(d);
                }
            }
        }
        let ref_mean: Rgb = {
            let n = refs.len().max(1) as f32;
            std::array::from_fn(|k| refs.iter().map(|r| r.0[k]).sum::<f32>() / n)
        };
        let mut mask = GrayImage::new(w, h);
        let (mut n_core, mut n_mask) = (0u64, 0u64);
        for y in b.y0..b.y1 {
            for x in b.x0..b.x1 {
                let d = band[y as usize * wu + x as usize];
                let object = match d {
                    0 => {
                        n_core += 1;
                        true
                    }
                    1 | 2 => self.edge_is_object(img, x, y, seed, &band, ref_mean),
                    _ => false,
                };
                if object {
                    n_mask += 1;
                    mask.put_pixel(x, y, image::Luma([255]));
                }
            }
        }
        let score =
            (contrast as f64 / 128.0).min(1.0) * (0.5 + 0.5 * n_core as f64 / n_mask.max(1) as f64);
        Ok(Segmentation { mask, score })
    }
}

impl ColorSegmenter {
    /// Whether the pixel near the core is at least half object (module docs, step 4).
    fn edge_is_object(
        &self,
        img: &RgbImage,
        x: u32,
        y: u32,
        seed: Rgb,
        band: &[u8],
        fallback: Rgb,
    ) -> bool {
        let (w, h) = img.dimensions();
        let p = px(img, x, y);
        let fit = |bg: Rgb| -> Option<(f32, f32)> {
            let v: Rgb = std::array::from_fn(|k| seed[k] - bg[k]);
            let vv: f32 = v.iter().map(|a| a * a).sum();
            if vv < 1.0 {
                return None;
            }
            let alpha = (0..3).map(|k| (p[k] - bg[k]) * v[k]).sum::<f32>() / vv;
            let a = alpha.clamp(0.0, 1.0);
            let residual = dist(p, std::array::from_fn(|k| bg[k] + a * v[k]));
            Some((alpha, residual / vv.sqrt()))
        };
        let mut best: Option<(f32, f32)> = None;
        for ny in y.saturating_sub(3)..(y + 4).min(h) {
            for nx in x.saturating_sub(3)..(x + 4).min(w) {
                if band[ny as usize * w as usize + nx as usize] <= 2 {
                    continue;
                }
                let c = px(img, nx, ny);
                if dist(c, seed) <= self.core_tol {
                    continue;
                }
                if let Some(f) = fit(c)
                    && best.is_none_or(|b| f.1 < b.1)
                {
                    best = Some(f);
                }
            }
        }
        let best = best.or_else(|| fit(fallback));
        matches!(best, Some((alpha, residual)) if alpha >= self.min_alpha && residual <= 0.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_square_on_a_flat_background() {
        let img = RgbImage::from_fn(20, 20, |x, y| {
            if (5..12).contains(&x) && (6..10).contains(&y) {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([140, 140, 140])
            }
        });
        let s = ColorSegmenter::default();
        let seg = s.segment(&img, BoxPx::new(3, 4, 14, 12)).unwrap();
        let want = GrayImage::from_fn(20, 20, |x, y| {
            image::Luma([if (5..12).contains(&x) && (6..10).contains(&y) {
                255
            } else {
                0
            }])
        });
        assert_eq!(seg.mask, want);
        assert!(seg.score > 0.5, "{}", seg.score);
        // A box of background only: no object, not a made-up mask.
        let err = s.segment(&img, BoxPx::new(14, 14, 20, 20)).unwrap_err();
        assert!(matches!(err, SegmentError::NoObject(_)), "{err}");
        // The whole image as the box: the reference is the image border.
        let seg = s.segment(&img, BoxPx::new(0, 0, 20, 20)).unwrap();
        assert_eq!(seg.mask, want);
    }
}
