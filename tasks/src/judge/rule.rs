//! [`RuleJudge`]: a deterministic judge for the synthetic edit world (`crate::data::synth`).
//! Like a real judge it reads only the source image, the edited image and the instruction.
//!
//! 1. It parses the instruction ([`super::instruction::parse`]: every phrasing the world
//!    writes, short or refined) and segments both images (`vision.rs`: palette classes,
//!    4-connected blobs of at least `max(4, 0.25 %)` of the pixels, sub-pixel coverage,
//!    shape and size fitted against the world's shapes).
//! 2. **Editing effect** = `achieved · (0.5 + 0.5·preserved)`.
//!    `achieved` ∈ [0, 1] asks whether the requested change happened at the right place:
//!    - replace: the blob where the target was has the new colour and shape (each attribute
//!      the instruction changes counts equally; one it keeps but that changed halves it);
//!    - remove: the fraction of the target's pixels that are backdrop now;
//!    - add: a new blob with the colour (½) and the shape (½), halved outside the region;
//!    - recolour: the blob overlapping the target most has the new colour (its shape kept,
//!      else ½; overlap IoU ≥ ½, else scaled down);
//!    - resize: linear size ratio `√(area′/area)` ≥ 1.3 (bigger) or ≤ 0.75 (smaller) gives
//!      1, falling linearly to 0 at 1.05 / 0.95;
//!    - move: the target's blob moved ≥ 1.2 object sizes along the direction (scaled below;
//!      the world moves by 1.6), halved when it drifts sideways by more than half a size plus
//!      the tolerance;
//!    - background: the edited backdrop's nearest named tone is the asked one;
//!    - tone: warmer = `(ΔR̄ − ΔB̄)/255 ≥ 0.12`, darker = mean luma ratio ≤ 0.75 (linear
//!      ramps from 0 at no change);
//!    - mosaic: `1 − mean|edited − M| / mean|source − M|` for `M` the source averaged in
//!      b×b blocks, best b in 2–8.
//!
//!    `preserved` = kept / (other objects + spurious blobs) over the objects the instruction
//!    does not name: each should remain (same colour and shape, centre within 8 % of the
//!    short side, area ×0.6–1.67), and nothing else should appear. Global edits: 1.
//! 3. **Visual quality**, over the edited region (the target's and the result's boxes grown
//!    by 2 px; the whole image for background and global edits), in the edited image: the
//!    geometric mean of `noise = 1/(1 + (L/10)²)`, `purity = 1/(1 + (D/30)²)` and
//!    `clean = 1/(1 + (A/0.05)²)`. `L` is the mean excess of |4-neighbour Laplacian| of luma
//!    over what the source's texture has (backdrop pixels 3 or more pixels from objects:
//!    over 1.25× the source backdrop's mean + 2; object interiors: over 2); `D` the mean RGB
//!    distance of interior object pixels from their palette colour; `A` the fraction of
//!    stray speckles and of backdrop pixels farther than 60 from every tone, away from object
//!    edges. Global edits: `noise` alone, against the source over the whole image.

use super::extract::{self, Extraction};
use super::instruction::{self, Edit, ObjectRef, SizeChange, ToneChange};
use super::prompts::{self, ImageRole, Prompt};
use super::vision::{self, Blob, Segmentation};
use super::{
    Asked, Invalid, Judge, JudgeError, JudgeRequest, Judgement, ScoreVariant, Scores, Verdict,
};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use image::RgbImage;
use serde::Serialize;

/// Settings of the rule judge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleJudgeConfig {
    /// Smallest blob counted as an object, as a fraction of the image (default 0.0025, and
    /// never below 4 pixels).
    pub min_area_fraction: f64,
    /// `mean` (effect and quality) or `single` (their mean as one score).
    pub variant: ScoreVariant,
}

impl Default for RuleJudgeConfig {
    fn default() -> Self {
        RuleJudgeConfig {
            min_area_fraction: 0.0025,
            variant: ScoreVariant::Mean,
        }
    }
}

/// Why the rule judge cannot judge a sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error(transparent)]
    Instruction(#[from] instruction::ParseError),
    #[error("the images are empty")]
    Empty,
    #[error("cannot find the edited object: {0}")]
    NotFound(String),
    #[error("the source is {source_w}×{source_h} but the edited image is {edited_w}×{edited_h}")]
    SizeMismatch {
        source_w: u32,
        source_h: u32,
        edited_w: u32,
        edited_h: u32,
    },
}

/// An object the judge found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeenObject {
    pub object: ObjectRef,
    pub size: f64,
    pub x: f64,
    pub y: f64,
}

/// The rule judge's findings for one sample (its raw answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleReport {
    pub edit: Edit,
    pub effect: f64,
    pub quality: f64,
    pub achieved: f64,
    pub preserved: f64,
    pub noise: f64,
    pub purity: f64,
    pub clean: f64,
    pub notes: Vec<String>,
    pub source_objects: Vec<SeenObject>,
    pub edited_objects: Vec<SeenObject>,
}

/// What [`RuleJudge::analyse`] found, for the curation answers.
struct Analysis {
    report: RuleReport,
    s: Segmentation,
    t: Segmentation,
    /// The source blob the instruction names.
    target: Option<usize>,
    /// The edited blob it became (or the added one).
    result: Option<usize>,
}

/// The deterministic judge of synthetic edits.
#[derive(Debug, Clone, Default)]
pub struct RuleJudge {
    pub config: RuleJudgeConfig,
}

fn seen(seg: &Segmentation) -> Vec<SeenObject> {
    let r1 = |v: f64| (v * 10.0).round() / 10.0;
    seg.blobs
        .iter()
        .map(|b| SeenObject {
            object: ObjectRef {
                colour: b.colour,
                shape: b.shape,
            },
            size: r1(b.size),
            x: r1(b.x),
            y: r1(b.y),
        })
        .collect()
}

