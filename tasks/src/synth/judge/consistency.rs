//! The rule judge's answer to [`prompts::CONSISTENCY`] (paper C.4): how well the region
//! outside the mask survived the edit, read the way a strict person compares two images,
//! not as a pixel statistic.
//!
//! The judge ignores the white (edited) area of the mask and a 1-pixel rim around it (the
//! seam a viewer attributes to the edit; where nothing else is left, the rim is looked at
//! too) and looks at the rest of the image, the background B (`n` pixels):
//! - **changed**: the fraction `f` of B whose colour changed perceptibly — some channel by
//!   more than [`PERCEPTIBLE`] of 255 (about 5 %; smaller steps are invisible side by side);
//! - **structure**: the fraction `s` of B whose local contrast changed — the luma step to its
//!   right or lower neighbour (both in B) differs between the images by more than
//!   [`STRUCTURE`] of 255: an edge appeared, vanished or moved. What a viewer notices first,
//!   so `s` counts double.
//!
//! `severity = 1 − (1 − f)·(1 − min(1, 2s))`, and the score is 10 only when B is identical
//! pixel for pixel (as the prompt asks); otherwise `round(9 − 8·√severity)` clamped to 1–9:
//! no visible change at all gives 9, 1 % of B visibly changed about 8, a quarter 5, all of it 1.
//! A faint change spread over every pixel is thus judged as harshly as a blotch over all of
//! them, and a few strongly wrong pixels cost as much as a few slightly wrong ones — unlike
//! PSNR, which weighs the squared size of every difference.

use super::quality::luma;
use super::*;

/// A channel step above this (of 255) is visible.
pub const PERCEPTIBLE: u8 = 12;
/// A change of the luma step between neighbours above this (of 255) is a change of structure:
/// an edge appeared, vanished or moved (twice [`PERCEPTIBLE`], so invisible colour noise never
/// counts).
pub const STRUCTURE: f64 = 24.0;

/// The rule judge's answer to [`prompts::CONSISTENCY`], in the prompt's field order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsistencyAnswer {
    pub reasoning: String,
    pub consistency_score: u32,
}

impl RuleJudge {
    /// Background consistency of `edited` against `source` outside `mask` (white = edited),
    /// 1–10 (module docs).
    pub fn consistency(
        &self,
        source: &RgbImage,
        edited: &RgbImage,
        mask: &RgbImage,
    ) -> Result<ConsistencyAnswer, RuleError> {
        let (w, h) = source.dimensions();
        if w == 0 || h == 0 {
            return Err(RuleError::Empty);
        }
        for other in [edited, mask] {
            if other.dimensions() != (w, h) {
                return Err(RuleError::SizeMismatch {
                    source_w: w,
                    source_h: h,
                    edited_w: other.width(),
                    edited_h: other.height(),
                });
            }
        }
        let white = curation::mask_bits(mask);
        let mut bg: Vec<bool> = curation::grow(&white, w, h, 1)
            .iter()
            .map(|&m| !m)
            .collect();
        if !bg.contains(&true) {
            // a background thinner than the rim: look at all of it
            bg = white.iter().map(|&m| !m).collect();
        }
        let n = bg.iter().filter(|&&b| b).count();
        if n == 0 {
            return Err(RuleError::NotFound(
                "the mask leaves no background to compare".into(),
            ));
        }
        let (mut identical, mut changed, mut max_step) = (true, 0usize, 0u8);
        for (i, (a, b)) in source.pixels().zip(edited.pixels()).enumerate() {
            if !bg[i] {
                continue;
            }
            let step = (0..3).map(|c| a.0[c].abs_diff(b.0[c])).max().unwrap_or(0);
            identical &= step == 0;
            max_step = max_step.max(step);
            changed += (step > PERCEPTIBLE) as usize;
        }
        // luma of both images, for the local contrast of each background pixel
        let la: Vec<f64> = source.pixels().map(|p| luma(p.0)).collect();
        let lb: Vec<f64> = edited.pixels().map(|p| luma(p.0)).collect();
        let step_changed =
            |i: usize, j: usize| bg[j] && ((la[j] - la[i]) - (lb[j] - lb[i])).abs() > STRUCTURE;
        let mut moved = 0usize;
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) as usize;
                if bg[i]
                    && ((x + 1 < w && step_changed(i, i + 1))
                        || (y + 1 < h && step_changed(i, i + w as usize)))
                {
                    moved += 1;
                }
            }
        }
        let f = changed as f64 / n as f64;
        let s = moved as f64 / n as f64;
        let severity = 1.0 - (1.0 - f) * (1.0 - (2.0 * s).min(1.0));
        let score = if identical {
            10
        } else {
            (9.0 - 8.0 * severity.sqrt()).round().clamp(1.0, 9.0) as u32
        };
        let reasoning = if identical {
            "the background is identical pixel for pixel".to_string()
        } else {
            format!(
                "{:.1} % of the background changed visibly (largest step {max_step}/255); \
                 structure (edges) changed on {:.1} %",
                100.0 * f,
                100.0 * s
            )
        };
        Ok(ConsistencyAnswer {
            reasoning,
            consistency_score: score,
        })
    }
}
