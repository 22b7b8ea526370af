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

/// The expected score at `field`'s score position (module docs, steps 1–6); `None` when the
/// emitted number spans more than two tokens.
pub fn expected_digit(
    tokens: &[TokenLogprob],
    field: &str,
    min: u32,
    max: u32,
) -> Result<Option<f64>, AnswerError> {
    let text: String = tokens.iter().map(|t| t.token.as_str()).collect();
    let pos = score_position(&text, field).ok_or_else(|| AnswerError::ScorePosition {
        field: field.to_string(),
    })?;
    let mut start = 0;
    let (i, tok_start) = tokens
        .iter()
        .enumerate()
        .find_map(|(i, t)| {
            let s = start;
            start += t.token.len();
            (pos < start).then_some((i, s))
        })
        .expect("the position lies inside the concatenated text");
    let tok = &tokens[i];
    let tok_end = tok_start + tok.token.len();
    let number_end = pos
        + text[pos..]
            .bytes()
            .take_while(|b| b.is_ascii_digit())
            .count();
    // the emitted number may continue into the next token ("1", "0"), not further
    let next = tokens.get(i + 1);
    if number_end > tok_end + next.map_or(0, |t| t.token.len()) {
        return Ok(None);
    }
    if tok.top_logprobs.is_empty() {
        return Err(AnswerError::NoLogprobs);
    }
    let prefix = &text[tok_start..pos];
    let cands: Vec<Candidate> = tok
        .top_logprobs
        .iter()
        .filter_map(|c| Candidate::read(&c.token, c.logprob, prefix))
        .collect();
    // A tokenizer that has multi-digit tokens writes 10 as "10": its "1" is 1.
    let merges_digits =
        text[pos..number_end.min(tok_end)].len() > 1 || cands.iter().any(|c| c.digits.len() > 1);
    let scale = Scale { min, max };
    let mut mass: BTreeMap<u32, f64> = BTreeMap::new();
    let mut unresolved: Vec<&Candidate> = Vec::new();
    for c in &cands {
        let longer = !c.ends && scale.has_longer(&c.digits);
        if !longer {
            if let Some(v) = scale.value(&c.digits) {
                *mass.entry(v).or_default() += c.p;
            }
        } else if c.token == tok.token {
            // the emitted token: the next position tells how the number went on
            for (v, q) in continuation(&c.digits, next, scale) {
                *mass.entry(v).or_default() += c.p * q;
            }
        } else if merges_digits {
            if let Some(v) = scale.value(&c.digits) {
                *mass.entry(v).or_default() += c.p;
            }
        } else {
            unresolved.push(c);
        }
    }
    // A digit that may begin a longer number but was not emitted: its continuation is unknown.
    // Its mass goes to its readings (1 or 10) in proportion to the resolved mass next to each
    // (the score distribution is taken as unimodal); with none next to any, it is left out.
    let resolved = mass.clone();
    let near = |v: u32| {
        v.checked_sub(1)
            .and_then(|u| resolved.get(&u))
            .unwrap_or(&0.0)
            + resolved.get(&(v + 1)).unwrap_or(&0.0)
    };
    for c in unresolved {
        let readings = scale.readings(&c.digits);
        let weights: Vec<f64> = readings.iter().map(|&v| near(v)).collect();
        let total: f64 = weights.iter().sum();
        if total > 0.0 {
            for (v, w) in readings.into_iter().zip(weights) {
                *mass.entry(v).or_default() += c.p * w / total;
            }
        }
    }
    let den: f64 = mass.values().sum();
    if den <= 0.0 {
        return Err(AnswerError::NoDigitCandidates {
            field: field.to_string(),
            min,
            max,
        });
    }
    let num: f64 = mass.iter().map(|(&v, &p)| v as f64 * p).sum();
    Ok(Some(num / den))
}

/// A `top_logprobs` entry at the score position that starts with digits.
#[derive(Debug)]
struct Candidate {
    token: String,
    /// The leading digits after the position's prefix.
    digits: String,
    /// Whether the token goes on past its digits (`"4,"`), so the number ends inside it.
    ends: bool,
    /// `exp(logprob)`.
    p: f64,
}