fn ramp(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

fn bit(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn best(it: impl Iterator<Item = (usize, f64)>) -> Option<(usize, f64)> {
    it.fold(None, |acc, (j, s)| match acc {
        Some((_, bs)) if bs >= s => acc,
        _ => Some((j, s)),
    })
}

struct Ctx<'a> {
    s: &'a Segmentation,
    t: &'a Segmentation,
    tol: f64,
    notes: Vec<String>,
}

impl Ctx<'_> {
    /// The source blob a reference names: the largest of that colour and shape, else the
    /// only blob of that colour.
    fn find_source(&mut self, r: ObjectRef) -> Option<usize> {
        let blobs = &self.s.blobs;
        let exact = (0..blobs.len())
            .filter(|&i| blobs[i].colour == r.colour && blobs[i].shape == r.shape)
            .max_by(|&a, &b| blobs[a].area.total_cmp(&blobs[b].area));
        if exact.is_some() {
            return exact;
        }
        let by_colour: Vec<usize> = (0..blobs.len())
            .filter(|&i| blobs[i].colour == r.colour)
            .collect();
        if let [only] = by_colour[..] {
            self.notes.push(format!(
                "no {r} in the source; taking the only {} object",
                r.colour.name()
            ));
            return Some(only);
        }
        self.notes.push(format!("no {r} in the source image"));
        None
    }

    fn same_object(&self, a: &Blob, b: &Blob) -> bool {
        let ratio = b.area / a.area;
        a.colour == b.colour
            && a.shape == b.shape
            && a.distance(b.x, b.y) <= self.tol
            && (0.6..=1.67).contains(&ratio)
    }

    /// Greedy matching of source blobs (but `skip`) to edited blobs (but `reserved`).
    fn matches(&self, skip: Option<usize>, reserved: &[usize]) -> Vec<Option<usize>> {
        let mut used = vec![false; self.t.blobs.len()];
        for &r in reserved {
            used[r] = true;
        }
        (0..self.s.blobs.len())
            .map(|i| {
                if Some(i) == skip {
                    return None;
                }
                let a = &self.s.blobs[i];
                let j = (0..self.t.blobs.len())
                    .filter(|&j| !used[j] && self.same_object(a, &self.t.blobs[j]))
                    .min_by(|&x, &y| {
                        let (bx, by) = (&self.t.blobs[x], &self.t.blobs[y]);
                        a.distance(bx.x, bx.y).total_cmp(&a.distance(by.x, by.y))
                    })?;
                used[j] = true;
                Some(j)
            })
            .collect()
    }

    /// kept / (others + spurious); the `result` blob is not spurious.
    fn preserved(&self, target: Option<usize>, result: Option<usize>) -> f64 {
        let reserved: Vec<usize> = result.into_iter().collect();
        let m = self.matches(target, &reserved);
        let others = (0..self.s.blobs.len())
            .filter(|&i| Some(i) != target)
            .count();
        let kept = m.iter().flatten().count();
        let matched: Vec<usize> = m.iter().flatten().copied().chain(result).collect();
        let spurious = (0..self.t.blobs.len())
            .filter(|j| !matched.contains(j))
            .count();
        if others + spurious == 0 {
            1.0
        } else {
            kept as f64 / (others + spurious) as f64
        }
    }

    /// Edited blobs within `radius + tol` of a point.
    fn near(&self, x: f64, y: f64, radius: f64) -> impl Iterator<Item = usize> + '_ {
        (0..self.t.blobs.len())
            .filter(move |&j| self.t.blobs[j].distance(x, y) <= radius + self.tol)
    }

    /// The edited blob sharing most pixels with source blob `i`, and that count.
    fn most_overlap(&self, i: usize) -> Option<(usize, usize)> {
        let mut counts = vec![0usize; self.t.blobs.len()];
        for &p in &self.s.blobs[i].pixels {
            if let Some(l) = self.t.label[p as usize] {
                counts[l as usize] += 1;
            }
        }
        best(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(j, c)| (j, *c as f64)),
        )
        .map(|(j, c)| (j, c as usize))
    }
}

/// How well blob `b` has become `want` (from `from`): each attribute the edit changes counts
/// equally; an attribute that should stay but differs halves the score.
fn becomes(b: &Blob, from: ObjectRef, want: ObjectRef) -> f64 {
    let (mut changed, mut right, mut factor) = (0.0, 0.0, 1.0);
    for (is_right, is_changed) in [
        (b.colour == want.colour, from.colour != want.colour),
        (b.shape == want.shape, from.shape != want.shape),
    ] {
        if is_changed {
            changed += 1.0;
            right += bit(is_right);
        } else if !is_right {
            factor *= 0.5;
        }
    }
    if changed == 0.0 {
        factor
    } else {
        factor * right / changed
    }
}

fn luma(p: [u8; 3]) -> f64 {
    0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64
}

fn laplacian(img: &RgbImage, x: u32, y: u32) -> f64 {
    // 4·I(p) − I(n) − I(s) − I(e) − I(w), on luma
    let l = |x, y| luma(img.get_pixel(x, y).0);
    (4.0 * l(x, y) - l(x - 1, y) - l(x + 1, y) - l(x, y - 1) - l(x, y + 1)).abs()
}

