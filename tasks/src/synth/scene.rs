//! Scenes of the synthetic world: procedural RGB images of a textured background and 1–4
//! coloured shapes, rendered with 2×2 supersampling; its generator and palettes.

use serde::{Deserialize, Serialize};

/// The world's generator: [`crate::rng::SplitMix64`] with the world's seed transforms
/// ([`SplitMix64::world`](crate::rng::SplitMix64::world) and [`stream`]).
pub use crate::rng::SplitMix64 as Rng;

/// A child stream for item `i` of stream `tag` (independent of how many draws came before).
pub fn stream(seed: u64, tag: &str, i: u64) -> Rng {
    Rng::from_tag(&format!("{seed}/{tag}/{i}"))
}

/// Object colours, far apart from each other and from the muted backgrounds.
pub const PALETTE: [(&str, [f32; 3]); 6] = [
    ("red", [0.86, 0.12, 0.12]),
    ("green", [0.12, 0.70, 0.20]),
    ("blue", [0.15, 0.25, 0.88]),
    ("yellow", [0.95, 0.85, 0.10]),
    ("purple", [0.58, 0.18, 0.70]),
    ("orange", [0.98, 0.52, 0.08]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }
    /// Whether (x, y) lies in a shape of this kind centred at (cx, cy) with half-size r.
    pub fn contains(self, cx: f32, cy: f32, r: f32, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - cx, y - cy);
        match self {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            Shape::Square => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
            // Upward triangle: apex at (cx, cy − r), base at y = cy + r·0.8.
            Shape::Triangle => dy <= r * 0.8 && dy >= -r && dx.abs() <= (dy + r) * 0.6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub shape: Shape,
    /// Index into [`PALETTE`].
    pub color: usize,
    /// Centre and half-size in pixels.
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
}

impl Object {
    pub fn color_name(&self) -> &'static str {
        PALETTE[self.color].0
    }
    pub fn describe(&self) -> String {
        format!("{} {}", self.color_name(), self.shape.name())
    }
}

/// Textured backgrounds: real texture, so background PSNR/SSIM mean something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Background {
    Gradient {
        from: [f32; 3],
        to: [f32; 3],
        vertical: bool,
    },
    Stripes {
        a: [f32; 3],
        b: [f32; 3],
        period: f32,
        diagonal: bool,
    },
    Noise {
        base: [f32; 3],
        amplitude: f32,
        seed: u64,
    },
}

/// Named background colours for instructions ("change the background to light blue").
pub const BACKGROUND_TONES: [(&str, [f32; 3]); 5] = [
    ("grey", [0.55, 0.55, 0.55]),
    ("sand", [0.78, 0.70, 0.55]),
    ("light blue", [0.60, 0.72, 0.84]),
    ("mint", [0.62, 0.80, 0.68]),
    ("lavender", [0.74, 0.68, 0.84]),
];

impl Background {
    pub(crate) fn random(rng: &mut Rng) -> (Background, &'static str) {
        let (name, base) = *rng.pick(&BACKGROUND_TONES);
        let jitter = |rng: &mut Rng, c: [f32; 3], a: f32| {
            c.map(|v| (v + rng.range_f32(-a, a)).clamp(0.0, 1.0))
        };
        let bg = match rng.below_mod(3) {
            0 => Background::Gradient {
                from: jitter(rng, base, 0.05),
                to: jitter(rng, base.map(|v| v * 0.75), 0.05),
                vertical: rng.below_mod(2) == 0,
            },
            1 => Background::Stripes {
                a: base,
                b: base.map(|v| v * 0.82),
                period: rng.range_f32(3.0, 7.0),
                diagonal: rng.below_mod(2) == 0,
            },
            _ => Background::Noise {
                base,
                amplitude: rng.range_f32(0.04, 0.10),
                seed: rng.next_u64(),
            },
        };
        (bg, name)
    }

