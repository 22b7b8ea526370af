//! The three curation stages for one sample (method-spec §7): annotate (judge prompt A.2 →
//! edit type, object, box; segmenter → mask), refine and augment (prompt A.3 → refined
//! instruction; mask dilation), score (prompt A.4 → clarity, mask accuracy, prominence).
//! The filter itself (threshold, keep area, types) is applied later over the stored scores,
//! so changing it costs no calls.
//!
//! A sample ends either [`Annotated`] or [`Rejected`] (a property of the sample: it is
//! stored and never retried), or in a [`StepError::Service`] (the judge or the segmenter did
//! not answer: the sample's shard is not committed and a re-run asks again), or
//! [`StepError::Fatal`] (a configuration problem that no sample can get past).

use super::source::{ReadError, Sample};
use crate::imageio::{self, Png};
use crate::judge::extract::AnswerError;
use crate::judge::prompts::{self, Prompt};
use crate::judge::{Asked, Invalid, Judge, JudgeError, JudgeImage, JudgeRequest};
use crate::segment::client::{CallError, SegmentClient};
use crate::segment::{BoxPx, SegmentError, Segmenter as _};
use crate::synth::ColorSegmenter;
use image::{GrayImage, RgbImage};
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

fn reject(stage: &str, reason: &str, message: impl Into<String>) -> Result<Verdict, StepError> {
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

/// Runs the three stages on one sample.
pub async fn curate(env: &Env, index: usize, s: &Sample) -> Result<Outcome, StepError> {
    let result = stages(env, s).await?;
    Ok(Outcome {
        index,
        key: Some(s.key.clone()),
        origin: s.origin.clone(),
        hint: s.edit_type.clone(),
        result,
    })
}

/// How a judge failure counts: a bad answer is the sample's problem, a silent server is not.
fn judge_failure(stage: &str, prompt: &Prompt, e: Invalid) -> Result<Verdict, StepError> {
    let msg = format!("{}: {e}", prompt.key());
    match &e.error {
        JudgeError::Answer(AnswerError::BadBox { .. }) => reject(stage, "bad-box", msg),
        // a server without logprobs never will have them: a setting to fix, not a sample
        JudgeError::Answer(AnswerError::NoLogprobs) => Err(StepError::Fatal(msg)),
        JudgeError::Answer(_) => reject(stage, "judge-answer", msg),
        JudgeError::Rule(_) => reject(stage, "judge-declined", msg),
        JudgeError::Unsupported { .. }
        | JudgeError::Prompt(_)
        | JudgeError::MissingImage { .. } => Err(StepError::Fatal(msg)),
        JudgeError::Status { status, .. } => status_failure(stage, *status, msg),
        JudgeError::Timeout { .. }
        | JudgeError::Connection(_)
        | JudgeError::MalformedResponse(_) => Err(StepError::Service(msg)),
    }
}

/// An HTTP status after the client's retries: 429, 408 and 5xx are the service's state (asked
/// again on a re-run); 401/403/404 are its configuration (nothing can pass); any other 4xx
/// (e.g. 400 "prompt too long", 413 "image too large") is this sample, refused for good.
fn status_failure(stage: &str, status: u16, msg: String) -> Result<Verdict, StepError> {
    match status {
        401 | 403 | 404 => Err(StepError::Fatal(msg)),
        408 | 429 => Err(StepError::Service(msg)),
        400..=499 => reject(stage, "service-refused", msg),
        _ => Err(StepError::Service(msg)),
    }
}

async fn ask(env: &Env, prompt: &Prompt, req: &JudgeRequest) -> Result<Asked, Invalid> {
    env.counters.judge.fetch_add(1, Ordering::Relaxed);
    let a = env.judge.ask(prompt, req).await;
    if let Ok(a) = &a
        && a.cached
    {
        env.counters.judge_cached.fetch_add(1, Ordering::Relaxed);
    }
    a
}

fn mask_rgb(m: &GrayImage) -> JudgeImage {
    JudgeImage::from_rgb(RgbImage::from_fn(m.width(), m.height(), |x, y| {
        let v = m.get_pixel(x, y).0[0];
        image::Rgb([v, v, v])
    }))
}

/// Square (Chebyshev) dilation by `px`, as the synthetic world dilates its masks.
pub fn dilate(m: &GrayImage, px: u32) -> GrayImage {
    if px == 0 {
        return m.clone();
    }
    let (w, h) = m.dimensions();
    // rows, then columns (separable for a square element)
    let mut rows = GrayImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let lo = x.saturating_sub(px);
            let hi = (x + px).min(w - 1);
            if (lo..=hi).any(|xx| m.get_pixel(xx, y).0[0] >= 128) {
                rows.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    let mut out = GrayImage::new(w, h);
    for y in 0..h {
        let lo = y.saturating_sub(px);
        let hi = (y + px).min(h - 1);
        for x in 0..w {
            if (lo..=hi).any(|yy| rows.get_pixel(x, yy).0[0] >= 128) {
                out.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    out
}

/// The box as a mask (pixels whose centre lies inside).
fn box_mask(w: u32, h: u32, b: BoxPx) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        image::Luma([if b.contains(x, y) { 255 } else { 0 }])
    })
}

/// Pixels that differ by more than `t` (max over channels, in [0, 1]).
fn difference_mask(a: &RgbImage, b: &RgbImage, t: f64) -> GrayImage {
    let lim = (t * 255.0).round() as i32;
    GrayImage::from_fn(a.width(), a.height(), |x, y| {
        let (p, q) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
        let d = (0..3)
            .map(|c| (p[c] as i32 - q[c] as i32).abs())
            .max()
            .unwrap_or(0);
        image::Luma([if d > lim { 255 } else { 0 }])
    })
}

fn encode_png(m: &GrayImage) -> String {
    imageio::to_base64(&imageio::grey_png(m, Png::Default))
}

fn area(m: &GrayImage) -> usize {
    m.as_raw().iter().filter(|v| **v >= 128).count()
}

async fn stages(env: &Env, s: &Sample) -> Result<Verdict, StepError> {
    // ---- read
    let decode = |what: &str, bytes: &[u8]| {
        imageio::decode(bytes)
            .map(|i| i.to_rgb8())
            .map_err(|e| format!("the {what} image does not decode: {}", e.reason()))
    };
    let source = match decode("source", &s.source) {
        Ok(i) => i,
        Err(m) => return reject("read", "corrupt-image", m),
    };
    let edited = match decode("edited", &s.edited) {
        Ok(i) => i,
        Err(m) => return reject("read", "corrupt-image", m),
    };
    if source.dimensions() != edited.dimensions() {
        return reject(
            "read",
            "size-mismatch",
            format!(
                "the source is {}×{}, the edited image {}×{}",
                source.width(),
                source.height(),
                edited.width(),
                edited.height()
            ),
        );
    }
    let (w, h) = source.dimensions();
    let src = JudgeImage::from_rgb(source.clone());
    let edt = JudgeImage::from_rgb(edited.clone());

    // ---- stage 1: annotate
    let hint = s.edit_type.clone().unwrap_or_else(|| "unknown".into());
    let req = JudgeRequest::new(src.clone(), edt.clone(), s.instruction.clone())
        .with_var("edit_type", hint);
    let located = match ask(env, &prompts::LOCATE, &req).await {
        Ok(a) => a,
        Err(e) => return judge_failure("annotate", &prompts::LOCATE, e),
    };
    let field = |name: &str| located.answer.text(name).map(|t| t.trim().to_string());
    let (judge_type, object) = match (field("edit_type"), field("edited_object")) {
        (Ok(t), Ok(o)) => (t, o),
        (Err(e), _) | (_, Err(e)) => {
            return reject(
                "annotate",
                "judge-answer",
                format!("{}: {e}", prompts::LOCATE.key()),
            );
        }
    };
    let Some(edit_type) = local_type(&judge_type) else {
        return reject(
            "annotate",
            "not-local",
            format!(
                "the judge calls the edit `{judge_type}`, not one of the local types {LOCAL_TYPES:?}"
            ),
        );
    };
    let bbox = match located.answer.bounding_box("bounding_box", w, h) {
        Ok(b) => b,
        Err(e) => {
            return reject(
                "annotate",
                "bad-box",
                format!("{}: {e}", prompts::LOCATE.key()),
            );
        }
    };
    let (xs, ys) = bbox.pixel_range(w, h);
    if xs.is_empty() || ys.is_empty() {
        return reject(
            "annotate",
            "bad-box",
            format!(
                "box {:?} covers no pixel centre",
                [bbox.x1, bbox.y1, bbox.x2, bbox.y2]
            ),
        );
    }
    let bx = BoxPx::new(xs.start, ys.start, xs.end, ys.end);
    let on = if edit_type == "add" { &edt } else { &src };
    let (mask, mask_from, segment_score) =
        if edit_type == "background" && env.config.background_mask == BackgroundMask::Difference {
            let m = difference_mask(&source, &edited, env.config.difference_threshold);
            if area(&m) == 0 {
                return reject(
                    "annotate",
                    "no-object",
                    "the source and edited images do not differ",
                );
            }
            (m, "difference", None)
        } else {
            match segment(env, on, bx).await? {
                Ok((m, score)) => (m, "segmenter", score),
                Err((reason, message)) => {
                    if env.config.box_fallback && reason == "no-object" {
                        (box_mask(w, h, bx), "box", None)
                    } else {
                        return reject("annotate", reason, message);
                    }
                }
            }
        };

    let mask = if env.config.difference_union.iter().any(|t| t == edit_type)
        && mask_from != "difference"
    {
        let d = difference_mask(&source, &edited, env.config.difference_threshold);
        GrayImage::from_fn(w, h, |x, y| {
            image::Luma([mask.get_pixel(x, y).0[0].max(d.get_pixel(x, y).0[0])])
        })
    } else {
        mask
    };

    // ---- stage 2: refine the instruction (with the object's mask), dilate the mask
    let req = JudgeRequest::new(src.clone(), edt.clone(), s.instruction.clone())
        .with_mask(mask_rgb(&mask));
    let refined = match ask(env, &prompts::REFINE, &req).await {
        Ok(a) => match a.answer.text("refined_instruction") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            Ok(_) => return reject("refine", "judge-answer", "the refined instruction is empty"),
            Err(e) => {
                return reject(
                    "refine",
                    "judge-answer",
                    format!("{}: {e}", prompts::REFINE.key()),
                );
            }
        },
        Err(e) => return judge_failure("refine", &prompts::REFINE, e),
    };
    let dilated = dilate(&mask, env.config.dilation(edit_type));

    // ---- stage 3: score (the filter is applied over the stored scores)
    let req = JudgeRequest::new(src, edt, refined.clone()).with_mask(mask_rgb(&dilated));
    let scored = match ask(env, &prompts::FILTER, &req).await {
        Ok(a) => a,
        Err(e) => return judge_failure("score", &prompts::FILTER, e),
    };
    let score = |k: &str| scored.answer.scores.get(k).map(|s| s.value);
    let (Some(c), Some(a), Some(p)) = (
        score("instruction_clarity"),
        score("mask_accuracy"),
        score("target_prominence"),
    ) else {
        return reject(
            "score",
            "judge-answer",
            format!("{}: a score is missing", prompts::FILTER.key()),
        );
    };
    let keep_fraction = 1.0 - area(&dilated) as f64 / (w as f64 * h as f64);
    Ok(Verdict::Annotated(Box::new(Annotated {
        edit_type: edit_type.into(),
        judge_type,
        object,
        bbox: [bbox.x1, bbox.y1, bbox.x2, bbox.y2],
        mask_from: mask_from.into(),
        segment_score,
        refined,
        scores: Scores {
            instruction_clarity: c,
            mask_accuracy: a,
            target_prominence: p,
        },
        keep_fraction,
        width: w,
        height: h,
        mask_png: encode_png(&dilated),
    })))
}

type SegResult = Result<(GrayImage, Option<f64>), (&'static str, String)>;

/// The segmenter's mask for `bx` in `image`: `Ok(Err((reason, message)))` when there is
/// no mask for this sample (no object, a box the server refuses), `Err` when the service
/// failed.
async fn segment(env: &Env, image: &JudgeImage, bx: BoxPx) -> Result<SegResult, StepError> {
    let (w, h) = (image.width(), image.height());
    match &env.segmenter {
        Segmenter::Box => Ok(Ok((box_mask(w, h, bx), None))),
        Segmenter::Builtin(seg) => {
            env.counters.segment.fetch_add(1, Ordering::Relaxed);
            Ok(match seg.segment(image.pixels(), bx) {
                Ok(s) => Ok((s.mask, Some(s.score))),
                Err(SegmentError::NoObject(m)) => Err(("no-object", format!("segmenter: {m}"))),
                Err(SegmentError::Box(e)) => Err(("bad-box", format!("segmenter: {e}"))),
            })
        }
        Segmenter::Http(client) => {
            env.counters.segment.fetch_add(1, Ordering::Relaxed);
            match client.segment(image, bx).await {
                Ok(s) => {
                    if s.cached {
                        env.counters.segment_cached.fetch_add(1, Ordering::Relaxed);
                    }
                    if area(&s.mask) == 0 {
                        return Ok(Err(("no-object", "segmenter: the mask is empty".into())));
                    }
                    Ok(Ok((s.mask, Some(s.score))))
                }
                Err(f) => match &f.error {
                    CallError::Status {
                        status: 422,
                        message,
                    } => Ok(Err(("no-object", format!("segmenter: {message}")))),
                    CallError::Status {
                        status: 400,
                        message,
                    } => Ok(Err(("bad-box", format!("segmenter: {message}")))),
                    CallError::Status {
                        status: 401 | 403 | 404,
                        ..
                    } => Err(StepError::Fatal(format!("segmentation: {f}"))),
                    CallError::Status {
                        status: s @ 400..=499,
                        message,
                    } if *s != 408 && *s != 429 => Ok(Err((
                        "service-refused",
                        format!("segmenter: HTTP {s}: {message}"),
                    ))),
                    _ => Err(StepError::Service(format!("segmentation: {f}"))),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_phrases_map_to_local_types() {
        for (p, t) in [
            ("replace", Some("replace")),
            ("add", Some("add")),
            ("remove", Some("remove")),
            ("change colour", Some("attribute")),
            ("change size", Some("attribute")),
            ("change material or texture", Some("attribute")),
            ("move", Some("motion")),
            ("change pose or action", Some("motion")),
            ("change background", Some("background")),
            ("Change Background", Some("background")),
            ("change style", None),
            ("adjust tone", None),
            ("object removal", Some("remove")),
            ("object_removal", Some("remove")),
            ("deletion", Some("remove")),
            ("Subject Addition", Some("add")),
            ("insert an object", Some("add")),
            ("subject extraction", None),
            ("colour shift", Some("attribute")),
            ("color alteration", Some("attribute")),
            ("swap the object", Some("replace")),
            ("turn A into B", Some("replace")),
            ("change action", Some("motion")),
            ("position change", Some("motion")),
            ("address change", None),
            ("style transfer of the whole image", None),
            ("", None),
        ] {
            assert_eq!(local_type(p), t, "{p}");
        }
    }

    #[test]
    fn http_statuses_split_into_sample_service_and_setting_problems() {
        let kind = |status| match status_failure("annotate", status, "m".into()) {
            Ok(Verdict::Rejected(r)) => r.reason,
            Ok(Verdict::Annotated(_)) => unreachable!(),
            Err(StepError::Service(_)) => "service".into(),
            Err(StepError::Fatal(_)) => "fatal".into(),
        };
        for (status, want) in [
            (400, "service-refused"),
            (413, "service-refused"),
            (422, "service-refused"),
            (401, "fatal"),
            (403, "fatal"),
            (404, "fatal"),
            (408, "service"),
            (429, "service"),
            (500, "service"),
            (503, "service"),
        ] {
            assert_eq!(kind(status), want, "{status}");
        }
    }

    #[test]
    fn dilation_is_square_and_clipped() {
        let mut m = GrayImage::new(7, 5);
        m.put_pixel(0, 0, image::Luma([255]));
        m.put_pixel(4, 2, image::Luma([255]));
        let d = dilate(&m, 1);
        // (0,0) grows to a 2×2 corner, (4,2) to a 3×3 block
        assert_eq!(area(&d), 4 + 9);
        assert_eq!(d.get_pixel(1, 1).0[0], 255);
        assert_eq!(d.get_pixel(5, 3).0[0], 255);
        assert_eq!(d.get_pixel(6, 2).0[0], 0);
        assert_eq!(dilate(&m, 0), m);
        assert_eq!(area(&dilate(&m, 10)), 35);
    }

    #[test]
    fn difference_masks_threshold_each_channel() {
        let a = RgbImage::from_pixel(3, 1, image::Rgb([100, 100, 100]));
        let mut b = a.clone();
        b.put_pixel(0, 0, image::Rgb([100, 140, 100]));
        b.put_pixel(1, 0, image::Rgb([110, 110, 110]));
        let m = difference_mask(&a, &b, 0.1);
        assert_eq!(m.as_raw(), &vec![255, 0, 0]);
    }
}
