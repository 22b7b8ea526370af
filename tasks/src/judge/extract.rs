//! Reading scores out of a judge's answer.
//!
//! `generate`: the answer must be one JSON object (optionally inside a single ```json fence)
//! holding every field of the prompt with the right type; scores must lie in their range.
//!
//! `logprobs` (method-spec §2; Edit-R1 reads first-token logits the same way): the answer is
//! parsed as above, then for every score field that the prompt marks `logprobs`:
//! 1. concatenate the tokens of `logprobs.content` into the generated text `t`;
//! 2. find the field's value in `t`: the first `"name"` followed by optional whitespace, `:`,
//!    optional whitespace and a digit; that digit's byte offset is the *score position*;
//! 3. take the token whose span holds the score position; the text of that token before the
//!    position is its *prefix* (e.g. the space of `" 4"`);
//! 4. candidates are its `top_logprobs` entries that, after removing that prefix (or leading
//!    whitespace), start with an integer `v` (not followed by `.`);
//! 5. on a scale with two-digit values (0–10, 1–10) a candidate `"1"` that the token does not
//!    end (no `,` or `}` after it in the same token) is the start of 10 or is 1 (method-spec
//!    §2). Its probability is split between the two readings:
//!    - the emitted token: by the next position's distribution (its `top_logprobs` and the
//!      emitted token, renormalised over what gives an in-range value): a digit extends the
//!      number (`"0"` → 10), anything else ends it (→ 1);
//!    - a tokenizer with multi-digit tokens (the emitted number or a candidate has two digits
//!      in one token: `"10"`): it is 1;
//!    - otherwise (a digit-split tokenizer, another digit emitted) its continuation is unknown:
//!      the readings share it in proportion to the probability of their neighbouring values
//!      among the other candidates (`p(9)` for 10, `p(0) + p(2)` for 1), and with no
//!      neighbour it is left out;
//! 6. the score is `E = Σ p·v / Σ p` over the in-range values, i.e. the expectation
//!    renormalised over the valid digit tokens.
//!
//! An emitted number spanning more than two tokens falls back to the parsed value (and says
//! so in [`FieldScore::method`]). A response without logprobs is an error in `logprobs` mode,
//! not a silent switch to `generate`.

use super::prompts::{FieldKind, Prompt};
use super::wire::TokenLogprob;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

mod logprobs;

pub use logprobs::expected_digit;
pub(crate) use logprobs::score_position;

/// How scores are read from an answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Extraction {
    /// Expected value over the digit tokens' probabilities (needs `top_logprobs`).
    #[default]
    Logprobs,
    /// The integer written in the JSON answer.
    Generate,
}

/// Why an answer gives no usable scores.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    #[error("the response has no choices")]
    NoChoices,
    #[error("the answer is empty")]
    Empty,
    #[error("the answer is not a single JSON object: {reason}")]
    NotJson { reason: String },
    #[error("the answer lacks the field `{field}`")]
    MissingField { field: String },
    #[error("field `{field}` should be {expected}, got `{got}`")]
    WrongType {
        field: String,
        expected: &'static str,
        got: String,
    },
    #[error("field `{field}` is {value}, outside {min}..={max}")]
    OutOfRange {
        field: String,
        value: f64,
        min: u32,
        max: u32,
    },
    /// A benchmark's own prompt ([`super::published`]): its script could not read the answer.
    #[error("the answer cannot be read the way {reader} reads it: {reason}")]
    Unparsed {
        reader: &'static str,
        reason: String,
    },
    #[error(
        "the response carries no token logprobs (the server must return `top_logprobs`; or use extraction `generate`)"
    )]
    NoLogprobs,
    #[error("cannot find the digit of `{field}` among the answer's tokens")]
    ScorePosition { field: String },
    #[error("no digit token in {min}..={max} among the top logprobs of `{field}`")]
    NoDigitCandidates { field: String, min: u32, max: u32 },
    #[error("field `{field}` is not a usable box: {error}")]
    BadBox { field: String, error: BoxError },
    #[error(
        "the answer was cut off at `max_tokens` ({max_tokens}, finish reason `length`): {error}"
    )]
    Truncated {
        max_tokens: u32,
        /// Decoded greedily (temperature 0): asking again gives the same cut.
        greedy: bool,
        error: Box<AnswerError>,
    },
}

