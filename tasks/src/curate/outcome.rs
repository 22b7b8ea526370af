//! What curating one sample ends in ([`Outcome`]: [`Annotated`], [`Rejected`], or a
//! [`StepError`]), the stages' settings and environment ([`StageConfig`], [`Env`]) and call
//! counters; the local edit types and how judge phrases map onto them.

use super::source::ReadError;
use crate::judge::Judge;
use crate::segment::client::SegmentClient;
use crate::synth::ColorSegmenter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The six local edit types a curated sample may have (paper §3.1).
pub const LOCAL_TYPES: [&str; 6] = [
    "replace",
    "remove",
    "add",
    "attribute",
    "background",
    "motion",
];

/// Maps the judge's free-text edit type (prompt A.2 asks for a short verb phrase; datasets
/// write `object_removal`, `Subject Addition`, ...) to one of [`LOCAL_TYPES`]; `None` for global
/// or unknown kinds of edit (style, tone, extraction, ...). Matching is on words (split at
/// anything not a letter), by stem, in the order: global, background, replace, remove, add,
/// attribute, motion (so "colour shift" is an attribute change).
pub fn local_type(phrase: &str) -> Option<&'static str> {
    let lower = phrase.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    let stem = |stems: &[&str]| words.iter().any(|w| stems.iter().any(|s| w.starts_with(s)));
    let word = |list: &[&str]| words.iter().any(|w| list.contains(w));
    let pair = |a: &str, b: &str| words.windows(2).any(|p| p[0] == a && p[1] == b);
    if stem(&["style", "stylis", "styliz", "tone", "extract", "filter"]) || pair("whole", "image") {
        None
    } else if stem(&["background", "backdrop"]) {
        Some("background")
    } else if stem(&["replac", "swap", "substitut", "exchang"]) || word(&["into"]) {
        Some("replace")
    } else if stem(&["remov", "delet", "eras", "eliminat"])
        || pair("take", "away")
        || pair("get", "rid")
    {
        Some("remove")
    } else if word(&["add", "adds", "added", "adding", "addition", "put", "place"])
        || stem(&["insert"])
    {
        Some("add")
    } else if stem(&[
        "colour",
        "color",
        "size",
        "resiz",
        "material",
        "textur",
        "attribut",
        "shape",
        "bigger",
        "smaller",
        "larger",
        "appearance",
    ]) {
        Some("attribute")
    } else if stem(&[
        "move", "moving", "motion", "pose", "posture", "position", "shift", "relocat",
    ]) || word(&["action", "actions"])
    {
        Some("motion")
    } else {
        None
    }
}

/// The segmenter the annotate stage asks.
pub enum Segmenter {
    /// The built-in colour segmenter, in-process (the synthetic world).
    Builtin(ColorSegmenter),
    /// A server of the segmentation protocol (`cocoflow segment serve`, `tools/sam2_server.py`).
    Http(SegmentClient),
    /// No segmenter: the box itself is the mask.
    Box,
}

/// How the mask of a background edit is made: its "object" is the whole backdrop, whose box
/// is the whole image, so a box-prompted segmenter has nothing to go on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum BackgroundMask {
    /// Pixels whose colour differs between source and edited image by more than
    /// `difference_threshold` (max over channels, in [0, 1]).
    #[default]
    Difference,
    /// Ask the segmenter with the judge's box, like any other type.
    Segment,
}

/// Stage settings that change what a sample's annotation is (so they enter shard keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct StageConfig {
    pub box_fallback: bool,
    pub background_mask: BackgroundMask,
    pub difference_threshold: f64,
    pub dilate_px: u32,
    pub dilate_px_replace: u32,
    pub dilate_px_motion: u32,
    /// Types whose mask is the segmentation united with the changed pixels (`motion`: the
    /// object leaves its box, and the box is in the source).
    pub difference_union: Vec<String>,
}

impl StageConfig {
    pub fn dilation(&self, edit_type: &str) -> u32 {
        match edit_type {
            "replace" => self.dilate_px_replace,
            "motion" => self.dilate_px_motion,
            _ => self.dilate_px,
        }
    }
}

/// Calls made (not answered from a shard already committed).
#[derive(Debug, Default)]
pub struct Counters {
    pub judge: AtomicU64,
    /// Of `judge`, answered from the judge's response cache.
    pub judge_cached: AtomicU64,
    pub segment: AtomicU64,
    /// Of `segment`, answered from the segmentation response cache.
    pub segment_cached: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> CallCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallCounts {
            judge: g(&self.judge),
            judge_cached: g(&self.judge_cached),
            segment: g(&self.segment),
            segment_cached: g(&self.segment_cached),
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct CallCounts {
    pub judge: u64,
    pub judge_cached: u64,
    pub segment: u64,
    pub segment_cached: u64,
}

/// What the stages need.
pub struct Env {
    pub judge: Arc<dyn Judge>,
    pub segmenter: Segmenter,
    pub config: StageConfig,
    pub counters: Counters,
}

/// The three scores of prompt A.4, on its 1–10 scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Scores {
    pub instruction_clarity: f64,
    pub mask_accuracy: f64,
    pub target_prominence: f64,
}

impl Scores {
    pub fn mean(&self) -> f64 {
        (self.instruction_clarity + self.mask_accuracy + self.target_prominence) / 3.0
    }
}

/// A sample that went through all three stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Annotated {
    /// One of [`LOCAL_TYPES`].
    pub edit_type: String,
    /// The judge's own phrase for the edit.
    pub judge_type: String,
    pub object: String,
    /// `[x1, y1, x2, y2]`, exclusive corners, in the edited image for `add`, else the source.
    pub bbox: [f64; 4],
    /// `segmenter`, `box` (fallback, or no segmenter) or `difference` (background edits).
    pub mask_from: String,
    /// The segmenter's confidence, when it gave the mask.
    pub segment_score: Option<f64>,
    pub refined: String,
    pub scores: Scores,
    /// Share of the image outside the dilated mask (what r_sim is computed on).
    pub keep_fraction: f64,
    pub width: u32,
    pub height: u32,
    /// The dilated edit mask, base64 greyscale PNG (255 = edit).
    pub mask_png: String,
}

/// Why a sample is out, for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rejected {
    /// `read`, `annotate`, `refine` or `score`.
    pub stage: String,
    /// A short code counted in the statistics (`corrupt-image`, `bad-box`, `no-object`, …).
    pub reason: String,
    pub message: String,
}

/// The stored outcome of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    /// Position in the dataset.
    pub index: usize,
    pub key: Option<String>,
    pub origin: String,
    /// The dataset's own edit type, when it has one.
    pub hint: Option<String>,
    #[serde(flatten)]
    pub result: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Verdict {
    Annotated(Box<Annotated>),
    Rejected(Rejected),
}

/// Why a sample has no outcome yet.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// A service did not answer (after its retries); asked again on a re-run.
    Service(String),
    /// Nothing can work (e.g. the judge does not support a curation prompt).
    Fatal(String),
}

pub(crate) fn reject(
    stage: &str,
    reason: &str,
    message: impl Into<String>,
) -> Result<Verdict, StepError> {
    Ok(Verdict::Rejected(Rejected {
        stage: stage.into(),
        reason: reason.into(),
        message: message.into(),
    }))
}

impl Outcome {
    pub fn unreadable(index: usize, e: ReadError) -> Outcome {
        Outcome {
            index,
            key: e.key,
            origin: e.origin,
            hint: None,
            result: Verdict::Rejected(Rejected {
                stage: "read".into(),
                reason: e.reason,
                message: e.message,
            }),
        }
    }
}