fn channel_means(img: &RgbImage) -> [f64; 3] {
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
fn mosaic(img: &RgbImage, b: u32) -> RgbImage {
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

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let n = (a.width() * a.height() * 3) as f64;
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / n
}

impl RuleJudge {
    pub fn new(config: RuleJudgeConfig) -> Self {
        RuleJudge { config }
    }

    fn min_area(&self, img: &RgbImage) -> usize {
        ((self.config.min_area_fraction * (img.width() * img.height()) as f64).round() as usize)
            .max(4)
    }

    /// Judges one sample.
    pub fn evaluate(
        &self,
        source: &RgbImage,
        edited: &RgbImage,
        instruction: &str,
    ) -> Result<RuleReport, RuleError> {
        self.analyse(source, edited, instruction).map(|a| a.report)
    }

    /// [`RuleJudge::evaluate`], keeping the segmentations and the blobs it matched.
    fn analyse(
        &self,
        source: &RgbImage,
        edited: &RgbImage,
        instruction: &str,
    ) -> Result<Analysis, RuleError> {
        let edit = instruction::parse(instruction)?;
        if source.dimensions() != edited.dimensions() {
            return Err(RuleError::SizeMismatch {
                source_w: source.width(),
                source_h: source.height(),
                edited_w: edited.width(),
                edited_h: edited.height(),
            });
        }
        if source.width() == 0 || source.height() == 0 {
            return Err(RuleError::Empty);
        }
        let (w, h) = (source.width() as f64, source.height() as f64);
        let s = vision::segment(source, self.min_area(source));
        let t = vision::segment(edited, self.min_area(edited));
        let mut cx = Ctx {
            s: &s,
            t: &t,
            tol: (0.08 * w.min(h)).max(2.0),
            notes: Vec::new(),
        };
        let target = edit.target().and_then(|r| cx.find_source(r));
        let mut result: Option<usize> = None;
        let achieved = match edit {
            Edit::Replace { target: from, with } => target.map_or(0.0, |i| {
                let a = &s.blobs[i];
                let b = best(
                    cx.near(a.x, a.y, a.size)
                        .map(|j| (j, becomes(&t.blobs[j], from, with))),
                );
                result = b.map(|b| b.0);
                b.map_or(0.0, |b| b.1)
            }),
            Edit::Remove { .. } => target.map_or(0.0, |i| {
                let px = &s.blobs[i].pixels;
                px.iter()
                    .filter(|&&p| t.class[p as usize].is_none())
                    .count() as f64
                    / px.len() as f64
            }),
            Edit::Add { object, region } => {
                let old: Vec<usize> = cx.matches(None, &[]).into_iter().flatten().collect();
                let b = best((0..t.blobs.len()).filter(|j| !old.contains(j)).map(|j| {
                    let b = &t.blobs[j];
                    let attrs =
                        0.5 * bit(b.colour == object.colour) + 0.5 * bit(b.shape == object.shape);
                    let placed = region.is_none_or(|r| r.contains(b.x, b.y, w, h));
                    (j, attrs * if placed { 1.0 } else { 0.5 })
                }));
                result = b.map(|b| b.0);
                b.map_or(0.0, |b| b.1)
            }
            Edit::Recolour { target: from, to } => target.map_or(0.0, |i| {
                let Some((j, overlap)) = cx.most_overlap(i) else {
                    return 0.0;
                };
                result = Some(j);
                let (a, b) = (&s.blobs[i], &t.blobs[j]);
                let iou = overlap as f64 / (a.pixels.len() + b.pixels.len() - overlap) as f64;
                bit(b.colour == to)
                    * if b.shape == from.shape { 1.0 } else { 0.5 }
                    * ramp(2.0 * iou)
            }),
            Edit::Resize {
                target: from,
                change,
            } => target.map_or(0.0, |i| {
                let a = &s.blobs[i];
                let cand = cx
                    .near(a.x, a.y, 1.5 * a.size)
                    .filter(|&j| t.blobs[j].colour == from.colour && t.blobs[j].shape == a.shape)
                    .min_by(|&x, &y| {
                        t.blobs[x]
                            .distance(a.x, a.y)
                            .total_cmp(&t.blobs[y].distance(a.x, a.y))
                    });
                let Some(j) = cand else { return 0.0 };
                result = Some(j);
                let ratio = (t.blobs[j].area / a.area).sqrt();
                match change {
                    SizeChange::Bigger => ramp((ratio - 1.05) / 0.25),
                    SizeChange::Smaller => ramp((0.95 - ratio) / 0.2),
                }
            }),
            Edit::Move {
                target: from,
                direction,
            } => target.map_or(0.0, |i| {
                let a = &s.blobs[i];
                let taken: Vec<usize> = cx.matches(Some(i), &[]).into_iter().flatten().collect();
                let (ux, uy) = direction.unit();
                let b = best(
                    (0..t.blobs.len())
                        .filter(|j| !taken.contains(j))
                        .filter(|&j| {
                            t.blobs[j].colour == from.colour && t.blobs[j].shape == a.shape
                        })
                        .map(|j| {
                            let b = &t.blobs[j];
                            let (dx, dy) = (b.x - a.x, b.y - a.y);
                            let along = dx * ux + dy * uy;
                            let across = (dx * uy - dy * ux).abs();
                            let mut score = ramp(along / (1.2 * a.size));
                            if across > cx.tol + 0.5 * a.size {
                                score *= 0.5;
                            }
                            if !(0.7..=1.43).contains(&(b.area / a.area)) {
                                score *= 0.7;
                            }
                            (j, score)
                        }),
                );
                result = b.map(|b| b.0);
                b.map_or(0.0, |b| b.1)
            }),
            Edit::Background { to } => match vision::backdrop_of(edited, &t) {
                Some((b, _)) => bit(b == to),
                None => {
                    cx.notes
                        .push("no backdrop visible in the edited image".into());
                    0.0
                }
            },
            Edit::Tone {
                change: ToneChange::Warmer,
            } => {
                let (ms, mt) = (channel_means(source), channel_means(edited));
                ramp(((mt[0] - ms[0]) - (mt[2] - ms[2])) / 255.0 / 0.12)
            }
            Edit::Tone {
                change: ToneChange::Darker,
            } => {
                let (ms, mt) = (channel_means(source), channel_means(edited));
                let l = |m: [f64; 3]| 0.299 * m[0] + 0.587 * m[1] + 0.114 * m[2];
                ramp((1.0 - l(mt) / l(ms).max(1.0)) / 0.25)
            }
            Edit::Mosaic => (2..=8)
                .map(|b| {
                    let m = mosaic(source, b);
                    let base = mean_abs_diff(source, &m);
                    if base < 1e-9 {
                        0.0
                    } else {
                        ramp(1.0 - mean_abs_diff(edited, &m) / base)
                    }
                })
                .fold(0.0, f64::max),
        };
        let global = matches!(edit, Edit::Tone { .. } | Edit::Mosaic);
        let preserved = if global {
            1.0
        } else {
            cx.preserved(target, result)
        };
        let effect = achieved * (0.5 + 0.5 * preserved);

        let whole = (0, 0, source.width() - 1, source.height() - 1);
        let mut boxes: Vec<(u32, u32, u32, u32)> = Vec::new();
        if !matches!(edit, Edit::Background { .. }) && !global {
            boxes.extend(target.map(|i| s.blobs[i].bbox));
            boxes.extend(result.map(|j| t.blobs[j].bbox));
        }
        let region = if boxes.is_empty() {
            whole
        } else {
            (
                boxes.iter().map(|b| b.0).min().unwrap().saturating_sub(2),
                boxes.iter().map(|b| b.1).min().unwrap().saturating_sub(2),
                (boxes.iter().map(|b| b.2).max().unwrap() + 2).min(whole.2),
                (boxes.iter().map(|b| b.3).max().unwrap() + 2).min(whole.3),
            )
        };
        let (noise, purity, clean, quality) = if global {
            let n = global_noise(source, edited);
            (n, 1.0, 1.0, n)
        } else {
            let compare_backdrop = !matches!(edit, Edit::Background { .. });
            let (n, p, c) = quality_terms(source, &s, edited, &t, region, compare_backdrop);
            (n, p, c, (n * p * c).cbrt())
        };
        let report = RuleReport {
            edit,
            effect,
            quality,
            achieved,
            preserved,
            noise,
            purity,
            clean,
            notes: cx.notes,
            source_objects: seen(&s),
            edited_objects: seen(&t),
        };
        Ok(Analysis {
            report,
            s,
            t,
            target,
            result,
        })
    }

    /// The configured variant's scores for a report.
    pub fn scores(&self, r: &RuleReport) -> Scores {
        match self.config.variant {
            ScoreVariant::Mean => Scores::Mean {
                effect: r.effect,
                quality: r.quality,
            },
            ScoreVariant::Single => Scores::Single {
                score: 0.5 * (r.effect + r.quality),
            },
        }
    }
}

fn noise_score(level: f64) -> f64 {
    1.0 / (1.0 + (level / 10.0).powi(2))
}

/// Mean |Laplacian| over backdrop pixels at least 3 pixels from any object pixel.
fn backdrop_laplacian(
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
fn global_noise(source: &RgbImage, edited: &RgbImage) -> f64 {
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
fn quality_terms(
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

/// The rule judge's answer to [`prompts::LOCATE`] (paper A.2), in the prompt's field order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocateAnswer {
    /// A short verb phrase: `replace`, `remove`, `add`, `change colour`, `change size`,
    /// `change background`, `move`, `change tone` or `change style`.
    pub edit_type: String,
    /// The object named by the instruction (`red circle`; `background`; `whole image`).
    pub edited_object: String,
    /// `[x1, y1, x2, y2]`, corners exclusive at the bottom right: the object's labelled
    /// pixels grown by their anti-aliased rim, in the edited image for `add` and in the source
    /// otherwise; the whole image for background and global edits.
    pub bounding_box: [u32; 4],
}

/// The rule judge's answer to [`prompts::FILTER`] (paper A.4), 1–10 each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FilterAnswer {
    pub instruction_clarity: u32,
    pub mask_accuracy: u32,
    pub target_prominence: u32,
}

/// The locate prompt's verb phrase for an edit.
pub fn edit_phrase(e: &Edit) -> &'static str {
    match e {
        Edit::Replace { .. } => "replace",
        Edit::Remove { .. } => "remove",
        Edit::Add { .. } => "add",
        Edit::Recolour { .. } => "change colour",
        Edit::Resize { .. } => "change size",
        Edit::Background { .. } => "change background",
        Edit::Move { .. } => "move",
        Edit::Tone { .. } => "change tone",
        Edit::Mosaic => "change style",
    }
}

/// White (luma > 127) pixels of a mask image, row-major.
fn mask_bits(mask: &RgbImage) -> Vec<bool> {
    mask.pixels().map(|p| luma(p.0) > 127.0).collect()
}

/// Chebyshev dilation of a row-major `w`×`h` mask by `d` pixels.
fn grow(m: &[bool], w: u32, h: u32, d: u32) -> Vec<bool> {
    let mut out = vec![false; m.len()];
    for y in 0..h {
        for x in 0..w {
            if m[(y * w + x) as usize] {
                for yy in y.saturating_sub(d)..=(y + d).min(h - 1) {
                    for xx in x.saturating_sub(d)..=(x + d).min(w - 1) {
                        out[(yy * w + xx) as usize] = true;
                    }
                }
            }
        }
    }
    out
}

/// A blob's box: its labelled pixels plus the adjacent non-backdrop rim (anti-aliased edge
/// pixels too faint to be labelled), as exclusive corners.
fn blob_box(seg: &Segmentation, img: &RgbImage, b: &Blob) -> [u32; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = b.bbox;
    let (w, h) = (seg.w, seg.h);
    let backdrop = vision::backdrop_of(img, seg).map(|(_, rgb)| rgb);
    let in_blob: std::collections::HashSet<u32> = b.pixels.iter().copied().collect();
    for &p in &b.pixels {
        let (x, y) = (p % w, p / w);
        for (dx, dy) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
            let (nx, ny) = (x as i64 + dx, y as i64 + dy);
            if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                continue;
            }
            let q = (ny as u32) * w + nx as u32;
            if in_blob.contains(&q) || seg.label[q as usize].is_some() {
                continue;
            }
            // a rim pixel: visibly off the backdrop, towards the blob's colour
            let c = vision::rgb(img.get_pixel(nx as u32, ny as u32).0);
            let off = backdrop.map_or(true, |bg| {
                let to_obj = vision::dist(c, vision::rgb(b.colour.rgb()));
                let to_bg = vision::dist(c, bg);
                to_bg > 40.0 && to_obj < vision::dist(bg, vision::rgb(b.colour.rgb()))
            });
            if off {
                x0 = x0.min(nx as u32);
                y0 = y0.min(ny as u32);
                x1 = x1.max(nx as u32);
                y1 = y1.max(ny as u32);
            }
        }
    }
    [x0, y0, x1 + 1, y1 + 1]
}

