//! [`RuleJudge`]: a deterministic judge for the synthetic edit world ([`crate::synth`]).
//! Like a real judge it reads only the source image, the edited image and the instruction.
//!
//! 1. It parses the instruction ([`instruction::parse`]: every phrasing the world
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

use self::instruction::{Edit, ObjectRef, SizeChange, ToneChange};
use self::vision::{Blob, Segmentation};
use crate::judge::extract::{self, Extraction};
use crate::judge::prompts::{self, ImageRole, Prompt};
use crate::judge::{
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

mod consistency;
mod curation;
mod effect;
pub mod instruction;
mod quality;
mod vision;

pub use consistency::ConsistencyAnswer;
pub use curation::{FilterAnswer, LocateAnswer, edit_phrase};

/// The `single` variant's one grade, as the `reward-single` prompt asks a judge for it: an
/// integer 0–5 weighing the editing effect as the main criterion (0.7) and quality (0.3) —
/// not the mean of the two `mean`-variant scores (which made `single` equal `mean`).
pub fn single_grade(effect: f64, quality: f64) -> u32 {
    (5.0 * (0.7 * effect + 0.3 * quality))
        .round()
        .clamp(0.0, 5.0) as u32
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

    /// The configured variant's scores for a report.
    pub fn scores(&self, r: &RuleReport) -> Scores {
        match self.config.variant {
            ScoreVariant::Mean => Scores::Mean {
                effect: r.effect,
                quality: r.quality,
            },
            ScoreVariant::Single => Scores::Single {
                score: f64::from(single_grade(r.effect, r.quality)) / 5.0,
            },
        }
    }

    /// The answer text to `prompt`, in the JSON form it asks for: `reward` and
    /// `reward-single` (integer scores, rounded), `curation-locate`, `curation-refine`,
    /// `curation-filter` and `consistency` (the correlation study's mask-aware background
    /// score, `consistency.rs`); other prompts are not supported.
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
                    serde_json::json!({"score": single_grade(r.effect, r.quality)})
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
            id if id == prompts::CONSISTENCY.id => {
                let mask = mask.expect("checked above").pixels();
                serde_json::to_value(self.consistency(src, edt, mask).map_err(rule)?)
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
mod tests;

#[cfg(test)]
mod single_tests {
    use super::single_grade;

    /// Issue 15, fix 6: `single` is one integer grade on the prompt's 0–5 scale with the
    /// effect as the main criterion, not the mean of effect and quality.
    #[test]
    fn the_single_grade_is_not_the_mean() {
        // effect 1, quality 0: mean 0.5 (2.5/5) — single 0.7·5 = 3.5 → 4.
        assert_eq!(single_grade(1.0, 0.0), 4);
        // effect 0, quality 1: mean 0.5 — single 1.5 → 2.
        assert_eq!(single_grade(0.0, 1.0), 2);
        assert_eq!(single_grade(1.0, 1.0), 5);
        assert_eq!(single_grade(0.0, 0.0), 0);
        assert_eq!(single_grade(0.43, 0.61), 2); // 0.484·5 = 2.42
    }
}
