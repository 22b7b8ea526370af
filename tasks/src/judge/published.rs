//! The benchmarks' own judge prompts, read from the files the benchmark repositories ship
//! (method-spec §8: a paraphrase gives numbers that are not comparable with published ones),
//! and their answers read the way the benchmarks' scripts read them.
//!
//! `eval`'s param `prompts` says where the prompts of the `gedit` / `imgedit` protocols come
//! from: `builtin` (default; [`super::prompts::GEDIT_SC`], [`super::prompts::GEDIT_PQ`],
//! [`super::prompts::IMGEDIT`], our wording, scores by logprobs or generated JSON — reports
//! say "builtin prompts: not comparable with published numbers") or a PATH:
//!
//! - **GEdit-Bench** (VIEScore, as GEdit-Bench's `viescore/vie_prompts.py` defines it): PATH
//!   is that Python file, or a directory holding `vie_prompts.py` or
//!   `viescore/vie_prompts.py`. The module's triple-quoted string assignments
//!   `_context_no_delimit`, `_prompts_0shot_two_image_edit_rule`, `_prompts_0shot_tie_rule_SC`
//!   and `_prompts_0shot_rule_PQ` are read (Python escapes applied; the last assignment of a
//!   name wins, as in Python). As VIEScore's `tie` task builds them: SC = the first three
//!   joined by newlines, with `<instruction>` replaced by the instruction, shown the source
//!   and the edited image; PQ = the context and the PQ rule joined by a newline, shown the
//!   edited image only. The answer is read as VIEScore's `mllm_output_to_dict` reads it
//!   ([`read_viescore`]); SC = min of the SC answer's `score` list, PQ = min of the PQ
//!   answer's, O = sqrt(SC·PQ).
//! - **ImgEdit-Bench** (as its `Benchmark/Basic` scripts take them): PATH is the prompts JSON
//!   (an object mapping each edit type to its prompt), or a directory holding `prompts.json`.
//!   A record's rubric is the entry of its edit type, with `<edit_prompt>` replaced by the
//!   instruction, shown the source and the edited image. The answer is read as
//!   `step1_get_avgscore.py` reads it ([`read_imgedit`]): every line `NAME: DIGITS` is a
//!   score, the sample's score is their mean rounded to 2 decimals; per type the mean over
//!   samples (`step2_typescore.py`), overall the unweighted mean over types.
//!
//! Requests go as those scripts send them: one user message, the prompt text first, then the
//! images (no system message, no label lines), decoded as the judge config says (no logprobs:
//! the scores are read from the generated text). Deviations, stated: an answer the script
//! could not read is retried (`retry.max_attempts`) and then counts as an invalid sample —
//! VIEScore would guess a random score, ImgEdit's script would leave the sample out; the JSON
//! repair VIEScore tries on malformed JSON (`fix_json`) is not done (the answer is invalid).

use super::prompts::ImageRole;
use crate::eval::Protocol;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the benchmark prompts come from: `builtin` or a path (module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PromptSource {
    #[default]
    Builtin,
    Path(String),
}

impl PromptSource {
    pub fn is_builtin(&self) -> bool {
        *self == PromptSource::Builtin
    }
}

impl Serialize for PromptSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PromptSource::Builtin => s.serialize_str("builtin"),
            PromptSource::Path(p) => s.serialize_str(p),
        }
    }
}

impl<'de> Deserialize<'de> for PromptSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "" => Err(serde::de::Error::custom(
                "expected `builtin` or the path of the benchmark's prompt file, got an empty string",
            )),
            "builtin" => Ok(PromptSource::Builtin),
            _ => Ok(PromptSource::Path(s)),
        }
    }
}

/// The label reports carry for numbers judged with the builtin prompts.
pub const BUILTIN_LABEL: &str = "builtin prompts: not comparable with published numbers";

/// Which benchmark script reads the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reader {
    /// VIEScore's `mllm_output_to_dict`, then its `score` list.
    Viescore,
    /// ImgEdit's `step1_get_avgscore.py`.
    Imgedit,
}

