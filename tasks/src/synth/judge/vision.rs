//! What the rule judge sees in an image of the synthetic world: per-pixel classes (nearest
//! palette colour, or backdrop), connected objects with sub-pixel coverage, a shape fitted
//! against the world's own shape geometry, and the backdrop's named tone.
//!
//! The world renders with 2×2 supersampling, so object edges are mixed with the backdrop.
//! For each object the judge estimates its coverage `α` per pixel by projecting the pixel on
//! the line from the local backdrop colour to the object colour; area and centroid are
//! `α`-weighted. The shape is the one whose rendering (4×4 samples per pixel, size from the
//! area, centre from the centroid) matches those coverages best (least `Σ|α − α̂|`).

use super::instruction::{Colour, Tone};
use crate::synth::Shape;
use image::RgbImage;
use std::sync::OnceLock;

/// An object pixel's nearest palette colour must be nearer than this (RGB, 0–255).
const MAX_PALETTE_DISTANCE: f64 = 110.0;

pub(crate) fn rgb(p: [u8; 3]) -> [f64; 3] {
    p.map(f64::from)
}

pub(crate) fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Nearest palette colour and its distance.
pub(crate) fn nearest_colour(p: [f64; 3]) -> (Colour, f64) {
    Colour::all()
        .map(|c| (c, dist(p, rgb(c.rgb()))))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("the palette is not empty")
}

/// Nearest background tone, each tone scaled by the best factor in [0.6, 1.1] first (the
/// world's gradients and stripes darken their tone by up to a quarter).
pub(crate) fn nearest_tone(p: [f64; 3]) -> (Tone, f64) {
    Tone::all()
        .map(|t| {
            let b = t.rgb();
            let dot: f64 = p.iter().zip(b).map(|(x, y)| x * y).sum();
            let s = (dot / b.iter().map(|y| y * y).sum::<f64>()).clamp(0.6, 1.1);
            (t, dist(p, b.map(|y| s * y)))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("the tones are not empty")
}

/// The palette colour of an object pixel; `None` for backdrop pixels.
pub(crate) fn classify(p: [u8; 3]) -> Option<Colour> {
    let p = rgb(p);
    let (c, d) = nearest_colour(p);
    (d < MAX_PALETTE_DISTANCE && d < nearest_tone(p).1).then_some(c)
}

/// A connected region of one palette colour.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub colour: Colour,
    pub shape: Shape,
    /// Sub-pixel area, `Σα`.
    pub area: f64,
    /// The fitted shape's half-size (the world's `r`).
    pub size: f64,
    /// The fitted shape's centre (the world's `(cx, cy)`).
    pub x: f64,
    pub y: f64,
    /// Inclusive pixel bounds `(x0, y0, x1, y1)` of the labelled pixels.
    pub bbox: (u32, u32, u32, u32),
    /// Labelled pixels, `y·w + x`.
    pub pixels: Vec<u32>,
}

impl Blob {
    pub fn distance(&self, x: f64, y: f64) -> f64 {
        ((self.x - x).powi(2) + (self.y - y).powi(2)).sqrt()
    }
}

/// An image, segmented.
pub(crate) struct Segmentation {
    pub w: u32,
    pub h: u32,
    /// Per pixel: the palette colour, or `None` for the backdrop.
    pub class: Vec<Option<Colour>>,
    /// Per pixel: the index of its blob, if any.
    pub label: Vec<Option<u32>>,
    /// Per pixel: part of a palette-coloured region smaller than `min_area` (a speckle).
    pub speckle: Vec<bool>,
    pub blobs: Vec<Blob>,
}

impl Segmentation {
    /// Whether a pixel within Chebyshev distance `d` of `(x, y)` is an object pixel.
    pub fn near_object(&self, x: u32, y: u32, d: u32) -> bool {
        let (x0, y0) = (x.saturating_sub(d), y.saturating_sub(d));
        let (x1, y1) = ((x + d).min(self.w - 1), (y + d).min(self.h - 1));
        (y0..=y1).any(|yy| (x0..=x1).any(|xx| self.class[(yy * self.w + xx) as usize].is_some()))
    }

    /// Whether a pixel of a blob lies within Chebyshev distance `d` of `(x, y)`.
    pub fn near_blob(&self, x: u32, y: u32, d: u32) -> bool {
        let (x0, y0) = (x.saturating_sub(d), y.saturating_sub(d));
        let (x1, y1) = ((x + d).min(self.w - 1), (y + d).min(self.h - 1));
        (y0..=y1).any(|yy| (x0..=x1).any(|xx| self.label[(yy * self.w + xx) as usize].is_some()))
    }

    /// Whether the 3×3 neighbourhood of an inner pixel has one class.
    pub fn uniform(&self, x: u32, y: u32) -> bool {
        if x == 0 || y == 0 || x + 1 >= self.w || y + 1 >= self.h {
            return false;
        }
        let c = self.class[(y * self.w + x) as usize];
        (y - 1..=y + 1)
            .all(|yy| (x - 1..=x + 1).all(|xx| self.class[(yy * self.w + xx) as usize] == c))
    }
}

/// Area, centroid offset and the sampling of a unit shape (`r = 1` at the origin).
struct Unit {
    shape: Shape,
    area: f64,
    ox: f64,
    oy: f64,
}

fn units() -> &'static [Unit] {
    static UNITS: OnceLock<Vec<Unit>> = OnceLock::new();
    UNITS.get_or_init(|| {
        Shape::ALL
            .iter()
            .map(|&shape| {
                let n = 400;
                let (mut a, mut sx, mut sy) = (0.0, 0.0, 0.0);
                for j in 0..n {
                    for i in 0..n {
                        let (x, y) = (
                            -1.5 + 3.0 * (i as f64 + 0.5) / n as f64,
                            -1.5 + 3.0 * (j as f64 + 0.5) / n as f64,
                        );
                        if shape.contains(0.0, 0.0, 1.0, x as f32, y as f32) {
                            a += 1.0;
                            sx += x;
                            sy += y;
                        }
                    }
                }
                let cell = (3.0 / n as f64).powi(2);
                Unit {
                    shape,
                    area: a * cell,
                    ox: sx / a,
                    oy: sy / a,
                }
            })
            .collect()
    })
}