impl Candidate {
    /// `None` for tokens that do not start with a digit (after `prefix`, or leading
    /// whitespace), decimals (`"4."`) and non-finite logprobs.
    fn read(token: &str, logprob: f64, prefix: &str) -> Option<Candidate> {
        let body = match token.strip_prefix(prefix) {
            Some(b) if !prefix.is_empty() => b,
            _ => token.trim_start(),
        };
        let n = body.bytes().take_while(u8::is_ascii_digit).count();
        let rest = &body[n..];
        if n == 0 || rest.starts_with('.') || !logprob.is_finite() {
            return None;
        }
        Some(Candidate {
            token: token.to_string(),
            digits: body[..n].to_string(),
            ends: !rest.is_empty(),
            p: logprob.exp(),
        })
    }
}

/// A score field's range.
#[derive(Debug, Clone, Copy)]
struct Scale {
    min: u32,
    max: u32,
}

impl Scale {
    /// The value these digits write, if in range.
    fn value(self, digits: &str) -> Option<u32> {
        digits
            .parse::<u32>()
            .ok()
            .filter(|v| (self.min..=self.max).contains(v))
    }

    /// Whether an in-range value is written with more digits starting with these (`"1"` on a
    /// 0–10 scale: 10).
    fn has_longer(self, digits: &str) -> bool {
        !self.longer(digits).is_empty()
    }

    fn longer(self, digits: &str) -> Vec<u32> {
        (self.min..=self.max)
            .filter(|v| {
                let s = v.to_string();
                s.len() > digits.len() && s.starts_with(digits)
            })
            .collect()
    }

    /// Every in-range value the digits may begin: itself and the longer ones.
    fn readings(self, digits: &str) -> Vec<u32> {
        self.value(digits)
            .into_iter()
            .chain(self.longer(digits))
            .collect()
    }
}

/// How the emitted number went on after `digits`: the next position's distribution (its
/// `top_logprobs` and the emitted token), renormalised over what gives an in-range value: a
/// token starting with digits extends the number, any other token (or none: the answer ended)
/// ends it.
fn continuation(digits: &str, next: Option<&TokenLogprob>, scale: Scale) -> Vec<(u32, f64)> {
    let Some(next) = next else {
        return scale.value(digits).map(|v| (v, 1.0)).into_iter().collect();
    };
    let mut options: Vec<(&str, f64)> = next
        .top_logprobs
        .iter()
        .map(|t| (t.token.as_str(), t.logprob))
        .collect();
    if !options.iter().any(|(t, _)| *t == next.token) {
        options.push((next.token.as_str(), next.logprob));
    }
    let mut out: BTreeMap<u32, f64> = BTreeMap::new();
    for (token, logprob) in options {
        if !logprob.is_finite() {
            continue;
        }
        let n = token.bytes().take_while(u8::is_ascii_digit).count();
        if token[n..].starts_with('.') {
            continue;
        }
        let value = scale.value(&format!("{digits}{}", &token[..n]));
        if let Some(v) = value {
            *out.entry(v).or_default() += logprob.exp();
        }
    }
    let total: f64 = out.values().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    out.into_iter().map(|(v, p)| (v, p / total)).collect()
}