/// The quadrant of a point, as the synthetic world names it.
fn quadrant(x: f64, y: f64, w: f64, h: f64) -> &'static str {
    match (y < h / 2.0, x < w / 2.0) {
        (true, true) => "top left",
        (true, false) => "top right",
        (false, true) => "bottom left",
        (false, false) => "bottom right",
    }
}

/// The blob of `seg` sharing most pixels with `mask`.
fn masked_blob(seg: &Segmentation, mask: &[bool]) -> Option<usize> {
    let mut counts = vec![0usize; seg.blobs.len()];
    for (i, l) in seg.label.iter().enumerate() {
        if let Some(l) = l
            && mask.get(i).copied().unwrap_or(false)
        {
            counts[*l as usize] += 1;
        }
    }
    best(
        counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(j, c)| (j, *c as f64)),
    )
    .map(|(j, _)| j)
}

impl RuleJudge {
    /// Curation stage 1 (A.2): the edit type, the edited object and its box.
    pub fn locate(
        &self,
        source: &RgbImage,
        edited: &RgbImage,
        instruction: &str,
    ) -> Result<LocateAnswer, RuleError> {
        let a = self.analyse(source, edited, instruction)?;
        let edit = a.report.edit;
        let whole = [0, 0, source.width(), source.height()];
        let (object, bbox) = match edit {
            Edit::Add { object, .. } => {
                let j = a.result.ok_or_else(|| {
                    RuleError::NotFound(format!("no added {object} in the edited image"))
                })?;
                (object.to_string(), blob_box(&a.t, edited, &a.t.blobs[j]))
            }
            Edit::Background { .. } => ("background".to_string(), whole),
            Edit::Tone { .. } | Edit::Mosaic => ("whole image".to_string(), whole),
            _ => {
                let r = edit.target().expect("an object edit names its target");
                let i = a
                    .target
                    .ok_or_else(|| RuleError::NotFound(format!("no {r} in the source image")))?;
                (r.to_string(), blob_box(&a.s, source, &a.s.blobs[i]))
            }
        };
        Ok(LocateAnswer {
            edit_type: edit_phrase(&edit).to_string(),
            edited_object: object,
            bounding_box: bbox,
        })
    }

