//! The synthetic edit world: procedural RGB scenes (textured backgrounds, 1–4 coloured
//! shapes) and edits of the six local CoCoEdit-40K types (replace, remove, add, attribute,
//! background, motion) plus two global types (tone, style) kept out of training. Each sample
//! has a source, a target, the exact edit region dilated by `dilate_px`, an instruction from
//! several phrasings (and a longer refined one, paper appendix A.3) and its edit type.
//! Everything is a pure function of the seed.

use serde::{Deserialize, Serialize};

/// A small deterministic generator (SplitMix64): no dependency, same stream everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// A child stream for item `i` of stream `tag` (independent of how many draws came before).
    pub fn derive(seed: u64, tag: &str, i: u64) -> Rng {
        let h = blake3::hash(format!("{seed}/{tag}/{i}").as_bytes());
        Rng(u64::from_le_bytes(
            h.as_bytes()[..8].try_into().expect("8 bytes"),
        ))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
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
    fn random(rng: &mut Rng) -> (Background, &'static str) {
        let (name, base) = *rng.pick(&BACKGROUND_TONES);
        let jitter =
            |rng: &mut Rng, c: [f32; 3], a: f32| c.map(|v| (v + rng.range(-a, a)).clamp(0.0, 1.0));
        let bg = match rng.below(3) {
            0 => Background::Gradient {
                from: jitter(rng, base, 0.05),
                to: jitter(rng, base.map(|v| v * 0.75), 0.05),
                vertical: rng.below(2) == 0,
            },
            1 => Background::Stripes {
                a: base,
                b: base.map(|v| v * 0.82),
                period: rng.range(3.0, 7.0),
                diagonal: rng.below(2) == 0,
            },
            _ => Background::Noise {
                base,
                amplitude: rng.range(0.04, 0.10),
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
                    let mut r = Rng::new(
                        seed ^ (i as u64).wrapping_mul(0x100_0193)
                            ^ (j as u64).wrapping_mul(0x51_7CC1)
                            ^ c as u64,
                    );
                    r.range(-1.0, 1.0)
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
    /// `(3, H, W)` tensor.
    pub fn to_tensor(&self) -> tch::Tensor {
        let n = self.size as i64;
        tch::Tensor::from_slice(&self.data)
            .view([n, n, 3])
            .permute([2, 0, 1])
            .contiguous()
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

fn random_object(rng: &mut Rng, size: usize, others: &[Object]) -> Option<Object> {
    let n = size as f32;
    for _ in 0..64 {
        let r = rng.range(n * 0.09, n * 0.17);
        let o = Object {
            shape: *rng.pick(&Shape::ALL),
            color: rng.below(PALETTE.len()),
            cx: rng.range(r + 1.0, n - r - 1.0),
            cy: rng.range(r + 1.0, n - r - 1.0),
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
    let count = 1 + rng.below(max_objects.max(1));
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

/// The edit types. The first six are local (CoCoEdit-40K); `Tone` and `Style` are global.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EditType {
    Replace,
    Remove,
    Add,
    Attribute,
    Background,
    Motion,
    Tone,
    Style,
}

impl EditType {
    pub const LOCAL: [EditType; 6] = [
        EditType::Replace,
        EditType::Remove,
        EditType::Add,
        EditType::Attribute,
        EditType::Background,
        EditType::Motion,
    ];
    pub const GLOBAL: [EditType; 2] = [EditType::Tone, EditType::Style];
    pub fn name(self) -> &'static str {
        match self {
            EditType::Replace => "replace",
            EditType::Remove => "remove",
            EditType::Add => "add",
            EditType::Attribute => "attribute",
            EditType::Background => "background",
            EditType::Motion => "motion",
            EditType::Tone => "tone",
            EditType::Style => "style",
        }
    }
    pub fn is_local(self) -> bool {
        !matches!(self, EditType::Tone | EditType::Style)
    }
}

/// One generated edit.
#[derive(Debug, Clone)]
pub struct Edit {
    pub edit_type: EditType,
    pub source: Scene,
    pub target: Scene,
    pub source_image: Image,
    pub target_image: Image,
    /// 1 where the target differs from the source by construction, dilated by `dilate_px`.
    pub edit_mask: Vec<bool>,
    pub instruction: String,
    pub instruction_refined: String,
}

fn region(o: &Object, size: usize) -> &'static str {
    let (h, v) = (o.cx / size as f32, o.cy / size as f32);
    match (v < 0.5, h < 0.5) {
        (true, true) => "top left",
        (true, false) => "top right",
        (false, true) => "bottom left",
        (false, false) => "bottom right",
    }
}

fn dilate(mask: &[bool], n: usize, px: usize) -> Vec<bool> {
    if px == 0 {
        return mask.to_vec();
    }
    let mut out = vec![false; n * n];
    for y in 0..n {
        for x in 0..n {
            if mask[y * n + x] {
                for yy in y.saturating_sub(px)..(y + px + 1).min(n) {
                    for xx in x.saturating_sub(px)..(x + px + 1).min(n) {
                        out[yy * n + xx] = true;
                    }
                }
            }
        }
    }
    out
}

fn union(a: &[bool], b: &[bool]) -> Vec<bool> {
    a.iter().zip(b).map(|(x, y)| *x || *y).collect()
}

/// Generates one edit of type `t` on `scene`; `None` when the scene cannot take it (e.g.
/// no room to add an object).
pub fn make_edit(rng: &mut Rng, scene: &Scene, t: EditType, dilate_px: usize) -> Option<Edit> {
    let n = scene.size;
    let mut target = scene.clone();
    let none = vec![false; n * n];
    let pick = |rng: &mut Rng| rng.below(scene.objects.len());
    let (raw_mask, instruction, refined, global_op): (
        Vec<bool>,
        String,
        String,
        Option<(bool, f32)>,
    ) = match t {
        EditType::Replace => {
            let i = pick(rng);
            let o = &scene.objects[i];
            let others: Vec<Object> = scene
                .objects
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| p.clone())
                .collect();
            let mut new = o.clone();
            for _ in 0..16 {
                new.shape = *rng.pick(&Shape::ALL);
                new.color = rng.below(PALETTE.len());
                if (new.shape != o.shape || new.color != o.color)
                    && others
                        .iter()
                        .all(|p| !(p.color == new.color && p.shape == new.shape))
                {
                    break;
                }
            }
            if new.shape == o.shape && new.color == o.color {
                return None;
            }
            target.objects[i] = new.clone();
            let m = union(&scene.footprint(o), &target.footprint(&new));
            let phr = [
                format!("replace the {} with a {}", o.describe(), new.describe()),
                format!("turn the {} into a {}", o.describe(), new.describe()),
                format!("swap the {} for a {}", o.describe(), new.describe()),
            ];
            let refined = format!(
                "Replace the {} in the {} of the image with a {} of about the same size, keeping the background and every other object exactly as they are.",
                o.describe(),
                region(o, n),
                new.describe()
            );
            (m, rng.pick(&phr).clone(), refined, None)
        }
        EditType::Remove => {
            let i = pick(rng);
            let o = scene.objects[i].clone();
            target.objects.remove(i);
            let phr = [
                format!("remove the {}", o.describe()),
                format!("delete the {}", o.describe()),
                format!("take away the {}", o.describe()),
                format!("erase the {}", o.describe()),
            ];
            let refined = format!(
                "Remove the {} in the {} of the image and fill its area with the surrounding background, leaving everything else unchanged.",
                o.describe(),
                region(&o, n)
            );
            (scene.footprint(&o), rng.pick(&phr).clone(), refined, None)
        }
        EditType::Add => {
            let o = random_object(rng, n, &scene.objects)?;
            target.objects.push(o.clone());
            let w = region(&o, n);
            let phr = [
                format!("add a {} in the {}", o.describe(), w),
                format!("put a {} in the {}", o.describe(), w),
                format!("place a {} in the {}", o.describe(), w),
            ];
            let refined = format!(
                "Add a {} in the {} of the image, on an empty part of the background, without moving or changing the existing objects.",
                o.describe(),
                w
            );
            (target.footprint(&o), rng.pick(&phr).clone(), refined, None)
        }
        EditType::Attribute => {
            let i = pick(rng);
            let o = scene.objects[i].clone();
            if rng.below(2) == 0 {
                let mut c = rng.below(PALETTE.len());
                if c == o.color {
                    c = (c + 1) % PALETTE.len();
                }
                if scene
                    .objects
                    .iter()
                    .any(|p| p.color == c && p.shape == o.shape)
                {
                    return None;
                }
                target.objects[i].color = c;
                let cn = PALETTE[c].0;
                let phr = [
                    format!("make the {} {}", o.describe(), cn),
                    format!("change the colour of the {} to {}", o.describe(), cn),
                    format!("paint the {} {}", o.describe(), cn),
                ];
                let refined = format!(
                    "Change the colour of the {} in the {} of the image to {}, keeping its shape, size and position and the rest of the image unchanged.",
                    o.describe(),
                    region(&o, n),
                    cn
                );
                (scene.footprint(&o), rng.pick(&phr).clone(), refined, None)
            } else {
                let bigger = rng.below(2) == 0;
                let new_r = if bigger { o.r * 1.4 } else { o.r * 0.65 };
                let mut new = o.clone();
                new.r = new_r;
                let fits = new.cx - new_r >= 0.0
                    && new.cy - new_r >= 0.0
                    && new.cx + new_r <= n as f32
                    && new.cy + new_r <= n as f32;
                let clear = scene.objects.iter().enumerate().all(|(j, p)| {
                    j == i
                        || ((p.cx - new.cx).powi(2) + (p.cy - new.cy).powi(2)).sqrt()
                            > p.r + new.r + 1.0
                });
                if !fits || !clear {
                    return None;
                }
                target.objects[i] = new.clone();
                let (word, verb) = if bigger {
                    ("bigger", "enlarge")
                } else {
                    ("smaller", "shrink")
                };
                let phr = [
                    format!("make the {} {}", o.describe(), word),
                    format!("{verb} the {}", o.describe()),
                ];
                let refined = format!(
                    "Make the {} in the {} of the image {}, keeping its centre, shape and colour and the rest of the image unchanged.",
                    o.describe(),
                    region(&o, n),
                    word
                );
                (
                    union(&scene.footprint(&o), &target.footprint(&new)),
                    rng.pick(&phr).clone(),
                    refined,
                    None,
                )
            }
        }
        EditType::Background => {
            let (mut bg, mut name) = Background::random(rng);
            for _ in 0..8 {
                if name != scene.background_name {
                    break;
                }
                (bg, name) = Background::random(rng);
            }
            if name == scene.background_name {
                return None;
            }
            target.background = bg;
            target.background_name = name.to_string();
            // Edge pixels mix object and background: only fully covered pixels stay.
            let objects = scene
                .objects
                .iter()
                .fold(none.clone(), |m, o| union(&m, &scene.interior(o)));
            let m: Vec<bool> = objects.iter().map(|o| !o).collect();
            let phr = [
                format!("change the background to {name}"),
                format!("replace the background with a {name} one"),
                format!("make the background {name}"),
            ];
            let refined = format!(
                "Replace the background of the image with a {name} texture while keeping every object exactly where and how it is."
            );
            // Dilating the background region would eat the objects: it is used as is.
            return Some(finish(
                t,
                scene,
                target,
                m,
                rng.pick(&phr).clone(),
                refined,
                None,
                0,
            ));
        }
        EditType::Motion => {
            let i = pick(rng);
            let o = scene.objects[i].clone();
            let dirs = [
                ("left", -1.0f32, 0.0f32),
                ("right", 1.0, 0.0),
                ("up", 0.0, -1.0),
                ("down", 0.0, 1.0),
            ];
            let start = rng.below(4);
            let mut moved = None;
            for k in 0..4 {
                let (name, dx, dy) = dirs[(start + k) % 4];
                let step = o.r * 1.6;
                let mut new = o.clone();
                new.cx += dx * step;
                new.cy += dy * step;
                let inside = new.cx - new.r >= 0.0
                    && new.cy - new.r >= 0.0
                    && new.cx + new.r <= n as f32
                    && new.cy + new.r <= n as f32;
                let clear = scene.objects.iter().enumerate().all(|(j, p)| {
                    j == i
                        || ((p.cx - new.cx).powi(2) + (p.cy - new.cy).powi(2)).sqrt()
                            > p.r + new.r + 1.0
                });
                if inside && clear {
                    moved = Some((name, new));
                    break;
                }
            }
            let (dir, new) = moved?;
            target.objects[i] = new.clone();
            let to = if matches!(dir, "left" | "right") {
                format!("to the {dir}")
            } else {
                dir.to_string()
            };
            let phr = [
                format!("move the {} {to}", o.describe()),
                format!("shift the {} {to}", o.describe()),
                format!("slide the {} {to}", o.describe()),
            ];
            let refined = format!(
                "Move the {} from the {} of the image a little {to}, restoring the background where it was and changing nothing else.",
                o.describe(),
                region(&o, n)
            );
            (
                union(&scene.footprint(&o), &target.footprint(&new)),
                rng.pick(&phr).clone(),
                refined,
                None,
            )
        }
        EditType::Tone => {
            let warm = rng.below(2) == 0;
            let phr: [&str; 2] = if warm {
                ["make the image warmer", "give the picture a warm tone"]
            } else {
                ["make the image darker", "darken the whole picture"]
            };
            let refined = if warm {
                "Shift the colours of the whole image towards warm tones."
            } else {
                "Darken the whole image evenly."
            };
            (
                vec![true; n * n],
                rng.pick(&phr).to_string(),
                refined.to_string(),
                Some((warm, 0.0)),
            )
        }
        EditType::Style => {
            let phr = [
                "make the image look pixelated",
                "apply a mosaic style to the image",
            ];
            (
                vec![true; n * n],
                rng.pick(&phr).to_string(),
                "Render the whole image as a coarse mosaic of 4×4 blocks.".to_string(),
                Some((false, 4.0)),
            )
        }
    };
    Some(finish(
        t,
        scene,
        target,
        raw_mask,
        instruction,
        refined,
        global_op,
        dilate_px,
    ))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    t: EditType,
    scene: &Scene,
    target: Scene,
    raw_mask: Vec<bool>,
    instruction: String,
    refined: String,
    global_op: Option<(bool, f32)>,
    dilate_px: usize,
) -> Edit {
    let n = scene.size;
    let source_image = scene.render();
    let mut target_image = target.render();
    if let Some((warm, block)) = global_op {
        target_image = if block > 0.0 {
            mosaic(&target_image, block as usize)
        } else {
            tone(&target_image, warm)
        };
    }
    Edit {
        edit_type: t,
        edit_mask: dilate(&raw_mask, n, dilate_px),
        source: scene.clone(),
        target,
        source_image,
        target_image,
        instruction,
        instruction_refined: refined,
    }
}

fn tone(img: &Image, warm: bool) -> Image {
    let mut out = img.clone();
    for p in out.data.chunks_mut(3) {
        if warm {
            p[0] = (p[0] * 1.12 + 0.03).min(1.0);
            p[2] = (p[2] * 0.85).max(0.0);
        } else {
            p.iter_mut().for_each(|v| *v *= 0.65);
        }
    }
    out
}

fn mosaic(img: &Image, block: usize) -> Image {
    let n = img.size;
    let mut out = img.clone();
    for by in (0..n).step_by(block) {
        for bx in (0..n).step_by(block) {
            let mut acc = [0.0f32; 3];
            let mut cnt = 0.0;
            for y in by..(by + block).min(n) {
                for x in bx..(bx + block).min(n) {
                    let c = img.get(x, y);
                    (0..3).for_each(|k| acc[k] += c[k]);
                    cnt += 1.0;
                }
            }
            for y in by..(by + block).min(n) {
                for x in bx..(bx + block).min(n) {
                    (0..3).for_each(|k| out.data[(y * n + x) * 3 + k] = acc[k] / cnt);
                }
            }
        }
    }
    out
}

/// Background drift of model-generated editing datasets: outside the edit region, a small
/// colour shift, a blur and texture noise, all scaled by `amount` ∈ [0, 1].
pub fn drift(rng: &mut Rng, img: &Image, edit_mask: &[bool], amount: f32) -> Image {
    if amount <= 0.0 {
        return img.clone();
    }
    let n = img.size;
    let shift: [f32; 3] = std::array::from_fn(|_| rng.range(-0.05, 0.05) * amount);
    let mut out = img.clone();
    for y in 0..n {
        for x in 0..n {
            if edit_mask[y * n + x] {
                continue;
            }
            // 3×3 box blur mixed in by `amount / 2`.
            let mut acc = [0.0f32; 3];
            let mut cnt = 0.0;
            for yy in y.saturating_sub(1)..(y + 2).min(n) {
                for xx in x.saturating_sub(1)..(x + 2).min(n) {
                    let c = img.get(xx, yy);
                    (0..3).for_each(|k| acc[k] += c[k]);
                    cnt += 1.0;
                }
            }
            let c = img.get(x, y);
            for k in 0..3 {
                let blurred = c[k] + (acc[k] / cnt - c[k]) * amount * 0.5;
                let noise = rng.range(-1.0, 1.0) * 0.03 * amount;
                out.data[(y * n + x) * 3 + k] = (blurred + shift[k] + noise).clamp(0.0, 1.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_type_changes_exactly_inside_its_mask() {
        let mut made = std::collections::HashMap::new();
        for i in 0..400 {
            let mut rng = Rng::derive(7, "test", i);
            let scene = random_scene(&mut rng, 32, 4);
            let t = EditType::LOCAL[i as usize % 6];
            let Some(e) = make_edit(&mut rng, &scene, t, 1) else {
                continue;
            };
            *made.entry(t).or_insert(0) += 1;
            let n = 32;
            let mut changed_inside = 0;
            for p in 0..n * n {
                let d: f32 = (0..3)
                    .map(|k| {
                        (e.source_image.data[p * 3 + k] - e.target_image.data[p * 3 + k]).abs()
                    })
                    .sum();
                if !e.edit_mask[p] {
                    assert!(
                        d < 1e-6,
                        "{t:?}: pixel {p} changed outside the edit mask ({})",
                        e.instruction
                    );
                } else if d > 1e-3 {
                    changed_inside += 1;
                }
            }
            assert!(
                changed_inside > 0,
                "{t:?} changed nothing: {}",
                e.instruction
            );
            assert!(!e.instruction.is_empty() && e.instruction_refined.len() > e.instruction.len());
        }
        for t in EditType::LOCAL {
            assert!(
                made.get(&t).copied().unwrap_or(0) > 20,
                "too few {t:?} edits: {made:?}"
            );
        }
    }

    #[test]
    fn same_seed_same_world() {
        let a = random_scene(&mut Rng::derive(3, "x", 5), 32, 4).render();
        let b = random_scene(&mut Rng::derive(3, "x", 5), 32, 4).render();
        assert_eq!(a, b);
        let c = random_scene(&mut Rng::derive(3, "x", 6), 32, 4).render();
        assert_ne!(a, c);
    }

    #[test]
    fn drift_stays_outside_the_edit_region() {
        let mut rng = Rng::new(1);
        let scene = random_scene(&mut rng, 32, 3);
        let e = make_edit(&mut rng, &scene, EditType::Remove, 1).unwrap();
        let d = drift(&mut rng, &e.target_image, &e.edit_mask, 1.0);
        for p in 0..32 * 32 {
            if e.edit_mask[p] {
                assert_eq!(
                    &d.data[p * 3..p * 3 + 3],
                    &e.target_image.data[p * 3..p * 3 + 3]
                );
            }
        }
        assert_ne!(d, e.target_image);
    }
}