/// Why a `[x1, y1, x2, y2]` box is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoxError {
    #[error("expected [x1, y1, x2, y2] (4 finite numbers), got `{got}`")]
    NotABox { got: String },
    #[error("inverted: {axis}1 = {lo} is beyond {axis}2 = {hi}")]
    Inverted { axis: char, lo: f64, hi: f64 },
    #[error("degenerate: zero {extent} ({axis}1 = {axis}2 = {at})")]
    Degenerate {
        axis: char,
        extent: &'static str,
        at: f64,
    },
    #[error("[{x1}, {y1}, {x2}, {y2}] lies outside the {width}×{height} image")]
    OutOfImage {
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        width: u32,
        height: u32,
    },
}

/// A box in pixel coordinates: `(x1, y1)` the top-left corner, `(x2, y2)` the bottom-right
/// one (exclusive: a one-pixel box at (3, 4) is `[3, 4, 4, 5]`); `x1 < x2`, `y1 < y2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

impl BBox {
    pub fn width(&self) -> f64 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f64 {
        self.y2 - self.y1
    }

    pub fn area(&self) -> f64 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// Intersection over union with another box (0 when either is empty).
    pub fn iou(&self, o: &BBox) -> f64 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// `[x1, y1, x2, y2]`, as the prompts ask.
    pub fn to_json(&self) -> Value {
        serde_json::json!([self.x1, self.y1, self.x2, self.y2])
    }

    /// The pixels `(x, y)` whose centre lies inside, clipped to a `width`×`height` image.
    pub fn pixel_range(
        &self,
        width: u32,
        height: u32,
    ) -> (std::ops::Range<u32>, std::ops::Range<u32>) {
        let r = |lo: f64, hi: f64, n: u32| {
            let a = (lo - 0.5).ceil().clamp(0.0, n as f64) as u32;
            let b = (hi - 0.5).ceil().clamp(0.0, n as f64) as u32;
            a..b.max(a)
        };
        (r(self.x1, self.x2, width), r(self.y1, self.y2, height))
    }
}

/// Reads a box strictly: four finite numbers, not inverted, not degenerate, and (with an
/// image size) inside `[0, width] × [0, height]`.
pub fn parse_box(v: &Value, size: Option<(u32, u32)>) -> Result<BBox, BoxError> {
    let nums: Option<Vec<f64>> = v.as_array().filter(|a| a.len() == 4).and_then(|a| {
        a.iter()
            .map(|x| x.as_f64().filter(|f| f.is_finite()))
            .collect()
    });
    let Some(n) = nums else {
        return Err(BoxError::NotABox { got: short(v) });
    };
    let b = BBox {
        x1: n[0],
        y1: n[1],
        x2: n[2],
        y2: n[3],
    };
    for (axis, extent, lo, hi) in [('x', "width", b.x1, b.x2), ('y', "height", b.y1, b.y2)] {
        if lo > hi {
            return Err(BoxError::Inverted { axis, lo, hi });
        }
        if lo == hi {
            return Err(BoxError::Degenerate {
                axis,
                extent,
                at: lo,
            });
        }
    }
    if let Some((width, height)) = size
        && (b.x1 < 0.0 || b.y1 < 0.0 || b.x2 > width as f64 || b.y2 > height as f64)
    {
        return Err(BoxError::OutOfImage {
            x1: b.x1,
            y1: b.y1,
            x2: b.x2,
            y2: b.y2,
            width,
            height,
        });
    }
    Ok(b)
}

/// Checks every box field of a validated answer against the image size.
pub fn check_boxes(
    prompt: &Prompt,
    answer: &Answer,
    width: u32,
    height: u32,
) -> Result<(), AnswerError> {
    for f in prompt.fields {
        if f.kind == FieldKind::BoundingBox {
            answer.bounding_box(f.name, width, height)?;
        }
    }
    Ok(())
}

impl AnswerError {
    /// Whether asking again could help (a server that sends no logprobs never will, nor a
    /// greedy answer cut at `max_tokens`).
    pub fn retryable(&self) -> bool {
        match self {
            AnswerError::NoLogprobs => false,
            AnswerError::Truncated { greedy, error, .. } => !greedy && error.retryable(),
            _ => true,
        }
    }
}

/// One score field's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FieldScore {
    /// On the prompt's scale (e.g. 0–5); fractional under `logprobs`.
    pub value: f64,
    /// `(value − min)/(max − min)`, in [0, 1].
    pub normalized: f64,
    /// How the value was read.
    pub method: Extraction,
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The parsed JSON object.
    pub json: Value,
    /// Every score field.
    pub scores: BTreeMap<String, FieldScore>,
}