/// Fraction of a pixel covered by `shape` at `(cx, cy)` with half-size `r` (4×4 samples).
fn coverage(shape: Shape, cx: f64, cy: f64, r: f64, x: u32, y: u32) -> f64 {
    let mut n = 0;
    for sy in 0..4 {
        for sx in 0..4 {
            let (px, py) = (
                x as f64 + (sx as f64 + 0.5) / 4.0,
                y as f64 + (sy as f64 + 0.5) / 4.0,
            );
            n += usize::from(shape.contains(cx as f32, cy as f32, r as f32, px as f32, py as f32));
        }
    }
    n as f64 / 16.0
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Classifies every pixel, collects 4-connected same-colour regions (smaller than
/// `min_area` pixels: speckles) and measures each object (module docs).
pub(crate) fn segment(img: &RgbImage, min_area: usize) -> Segmentation {
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let class: Vec<Option<Colour>> = img.pixels().map(|p| classify(p.0)).collect();
    let mut seg = Segmentation {
        w,
        h,
        class,
        label: vec![None; n],
        speckle: vec![false; n],
        blobs: Vec::new(),
    };
    let mut seen = vec![false; n];
    let mut stack = Vec::new();
    let mut regions = Vec::new();
    for start in 0..n {
        let Some(colour) = seg.class[start] else {
            continue;
        };
        if seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start as u32);
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = (i % w, i / w);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for j in neighbours.into_iter().flatten() {
                if !seen[j as usize] && seg.class[j as usize] == Some(colour) {
                    seen[j as usize] = true;
                    stack.push(j);
                }
            }
        }
        if pixels.len() < min_area {
            for &i in &pixels {
                seg.speckle[i as usize] = true;
            }
        } else {
            let id = regions.len() as u32;
            for &i in &pixels {
                seg.label[i as usize] = Some(id);
            }
            regions.push((colour, pixels));
        }
    }
    for (id, (colour, pixels)) in regions.into_iter().enumerate() {
        let blob = measure(img, &seg, id as u32, colour, pixels);
        seg.blobs.push(blob);
    }
    seg
}

