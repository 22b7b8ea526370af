//! Every phrasing the synthetic world writes parses into its edit; malformed ones are refused.

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
