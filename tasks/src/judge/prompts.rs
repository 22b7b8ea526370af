//! The judge's prompts, versioned: the reward prompt (method-spec §2), curation (paper A.2
//! locate, A.3 refine, A.4 filter), the consistency prompt of the correlation study (C.4) and
//! the GEdit-Bench (VIEScore SC/PQ) and ImgEdit-Bench rubrics (§8). The wording is ours: numbers
//! judged with these rubrics are not comparable with published ones (`eval` labels them so);
//! the benchmarks' own prompt files are read by [`super::published`].
//!
//! A prompt's rendered text is part of every judge cache key, and [`Prompt::digest`] of each
//! prompt is pinned in a test: change any text, field or image list and bump `version`.
//!
//! Placeholders in `user` templates are `{name}`: `{instruction}`, `{edit_type}` (from the
//! request) and `{format}` (the expected answer, from [`Prompt::answer_format`]). Images are
//! sent before the text, each after a one-line label, in the order of [`Prompt::images`].

use serde::Serialize;

/// Which image of a request goes where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageRole {
    Source,
    Edited,
    /// White = the edited region (an `edit_mask`).
    Mask,
}

impl ImageRole {
    /// The text line sent right before the image.
    pub fn label(self) -> &'static str {
        match self {
            ImageRole::Source => "Source image (before the edit):",
            ImageRole::Edited => "Edited image (after the edit):",
            ImageRole::Mask => "Mask (white = edited region, black = untouched):",
        }
    }
}

/// What one answer field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FieldKind {
    /// An integer score in `min..=max`; normalised to [0, 1] as `(v − min)/(max − min)`.
    Score { min: u32, max: u32 },
    /// Free text.
    Text,
    /// `[x1, y1, x2, y2]` in pixels, top-left and bottom-right corners.
    BoundingBox,
}

/// One field of the JSON answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldKind,
    /// Whether `logprobs` extraction reads this field's digit position (scores only).
    pub logprobs: bool,
}

const fn score(name: &'static str, min: u32, max: u32) -> Field {
    Field {
        name,
        kind: FieldKind::Score { min, max },
        logprobs: true,
    }
}

const fn text(name: &'static str) -> Field {
    Field {
        name,
        kind: FieldKind::Text,
        logprobs: false,
    }
}

/// A versioned prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Prompt {
    pub id: &'static str,
    pub version: u32,
    /// One line: what the answer is used for.
    pub purpose: &'static str,
    pub images: &'static [ImageRole],
    pub system: &'static str,
    pub user: &'static str,
    /// The answer's fields, in the order the model is asked to write them.
    pub fields: &'static [Field],
}

/// A placeholder without a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prompt `{prompt}` needs `{{{name}}}`, which the request does not give")]
pub struct MissingVar {
    pub prompt: String,
    pub name: String,
}