    /// Curation stage 2 (A.3): the instruction rewritten in the synthetic world's refined
    /// form, naming the object's colour and shape and, from the masked object (the blob the
    /// mask covers most; in the edited image for `add`), its quadrant.
    pub fn refine(
        &self,
        source: &RgbImage,
        edited: &RgbImage,
        instruction: &str,
        mask: &RgbImage,
    ) -> Result<String, RuleError> {
        let a = self.analyse(source, edited, instruction)?;
        let m = mask_bits(mask);
        let (w, h) = (source.width() as f64, source.height() as f64);
        let place = |seg: &Segmentation, fallback: Option<usize>| {
            masked_blob(seg, &m)
                .or(fallback)
                .map(|i| quadrant(seg.blobs[i].x, seg.blobs[i].y, w, h))
        };
        let at = |q: Option<&str>| q.map_or(String::new(), |q| format!(" in the {q} of the image"));
        let text = match a.report.edit {
            Edit::Replace { target, with } => format!(
                "Replace the {target}{} with a {with} of about the same size, keeping the background and every other object exactly as they are.",
                at(place(&a.s, a.target))
            ),
            Edit::Remove { target } => format!(
                "Remove the {target}{} and fill its area with the surrounding background, leaving everything else unchanged.",
                at(place(&a.s, a.target))
            ),
            Edit::Add { object, region } => {
                let q = place(&a.t, a.result).or(region.map(|r| r.phrase()));
                format!(
                    "Add a {object}{}, on an empty part of the background, without moving or changing the existing objects.",
                    at(q)
                )
            }
            Edit::Recolour { target, to } => format!(
                "Change the colour of the {target}{} to {}, keeping its shape, size and position and the rest of the image unchanged.",
                at(place(&a.s, a.target)),
                to.name()
            ),
            Edit::Resize { target, change } => format!(
                "Make the {target}{} {}, keeping its centre, shape and colour and the rest of the image unchanged.",
                at(place(&a.s, a.target)),
                if change == SizeChange::Bigger {
                    "bigger"
                } else {
                    "smaller"
                }
            ),
            Edit::Move { target, direction } => {
                let to = match direction {
                    instruction::Direction::Left => "to the left",
                    instruction::Direction::Right => "to the right",
                    instruction::Direction::Up => "up",
                    instruction::Direction::Down => "down",
                };
                let from = place(&a.s, a.target)
                    .map_or(String::new(), |q| format!(" from the {q} of the image"));
                format!(
                    "Move the {target}{from} a little {to}, restoring the background where it was and changing nothing else."
                )
            }
            Edit::Background { to } => format!(
                "Replace the background of the image with a {} texture while keeping every object exactly where and how it is.",
                to.name()
            ),
            Edit::Tone {
                change: ToneChange::Warmer,
            } => "Shift the colours of the whole image towards warm tones.".to_string(),
            Edit::Tone {
                change: ToneChange::Darker,
            } => "Darken the whole image evenly.".to_string(),
            Edit::Mosaic => "Render the whole image as a coarse mosaic of 4×4 blocks.".to_string(),
        };
        Ok(text)
    }

