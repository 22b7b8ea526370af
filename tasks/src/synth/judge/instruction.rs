//! How the rule judge reads instructions of the synthetic edit world (`crate::synth`):
//! the world's vocabulary (its palette, shapes and background tones, read from that module so
//! the two never drift apart) and a parser for every phrasing the world writes, short and
//! refined (paper A.3 style), into an [`Edit`].
//!
//! Grammar (case-insensitive; `colour`/`color`, `gray`/`grey` and `centre`/`center` are
//! interchangeable; `OBJ` = `[the|a|an] COLOUR SHAPE [in|from the REGION [of the image]]`;
//! anything after a comma or after one of `keeping, while, leaving, restoring, without, and,
//! of, on` that follows a complete sentence is ignored):
//!
//! | edit type | sentences |
//! |---|---|
//! | replace | `replace OBJ with a COLOUR SHAPE` · `turn/change OBJ into a COLOUR SHAPE` · `change OBJ to a COLOUR SHAPE` · `swap OBJ for a COLOUR SHAPE` |
//! | remove | `remove/delete/erase OBJ` · `take away OBJ` |
//! | add | `add/put/place/insert a COLOUR SHAPE [in/on/at the REGION [of the image]]` |
//! | attribute | `make/paint/turn/color OBJ COLOUR` · `change OBJ to COLOUR` · `change the color of OBJ to COLOUR` · `make OBJ bigger/larger/smaller` · `enlarge/shrink OBJ` |
//! | background | `change the background to [a] TONE` · `make/turn the background TONE` · `replace the background [of the image] with a TONE one/texture` |
//! | motion | `move/shift/slide OBJ [a little] to the left/right` · `... up/down` · `... to the top/bottom` |
//! | tone | `make the image/picture warmer/darker` · `give the picture a warm tone` · `darken the whole picture` · `shift the colors of the whole image towards warm tones` |
//! | style | `make the image look pixelated` · `apply a mosaic style to the image` · `pixelate the image` · `render the whole image as a coarse mosaic` |
//!
//! REGION: `top left`, `top right`, `bottom left`, `bottom right` (quadrants), `left`,
//! `right`, `top`, `bottom` (halves), `center`/`middle` (the middle third).

use crate::synth::{self, EditType, Shape};
use serde::{Deserialize, Serialize};

/// A palette colour of the synthetic world: an index into `synth::PALETTE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Colour(pub usize);

impl Colour {
    pub fn all() -> impl Iterator<Item = Colour> {
        (0..synth::PALETTE.len()).map(Colour)
    }

    pub fn name(self) -> &'static str {
        synth::PALETTE[self.0].0
    }

    /// The colour as 8-bit RGB (rounded).
    pub fn rgb(self) -> [u8; 3] {
        synth::PALETTE[self.0].1.map(|v| (v * 255.0).round() as u8)
    }

    pub fn from_name(s: &str) -> Option<Colour> {
        Colour::all().find(|c| c.name() == s)
    }
}

/// A named background tone of the synthetic world: an index into `synth::BACKGROUND_TONES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tone(pub usize);

impl Tone {
    pub fn all() -> impl Iterator<Item = Tone> {
        (0..synth::BACKGROUND_TONES.len()).map(Tone)
    }

    pub fn name(self) -> &'static str {
        synth::BACKGROUND_TONES[self.0].0
    }

    /// The tone's base colour in [0, 255].
    pub fn rgb(self) -> [f64; 3] {
        synth::BACKGROUND_TONES[self.0].1.map(|v| v as f64 * 255.0)
    }

    pub fn from_name(s: &str) -> Option<Tone> {
        Tone::all().find(|c| c.name() == s)
    }
}

macro_rules! serde_by_name {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::from_name(&s)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown {} `{s}`", $what)))
            }
        }
    };
}
serde_by_name!(Colour, "colour");
serde_by_name!(Tone, "background tone");

/// "the red circle".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub colour: Colour,
    pub shape: Shape,
}