/// One prompt template read from a benchmark's file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishedPrompt {
    /// `gedit-sc`, `gedit-pq` or `imgedit/<edit type>`.
    pub name: String,
    /// The text as the benchmark's script assembles it, placeholder unreplaced.
    pub template: String,
    /// The placeholder the instruction replaces (`<instruction>`, `<edit_prompt>`).
    pub placeholder: &'static str,
    /// The images shown, in order, after the text.
    pub images: &'static [ImageRole],
    pub reader: Reader,
}

impl PublishedPrompt {
    /// The text sent: the template with the placeholder replaced by `instruction`.
    pub fn render(&self, instruction: &str) -> String {
        self.template.replace(self.placeholder, instruction)
    }

    /// BLAKE3 (hex) of the template, its images and reader (part of every cache key).
    pub fn digest(&self) -> String {
        blake3::hash(&serde_json::to_vec(self).expect("serialises"))
            .to_hex()
            .to_string()
    }
}

/// A benchmark protocol's prompts, loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum BenchPrompts {
    /// Ours ([`super::prompts`]).
    Builtin,
    Gedit {
        file: PathBuf,
        sc: PublishedPrompt,
        pq: PublishedPrompt,
    },
    Imgedit {
        file: PathBuf,
        /// By edit type.
        rubrics: BTreeMap<String, PublishedPrompt>,
    },
}

const SOURCE_EDITED: &[ImageRole] = &[ImageRole::Source, ImageRole::Edited];

/// The VIEScore names GEdit-Bench's SC and PQ prompts are built from.
pub const VIESCORE_CONTEXT: &str = "_context_no_delimit";
pub const VIESCORE_TWO_IMAGE_RULE: &str = "_prompts_0shot_two_image_edit_rule";
pub const VIESCORE_SC_RULE: &str = "_prompts_0shot_tie_rule_SC";
pub const VIESCORE_PQ_RULE: &str = "_prompts_0shot_rule_PQ";

impl BenchPrompts {
    /// Loads the prompts of `protocol` from `source`; errors name the file and the key.
    pub fn load(protocol: Protocol, source: &PromptSource) -> Result<BenchPrompts, String> {
        let path = match source {
            PromptSource::Builtin => return Ok(BenchPrompts::Builtin),
            PromptSource::Path(p) => PathBuf::from(p),
        };
        match protocol {
            Protocol::Synthetic => Err(format!(
                "`prompts` `{}`: only the benchmark protocols (`gedit`, `imgedit`) read prompt files",
                path.display()
            )),
            Protocol::Gedit => load_gedit(&path),
            Protocol::Imgedit => load_imgedit(&path),
        }
    }

    pub fn is_builtin(&self) -> bool {
        *self == BenchPrompts::Builtin
    }