    pub fn at(&self, x: f32, y: f32, size: f32) -> [f32; 3] {
        match self {
            Background::Gradient { from, to, vertical } => {
                let t = if *vertical { y / size } else { x / size };
                std::array::from_fn(|c| from[c] + (to[c] - from[c]) * t)
            }
            Background::Stripes {
                a,
                b,
                period,
                diagonal,
            } => {
                let u = if *diagonal {
                    (x + y) / std::f32::consts::SQRT_2
                } else {
                    x
                };
                if (u / period).floor() as i64 % 2 == 0 {
                    *a
                } else {
                    *b
                }
            }
            Background::Noise {
                base,
                amplitude,
                seed,
            } => {
                // Value noise on a 4-pixel lattice, bilinear: smooth, textured, deterministic.
                let lattice = |i: i64, j: i64, c: usize| {
                    let mut r = Rng::world(
                        seed ^ (i as u64).wrapping_mul(0x100_0193)
                            ^ (j as u64).wrapping_mul(0x51_7CC1)
                            ^ c as u64,
                    );
                    r.range_f32(-1.0, 1.0)
                };
                let (gx, gy) = (x / 4.0, y / 4.0);
                let (i, j) = (gx.floor() as i64, gy.floor() as i64);
                let (fx, fy) = (gx - i as f32, gy - j as f32);
                std::array::from_fn(|c| {
                    let v = lattice(i, j, c) * (1.0 - fx) * (1.0 - fy)
                        + lattice(i + 1, j, c) * fx * (1.0 - fy)
                        + lattice(i, j + 1, c) * (1.0 - fx) * fy
                        + lattice(i + 1, j + 1, c) * fx * fy;
                    (base[c] + amplitude * v).clamp(0.0, 1.0)
                })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub size: usize,
    pub background: Background,
    pub background_name: String,
    pub objects: Vec<Object>,
}

/// An image as `H × W × 3` floats in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub size: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn get(&self, x: usize, y: usize) -> [f32; 3] {
        let i = (y * self.size + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
    /// 8-bit RGB pixels: each value clamped to [0, 1], times 255, rounded half to even — what
    /// saving the image as a `(3, H, W)` float tensor gives.
    pub fn to_rgb8(&self) -> image::RgbImage {
        let bytes: Vec<u8> = self
            .data
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0f32).round_ties_even() as u8)
            .collect();
        image::RgbImage::from_raw(self.size as u32, self.size as u32, bytes)
            .expect("size² · 3 values")
    }
}

/// Supersampling factor per axis when rendering (smooth edges).
const SS: usize = 2;

impl Scene {
    /// Renders the scene: background, then objects in order.
    pub fn render(&self) -> Image {
        let n = self.size;
        let mut data = vec![0.0f32; n * n * 3];
        for y in 0..n {
            for x in 0..n {
                let mut acc = [0.0f32; 3];
                for sy in 0..SS {
                    for sx in 0..SS {
                        let (px, py) = (
                            x as f32 + (sx as f32 + 0.5) / SS as f32,
                            y as f32 + (sy as f32 + 0.5) / SS as f32,
                        );
                        let mut c = self.background.at(px, py, n as f32);
                        for o in &self.objects {
                            if o.shape.contains(o.cx, o.cy, o.r, px, py) {
                                c = PALETTE[o.color].1;
                            }
                        }
                        for k in 0..3 {
                            acc[k] += c[k];
                        }
                    }
                }
                for k in 0..3 {
                    data[(y * n + x) * 3 + k] = acc[k] / (SS * SS) as f32;
                }
            }
        }
        Image { size: n, data }
    }

    /// Pixels any sub-sample of which lies in object `o` (what the object can change).
    pub fn footprint(&self, o: &Object) -> Vec<bool> {
        self.coverage(o, false)
    }

    /// Pixels all sub-samples of which lie in object `o` (what only the object decides).
    pub fn interior(&self, o: &Object) -> Vec<bool> {
        self.coverage(o, true)
    }

    fn coverage(&self, o: &Object, all: bool) -> Vec<bool> {
        let n = self.size;
        let mut m = vec![false; n * n];
        for y in 0..n {
            for x in 0..n {
                let inside = |s: usize| {
                    o.shape.contains(
                        o.cx,
                        o.cy,
                        o.r,
                        x as f32 + ((s % SS) as f32 + 0.5) / SS as f32,
                        y as f32 + ((s / SS) as f32 + 0.5) / SS as f32,
                    )
                };
                m[y * n + x] = if all {
                    (0..SS * SS).all(inside)
                } else {
                    (0..SS * SS).any(inside)
                };
            }
        }
        m
    }
}

pub(crate) fn random_object(rng: &mut Rng, size: usize, others: &[Object]) -> Option<Object> {
    let n = size as f32;
    for _ in 0..64 {
        let r = rng.range_f32(n * 0.09, n * 0.17);
        let o = Object {
            shape: *rng.pick(&Shape::ALL),
            color: rng.below_mod(PALETTE.len()),
            cx: rng.range_f32(r + 1.0, n - r - 1.0),
            cy: rng.range_f32(r + 1.0, n - r - 1.0),
            r,
        };
        // Keep objects apart and distinguishable (no two with the same colour and shape).
        let clear = others.iter().all(|p| {
            ((p.cx - o.cx).powi(2) + (p.cy - o.cy).powi(2)).sqrt() > p.r + o.r + 1.5
                && !(p.color == o.color && p.shape == o.shape)
        });
        if clear {
            return Some(o);
        }
    }
    None
}

/// A random scene with 1..=`max_objects` objects.
pub fn random_scene(rng: &mut Rng, size: usize, max_objects: usize) -> Scene {
    let (background, name) = Background::random(rng);
    let count = 1 + rng.below_mod(max_objects.max(1));
    let mut objects = Vec::new();
    for _ in 0..count {
        if let Some(o) = random_object(rng, size, &objects) {
            objects.push(o);
        }
    }
    Scene {
        size,
        background,
        background_name: name.to_string(),
        objects,
    }
}