    /// Curation stage 3 (A.4), 1–10 each:
    /// - clarity: 10 when the instruction parses and names exactly one object of the source
    ///   (an added object: one not there yet), 5 when it names several, 3 when none; 1 when
    ///   it does not parse (then every score is 1);
    /// - mask accuracy: `1 + 9·recall·precision` (rounded) against the changed region (the
    ///   named object's pixels in the source ∪ its result's in the edited image; the source
    ///   backdrop for background edits; everything for global ones): recall = the share of
    ///   the region the mask covers, precision = the share of the mask within
    ///   `max(2, 4 %·short side)` pixels of the region (masks are dilated);
    /// - prominence: `1 + 9·min(1, √(area / 3 %))` (rounded) for the object's area over the
    ///   image's; 10 for background and global edits.
    pub fn filter(
        &self,
        source: &RgbImage,
        edited: &RgbImage,
        instruction: &str,
        mask: &RgbImage,
    ) -> Result<FilterAnswer, RuleError> {
        let a = match self.analyse(source, edited, instruction) {
            Ok(a) => a,
            Err(RuleError::Instruction(_)) => {
                return Ok(FilterAnswer {
                    instruction_clarity: 1,
                    mask_accuracy: 1,
                    target_prominence: 1,
                });
            }
            Err(e) => return Err(e),
        };
        if mask.dimensions() != source.dimensions() {
            return Err(RuleError::SizeMismatch {
                source_w: source.width(),
                source_h: source.height(),
                edited_w: mask.width(),
                edited_h: mask.height(),
            });
        }
        let (w, h) = (source.width(), source.height());
        let n = (w * h) as usize;
        let edit = a.report.edit;
        let count = |r: ObjectRef| {
            a.s.blobs
                .iter()
                .filter(|b| b.colour == r.colour && b.shape == r.shape)
                .count()
        };
        let clarity = match edit {
            Edit::Add { object, .. } => {
                if count(object) == 0 {
                    10
                } else {
                    5
                }
            }
            _ => match edit.target().map(count) {
                None | Some(1) => 10,
                Some(0) => 3,
                Some(_) => 5,
            },
        };
        let mut region = vec![false; n];
        let mut area = 0.0;
        match edit {
            Edit::Background { .. } => {
                for (r, l) in region.iter_mut().zip(&a.s.label) {
                    *r = l.is_none();
                }
            }
            Edit::Tone { .. } | Edit::Mosaic => region.iter_mut().for_each(|r| *r = true),
            _ => {
                if let Some(i) = a.target {
                    area = a.s.blobs[i].area;
                    for &p in &a.s.blobs[i].pixels {
                        region[p as usize] = true;
                    }
                }
                if let Some(j) = a.result {
                    if a.target.is_none() {
                        area = a.t.blobs[j].area;
                    }
                    for &p in &a.t.blobs[j].pixels {
                        region[p as usize] = true;
                    }
                }
            }
        }
        let m = mask_bits(mask);
        let tol = ((0.04 * w.min(h) as f64).round() as u32).max(2);
        let grown = grow(&region, w, h, tol);
        let both = |x: &[bool], y: &[bool]| x.iter().zip(y).filter(|(a, b)| **a && **b).count();
        let region_n = region.iter().filter(|r| **r).count();
        let mask_n = m.iter().filter(|r| **r).count();
        let accuracy = if region_n == 0 || mask_n == 0 {
            0.0
        } else {
            both(&m, &region) as f64 / region_n as f64 * both(&m, &grown) as f64 / mask_n as f64
        };
        let prominence = match edit {
            Edit::Background { .. } | Edit::Tone { .. } | Edit::Mosaic => 1.0,
            _ => (area / n as f64 / 0.03).sqrt().min(1.0),
        };
        let score = |x: f64| (1.0 + 9.0 * x.clamp(0.0, 1.0)).round() as u32;
        Ok(FilterAnswer {
            instruction_clarity: clarity,
            mask_accuracy: score(accuracy),
            target_prominence: score(prominence),
        })
    }

    /// The answer text to `prompt`, in the JSON form it asks for: `reward` and
    /// `reward-single` (integer scores, rounded), `curation-locate`, `curation-refine` and
    /// `curation-filter`; other prompts are not supported.
    pub fn answer(&self, prompt: &Prompt, req: &JudgeRequest) -> Result<String, JudgeError> {
        prompt.render_user(|n| req.var(n))?;
        let mask = if prompt.images.contains(&ImageRole::Mask) {
            Some(req.mask.as_ref().ok_or_else(|| JudgeError::MissingImage {
                prompt: prompt.key(),
                role: ImageRole::Mask,
            })?)
        } else {
            None
        };
        let rule = |e: RuleError| JudgeError::Rule(e.to_string());
        let (src, edt, instr) = (
            req.source.pixels(),
            req.edited.pixels(),
            req.instruction.as_str(),
        );
        let json = match prompt.id {
            id if id == prompts::REWARD.id || id == prompts::REWARD_SINGLE.id => {
                let r = self.evaluate(src, edt, instr).map_err(rule)?;
                if id == prompts::REWARD.id {
                    serde_json::json!({
                        "editing_effect": (5.0 * r.effect).round() as u32,
                        "visual_quality": (5.0 * r.quality).round() as u32,
                    })
                } else {
                    serde_json::json!({"score": (2.5 * (r.effect + r.quality)).round() as u32})
                }
            }
            id if id == prompts::LOCATE.id => {
                serde_json::to_value(self.locate(src, edt, instr).map_err(rule)?)
                    .expect("an answer serialises")
            }
            id if id == prompts::REFINE.id => {
                let mask = mask.expect("checked above").pixels();
                serde_json::json!({"refined_instruction": self.refine(src, edt, instr, mask).map_err(rule)?})
            }
            id if id == prompts::FILTER.id => {
                let mask = mask.expect("checked above").pixels();
                serde_json::to_value(self.filter(src, edt, instr, mask).map_err(rule)?)
                    .expect("an answer serialises")
            }
            _ => {
                return Err(JudgeError::Unsupported {
                    judge: self.describe(),
                    prompt: prompt.key(),
                });
            }
        };
        // field order as the prompt lists them
        let obj: serde_json::Map<String, serde_json::Value> = prompt
            .fields
            .iter()
            .filter_map(|f| json.get(f.name).map(|v| (f.name.to_string(), v.clone())))
            .collect();
        Ok(serde_json::to_string(&serde_json::Value::Object(obj)).expect("JSON serialises"))
    }
}

impl Judge for RuleJudge {
    fn describe(&self) -> String {
        format!(
            "rule(min_area_fraction={}, variant={:?})",
            self.config.min_area_fraction, self.config.variant
        )
    }