    /// ImgEdit: fails unless every `(key, edit type)` has a rubric.
    pub fn check_types<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), String> {
        let BenchPrompts::Imgedit { file, rubrics } = self else {
            return Ok(());
        };
        let missing: Vec<(&str, &str)> = records
            .into_iter()
            .filter(|(_, t)| !rubrics.contains_key(*t))
            .collect();
        if let Some((key, t)) = missing.first() {
            let has: Vec<&str> = rubrics.keys().map(String::as_str).collect();
            return Err(format!(
                "`prompts` `{}` has no rubric for edit type `{t}` (record `{key}`{}); it has: {}",
                file.display(),
                if missing.len() > 1 {
                    format!(", {} records in all", missing.len())
                } else {
                    String::new()
                },
                has.join(", ")
            ));
        }
        Ok(())
    }

    /// ImgEdit: the rubric of an edit type.
    pub fn rubric(&self, edit_type: &str) -> Option<&PublishedPrompt> {
        match self {
            BenchPrompts::Imgedit { rubrics, .. } => rubrics.get(edit_type),
            _ => None,
        }
    }

    /// What reports say about the prompts: `{source, label?, file?, digest?, reader?}`.
    pub fn describe(&self) -> Value {
        let digest_of = |ps: &[&PublishedPrompt]| {
            let mut h = blake3::Hasher::new();
            for p in ps {
                h.update(p.digest().as_bytes());
            }
            h.finalize().to_hex().to_string()
        };
        match self {
            BenchPrompts::Builtin => json!({"source": "builtin", "label": BUILTIN_LABEL}),
            BenchPrompts::Gedit { file, sc, pq } => json!({
                "source": "published",
                "file": file.display().to_string(),
                "digest": digest_of(&[sc, pq]),
                "reader": "VIEScore mllm_output_to_dict; SC = min(score), PQ = min(score), O = sqrt(SC*PQ)",
            }),
            BenchPrompts::Imgedit { file, rubrics } => json!({
                "source": "published",
                "file": file.display().to_string(),
                "digest": digest_of(&rubrics.values().collect::<Vec<_>>()),
                "edit_types": rubrics.keys().collect::<Vec<_>>(),
                "reader": "ImgEdit step1_get_avgscore.py: every `NAME: DIGITS` line, mean rounded to 2 decimals",
            }),
        }
    }

    /// The line reports print under the title.
    pub fn markdown_line(&self) -> String {
        match self {
            BenchPrompts::Builtin => format!("**{BUILTIN_LABEL}.**\n"),
            BenchPrompts::Gedit { file, .. } | BenchPrompts::Imgedit { file, .. } => format!(
                "Prompts: the benchmark's own, from `{}`; scores read as its scripts read them.\n",
                file.display()
            ),
        }
    }
}

/// The first of `candidates` (relative to `dir`) that is a file.
fn find_in(dir: &Path, candidates: &[&str], what: &str) -> Result<PathBuf, String> {
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "`prompts` `{}` is a directory without {what} (looked for {})",
                dir.display(),
                candidates
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("`prompts` `{}`: {e}", path.display()))
}

fn load_gedit(path: &Path) -> Result<BenchPrompts, String> {
    let file = if path.is_dir() {
        find_in(
            path,
            &["vie_prompts.py", "viescore/vie_prompts.py"],
            "GEdit-Bench's VIEScore prompts",
        )?
    } else {
        path.to_path_buf()
    };
    let text = read_text(&file)?;
    let strings = python_strings(&text).map_err(|e| format!("`{}`: {e}", file.display()))?;
    let get = |name: &str| {
        strings.get(name).cloned().ok_or_else(|| {
            format!(
                "`{}` has no `{name} = \"\"\"...\"\"\"` assignment (GEdit-Bench's VIEScore prompts \
                 define {VIESCORE_CONTEXT}, {VIESCORE_TWO_IMAGE_RULE}, {VIESCORE_SC_RULE} and \
                 {VIESCORE_PQ_RULE})",
                file.display()
            )
        })
    };
    let (context, two, sc_rule, pq_rule) = (
        get(VIESCORE_CONTEXT)?,
        get(VIESCORE_TWO_IMAGE_RULE)?,
        get(VIESCORE_SC_RULE)?,
        get(VIESCORE_PQ_RULE)?,
    );
    if !sc_rule.contains("<instruction>") {
        return Err(format!(
            "`{}`: `{VIESCORE_SC_RULE}` has no `<instruction>` placeholder, so the instruction \
             would not reach the judge",
            file.display()
        ));
    }
    let sc = PublishedPrompt {
        name: "gedit-sc".into(),
        template: [context.as_str(), &two, &sc_rule].join("\n"),
        placeholder: "<instruction>",
        images: SOURCE_EDITED,
        reader: Reader::Viescore,
    };
    let pq = PublishedPrompt {
        name: "gedit-pq".into(),
        template: [context.as_str(), &pq_rule].join("\n"),
        placeholder: "<instruction>",
        images: &[ImageRole::Edited],
        reader: Reader::Viescore,
    };
    Ok(BenchPrompts::Gedit { file, sc, pq })
}

