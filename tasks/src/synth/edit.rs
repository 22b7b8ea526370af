//! Edits of the synthetic world: the six local CoCoEdit-40K types (replace, remove, add,
//! attribute, background, motion) plus two global types (tone, style) kept out of training.
//! Each sample has a source, a target, the exact edit region dilated by `dilate_px`, an
//! instruction from several phrasings (and a longer refined one, paper appendix A.3) and its
//! edit type; training targets can get background drift ([`drift`]).

use super::scene::*;
use serde::{Deserialize, Serialize};

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
    let pick = |rng: &mut Rng| rng.below_mod(scene.objects.len());
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
                new.color = rng.below_mod(PALETTE.len());
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
            if rng.below_mod(2) == 0 {
                let mut c = rng.below_mod(PALETTE.len());
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
                let bigger = rng.below_mod(2) == 0;
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
            let start = rng.below_mod(4);
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
            let warm = rng.below_mod(2) == 0;
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
    let shift: [f32; 3] = std::array::from_fn(|_| rng.range_f32(-0.05, 0.05) * amount);
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
                let noise = rng.range_f32(-1.0, 1.0) * 0.03 * amount;
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
            let mut rng = stream(7, "test", i);
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
        let a = random_scene(&mut stream(3, "x", 5), 32, 4).render();
        let b = random_scene(&mut stream(3, "x", 5), 32, 4).render();
        assert_eq!(a, b);
        let c = random_scene(&mut stream(3, "x", 6), 32, 4).render();
        assert_ne!(a, c);
    }

    #[test]
    fn drift_stays_outside_the_edit_region() {
        let mut rng = Rng::world(1);
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