impl Answer {
    /// A box field, checked against a `width`×`height` image ([`parse_box`]).
    pub fn bounding_box(&self, field: &str, width: u32, height: u32) -> Result<BBox, AnswerError> {
        let v = self
            .json
            .get(field)
            .ok_or_else(|| AnswerError::MissingField {
                field: field.to_string(),
            })?;
        parse_box(v, Some((width, height))).map_err(|error| AnswerError::BadBox {
            field: field.to_string(),
            error,
        })
    }

    /// A text field.
    pub fn text(&self, field: &str) -> Result<&str, AnswerError> {
        let v = self
            .json
            .get(field)
            .ok_or_else(|| AnswerError::MissingField {
                field: field.to_string(),
            })?;
        v.as_str().ok_or_else(|| AnswerError::WrongType {
            field: field.to_string(),
            expected: "a string",
            got: short(v),
        })
    }
}

/// Parses the answer text as one JSON object (a single surrounding ```json fence is allowed).
pub fn parse_json_object(content: &str) -> Result<Map<String, Value>, AnswerError> {
    let mut s = content.trim();
    if s.is_empty() {
        return Err(AnswerError::Empty);
    }
    if let Some(rest) = s.strip_prefix("```") {
        let body = rest
            .split_once('\n')
            .map(|(_, b)| b)
            .ok_or_else(|| AnswerError::NotJson {
                reason: "an unterminated code fence".into(),
            })?;
        s = body
            .trim_end()
            .strip_suffix("```")
            .ok_or_else(|| AnswerError::NotJson {
                reason: "an unterminated code fence".into(),
            })?
            .trim();
    }
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(AnswerError::NotJson {
            reason: format!("got a JSON {}", type_name(&other)),
        }),
        Err(e) => Err(AnswerError::NotJson {
            reason: e.to_string(),
        }),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}

/// Validates `content` against the prompt's fields and reads its scores.
pub fn extract(
    prompt: &Prompt,
    content: &str,
    tokens: Option<&[TokenLogprob]>,
    mode: Extraction,
) -> Result<Answer, AnswerError> {
    // a server without logprobs is named first, whatever the answer: it is not the answer's fault
    let tokens = match mode {
        Extraction::Generate => None,
        Extraction::Logprobs => match tokens {
            Some(t) if !t.is_empty() => Some(t),
            _ if prompt.fields.iter().any(|f| f.logprobs) => {
                return Err(AnswerError::NoLogprobs);
            }
            _ => None,
        },
    };
    let obj = parse_json_object(content)?;
    let mut scores = BTreeMap::new();
    for f in prompt.fields {
        let v = obj.get(f.name).ok_or_else(|| AnswerError::MissingField {
            field: f.name.to_string(),
        })?;
        let wrong = |expected| AnswerError::WrongType {
            field: f.name.to_string(),
            expected,
            got: short(v),
        };
        match f.kind {
            FieldKind::Text => {
                v.as_str().ok_or_else(|| wrong("a string"))?;
            }
            FieldKind::BoundingBox => {
                let ok = v
                    .as_array()
                    .is_some_and(|a| a.len() == 4 && a.iter().all(Value::is_number));
                if !ok {
                    return Err(wrong("[x1, y1, x2, y2]"));
                }
                parse_box(v, None).map_err(|error| AnswerError::BadBox {
                    field: f.name.to_string(),
                    error,
                })?;
            }
            FieldKind::Score { min, max } => {
                let parsed = v.as_f64().ok_or_else(|| wrong("a number"))?;
                if !(min as f64..=max as f64).contains(&parsed) {
                    return Err(AnswerError::OutOfRange {
                        field: f.name.to_string(),
                        value: parsed,
                        min,
                        max,
                    });
                }
                let (value, method) = match tokens {
                    Some(t) if f.logprobs => match expected_digit(t, f.name, min, max)? {
                        Some(e) => (e, Extraction::Logprobs),
                        None => (parsed, Extraction::Generate),
                    },
                    _ => (parsed, Extraction::Generate),
                };
                let normalized = if max > min {
                    ((value - min as f64) / (max - min) as f64).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                scores.insert(
                    f.name.to_string(),
                    FieldScore {
                        value,
                        normalized,
                        method,
                    },
                );
            }
        }
    }
    Ok(Answer {
        json: Value::Object(obj),
        scores,
    })
}

#[cfg(test)]
mod tests;