fn measure(img: &RgbImage, seg: &Segmentation, id: u32, colour: Colour, pixels: Vec<u32>) -> Blob {
    let (w, h) = (seg.w, seg.h);
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for &i in &pixels {
        let (x, y) = (i % w, i / w);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let grow = |lo: u32, hi: u32, d: u32, max: u32| (lo.saturating_sub(d), (hi + d).min(max - 1));
    // local backdrop: backdrop pixels around the object, not touching any object pixel
    let (bx0, bx1) = grow(x0, x1, 4, w);
    let (by0, by1) = grow(y0, y1, 4, h);
    let mut chans: [Vec<f64>; 3] = Default::default();
    for y in by0..=by1 {
        for x in bx0..=bx1 {
            if seg.class[(y * w + x) as usize].is_none() && !seg.near_object(x, y, 1) {
                let p = img.get_pixel(x, y).0;
                for c in 0..3 {
                    chans[c].push(p[c] as f64);
                }
            }
        }
    }
    let bg = match chans.map(median) {
        [Some(r), Some(g), Some(b)] => [r, g, b],
        _ => [128.0; 3],
    };
    let col = rgb(colour.rgb());
    let d: [f64; 3] = std::array::from_fn(|c| col[c] - bg[c]);
    let dd: f64 = d.iter().map(|v| v * v).sum::<f64>().max(1.0);
    // coverage α over the box grown by 2: own pixels and backdrop pixels next to them
    let (wx0, wx1) = grow(x0, x1, 2, w);
    let (wy0, wy1) = grow(y0, y1, 2, h);
    let mut alphas = Vec::new();
    let (mut area, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for y in wy0..=wy1 {
        for x in wx0..=wx1 {
            let i = (y * w + x) as usize;
            let own = seg.label[i] == Some(id);
            let edge = seg.class[i].is_none() && {
                let (nx0, ny0) = (x.saturating_sub(1), y.saturating_sub(1));
                let (nx1, ny1) = ((x + 1).min(w - 1), (y + 1).min(h - 1));
                (ny0..=ny1)
                    .any(|yy| (nx0..=nx1).any(|xx| seg.label[(yy * w + xx) as usize] == Some(id)))
            };
            let a = if own || edge {
                let p = rgb(img.get_pixel(x, y).0);
                let proj: f64 = (0..3).map(|c| (p[c] - bg[c]) * d[c]).sum::<f64>() / dd;
                proj.clamp(0.0, 1.0)
            } else {
                0.0
            };
            alphas.push((x, y, a));
            area += a;
            sx += a * (x as f64 + 0.5);
            sy += a * (y as f64 + 0.5);
        }
    }
    let area = area.max(1e-9);
    let (cx, cy) = (sx / area, sy / area);
    let (mut best, mut best_err) = ((Shape::ALL[0], 0.0, cx, cy), f64::INFINITY);
    for u in units() {
        let r = (area / u.area).sqrt();
        let (ccx, ccy) = (cx - u.ox * r, cy - u.oy * r);
        let err: f64 = alphas
            .iter()
            .map(|&(x, y, a)| (a - coverage(u.shape, ccx, ccy, r, x, y)).abs())
            .sum();
        if err < best_err {
            best_err = err;
            best = (u.shape, r, ccx, ccy);
        }
    }
    let (shape, size, x, y) = best;
    Blob {
        colour,
        shape,
        area,
        size,
        x,
        y,
        bbox: (x0, y0, x1, y1),
        pixels,
    }
}

/// The backdrop's tone: the per-channel median of backdrop pixels at least 2 pixels from
/// any object pixel, and the nearest tone to it.
pub(crate) fn backdrop_of(img: &RgbImage, seg: &Segmentation) -> Option<(Tone, [f64; 3])> {
    let mut chans: [Vec<f64>; 3] = Default::default();
    for y in 0..seg.h {
        for x in 0..seg.w {
            if !seg.near_object(x, y, 2) {
                let p = img.get_pixel(x, y).0;
                for c in 0..3 {
                    chans[c].push(p[c] as f64);
                }
            }
        }
    }
    match chans.map(median) {
        [Some(r), Some(g), Some(b)] => Some((nearest_tone([r, g, b]).0, [r, g, b])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::samples::to_rgb;
    use crate::synth::{BACKGROUND_TONES, Background, Object, PALETTE, Scene};

    #[test]
    fn palette_and_tones_classify_as_themselves() {
        for c in Colour::all() {
            assert_eq!(classify(c.rgb()), Some(c));
        }
        for t in Tone::all() {
            let p = t.rgb().map(|v| v.round() as u8);
            assert_eq!(classify(p), None);
            assert_eq!(nearest_tone(rgb(p)).0, t);
            let darker = t.rgb().map(|v| (0.78 * v).round() as u8);
            assert_eq!(nearest_tone(rgb(darker)).0, t, "{} darkened", t.name());
        }
    }

    /// Shapes are recognised, with their size and centre, down to the world's smallest
    /// objects (r ≈ 2.9 px in a 32-pixel image), on every kind of backdrop.
    #[test]
    fn shapes_sizes_and_centres_are_recovered() {
        let backgrounds = [
            Background::Noise {
                base: BACKGROUND_TONES[0].1,
                amplitude: 0.1,
                seed: 4,
            },
            Background::Stripes {
                a: BACKGROUND_TONES[2].1,
                b: BACKGROUND_TONES[2].1.map(|v| v * 0.82),
                period: 3.0,
                diagonal: true,
            },
            Background::Gradient {
                from: BACKGROUND_TONES[1].1,
                to: BACKGROUND_TONES[1].1.map(|v| v * 0.75),
                vertical: false,
            },
        ];
        for (k, background) in backgrounds.into_iter().enumerate() {
            for shape in Shape::ALL {
                for (j, r) in [2.9f32, 4.0, 5.4, 9.0].into_iter().enumerate() {
                    let color = (k + j) % PALETTE.len();
                    let (cx, cy) = (15.3 + j as f32 * 0.3, 16.6);
                    let scene = Scene {
                        size: 32,
                        background: background.clone(),
                        background_name: String::new(),
                        objects: vec![Object {
                            shape,
                            color,
                            cx,
                            cy,
                            r,
                        }],
                    };
                    let seg = segment(&to_rgb(&scene.render()), 4);
                    assert_eq!(seg.blobs.len(), 1, "{shape:?} r {r} bg {k}");
                    let b = &seg.blobs[0];
                    assert_eq!((b.shape, b.colour), (shape, Colour(color)), "r {r} bg {k}");
                    assert!(
                        (b.size - r as f64).abs() < 0.12 * r as f64 + 0.2,
                        "{shape:?} r {r}: size {}",
                        b.size
                    );
                    assert!(
                        b.distance(cx as f64, cy as f64) < 0.6,
                        "{shape:?} r {r}: ({}, {})",
                        b.x,
                        b.y
                    );
                }
            }
        }
    }
}