impl ObjectRef {
    pub fn of(o: &synth::Object) -> ObjectRef {
        ObjectRef {
            colour: Colour(o.color),
            shape: o.shape,
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.colour.name(), self.shape.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
}

impl Direction {
    pub const ALL: [Direction; 4] = [
        Direction::Left,
        Direction::Right,
        Direction::Up,
        Direction::Down,
    ];

    /// Unit vector, image coordinates (y down).
    pub fn unit(self) -> (f64, f64) {
        match self {
            Direction::Left => (-1.0, 0.0),
            Direction::Right => (1.0, 0.0),
            Direction::Up => (0.0, -1.0),
            Direction::Down => (0.0, 1.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeChange {
    Bigger,
    Smaller,
}

/// A part of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Region {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
    Left,
    Right,
    Top,
    Bottom,
    Center,
}

impl Region {
    /// Whether point `(x, y)` of a `w`×`h` image lies in the region (quadrants and halves
    /// split at the middle, as the synthetic world does; center = the middle third).
    pub fn contains(self, x: f64, y: f64, w: f64, h: f64) -> bool {
        let (left, top) = (x < w / 2.0, y < h / 2.0);
        match self {
            Region::TopLeft => top && left,
            Region::TopRight => top && !left,
            Region::BottomLeft => !top && left,
            Region::BottomRight => !top && !left,
            Region::Left => left,
            Region::Right => !left,
            Region::Top => top,
            Region::Bottom => !top,
            Region::Center => {
                (w / 3.0..=2.0 * w / 3.0).contains(&x) && (h / 3.0..=2.0 * h / 3.0).contains(&y)
            }
        }
    }

    pub fn phrase(self) -> &'static str {
        match self {
            Region::TopLeft => "top left",
            Region::TopRight => "top right",
            Region::BottomLeft => "bottom left",
            Region::BottomRight => "bottom right",
            Region::Left => "left",
            Region::Right => "right",
            Region::Top => "top",
            Region::Bottom => "bottom",
            Region::Center => "center",
        }
    }
}

/// A global colour change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToneChange {
    Warmer,
    Darker,
}

/// One edit, as the instruction asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "kebab-case")]
pub enum Edit {
    Replace {
        target: ObjectRef,
        with: ObjectRef,
    },
    Remove {
        target: ObjectRef,
    },
    Add {
        object: ObjectRef,
        region: Option<Region>,
    },
    Recolour {
        target: ObjectRef,
        to: Colour,
    },
    Resize {
        target: ObjectRef,
        change: SizeChange,
    },
    Background {
        to: Tone,
    },
    Move {
        target: ObjectRef,
        direction: Direction,
    },
    Tone {
        change: ToneChange,
    },
    Mosaic,
}

impl Edit {
    /// The edit type, in the synthetic world's terms.
    pub fn edit_type(&self) -> EditType {
        match self {
            Edit::Replace { .. } => EditType::Replace,
            Edit::Remove { .. } => EditType::Remove,
            Edit::Add { .. } => EditType::Add,
            Edit::Recolour { .. } | Edit::Resize { .. } => EditType::Attribute,
            Edit::Background { .. } => EditType::Background,
            Edit::Move { .. } => EditType::Motion,
            Edit::Tone { .. } => EditType::Tone,
            Edit::Mosaic => EditType::Style,
        }
    }

    /// The object the edit is about in the source image.
    pub fn target(&self) -> Option<ObjectRef> {
        match *self {
            Edit::Replace { target, .. }
            | Edit::Remove { target }
            | Edit::Recolour { target, .. }
            | Edit::Resize { target, .. }
            | Edit::Move { target, .. } => Some(target),
            _ => None,
        }
    }

    /// One sentence that asks for this edit (the grammar's first form).
    pub fn instruction(&self) -> String {
        match *self {
            Edit::Replace { target, with } => format!("replace the {target} with a {with}"),
            Edit::Remove { target } => format!("remove the {target}"),
            Edit::Add {
                object,
                region: None,
            } => format!("add a {object}"),
            Edit::Add {
                object,
                region: Some(r),
            } => format!("add a {object} in the {}", r.phrase()),
            Edit::Recolour { target, to } => format!("make the {target} {}", to.name()),
            Edit::Resize { target, change } => format!(
                "make the {target} {}",
                if change == SizeChange::Bigger {
                    "bigger"
                } else {
                    "smaller"
                }
            ),
            Edit::Background { to } => format!("change the background to {}", to.name()),
            Edit::Move { target, direction } => match direction {
                Direction::Left => format!("move the {target} to the left"),
                Direction::Right => format!("move the {target} to the right"),
                Direction::Up => format!("move the {target} up"),
                Direction::Down => format!("move the {target} down"),
            },
            Edit::Tone {
                change: ToneChange::Warmer,
            } => "make the image warmer".into(),
            Edit::Tone {
                change: ToneChange::Darker,
            } => "make the image darker".into(),
            Edit::Mosaic => "make the image look pixelated".into(),
        }
    }
}

/// An instruction outside the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read instruction `{instruction}`: {reason}")]
pub struct ParseError {
    pub instruction: String,
    pub reason: String,
}

/// Words that start an ignored tail once a sentence is complete.
const TAIL: &[&str] = &[
    ",",
    ";",
    "keeping",
    "while",
    "leaving",
    "restoring",
    "without",
    "and",
    "of",
    "on",
    "so",
];

struct Words<'a> {
    text: &'a str,
    w: Vec<String>,
    i: usize,
}

impl Words<'_> {
    fn peek(&self) -> Option<&str> {
        self.w.get(self.i).map(String::as_str)
    }

    fn peek_at(&self, k: usize) -> Option<&str> {
        self.w.get(self.i + k).map(String::as_str)
    }

    fn eat(&mut self, word: &str) -> bool {
        let hit = self.peek() == Some(word);
        self.i += usize::from(hit);
        hit
    }

    /// Eats the words of `seq` if they come next.
    fn eat_seq(&mut self, seq: &[&str]) -> bool {
        let hit = seq
            .iter()
            .enumerate()
            .all(|(k, w)| self.peek_at(k) == Some(*w));
        if hit {
            self.i += seq.len();
        }
        hit
    }

    fn eat_any(&mut self, words: &[&str]) -> Option<String> {
        let w = self.peek()?.to_string();
        words.contains(&w.as_str()).then(|| {
            self.i += 1;
            w
        })
    }

    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            instruction: self.text.to_string(),
            reason: reason.into(),
        })
    }

    fn wanted(&self, what: &str) -> String {
        match self.peek() {
            Some(w) => format!("expected {what}, found `{w}`"),
            None => format!("expected {what} at the end"),
        }
    }

    fn expect(&mut self, word: &str) -> Result<(), ParseError> {
        if self.eat(word) {
            Ok(())
        } else {
            self.fail(self.wanted(&format!("`{word}`")))
        }
    }

    fn colour(&mut self) -> Result<Colour, ParseError> {
        match self.peek().and_then(Colour::from_name) {
            Some(c) => {
                self.i += 1;
                Ok(c)
            }
            None => {
                let names: Vec<_> = Colour::all().map(Colour::name).collect();
                self.fail(self.wanted(&format!("a colour ({})", names.join(", "))))
            }
        }
    }

    /// A tone name, possibly of several words ("light blue"), longest first.
    fn tone(&mut self) -> Result<Tone, ParseError> {
        let mut tones: Vec<Tone> = Tone::all().collect();
        tones.sort_by_key(|t| std::cmp::Reverse(t.name().len()));
        for t in tones {
            let words: Vec<&str> = t.name().split(' ').collect();
            if self.eat_seq(&words) {
                return Ok(t);
            }
        }
        let names: Vec<_> = Tone::all().map(Tone::name).collect();
        self.fail(self.wanted(&format!("a background ({})", names.join(", "))))
    }

    fn shape(&mut self) -> Result<Shape, ParseError> {
        match self
            .peek()
            .and_then(|w| Shape::ALL.into_iter().find(|s| s.name() == w))
        {
            Some(s) => {
                self.i += 1;
                Ok(s)
            }
            None => {
                let names: Vec<_> = Shape::ALL.iter().map(|s| s.name()).collect();
                self.fail(self.wanted(&format!("a shape ({})", names.join(", "))))
            }
        }
    }

    /// `[the|a|an] COLOUR SHAPE [in|from the REGION [of the image]]`
    fn object(&mut self) -> Result<ObjectRef, ParseError> {
        self.eat_any(&["the", "a", "an"]);
        let colour = self.colour()?;
        let shape = self.shape()?;
        if matches!(self.peek(), Some("in" | "from"))
            && self.peek_at(1) == Some("the")
            && self.region_at(2)
        {
            self.i += 2;
            self.region()?;
        }
        Ok(ObjectRef { colour, shape })
    }

    fn region_at(&self, k: usize) -> bool {
        matches!(
            self.peek_at(k),
            Some("top" | "bottom" | "left" | "right" | "center" | "middle")
        )
    }

    /// `REGION [side|corner|part] [of the image|picture]`
    fn region(&mut self) -> Result<Region, ParseError> {
        let first = self.eat_any(&["top", "bottom", "left", "right", "center", "middle"]);
        let r = match first.as_deref() {
            Some("top") if self.eat("left") => Region::TopLeft,
            Some("top") if self.eat("right") => Region::TopRight,
            Some("bottom") if self.eat("left") => Region::BottomLeft,
            Some("bottom") if self.eat("right") => Region::BottomRight,
            Some("top") => Region::Top,
            Some("bottom") => Region::Bottom,
            Some("left") => Region::Left,
            Some("right") => Region::Right,
            Some(_) => Region::Center,
            None => return self.fail(self.wanted("a place (top left, left, center, ...)")),
        };
        self.eat_any(&["side", "corner", "part"]);
        if self.peek() == Some("of")
            && self.peek_at(1) == Some("the")
            && matches!(self.peek_at(2), Some("image" | "picture"))
        {
            self.i += 3;
        }
        Ok(r)
    }

    /// The end, or an ignored tail.
    fn end(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(w) if TAIL.contains(&w) => Ok(()),
            Some(w) => self.fail(format!("unexpected `{w}` after a complete instruction")),
        }
    }
}

fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.to_lowercase().split_whitespace() {
        let mut w = raw;
        let mut trailing = Vec::new();
        while let Some(last) = w
            .chars()
            .last()
            .filter(|c| matches!(c, ',' | '.' | ';' | ':' | '!' | '?'))
        {
            trailing.push(last.to_string());
            w = &w[..w.len() - last.len_utf8()];
        }
        if !w.is_empty() {
            out.push(
                match w {
                    "colour" => "color",
                    "colours" => "colors",
                    "gray" => "grey",
                    "centre" => "center",
                    other => other,
                }
                .to_string(),
            );
        }
        out.extend(trailing.into_iter().rev());
    }
    // A final full stop ends the sentence.
    while out
        .last()
        .is_some_and(|w| matches!(w.as_str(), "." | "!" | "?"))
    {
        out.pop();
    }
    out
}

/// Parses an instruction of the grammar in the module docs.
pub fn parse(text: &str) -> Result<Edit, ParseError> {
    let mut p = Words {
        text,
        w: tokens(text),
        i: 0,
    };
    let Some(verb) = p.peek().map(str::to_string) else {
        return p.fail("it is empty");
    };
    p.i += 1;
    let image_word = |p: &mut Words| p.eat_any(&["image", "picture"]).is_some();
    let edit = match verb.as_str() {
        "remove" | "delete" | "erase" => Edit::Remove {
            target: p.object()?,
        },
        "take" => {
            p.expect("away")?;
            Edit::Remove {
                target: p.object()?,
            }
        }
        "add" | "put" | "place" | "insert" => {
            p.eat_any(&["a", "an"]);
            let object = ObjectRef {
                colour: p.colour()?,
                shape: p.shape()?,
            };
            let region = if matches!(p.peek(), Some("in" | "on" | "at"))
                && p.peek_at(1) == Some("the")
                && p.region_at(2)
            {
                p.i += 2;
                Some(p.region()?)
            } else {
                None
            };
            Edit::Add { object, region }
        }
        "shift" if p.peek_at(1) == Some("colors") => {
            // shift the colors of the whole image towards warm tones
            p.expect("the")?;
            p.expect("colors")?;
            p.expect("of")?;
            p.expect("the")?;
            p.eat_any(&["whole", "entire"]);
            if !image_word(&mut p) {
                return p.fail(p.wanted("`image` or `picture`"));
            }
            p.eat_any(&["towards", "toward", "to"]);
            p.expect("warm")?;
            p.eat_any(&["tones", "tone", "colors"]);
            Edit::Tone {
                change: ToneChange::Warmer,
            }
        }
        "move" | "shift" | "slide" => {
            let target = p.object()?;
            p.eat_seq(&["a", "little"]);
            p.eat_any(&["slightly", "further"]);
            if p.eat("to") {
                p.expect("the")?;
            }
            let direction = match p
                .eat_any(&["left", "right", "up", "down", "top", "bottom"])
                .as_deref()
            {
                Some("left") => Direction::Left,
                Some("right") => Direction::Right,
                Some("up" | "top") => Direction::Up,
                Some("down" | "bottom") => Direction::Down,
                _ => return p.fail(p.wanted("left, right, up or down")),
            };
            Edit::Move { target, direction }
        }
        "enlarge" | "shrink" => Edit::Resize {
            target: p.object()?,
            change: if verb == "enlarge" {
                SizeChange::Bigger
            } else {
                SizeChange::Smaller
            },
        },
        "swap" => {
            let target = p.object()?;
            p.expect("for")?;
            p.eat_any(&["a", "an"]);
            Edit::Replace {
                target,
                with: ObjectRef {
                    colour: p.colour()?,
                    shape: p.shape()?,
                },
            }
        }
        "darken" => {
            p.expect("the")?;
            p.eat_any(&["whole", "entire"]);
            if !image_word(&mut p) {
                return p.fail(p.wanted("`image` or `picture`"));
            }
            p.eat("evenly");
            Edit::Tone {
                change: ToneChange::Darker,
            }
        }
        "give" => {
            p.expect("the")?;
            if !image_word(&mut p) {
                return p.fail(p.wanted("`image` or `picture`"));
            }
            p.eat_any(&["a", "an"]);
            p.expect("warm")?;
            p.expect("tone")?;
            Edit::Tone {
                change: ToneChange::Warmer,
            }
        }
        "apply" => {
            p.eat_any(&["a", "an"]);
            p.expect("mosaic")?;
            p.eat_any(&["style", "effect", "filter"]);
            if p.eat("to") {
                p.expect("the")?;
                if !image_word(&mut p) {
                    return p.fail(p.wanted("`image` or `picture`"));
                }
            }
            Edit::Mosaic
        }
        "pixelate" => {
            p.expect("the")?;
            if !image_word(&mut p) {
                return p.fail(p.wanted("`image` or `picture`"));
            }
            Edit::Mosaic
        }
        "render" => {
            p.expect("the")?;
            p.eat_any(&["whole", "entire"]);
            if !image_word(&mut p) {
                return p.fail(p.wanted("`image` or `picture`"));
            }
            p.expect("as")?;
            p.eat_any(&["a", "an"]);
            p.eat_any(&["coarse", "fine"]);
            p.expect("mosaic")?;
            Edit::Mosaic
        }
        "replace" if p.peek_at(1) == Some("background") => {
            p.expect("the")?;
            p.expect("background")?;
            if p.eat_seq(&["of", "the"]) && !image_word(&mut p) {
                return p.fail(p.wanted("`image` or `picture`"));
            }
            p.expect("with")?;
            p.eat_any(&["a", "an"]);
            let to = p.tone()?;
            p.eat_any(&["one", "texture", "background"]);
            Edit::Background { to }
        }
        "replace" => {
            let target = p.object()?;
            p.expect("with")?;
            p.eat_any(&["a", "an"]);
            Edit::Replace {
                target,
                with: ObjectRef {
                    colour: p.colour()?,
                    shape: p.shape()?,
                },
            }
        }
        "change" | "turn" | "make" | "paint" | "color" => {
            if p.peek() == Some("the")
                && matches!(p.peek_at(1), Some("image" | "picture"))
                && verb == "make"
            {
                p.i += 2;
                match p.eat_any(&["warmer", "darker", "look"]).as_deref() {
                    Some("warmer") => Edit::Tone {
                        change: ToneChange::Warmer,
                    },
                    Some("darker") => Edit::Tone {
                        change: ToneChange::Darker,
                    },
                    Some(_) => {
                        p.expect("pixelated")?;
                        Edit::Mosaic
                    }
                    None => return p.fail(p.wanted("`warmer`, `darker` or `look pixelated`")),
                }
            } else if p.peek_at(1) == Some("background") {
                p.expect("the")?;
                p.expect("background")?;
                if verb == "change" {
                    p.expect("to")?;
                } else {
                    p.eat("to");
                }
                p.eat_any(&["a", "an"]);
                let to = p.tone()?;
                p.eat_any(&["one", "texture", "background"]);
                Edit::Background { to }
            } else if verb == "change" && p.peek_at(1) == Some("color") {
                p.expect("the")?;
                p.expect("color")?;
                p.expect("of")?;
                let target = p.object()?;
                p.expect("to")?;
                Edit::Recolour {
                    target,
                    to: p.colour()?,
                }
            } else {
                let target = p.object()?;
                if p.eat("into") {
                    p.eat_any(&["a", "an"]);
                    Edit::Replace {
                        target,
                        with: ObjectRef {
                            colour: p.colour()?,
                            shape: p.shape()?,
                        },
                    }
                } else if verb == "make"
                    && let Some(w) = p.eat_any(&["bigger", "larger", "smaller"])
                {
                    Edit::Resize {
                        target,
                        change: if w == "smaller" {
                            SizeChange::Smaller
                        } else {
                            SizeChange::Bigger
                        },
                    }
                } else {
                    if verb == "change" {
                        p.expect("to")?;
                    } else {
                        p.eat("to");
                    }
                    let article = p.eat_any(&["a", "an"]).is_some();
                    let colour = p.colour()?;
                    if article || Shape::ALL.iter().any(|s| p.peek() == Some(s.name())) {
                        Edit::Replace {
                            target,
                            with: ObjectRef {
                                colour,
                                shape: p.shape()?,
                            },
                        }
                    } else {
                        Edit::Recolour { target, to: colour }
                    }
                }
            }
        }
        other => return p.fail(format!("unknown verb `{other}`")),
    };
    p.end()?;
    Ok(edit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{make_edit, random_scene, stream};

    fn c(name: &str) -> Colour {
        Colour::from_name(name).unwrap()
    }

    fn r(colour: &str, shape: Shape) -> ObjectRef {
        ObjectRef {
            colour: c(colour),
            shape,
        }
    }

    /// Every instruction and refined instruction the synthetic world writes parses into the
    /// edit its scenes show (type, target, and the asked colour, shape, tone or direction).
    #[test]
    fn every_synthetic_world_sentence_parses_into_its_edit() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1200u64 {
            let mut rng = stream(11, "parse", i);
            let scene = random_scene(&mut rng, 48, 4);
            let all = [EditType::LOCAL.as_slice(), EditType::GLOBAL.as_slice()].concat();
            let t = all[i as usize % all.len()];
            let Some(e) = make_edit(&mut rng, &scene, t, 1) else {
                continue;
            };
            for text in [&e.instruction, &e.instruction_refined] {
                let edit = parse(text).unwrap_or_else(|err| panic!("{err}"));
                assert_eq!(edit.edit_type(), t, "`{text}`");
                if let Some(target) = edit.target() {
                    assert!(
                        e.source.objects.iter().any(|o| ObjectRef::of(o) == target),
                        "`{text}` names no source object"
                    );
                }
                let changed: Vec<_> = e
                    .target
                    .objects
                    .iter()
                    .filter(|o| !e.source.objects.contains(o))
                    .collect();
                match edit {
                    Edit::Replace { with, .. } => {
                        assert_eq!(ObjectRef::of(changed[0]), with, "`{text}`")
                    }
                    Edit::Recolour { to, .. } => {
                        assert_eq!(Colour(changed[0].color), to, "`{text}`")
                    }
                    Edit::Add { object, .. } => {
                        assert_eq!(ObjectRef::of(changed[0]), object, "`{text}`")
                    }
                    Edit::Background { to } => {
                        assert_eq!(to.name(), e.target.background_name, "`{text}`")
                    }
                    _ => {}
                }
                seen.insert(format!("{:?}", std::mem::discriminant(&edit)));
            }
        }
        assert_eq!(seen.len(), 9, "every edit kind occurs");
    }

    #[test]
    fn canonical_sentences_parse_back() {
        let red = r("red", Shape::Circle);
        let mut edits = vec![
            Edit::Replace {
                target: red,
                with: r("blue", Shape::Square),
            },
            Edit::Remove { target: red },
            Edit::Add {
                object: r("green", Shape::Triangle),
                region: None,
            },
            Edit::Recolour {
                target: red,
                to: c("orange"),
            },
            Edit::Resize {
                target: red,
                change: SizeChange::Bigger,
            },
            Edit::Resize {
                target: red,
                change: SizeChange::Smaller,
            },
            Edit::Tone {
                change: ToneChange::Warmer,
            },
            Edit::Tone {
                change: ToneChange::Darker,
            },
            Edit::Mosaic,
        ];
        for t in Tone::all() {
            edits.push(Edit::Background { to: t });
        }
        for region in [
            Region::TopLeft,
            Region::TopRight,
            Region::BottomLeft,
            Region::BottomRight,
            Region::Left,
            Region::Right,
            Region::Top,
            Region::Bottom,
            Region::Center,
        ] {
            edits.push(Edit::Add {
                object: r("green", Shape::Triangle),
                region: Some(region),
            });
        }
        for direction in Direction::ALL {
            edits.push(Edit::Move {
                target: red,
                direction,
            });
        }
        for e in edits {
            let text = e.instruction();
            assert_eq!(parse(&text), Ok(e), "`{text}`");
            assert_eq!(
                parse(&format!("{}.", text.to_uppercase())),
                Ok(e),
                "`{text}`"
            );
        }
    }

    #[test]
    fn other_phrasings_parse() {
        let red = r("red", Shape::Circle);
        assert_eq!(
            parse("change the red circle to blue"),
            Ok(Edit::Recolour {
                target: red,
                to: c("blue")
            })
        );
        assert_eq!(
            parse("Change the red circle into a blue square, please"),
            Ok(Edit::Replace {
                target: red,
                with: r("blue", Shape::Square)
            })
        );
        assert_eq!(
            parse("make the background gray"),
            Ok(Edit::Background {
                to: Tone::from_name("grey").unwrap()
            })
        );
        assert_eq!(
            parse(
                "Move the red circle from the top left of the image a little to the left, restoring the rest."
            ),
            Ok(Edit::Move {
                target: red,
                direction: Direction::Left
            })
        );
    }

    #[test]
    fn errors_say_what_was_expected() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(e(""), "cannot read instruction ``: it is empty");
        assert_eq!(
            e("paint the sky"),
            "cannot read instruction `paint the sky`: expected a colour (red, green, blue, yellow, purple, orange), found `sky`"
        );
        assert_eq!(
            e("remove the red"),
            "cannot read instruction `remove the red`: expected a shape (circle, square, triangle) at the end"
        );
        assert_eq!(
            e("remove the red circle now"),
            "cannot read instruction `remove the red circle now`: unexpected `now` after a complete instruction"
        );
        assert_eq!(
            e("rotate the red circle"),
            "cannot read instruction `rotate the red circle`: unknown verb `rotate`"
        );
    }
}
