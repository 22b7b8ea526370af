//! The parser of the instruction grammar (the module docs of [`super`]).

use super::*;

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