/// Byte offset of the first digit of `"field": <digits>` in `text`.
pub(crate) fn score_position(text: &str, field: &str) -> Option<usize> {
    let key = format!("\"{field}\"");
    let mut from = 0;
    while let Some(i) = text[from..].find(&key) {
        let mut j = from + i + key.len();
        let b = text.as_bytes();
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b':' {
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < b.len() && b[j].is_ascii_digit() {
                return Some(j);
            }
        }
        from = from + i + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::prompts::{FILTER, GEDIT_SC, IMGEDIT, LOCATE, REWARD};
    use super::super::wire::TopLogprob;
    use super::*;

    fn tok(token: &str, top: &[(&str, f64)]) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            logprob: 0.0,
            top_logprobs: top
                .iter()
                .map(|(t, p)| TopLogprob {
                    token: t.to_string(),
                    logprob: p.ln(),
                })
                .collect(),
        }
    }

    /// `{"editing_effect": 4, "visual_quality": 5}` with a distribution at each digit.
    fn reward_tokens() -> Vec<TokenLogprob> {
        vec![
            tok("{\"", &[]),
            tok("editing", &[]),
            tok("_effect", &[]),
            tok("\":", &[]),
            // leading-space digit tokens; "9" is out of range, "x" is not a digit
            tok(" 4", &[(" 4", 0.6), (" 3", 0.2), (" 9", 0.1), ("x", 0.05)]),
            tok(", \"", &[]),
            tok("visual_quality", &[]),
            tok("\": ", &[]),
            tok("5", &[("5", 0.5), ("4", 0.25), ("4.", 0.25)]),
            tok("}", &[]),
        ]
    }

    #[test]
    fn logprobs_expectation_is_renormalised_over_valid_digits() {
        let toks = reward_tokens();
        let content: String = toks.iter().map(|t| t.token.as_str()).collect();
        let a = extract(&REWARD, &content, Some(&toks), Extraction::Logprobs).unwrap();
        let e = &a.scores["editing_effect"];
        // (0.6·4 + 0.2·3) / 0.8 = 3.75
        assert!((e.value - 3.75).abs() < 1e-12, "{}", e.value);
        assert!((e.normalized - 0.75).abs() < 1e-12);
        assert_eq!(e.method, Extraction::Logprobs);
        // "4." is a decimal, left out: (0.5·5 + 0.25·4) / 0.75
        let q = &a.scores["visual_quality"];
        assert!((q.value - 3.5 / 0.75).abs() < 1e-12, "{}", q.value);
        // generate mode reads the written integers
        let g = extract(&REWARD, &content, Some(&toks), Extraction::Generate).unwrap();
        assert_eq!(g.scores["editing_effect"].value, 4.0);
        assert_eq!(g.scores["visual_quality"].normalized, 1.0);
    }

    /// `{"<field>": <score tokens>}` after a JSON lead-in, as one answer.
    fn answer(lead: &str, score: Vec<TokenLogprob>, tail: &str) -> (String, Vec<TokenLogprob>) {
        let mut toks = vec![tok(lead, &[])];
        toks.extend(score);
        toks.push(tok(tail, &[]));
        (toks.iter().map(|t| t.token.as_str()).collect(), toks)
    }

    /// The expected value of one score field (the other fields' tokens carry no logprobs).
    fn score_of(p: &Prompt, field: &str, ans: &(String, Vec<TokenLogprob>)) -> f64 {
        parse_json_object(&ans.0).unwrap();
        let (min, max) = p
            .score_fields()
            .find_map(|(n, lo, hi)| (n == field).then_some((lo, hi)))
            .unwrap();
        expected_digit(&ans.1, field, min, max).unwrap().unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Digit-split tokenizers (Qwen2.5-VL) write 10 as "1", "0": the emitted "1" is split
    /// between 1 and 10 by the next position's distribution (GEdit's 0–10 scale).
    #[test]
    fn ten_over_two_tokens_weighs_the_next_position() {
        let lead = r#"{"editing_success": "#;
        let ans = answer(
            lead,
            vec![
                tok("1", &[("1", 0.7), ("9", 0.2), ("8", 0.1)]),
                // after "1": "0" (→ 10) or the end of the number (→ 1)
                tok("0", &[("0", 0.9), (",", 0.1)]),
                tok(r#", "overediting": "#, &[]),
                tok("3", &[("3", 1.0)]),
            ],
            "}",
        );
        let a = extract(&GEDIT_SC, &ans.0, Some(&ans.1), Extraction::Logprobs).unwrap();
        let s = a.scores["editing_success"];
        // 0.7·(0.9·10 + 0.1·1) + 0.2·9 + 0.1·8
        assert!(close(s.value, 8.97), "{}", s.value);
        assert_eq!(s.method, Extraction::Logprobs);
        assert!(close(s.normalized, 0.897));
        assert_eq!(a.scores["overediting"].value, 3.0);
        // an emitted 1 ("1" then ","), with a little mass on "0" after it (curation's 1–10)
        let ans = answer(
            r#"{"instruction_clarity": "#,
            vec![
                tok("1", &[("1", 0.8), ("2", 0.2)]),
                tok(", \"", &[(", \"", 0.75), ("0", 0.25)]),
            ],
            r#"mask_accuracy": 5, "target_prominence": 5}"#,
        );
        let s = score_of(&FILTER, "instruction_clarity", &ans);
        // 0.8·(0.75·1 + 0.25·10) + 0.2·2
        assert!(close(s, 3.0), "{s}");
        // a continuation that leaves the scale ("15") is dropped, and the rest renormalised
        let ans = answer(
            lead,
            vec![
                tok("1", &[("1", 1.0)]),
                tok("0", &[("0", 0.5), ("5", 0.25), ("}", 0.25)]),
            ],
            r#", "overediting": 3}"#,
        );
        let s = score_of(&GEDIT_SC, "editing_success", &ans);
        assert!(close(s, (2.0 * 10.0 + 1.0) / 3.0), "{s}");
    }

    /// The issue-15 case: "9" emitted, a "1" candidate (the start of 10 for this tokenizer)
    /// next to it: .6 "9", .3 "1", .1 "8" reads 9.2, not 6.5.
    #[test]
    fn a_one_candidate_beside_an_emitted_nine_is_read_as_ten() {
        let ans = answer(
            r#"{"instruction_clarity": "#,
            vec![tok("9", &[("9", 0.6), ("1", 0.3), ("8", 0.1)])],
            r#", "mask_accuracy": 5, "target_prominence": 5}"#,
        );
        let s = score_of(&FILTER, "instruction_clarity", &ans);
        assert!(close(s, 9.2), "{s}");
        // with leading-space tokens (the prefix of the emitted " 9")
        let ans = answer(
            r#"{"editing_success":"#,
            vec![tok(" 9", &[(" 9", 0.6), (" 1", 0.3), (" 8", 0.1)])],
            r#", "overediting": 3}"#,
        );
        assert!(close(score_of(&GEDIT_SC, "editing_success", &ans), 9.2));
        // low scores: the "1" beside "2" and "0" is 1 (GEdit's 0–10)
        let ans = answer(
            r#"{"editing_success": "#,
            vec![tok("2", &[("2", 0.5), ("1", 0.3), ("0", 0.2)])],
            r#", "overediting": 3}"#,
        );
        assert!(close(score_of(&GEDIT_SC, "editing_success", &ans), 1.3));
        // mass beside both readings is shared: near 10 p(9) = .4, near 1 p(2) = .4
        let ans = answer(
            r#"{"instruction_clarity": "#,
            vec![tok("9", &[("9", 0.4), ("2", 0.4), ("1", 0.2)])],
            r#", "mask_accuracy": 5, "target_prominence": 5}"#,
        );
        let s = score_of(&FILTER, "instruction_clarity", &ans);
        assert!(close(s, 3.6 + 0.8 + 0.1 * 10.0 + 0.1), "{s}");
        // a "1" with no neighbouring mass is left out, never counted as 1
        let ans = answer(
            r#"{"instruction_clarity": "#,
            vec![tok("5", &[("5", 0.7), ("1", 0.2), ("6", 0.1)])],
            r#", "mask_accuracy": 5, "target_prominence": 5}"#,
        );
        let s = score_of(&FILTER, "instruction_clarity", &ans);
        assert!(close(s, (3.5 + 0.6) / 0.8), "{s}");
    }

    /// Tokenizers with multi-digit tokens write 10 as one token; their "1" is 1.
    #[test]
    fn ten_as_one_token() {
        let lead = r#"{"editing_success": "#;
        let tail = r#", "overediting": 3}"#;
        let ans = answer(
            lead,
            vec![tok("9", &[("9", 0.6), ("10", 0.3), ("8", 0.1)])],
            tail,
        );
        assert!(close(score_of(&GEDIT_SC, "editing_success", &ans), 9.2));
        let ans = answer(
            lead,
            vec![tok("10", &[("10", 0.5), ("9", 0.3), ("1", 0.2)])],
            tail,
        );
        // 0.5·10 + 0.3·9 + 0.2·1
        assert!(close(score_of(&GEDIT_SC, "editing_success", &ans), 7.9));
        // a one-digit scale never reads "1" as the start of anything
        let ans = answer(
            r#"{"prompt_compliance": "#,
            vec![tok("4", &[("4", 0.6), ("1", 0.4)])],
            r#", "visual_naturalness": 3, "physical_integrity": 3}"#,
        );
        assert!(close(score_of(&IMGEDIT, "prompt_compliance", &ans), 2.8));
    }

    #[test]
    fn missing_logprobs_is_an_error_not_a_fallback() {
        let content = r#"{"editing_effect": 4, "visual_quality": 5}"#;
        let err = extract(&REWARD, content, None, Extraction::Logprobs).unwrap_err();
        assert_eq!(err, AnswerError::NoLogprobs);
        assert!(!err.retryable());
        // named before the answer is read: a server without logprobs is a setting to fix
        assert_eq!(
            extract(&REWARD, "zq<|im_end|>", None, Extraction::Logprobs).unwrap_err(),
            AnswerError::NoLogprobs
        );
        let mut toks = reward_tokens();
        toks[4].top_logprobs.clear();
        let content: String = toks.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(
            extract(&REWARD, &content, Some(&toks), Extraction::Logprobs).unwrap_err(),
            AnswerError::NoLogprobs
        );
        toks[4].top_logprobs = vec![TopLogprob {
            token: " 7".into(),
            logprob: 0.0,
        }];
        assert_eq!(
            extract(&REWARD, &content, Some(&toks), Extraction::Logprobs)
                .unwrap_err()
                .to_string(),
            "no digit token in 0..=5 among the top logprobs of `editing_effect`"
        );
    }

    #[test]
    fn strict_json_errors_name_the_problem() {
        let e = |s: &str| {
            extract(&REWARD, s, None, Extraction::Generate)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(e("  "), "the answer is empty");
        assert!(
            e(r#"Sure! {"editing_effect": 4}"#)
                .starts_with("the answer is not a single JSON object")
        );
        assert!(
            e(r#"{"editing_effect": 4, "visual_quality": 5} thanks"#)
                .starts_with("the answer is not a single JSON object")
        );
        assert_eq!(
            e("[1, 2]"),
            "the answer is not a single JSON object: got a JSON array"
        );
        assert_eq!(
            e(r#"{"editing_effect": 4}"#),
            "the answer lacks the field `visual_quality`"
        );
        assert_eq!(
            e(r#"{"editing_effect": "4", "visual_quality": 5}"#),
            "field `editing_effect` should be a number, got `\"4\"`"
        );
        assert_eq!(
            e(r#"{"editing_effect": 6, "visual_quality": 5}"#),
            "field `editing_effect` is 6, outside 0..=5"
        );
        let fenced = "```json\n{\"editing_effect\": 2, \"visual_quality\": 3}\n```";
        let a = extract(&REWARD, fenced, None, Extraction::Generate).unwrap();
        assert_eq!(a.scores["editing_effect"].value, 2.0);
    }

    #[test]
    fn text_and_box_fields_are_type_checked() {
        let ok = r#"{"edit_type": "add", "edited_object": "a red ball", "bounding_box": [1, 2, 30, 40]}"#;
        let a = extract(&LOCATE, ok, None, Extraction::Logprobs).unwrap();
        assert!(a.scores.is_empty());
        assert_eq!(a.json["edited_object"], "a red ball");
        let bad = r#"{"edit_type": "add", "edited_object": "x", "bounding_box": [1, 2, 3]}"#;
        assert_eq!(
            extract(&LOCATE, bad, None, Extraction::Generate)
                .unwrap_err()
                .to_string(),
            "field `bounding_box` should be [x1, y1, x2, y2], got `[1,2,3]`"
        );
    }
}
