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

mod parse;

pub use parse::parse;

#[cfg(test)]
mod tests;
