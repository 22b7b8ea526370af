//! The editing-effect half of the rule judge: find the named object in both images and
//! score whether the asked change happened (`achieved`) and the rest stayed (`preserved`).

use super::quality::*;
use super::*;

pub(super) fn seen(seg: &Segmentation) -> Vec<SeenObject> {
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

pub(super) fn ramp(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

pub(super) fn bit(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

pub(super) fn best(it: impl Iterator<Item = (usize, f64)>) -> Option<(usize, f64)> {
    it.fold(None, |acc, (j, s)| match acc {
        Some((_, bs)) if bs >= s => acc,
        _ => Some((j, s)),
    })
}

pub(super) struct Ctx<'a> {
    s: &'a Segmentation,
    t: &'a Segmentation,
    tol: f64,
    notes: Vec<String>,
}

impl Ctx<'_> {
    /// The source blob a reference names: the largest of that colour and shape, else the
    /// only blob of that colour.
    pub(super) fn find_source(&mut self, r: ObjectRef) -> Option<usize> {
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

    pub(super) fn same_object(&self, a: &Blob, b: &Blob) -> bool {
        let ratio = b.area / a.area;
        a.colour == b.colour
            && a.shape == b.shape
            && a.distance(b.x, b.y) <= self.tol
            && (0.6..=1.67).contains(&ratio)
    }

    /// Greedy matching of source blobs (but `skip`) to edited blobs (but `reserved`).
    pub(super) fn matches(&self, skip: Option<usize>, reserved: &[usize]) -> Vec<Option<usize>> {
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
    pub(super) fn preserved(&self, target: Option<usize>, result: Option<usize>) -> f64 {
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
    pub(super) fn near(&self, x: f64, y: f64, radius: f64) -> impl Iterator<Item = usize> + '_ {
        (0..self.t.blobs.len())
            .filter(move |&j| self.t.blobs[j].distance(x, y) <= radius + self.tol)
    }

    /// The edited blob sharing most pixels with source blob `i`, and that count.
    pub(super) fn most_overlap(&self, i: usize) -> Option<(usize, usize)> {
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
pub(super) fn becomes(b: &Blob, from: ObjectRef, want: ObjectRef) -> f64 {
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

impl RuleJudge {
    /// [`RuleJudge::evaluate`], keeping the segmentations and the blobs it matched.
    pub(super) fn analyse(
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
}