fn load_imgedit(path: &Path) -> Result<BenchPrompts, String> {
    let file = if path.is_dir() {
        find_in(path, &["prompts.json"], "ImgEdit-Bench's prompts JSON")?
    } else {
        path.to_path_buf()
    };
    let text = read_text(&file)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("`{}`: not valid JSON: {e}", file.display()))?;
    let Value::Object(map) = v else {
        return Err(format!(
            "`{}`: expected a JSON object mapping each edit type to its prompt, got {}",
            file.display(),
            kind_of(&v)
        ));
    };
    if map.is_empty() {
        return Err(format!("`{}`: the object has no edit type", file.display()));
    }
    let mut rubrics = BTreeMap::new();
    for (t, v) in map {
        let Value::String(template) = v else {
            return Err(format!(
                "`{}`, key `{t}`: expected the prompt text (a string), got {}",
                file.display(),
                kind_of(&v)
            ));
        };
        if !template.contains("<edit_prompt>") {
            return Err(format!(
                "`{}`, key `{t}`: the prompt has no `<edit_prompt>` placeholder, so the \
                 instruction would not reach the judge",
                file.display()
            ));
        }
        rubrics.insert(
            t.clone(),
            PublishedPrompt {
                name: format!("imgedit/{t}"),
                template,
                placeholder: "<edit_prompt>",
                images: SOURCE_EDITED,
                reader: Reader::Imgedit,
            },
        );
    }
    Ok(BenchPrompts::Imgedit { file, rubrics })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The module-level `NAME = """..."""` (or `'''`, with an optional `r`/`u` prefix)
/// assignments of a Python file, their values with Python's escapes applied; a later
/// assignment of a name replaces an earlier one. Other statements are skipped.
pub fn python_strings(src: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = src;
    let mut line_no = 1usize;
    while !rest.is_empty() {
        let (line, after) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let parsed = (|| {
            let (name, value) = line.split_once('=')?;
            let name = name.trim_end();
            if name.is_empty()
                || name.starts_with(char::is_whitespace)
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                return None;
            }
            let value = value.trim_start();
            let (raw, value) = match value.as_bytes().first()? {
                b'r' | b'R' => (true, &value[1..]),
                b'u' | b'U' => (false, &value[1..]),
                _ => (false, value),
            };
            let quote = ["\"\"\"", "'''"]
                .into_iter()
                .find(|q| value.starts_with(q))?;
            // offset of the string body in `rest`
            let body_start = line.len() - value.len() + 3;
            Some((name.to_string(), raw, quote, body_start))
        })();
        let Some((name, raw, quote, body_start)) = parsed else {
            // a string that opens on another kind of line (a docstring, an indented
            // assignment) is skipped whole, so its lines are never read as statements
            let opened = ["\"\"\"", "'''"]
                .into_iter()
                .filter_map(|q| line.find(q).map(|i| (i, q)))
                .min();
            if let Some((i, q)) = opened
                && let Some(end) = find_close(&rest[i + 3..], q)
                && i + 3 + end + 3 > line.len()
            {
                let consumed = i + 3 + end + 3;
                line_no += rest[..consumed].matches('\n').count();
                rest = &rest[consumed..];
                continue;
            }
            rest = after;
            line_no += 1;
            continue;
        };
        let body_and_more = &rest[body_start..];
        let end = find_close(body_and_more, quote).ok_or_else(|| {
            format!("`{name}` (line {line_no}): the {quote} string is never closed")
        })?;
        let body = &body_and_more[..end];
        let value = if raw {
            body.to_string()
        } else {
            unescape(body)
        };
        out.insert(name, value);
        let consumed = body_start + end + 3;
        line_no += rest[..consumed].matches('\n').count();
        rest = &rest[consumed..];
        // skip the rest of the closing line
        match rest.find('\n') {
            Some(i) => {
                rest = &rest[i + 1..];
                line_no += 1;
            }
            None => rest = "",
        }
    }
    Ok(out)
}

