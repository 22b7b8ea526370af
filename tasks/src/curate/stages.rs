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

use super::source::Sample;
use crate::imageio::{self};
use crate::judge::extract::AnswerError;
use crate::judge::prompts::{self, Prompt};
use crate::judge::{Asked, Invalid, JudgeError, JudgeImage, JudgeRequest};
use crate::segment::client::CallError;
use crate::segment::{BoxPx, SegmentError, Segmenter as _};
use image::GrayImage;
use std::sync::atomic::Ordering;

use super::masks::*;
use super::outcome::reject;
pub use super::outcome::*;

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
    use image::RgbImage;

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