impl Prompt {
    /// `id@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// The expected answer, as shown to the model: `{"a": <integer 0-5>, "b": "<text>"}`.
    pub fn answer_format(&self) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|f| {
                let v = match f.kind {
                    FieldKind::Score { min, max } => format!("<integer {min}-{max}>"),
                    FieldKind::Text => "\"<text>\"".to_string(),
                    FieldKind::BoundingBox => "[x1, y1, x2, y2]".to_string(),
                };
                format!("\"{}\": {v}", f.name)
            })
            .collect();
        format!("{{{}}}", parts.join(", "))
    }

    /// The answer as a JSON Schema (for servers with schema-guided decoding).
    pub fn json_schema(&self) -> serde_json::Value {
        let props: serde_json::Map<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|f| {
                let v = match f.kind {
                    FieldKind::Score { min, max } => {
                        serde_json::json!({"type": "integer", "minimum": min, "maximum": max})
                    }
                    FieldKind::Text => serde_json::json!({"type": "string"}),
                    FieldKind::BoundingBox => serde_json::json!({
                        "type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4
                    }),
                };
                (f.name.to_string(), v)
            })
            .collect();
        let required: Vec<&str> = self.fields.iter().map(|f| f.name).collect();
        serde_json::json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// The placeholders of the user template, in order of appearance (with repeats).
    pub fn placeholders(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut rest = self.user;
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            match after.find('}') {
                Some(j) if is_ident(&after[..j]) => {
                    out.push(&after[..j]);
                    rest = &after[j + 1..];
                }
                _ => rest = after,
            }
        }
        out
    }

    /// Renders the user text. `{format}` is built in; other names come from `var`.
    /// Values are inserted verbatim and not scanned again.
    pub fn render_user(&self, var: impl Fn(&str) -> Option<String>) -> Result<String, MissingVar> {
        let mut out = String::with_capacity(self.user.len() + 64);
        let mut rest = self.user;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            match after.find('}') {
                Some(j) if is_ident(&after[..j]) => {
                    let name = &after[..j];
                    let value = if name == "format" {
                        self.answer_format()
                    } else {
                        var(name).ok_or_else(|| MissingVar {
                            prompt: self.key(),
                            name: name.to_string(),
                        })?
                    };
                    out.push_str(&value);
                    rest = &after[j + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Reads a placeholder's value back out of a rendered user text (used by the test
    /// server). The template line holding `{name}` must hold no other placeholder; the
    /// value is what sits between that line's prefix and suffix.
    pub fn extract_var(&self, rendered: &str, name: &str) -> Option<String> {
        let needle = format!("{{{name}}}");
        let line = self.user.lines().find(|l| l.contains(&needle))?;
        let (prefix, suffix) = line.split_once(&needle)?;
        if prefix.contains('{') || suffix.contains('{') {
            return None;
        }
        rendered.lines().find_map(|l| {
            let v = l.strip_prefix(prefix)?.strip_suffix(suffix)?;
            Some(v.to_string())
        })
    }

    /// The score fields, in answer order.
    pub fn score_fields(&self) -> impl Iterator<Item = (&'static str, u32, u32)> + '_ {
        self.fields.iter().filter_map(|f| match f.kind {
            FieldKind::Score { min, max } => Some((f.name, min, max)),
            _ => None,
        })
    }

    /// BLAKE3 (hex) over the canonical JSON of the whole prompt.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a prompt serialises");
        blake3::hash(&json).to_hex().to_string()
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Every prompt of this module.
pub const ALL: &[&Prompt] = &[
    &REWARD,
    &REWARD_SINGLE,
    &LOCATE,
    &REFINE,
    &FILTER,
    &CONSISTENCY,
    &GEDIT_SC,
    &GEDIT_PQ,
    &IMGEDIT,
];

/// The prompt with this id.
pub fn by_id(id: &str) -> Option<&'static Prompt> {
    ALL.iter().copied().find(|p| p.id == id)
}

const SOURCE_EDITED: &[ImageRole] = &[ImageRole::Source, ImageRole::Edited];
const WITH_MASK: &[ImageRole] = &[ImageRole::Source, ImageRole::Edited, ImageRole::Mask];

/// The training reward (method-spec §2): editing effect and visual quality, 0–5 each.
pub const REWARD: Prompt = Prompt {
    id: "reward",
    version: 1,
    purpose: "r_mllm: mean of editing effect and visual quality, each normalised to [0, 1]",
    images: SOURCE_EDITED,
    system: "You review instruction-guided image edits and you are hard to please. You get the \
source image first, then the edited image, then the instruction that was given to the editor. \
Grade two things independently of each other.\n\
editing_effect: did the editor do what the instruction asks, to the object or region it names, \
and nothing else? 0 = nothing that was asked happened, or the wrong thing changed; \
5 = the instruction is carried out fully and precisely.\n\
visual_quality: does the changed part of the image look clean and believable: plausible \
colours, crisp edges, no noise, smears, seams, halos or warped shapes? \
0 = badly damaged; 5 = flawless.\n\
Answer with a single JSON object and no other text.",
    user: "Editing instruction: \"{instruction}\"\n\
Grade the edit. Reply with exactly this JSON object, integers only:\n{format}",
    fields: &[score("editing_effect", 0, 5), score("visual_quality", 0, 5)],
};

/// Variant `single` of the reward: one 0–5 score (the reference code's form).
pub const REWARD_SINGLE: Prompt = Prompt {
    id: "reward-single",
    version: 1,
    purpose: "r_mllm (variant `single`): one overall score / 5",
    images: SOURCE_EDITED,
    system: "You review instruction-guided image edits and you are hard to please. You get the \
source image first, then the edited image, then the instruction that was given to the editor. \
Give one overall grade from 0 to 5 that weighs both whether the instruction was carried out on \
the right object and nothing else (the main criterion) and whether the changed part looks clean \
and believable. 0 = nothing asked for happened or the result is ruined; 5 = a precise, flawless \
edit.\nAnswer with a single JSON object and no other text.",
    user: "Editing instruction: \"{instruction}\"\n\
Grade the edit. Reply with exactly this JSON object, an integer only:\n{format}",
    fields: &[score("score", 0, 5)],
};

/// Curation stage 1 (paper A.2): edit type, edited object and its box.
pub const LOCATE: Prompt = Prompt {
    id: "curation-locate",
    version: 1,
    purpose: "mask annotation: edit type, edited object, bounding box for the segmenter",
    images: SOURCE_EDITED,
    system: "You analyse image edits. You get the source image, the edited image and the \
instruction that produced the edit.\n\
First, describe the kind of edit with a short verb phrase, such as add, remove, replace, change \
colour, change material or texture, change pose or action, change background or move; a coarse \
type from the dataset is given as a hint. Second, name the object the edit is about, as a noun \
phrase taken from the instruction. Third, give that object's bounding box in pixel coordinates \
as [x1, y1, x2, y2], where (x1, y1) is the top-left and (x2, y2) the bottom-right corner: \
measure it in the edited image when the edit adds the object, and in the source image for \
every other kind of edit.\nAnswer with a single JSON object and no other text.",
    user: "Editing instruction: \"{instruction}\"\n\
Coarse edit type (hint): {edit_type}\n\
Reply with exactly this JSON object:\n{format}",
    fields: &[
        text("edit_type"),
        text("edited_object"),
        Field {
            name: "bounding_box",
            kind: FieldKind::BoundingBox,
            logprobs: false,
        },
    ],
};

/// Curation stage 2 (paper A.3): a more precise instruction, using the mask.
pub const REFINE: Prompt = Prompt {
    id: "curation-refine",
    version: 1,
    purpose: "instruction refinement with the object mask as an extra visual cue",
    images: WITH_MASK,
    system: "You make image-editing instructions more precise. You get the source image, the \
edited image, a binary mask in which white marks the object that was edited, and a short \
instruction.\n\
Look at the masked object in both images and work out exactly what changed about it: colour, \
texture, material, shape, position, pose or how it relates to things around it. Then rewrite \
the instruction so that it pins down the target (where it is, what it looks like, what it is \
next to) and the change (what it should become). Keep the structure and the key words of the \
original instruction; be more specific than the original, but stay short and unambiguous.\n\
Answer with a single JSON object and no other text.",
    user: "Original instruction: \"{instruction}\"\n\
Reply with exactly this JSON object:\n{format}",
    fields: &[text("refined_instruction")],
};

/// Curation stage 3 (paper A.4): three 1–10 scores; samples whose mean exceeds 9.4 are kept.
pub const FILTER: Prompt = Prompt {
    id: "curation-filter",
    version: 1,
    purpose: "filtering: instruction clarity, mask accuracy, target prominence (1-10 each)",
    images: WITH_MASK,
    system: "You audit training samples for an image-editing model. A sample is a source image, \
an edited image, a binary mask whose white area is the region to edit, and an instruction. \
Rate three properties, each with an integer from 1 to 10.\n\
instruction_clarity: 10 = precise and grammatical, with only one possible reading of what must \
change; 1 = empty, meaningless or unintelligible.\n\
mask_accuracy: 10 = the mask covers exactly the object the instruction names in the source \
image, and nothing else, with tight boundaries; 1 = it covers another object or the background, \
or misses the target entirely.\n\
target_prominence: 10 = in the source image the target is large, central, unobstructed and \
clearly visible; 1 = it is tiny, hidden, blurred or hard to find.\n\
Answer with a single JSON object, without any reasoning.",
    user: "Editing instruction: \"{instruction}\"\n\
Reply with exactly this JSON object:\n{format}",
    fields: &[
        score("instruction_clarity", 1, 10),
        score("mask_accuracy", 1, 10),
        score("target_prominence", 1, 10),
    ],
};

/// The correlation study (paper C.4): background consistency, 1–10, with a short reason.
pub const CONSISTENCY: Prompt = Prompt {
    id: "consistency",
    version: 1,
    purpose: "MLLM background-consistency score for the correlation study (C.4)",
    images: WITH_MASK,
    system: "You inspect image edits for pixel-level fidelity and you are strict. You get the \
source image, the edited image and a binary mask: white marks the edited object, black marks \
the background, which should not have changed at all.\n\
Ignore everything inside the white area. Compare the black area of the two images closely and \
look for any change that should not be there: shifts in colour or brightness, colour bleeding \
from the edit, blur, noise, altered textures, warped or displaced structures.\n\
Rate the consistency of the background with an integer from 1 to 10: 10 only if it is \
identical pixel for pixel, 1 if it is badly altered. Write a short justification first.\n\
Answer with a single JSON object and no other text.",
    user: "Reply with exactly this JSON object:\n{format}",
    fields: &[text("reasoning"), score("consistency_score", 1, 10)],
};

/// GEdit-Bench semantic consistency (VIEScore): SC = min(editing_success, overediting).
pub const GEDIT_SC: Prompt = Prompt {
    id: "gedit-sc",
    version: 1,
    purpose: "GEdit-Bench SC = min(editing_success, overediting), 0-10",
    images: SOURCE_EDITED,
    system: "You grade an image edit for semantic correctness. You get the source image, then \
the edited image, then the instruction. Give two integers from 0 to 10.\n\
editing_success: how completely and correctly the edited image carries out the instruction \
(0 = not at all, 10 = perfectly).\n\
overediting: how well the change is limited to what was asked (0 = the image was changed far \
beyond the instruction or replaced by another image, 10 = nothing changed apart from what the \
instruction asks).\n\
Answer with a single JSON object and no other text.",
    user: "Editing instruction: \"{instruction}\"\n\
Reply with exactly this JSON object:\n{format}",
    fields: &[score("editing_success", 0, 10), score("overediting", 0, 10)],
};

/// GEdit-Bench perceptual quality (VIEScore): PQ = min(naturalness, artifacts).
pub const GEDIT_PQ: Prompt = Prompt {
    id: "gedit-pq",
    version: 1,
    purpose: "GEdit-Bench PQ = min(naturalness, artifacts), 0-10",
    images: &[ImageRole::Edited],
    system: "You grade the perceptual quality of one image, which an editing model produced. \
Give two integers from 0 to 10.\n\
naturalness: does the image look real and coherent: lighting, shadows, perspective, scale and \
proportions (0 = plainly unnatural, 10 = entirely natural)?\n\
artifacts: is it free of visible defects such as distortion, blur, noise, seams, watermarks or \
broken details (0 = heavily damaged, 10 = no defect at all)?\n\
Answer with a single JSON object and no other text.",
    user: "Reply with exactly this JSON object:\n{format}",
    fields: &[score("naturalness", 0, 10), score("artifacts", 0, 10)],
};

/// ImgEdit-Bench: three 1–5 rubric scores; the sample's score is their mean.
pub const IMGEDIT: Prompt = Prompt {
    id: "imgedit",
    version: 1,
    purpose: "ImgEdit-Bench: mean of three 1-5 rubric scores",
    images: SOURCE_EDITED,
    system: "You evaluate an instruction-based image edit. You get the source image, then the \
edited image, then the instruction. Give three integers from 1 to 5 (5 = best).\n\
prompt_compliance: the edit does what the instruction says, to the right object and to the \
right degree.\n\
visual_naturalness: the new content blends into the picture: consistent lighting, colour, \
scale and perspective, no visible seams.\n\
physical_integrity: edited and surrounding content is physically plausible and detailed: no \
broken structures, melted textures or impossible geometry, and untouched content is intact.\n\
Answer with a single JSON object and no other text.",
    user: "Editing instruction: \"{instruction}\"\n\
Reply with exactly this JSON object:\n{format}",
    fields: &[
        score("prompt_compliance", 1, 5),
        score("visual_naturalness", 1, 5),
        score("physical_integrity", 1, 5),
    ],
};

/// GEdit-Bench per sample (method-spec §8): `SC = min(editing_success, overediting)`,
/// `PQ = min(naturalness, artifacts)`, `O = sqrt(SC·PQ)`, all on the 0–10 scale.
pub fn gedit_overall(
    editing_success: f64,
    overediting: f64,
    naturalness: f64,
    artifacts: f64,
) -> f64 {
    let sc = editing_success.min(overediting);
    let pq = naturalness.min(artifacts);
    (sc * pq).sqrt()
}

/// ImgEdit-Bench per sample: the mean of its three 1–5 rubric scores.
pub fn imgedit_score(
    prompt_compliance: f64,
    visual_naturalness: f64,
    physical_integrity: f64,
) -> f64 {
    (prompt_compliance + visual_naturalness + physical_integrity) / 3.0
}

#[cfg(test)]
mod tests;
