//! `logprobs` extraction: the expected score at a field's score position, read from the
//! answer's `top_logprobs` (steps 1–6 of the `extract` module docs).

use super::AnswerError;
use crate::judge::wire::TokenLogprob;
use std::collections::BTreeMap;

/// The expected score at `field`'s score position (the `extract` module docs, steps 1–6);
/// `None` when the emitted number spans more than two tokens.
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
