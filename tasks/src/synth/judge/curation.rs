//! The rule judge's answers to the curation prompts: locate (A.2), refine (A.3) and
//! filter (A.4).

use super::effect::*;
use super::quality::*;
use super::*;

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
pub(super) fn mask_bits(mask: &RgbImage) -> Vec<bool> {
    mask.pixels().map(|p| luma(p.0) > 127.0).collect()
}

/// Chebyshev dilation of a row-major `w`×`h` mask by `d` pixels.
pub(super) fn grow(m: &[bool], w: u32, h: u32, d: u32) -> Vec<bool> {
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
pub(super) fn blob_box(seg: &Segmentation, img: &RgbImage, b: &Blob) -> [u32; 4] {
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
pub(super) fn quadrant(x: f64, y: f64, w: f64, h: f64) -> &'static str {
    match (y < h / 2.0, x < w / 2.0) {
        (true, true) => "top left",
        (true, false) => "top right",
        (false, true) => "bottom left",
        (false, false) => "bottom right",
    }
}

/// The blob of `seg` sharing most pixels with `mask`.
pub(super) fn masked_blob(seg: &Segmentation, mask: &[bool]) -> Option<usize> {
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
}