/// The offset of the closing `quote` in `s` (a backslash escapes the next character).
fn find_close(s: &str, quote: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            // in raw strings too, a backslash keeps the quote after it from closing
            i += 2;
            continue;
        }
        if b[i..].starts_with(quote.as_bytes()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Python's escapes in a non-raw string: `\\ \' \" \n \t \r \a \b \f \v \0`, and a backslash
/// before a newline joins the lines; any other escape keeps its backslash, as Python does.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\n') => {}
            Some('\\') => out.push('\\'),
            Some('\'') => out.push('\''),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some('0') => out.push('\0'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Reads an answer as VIEScore's `mllm_output_to_dict` does and returns its `score` list:
/// the text between two `||V^=^V||` delimiters if there are exactly two; otherwise from the
/// first `{` to the last `}`; without braces, a bare list `[a, b]` (integers, as its pattern
/// asks) or a bare integer 0–10 is the score list. The JSON text has its newlines removed
/// before parsing; `score` may be one number or a list. `Err` says why it cannot be read.
pub fn read_viescore(answer: &str) -> Result<Vec<f64>, String> {
    const DELIM: &str = "||V^=^V||";
    let json_text = if answer.matches(DELIM).count() == 2 {
        let a = answer.find(DELIM).expect("present") + DELIM.len();
        let b = answer.rfind(DELIM).expect("present");
        &answer[a..b]
    } else {
        match (answer.find('{'), answer.rfind('}')) {
            (Some(a), Some(b)) if b >= a => &answer[a..=b],
            (Some(_), Some(_)) => return Err("the first `{` comes after the last `}`".into()),
            _ => {
                if let (Some(a), Some(b)) = (answer.find('['), answer.rfind(']'))
                    && b > a
                {
                    let list = &answer[a..=b];
                    let inner = &list[1..list.len() - 1];
                    let parts: Vec<&str> = inner.split(',').collect();
                    let int = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
                    // VIEScore's pattern: `[\d+, ?\d+]` and nothing else
                    if parts.len() == 2
                        && int(parts[0])
                        && (int(parts[1]) || parts[1].strip_prefix(' ').is_some_and(int))
                    {
                        return Ok(parts
                            .iter()
                            .map(|p| p.trim().parse::<f64>().expect("digits"))
                            .collect());
                    }
                }
                let t = answer.trim();
                if let Ok(n) = t.parse::<i64>()
                    && (0..=10).contains(&n)
                {
                    return Ok(vec![n as f64]);
                }
                return Err("no JSON object, no `[a, b]` list and no bare score".into());
            }
        }
    };
    let cleaned = json_text.trim().replace('\n', "");
    let v: Value =
        serde_json::from_str(&cleaned).map_err(|e| format!("the JSON does not parse: {e}"))?;
    let score = v
        .get("score")
        .ok_or_else(|| "the JSON has no `score`".to_string())?;
    let list = match score {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    if list.is_empty() {
        return Err("`score` is an empty list".into());
    }
    list.iter()
        .map(|s| {
            s.as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("`score` holds {s}, not a number"))
        })
        .collect()
}

/// Reads an answer as ImgEdit's `step1_get_avgscore.py` does: each line, trimmed, split at
/// `": "`; a line of exactly two parts whose second is all digits is a score `(name, value)`.
/// `Err` when no line is a score (the script leaves such a sample out).
pub fn read_imgedit(answer: &str) -> Result<Vec<(String, f64)>, String> {
    let scores: Vec<(String, f64)> = answer
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.trim().split(": ").collect();
            match parts.as_slice() {
                [name, v] if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) => {
                    Some((name.to_string(), v.parse::<f64>().ok()?))
                }
                _ => None,
            }
        })
        .collect();
    if scores.is_empty() {
        return Err("no line of the form `NAME: DIGITS`".into());
    }
    Ok(scores)
}