    fn ask<'a>(
        &'a self,
        prompt: &'a Prompt,
        request: &'a JudgeRequest,
    ) -> BoxFuture<'a, Result<Asked, Invalid>> {
        async move {
            let invalid = |error, raw| Invalid {
                error,
                attempts: 0,
                raw,
            };
            let text = self.answer(prompt, request).map_err(|e| invalid(e, None))?;
            let answer = extract::extract(prompt, &text, None, Extraction::Generate)
                .and_then(|a| {
                    extract::check_boxes(
                        prompt,
                        &a,
                        request.source.width(),
                        request.source.height(),
                    )
                    .map(|()| a)
                })
                .map_err(|e| invalid(JudgeError::Answer(e), Some(text.clone())))?;
            Ok(Asked {
                answer,
                raw: text,
                cached: false,
                attempts: 0,
            })
        }
        .boxed()
    }

    fn judge<'a>(&'a self, request: &'a JudgeRequest) -> BoxFuture<'a, Verdict> {
        async move {
            let report = self
                .evaluate(
                    request.source.pixels(),
                    request.edited.pixels(),
                    &request.instruction,
                )
                .map_err(|e| Invalid {
                    error: JudgeError::Rule(e.to_string()),
                    attempts: 0,
                    raw: None,
                })?;
            Ok(Judgement {
                scores: self.scores(&report),
                raw: serde_json::to_string(&report).expect("a report serialises"),
                prompt: "rule@1".into(),
                cached: false,
                attempts: 0,
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::super::instruction::{Colour, Direction, Tone};
    use super::super::scene::{add_noise, render, sample, to_rgb};
    use super::*;
    use crate::data::synth::{BACKGROUND_TONES, Background, EditType, Object, Scene, Shape};

    fn col(name: &str) -> usize {
        Colour::from_name(name).unwrap().0
    }

    fn obj(shape: Shape, colour: &str, r: f32, cx: f32, cy: f32) -> Object {
        Object {
            shape,
            color: col(colour),
            cx,
            cy,
            r,
        }
    }

    /// A 64-pixel scene with three objects and room around each.
    fn scene() -> Scene {
        Scene {
            size: 64,
            background: Background::Stripes {
                a: BACKGROUND_TONES[0].1,
                b: BACKGROUND_TONES[0].1.map(|v| v * 0.82),
                period: 5.0,
                diagonal: true,
            },
            background_name: BACKGROUND_TONES[0].0.into(),
            objects: vec![
                obj(Shape::Circle, "red", 7.0, 32.0, 20.0),
                obj(Shape::Square, "green", 6.0, 14.0, 48.0),
                obj(Shape::Triangle, "blue", 7.0, 50.0, 48.0),
            ],
        }
    }

    fn with(mut s: Scene, f: impl FnOnce(&mut Scene)) -> Scene {
        f(&mut s);
        s
    }

    fn judge(src: &Scene, edited: &RgbImage, instruction: &str) -> RuleReport {
        RuleJudge::default()
            .evaluate(&render(src), edited, instruction)
            .unwrap()
    }

    /// (instruction, the correctly edited scene) for each kind of edit.
    fn correct_edits() -> Vec<(&'static str, Scene)> {
        let s = scene();
        vec![
            (
                "replace the red circle with a yellow triangle",
                with(s.clone(), |s| {
                    s.objects[0].shape = Shape::Triangle;
                    s.objects[0].color = col("yellow");
                }),
            ),
            (
                "turn the red circle into a red square",
                with(s.clone(), |s| s.objects[0].shape = Shape::Square),
            ),
            (
                "remove the red circle",
                with(s.clone(), |s| {
                    s.objects.remove(0);
                }),
            ),
            (
                "add a purple circle in the top left",
                with(s.clone(), |s| {
                    s.objects
                        .push(obj(Shape::Circle, "purple", 6.0, 10.0, 10.0))
                }),
            ),
            (
                "add an orange triangle",
                with(s.clone(), |s| {
                    s.objects
                        .push(obj(Shape::Triangle, "orange", 6.0, 54.0, 12.0))
                }),
            ),
            (
                "make the red circle blue",
                with(s.clone(), |s| s.objects[0].color = col("blue")),
            ),
            (
                "make the red circle bigger",
                with(s.clone(), |s| s.objects[0].r *= 1.4),
            ),
            (
                "shrink the red circle",
                with(s.clone(), |s| s.objects[0].r *= 0.65),
            ),
            (
                "move the red circle to the left",
                with(s.clone(), |s| s.objects[0].cx -= 11.2),
            ),
            (
                "slide the red circle to the right",
                with(s.clone(), |s| s.objects[0].cx += 11.2),
            ),
            (
                "change the background to mint",
                with(s.clone(), |s| {
                    s.background = Background::Noise {
                        base: BACKGROUND_TONES[3].1,
                        amplitude: 0.08,
                        seed: 2,
                    };
                }),
            ),
        ]
    }

    #[test]
    fn correct_edits_score_high() {
        let s = scene();
        for (instruction, edited) in correct_edits() {
            let rep = judge(&s, &render(&edited), instruction);
            assert!(rep.effect > 0.95, "`{instruction}`: {rep:#?}");
            assert!(rep.quality > 0.9, "`{instruction}`: {rep:#?}");
        }
    }

    #[test]
    fn no_op_edits_score_low_on_effect() {
        let s = scene();
        for (instruction, _) in correct_edits() {
            let rep = judge(&s, &render(&s), instruction);
            assert!(rep.effect < 0.05, "`{instruction}`: {rep:#?}");
            assert!(
                rep.quality > 0.9,
                "a no-op is clean: `{instruction}`: {rep:#?}"
            );
        }
    }

    #[test]
    fn wrong_edits_score_low() {
        let s = scene();
        // asked blue, got purple
        let purple = with(s.clone(), |s| s.objects[0].color = col("purple"));
        assert!(judge(&s, &render(&purple), "make the red circle blue").effect < 0.05);
        // the wrong object changed colour
        let wrong = with(s.clone(), |s| s.objects[1].color = col("blue"));
        assert!(judge(&s, &render(&wrong), "make the red circle blue").effect < 0.05);
        // the wrong object went
        let wrong = with(s.clone(), |s| {
            s.objects.remove(1);
        });
        assert!(judge(&s, &render(&wrong), "remove the red circle").effect < 0.05);
        // moved right instead of left
        let right = with(s.clone(), |s| s.objects[0].cx += 11.2);
        assert!(judge(&s, &render(&right), "move the red circle to the left").effect < 0.05);
        // smaller instead of bigger
        let smaller = with(s.clone(), |s| s.objects[0].r *= 0.65);
        assert!(judge(&s, &render(&smaller), "make the red circle bigger").effect < 0.05);
        // the right shape in the wrong colour: half the change
        let cyanish = with(s.clone(), |s| {
            s.objects[0].shape = Shape::Triangle;
            s.objects[0].color = col("orange");
        });
        let rep = judge(
            &s,
            &render(&cyanish),
            "replace the red circle with a yellow triangle",
        );
        assert!((rep.achieved - 0.5).abs() < 1e-9, "{rep:#?}");
        // added in the wrong quadrant: half
        let placed = with(s.clone(), |s| {
            s.objects
                .push(obj(Shape::Circle, "purple", 6.0, 54.0, 10.0))
        });
        let rep = judge(&s, &render(&placed), "add a purple circle in the top left");
        assert!((rep.achieved - 0.5).abs() < 1e-9, "{rep:#?}");
        // wrong background tone
        let sand = with(s.clone(), |s| {
            s.background = Background::Noise {
                base: BACKGROUND_TONES[1].1,
                amplitude: 0.05,
                seed: 1,
            }
        });
        assert_eq!(
            judge(&s, &render(&sand), "change the background to mint").effect,
            0.0
        );
    }

    #[test]
    fn collateral_damage_lowers_effect() {
        let s = scene();
        let both = with(s.clone(), |s| {
            s.objects[0].color = col("blue");
            s.objects.remove(1);
        });
        let rep = judge(&s, &render(&both), "make the red circle blue");
        assert_eq!(rep.achieved, 1.0);
        assert!((rep.preserved - 0.5).abs() < 1e-9, "{rep:#?}");
        assert!((rep.effect - 0.75).abs() < 1e-9);
    }

    #[test]
    fn noisy_edits_score_lower_quality() {
        let s = scene();
        let edited = render(&with(s.clone(), |s| s.objects[0].color = col("yellow")));
        let clean = judge(&s, &edited, "make the red circle yellow");
        let bx = (22, 10, 42, 30); // the circle's box, grown
        for (sigma, max_quality) in [(8.0, 0.8), (25.0, 0.35)] {
            let rep = judge(
                &s,
                &add_noise(&edited, sigma, bx, 5),
                "make the red circle yellow",
            );
            assert!(rep.quality < max_quality, "σ {sigma}: {rep:#?}");
            assert!(
                rep.quality < clean.quality - 0.15,
                "σ {sigma}: {} vs clean {}",
                rep.quality,
                clean.quality
            );
            assert!(rep.effect > 0.9, "noise does not undo the edit: {rep:#?}");
        }
    }

    #[test]
    fn deterministic_and_errors_are_typed() {
        let s = scene();
        let t = render(&with(s.clone(), |s| s.objects[0].cx -= 11.2));
        assert_eq!(
            judge(&s, &t, "move the red circle left"),
            judge(&s, &t, "move the red circle left")
        );
        let j = RuleJudge::default();
        assert_eq!(
            j.evaluate(&render(&s), &t, "rotate the red circle")
                .unwrap_err()
                .to_string(),
            "cannot read instruction `rotate the red circle`: unknown verb `rotate`"
        );
        assert_eq!(
            j.evaluate(&render(&s), &RgbImage::new(4, 4), "remove the red circle")
                .unwrap_err()
                .to_string(),
            "the source is 64×64 but the edited image is 4×4"
        );
        assert_eq!(
            j.evaluate(
                &RgbImage::new(0, 0),
                &RgbImage::new(0, 0),
                "remove the red circle"
            )
            .unwrap_err()
            .to_string(),
            "the images are empty"
        );
        let _ = (Direction::Left, Tone(0));
    }

    /// Over the world's own samples (every edit type, 32 and 64 pixels): the correct target
    /// scores high with the short and the refined instruction, the untouched source low.
    #[test]
    fn world_samples_score_high_and_their_no_ops_low() {
        let j = RuleJudge::default();
        let types = [EditType::LOCAL.as_slice(), EditType::GLOBAL.as_slice()].concat();
        let mut effects = Vec::new();
        let mut failures = Vec::new();
        for size in [32, 64] {
            for seed in 0..60u64 {
                let t = types[seed as usize % types.len()];
                let Some(e) = sample(seed, size, t) else {
                    continue;
                };
                let (src, tgt) = (to_rgb(&e.source_image), to_rgb(&e.target_image));
                for text in [&e.instruction, &e.instruction_refined] {
                    let rep = j.evaluate(&src, &tgt, text).unwrap();
                    effects.push(rep.effect);
                    if rep.effect < 0.8 || rep.quality < 0.8 {
                        failures.push(format!(
                            "{size}px seed {seed} `{text}`: effect {:.2} quality {:.2} {:?}",
                            rep.effect, rep.quality, rep.notes
                        ));
                    }
                }
                let rep = j.evaluate(&src, &src, &e.instruction).unwrap();
                if rep.effect > 0.1 {
                    failures.push(format!(
                        "{size}px seed {seed} no-op `{}`: effect {:.2}",
                        e.instruction, rep.effect
                    ));
                }
            }
        }
        // 32-pixel objects can be 3 pixels across: allow a few misreadings, no more.
        assert!(
            failures.len() * 50 <= effects.len(),
            "{} of {}:\n{}",
            failures.len(),
            effects.len(),
            failures.join("\n")
        );
    }
}