/// `round(x, 2)` as Python rounds a float: to the nearest of the decimal values with two
/// digits, ties (exact in binary) to even.
pub fn round2(x: f64) -> f64 {
    let s = format!("{x:.2}");
    s.parse().expect("a formatted float parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viescore_answers_read_like_mllm_output_to_dict() {
        let r = |s: &str| read_viescore(s);
        assert_eq!(
            r("{\n\"score\" : [7, 3],\n\"reasoning\" : \"ok\"\n}").unwrap(),
            vec![7.0, 3.0]
        );
        // text around the JSON; newlines inside it are removed before parsing
        assert_eq!(
            r("Sure.\n```json\n{\"score\": [\n 9,\n 8\n], \"reasoning\": \"a\"}\n```").unwrap(),
            vec![9.0, 8.0]
        );
        // one number is a list of one
        assert_eq!(r("{\"score\": 6, \"reasoning\": \"\"}").unwrap(), vec![6.0]);
        // the delimiters win over braces elsewhere
        assert_eq!(
            r("{x} ||V^=^V|| {\"score\": [2, 5]} ||V^=^V|| {y}").unwrap(),
            vec![2.0, 5.0]
        );
        // a bare list of two integers, or a bare integer 0-10
        assert_eq!(r("scores: [6, 0]").unwrap(), vec![6.0, 0.0]);
        assert_eq!(r("[6,10]").unwrap(), vec![6.0, 10.0]);
        assert_eq!(r("7").unwrap(), vec![7.0]);
        assert!(r("11").is_err());
        assert!(r("[6, 0, 1]").is_err());
        assert!(r("I cannot rate this.").is_err());
        assert!(
            r("{\"reasoning\": \"no score\"}")
                .unwrap_err()
                .contains("no `score`")
        );
        assert!(r("{\"score\": [], \"reasoning\": \"\"}").is_err());
        assert!(r("{score: [1, 2]}").unwrap_err().contains("does not parse"));
    }

    #[test]
    fn imgedit_answers_read_like_step1_get_avgscore() {
        let a = "Brief reasoning: the hat is there: mostly.\nPrompt Compliance: 4\n\
                 Visual Seamlessness: 5\n  Physical & Detail Fidelity: 3  \nOverall: 4/5\nNote: x";
        assert_eq!(
            read_imgedit(a).unwrap(),
            vec![
                ("Prompt Compliance".to_string(), 4.0),
                ("Visual Seamlessness".to_string(), 5.0),
                ("Physical & Detail Fidelity".to_string(), 3.0),
            ]
        );
        // `Score:4` has no ": " and `Score: 4.5` is not all digits
        assert!(read_imgedit("Score:4\nScore: 4.5\nScore: ").is_err());
        assert_eq!(round2(10.0 / 3.0), 3.33);
        assert_eq!(round2(11.0 / 3.0), 3.67);
        assert_eq!(round2(4.0), 4.0);
    }

    #[test]
    fn python_string_assignments_with_escapes_prefixes_and_redefinitions() {
        let src = [
            "import os",
            "_a = \"\"\"first\"\"\"",
            "_b = r\'\'\'raw \\n kept\'\'\'  # comment",
            "not_a_string = 3",
            "if True:",
            "    _indented = \"\"\"inside a block\"\"\"",
            "_a = \"\"\"second\"\"\"",
            "_c = \"\"\"\"\"\"",
        ]
        .join("\n");
        let src = src.as_str();
        let m = python_strings(src).unwrap();
        assert_eq!(m["_a"], "second");
        assert_eq!(m["_b"], "raw \\n kept");
        assert_eq!(m["_c"], "");
        assert!(!m.contains_key("_indented") && !m.contains_key("not_a_string"));
        let m = python_strings("_a = \"\"\"one\n  \"quoted\" \\\"x\\\" t\\tend\\\n joined\"\"\"\n")
            .unwrap();
        assert_eq!(m["_a"], "one\n  \"quoted\" \"x\" t\tend joined");
        let e = python_strings("x = 1\n_a = \"\"\"never closed\n").unwrap_err();
        assert_eq!(e, "`_a` (line 2): the \"\"\" string is never closed");
    }

    #[test]
    fn the_source_param_reads_builtin_or_a_path() {
        let p: PromptSource = serde_json::from_value(json!("builtin")).unwrap();
        assert!(p.is_builtin());
        let p: PromptSource = serde_json::from_value(json!("/x/vie_prompts.py")).unwrap();
        assert_eq!(p, PromptSource::Path("/x/vie_prompts.py".into()));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!("/x/vie_prompts.py")
        );
        assert!(serde_json::from_value::<PromptSource>(json!("")).is_err());
        assert!(serde_json::from_value::<PromptSource>(json!(3)).is_err());
    }
}
