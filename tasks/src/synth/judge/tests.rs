//! Tests of the rule judge: correct, wrong, no-op and noisy edits, determinism, errors.

use super::instruction::{Colour, Direction, Tone};
use super::*;
use crate::synth::samples::{add_noise, render, sample, to_rgb};
use crate::synth::{BACKGROUND_TONES, Background, EditType, Object, Scene, Shape};

fn col(name: &str) -> usize {
    Colour::from_name(name).unwrap().0
}

fn obj(shape: Shape, colour: &str, r: f32, cx: f32, cy: f32) -> Object {
    Object {
        shape,
        color: col(colour),
        cx,
        cy,
        r,
    }
}

/// A 64-pixel scene with three objects and room around each.
fn scene() -> Scene {
    Scene {
        size: 64,
        background: Background::Stripes {
            a: BACKGROUND_TONES[0].1,
            b: BACKGROUND_TONES[0].1.map(|v| v * 0.82),
            period: 5.0,
            diagonal: true,
        },
        background_name: BACKGROUND_TONES[0].0.into(),
        objects: vec![
            obj(Shape::Circle, "red", 7.0, 32.0, 20.0),
            obj(Shape::Square, "green", 6.0, 14.0, 48.0),
            obj(Shape::Triangle, "blue", 7.0, 50.0, 48.0),
        ],
    }
}

fn with(mut s: Scene, f: impl FnOnce(&mut Scene)) -> Scene {
    f(&mut s);
    s
}

fn judge(src: &Scene, edited: &RgbImage, instruction: &str) -> RuleReport {
    RuleJudge::default()
        .evaluate(&render(src), edited, instruction)
        .unwrap()
}

/// (instruction, the correctly edited scene) for each kind of edit.
fn correct_edits() -> Vec<(&'static str, Scene)> {
    let s = scene();
    vec![
        (
            "replace the red circle with a yellow triangle",
            with(s.clone(), |s| {
                s.objects[0].shape = Shape::Triangle;
                s.objects[0].color = col("yellow");
            }),
        ),
        (
            "turn the red circle into a red square",
            with(s.clone(), |s| s.objects[0].shape = Shape::Square),
        ),
        (
            "remove the red circle",
            with(s.clone(), |s| {
                s.objects.remove(0);
            }),
        ),
        (
            "add a purple circle in the top left",
            with(s.clone(), |s| {
                s.objects
                    .push(obj(Shape::Circle, "purple", 6.0, 10.0, 10.0))
            }),
        ),
        (
            "add an orange triangle",
            with(s.clone(), |s| {
                s.objects
                    .push(obj(Shape::Triangle, "orange", 6.0, 54.0, 12.0))
            }),
        ),
        (
            "make the red circle blue",
            with(s.clone(), |s| s.objects[0].color = col("blue")),
        ),
        (
            "make the red circle bigger",
            with(s.clone(), |s| s.objects[0].r *= 1.4),
        ),
        (
            "shrink the red circle",
            with(s.clone(), |s| s.objects[0].r *= 0.65),
        ),
        (
            "move the red circle to the left",
            with(s.clone(), |s| s.objects[0].cx -= 11.2),
        ),
        (
            "slide the red circle to the right",
            with(s.clone(), |s| s.objects[0].cx += 11.2),
        ),
        (
            "change the background to mint",
            with(s.clone(), |s| {
                s.background = Background::Noise {
                    base: BACKGROUND_TONES[3].1,
                    amplitude: 0.08,
                    seed: 2,
                };
            }),
        ),
    ]
}

#[test]
fn correct_edits_score_high() {
    let s = scene();
    for (instruction, edited) in correct_edits() {
        let rep = judge(&s, &render(&edited), instruction);
        assert!(rep.effect > 0.95, "`{instruction}`: {rep:#?}");
        assert!(rep.quality > 0.9, "`{instruction}`: {rep:#?}");
    }
}

#[test]
fn no_op_edits_score_low_on_effect() {
    let s = scene();
    for (instruction, _) in correct_edits() {
        let rep = judge(&s, &render(&s), instruction);
        assert!(rep.effect < 0.05, "`{instruction}`: {rep:#?}");
        assert!(
            rep.quality > 0.9,
            "a no-op is clean: `{instruction}`: {rep:#?}"
        );
    }
}

#[test]
fn wrong_edits_score_low() {
    let s = scene();
    // asked blue, got purple
    let purple = with(s.clone(), |s| s.objects[0].color = col("purple"));
    assert!(judge(&s, &render(&purple), "make the red circle blue").effect < 0.05);
    // the wrong object changed colour
    let wrong = with(s.clone(), |s| s.objects[1].color = col("blue"));
    assert!(judge(&s, &render(&wrong), "make the red circle blue").effect < 0.05);
    // the wrong object went
    let wrong = with(s.clone(), |s| {
        s.objects.remove(1);
    });
    assert!(judge(&s, &render(&wrong), "remove the red circle").effect < 0.05);
    // moved right instead of left
    let right = with(s.clone(), |s| s.objects[0].cx += 11.2);
    assert!(judge(&s, &render(&right), "move the red circle to the left").effect < 0.05);
    // smaller instead of bigger
    let smaller = with(s.clone(), |s| s.objects[0].r *= 0.65);
    assert!(judge(&s, &render(&smaller), "make the red circle bigger").effect < 0.05);
    // the right shape in the wrong colour: half the change
    let cyanish = with(s.clone(), |s| {
        s.objects[0].shape = Shape::Triangle;
        s.objects[0].color = col("orange");
    });
    let rep = judge(
        &s,
        &render(&cyanish),
        "replace the red circle with a yellow triangle",
    );
    assert!((rep.achieved - 0.5).abs() < 1e-9, "{rep:#?}");
    // added in the wrong quadrant: half
    let placed = with(s.clone(), |s| {
        s.objects
            .push(obj(Shape::Circle, "purple", 6.0, 54.0, 10.0))
    });
    let rep = judge(&s, &render(&placed), "add a purple circle in the top left");
    assert!((rep.achieved - 0.5).abs() < 1e-9, "{rep:#?}");
    // wrong background tone
    let sand = with(s.clone(), |s| {
        s.background = Background::Noise {
            base: BACKGROUND_TONES[1].1,
            amplitude: 0.05,
            seed: 1,
        }
    });
    assert_eq!(
        judge(&s, &render(&sand), "change the background to mint").effect,
        0.0
    );
}

#[test]
fn collateral_damage_lowers_effect() {
    let s = scene();
    let both = with(s.clone(), |s| {
        s.objects[0].color = col("blue");
        s.objects.remove(1);
    });
    let rep = judge(&s, &render(&both), "make the red circle blue");
    assert_eq!(rep.achieved, 1.0);
    assert!((rep.preserved - 0.5).abs() < 1e-9, "{rep:#?}");
    assert!((rep.effect - 0.75).abs() < 1e-9);
}

#[test]
fn noisy_edits_score_lower_quality() {
    let s = scene();
    let edited = render(&with(s.clone(), |s| s.objects[0].color = col("yellow")));
    let clean = judge(&s, &edited, "make the red circle yellow");
    let bx = (22, 10, 42, 30); // the circle's box, grown
    for (sigma, max_quality) in [(8.0, 0.8), (25.0, 0.35)] {
        let rep = judge(
            &s,
            &add_noise(&edited, sigma, bx, 5),
            "make the red circle yellow",
        );
        assert!(rep.quality < max_quality, "σ {sigma}: {rep:#?}");
        assert!(
            rep.quality < clean.quality - 0.15,
            "σ {sigma}: {} vs clean {}",
            rep.quality,
            clean.quality
        );
        assert!(rep.effect > 0.9, "noise does not undo the edit: {rep:#?}");
    }
}

#[test]
fn deterministic_and_errors_are_typed() {
    let s = scene();
    let t = render(&with(s.clone(), |s| s.objects[0].cx -= 11.2));
    assert_eq!(
        judge(&s, &t, "move the red circle left"),
        judge(&s, &t, "move the red circle left")
    );
    let j = RuleJudge::default();
    assert_eq!(
        j.evaluate(&render(&s), &t, "rotate the red circle")
            .unwrap_err()
            .to_string(),
        "cannot read instruction `rotate the red circle`: unknown verb `rotate`"
    );
    assert_eq!(
        j.evaluate(&render(&s), &RgbImage::new(4, 4), "remove the red circle")
            .unwrap_err()
            .to_string(),
        "the source is 64×64 but the edited image is 4×4"
    );
    assert_eq!(
        j.evaluate(
            &RgbImage::new(0, 0),
            &RgbImage::new(0, 0),
            "remove the red circle"
        )
        .unwrap_err()
        .to_string(),
        "the images are empty"
    );
    let _ = (Direction::Left, Tone(0));
}

/// Over the world's own samples (every edit type, 32 and 64 pixels): the correct target
/// scores high with the short and the refined instruction, the untouched source low.
#[test]
fn world_samples_score_high_and_their_no_ops_low() {
    let j = RuleJudge::default();
    let types = [EditType::LOCAL.as_slice(), EditType::GLOBAL.as_slice()].concat();
    let mut effects = Vec::new();
    let mut failures = Vec::new();
    for size in [32, 64] {
        for seed in 0..60u64 {
            let t = types[seed as usize % types.len()];
            let Some(e) = sample(seed, size, t) else {
                continue;
            };
            let (src, tgt) = (to_rgb(&e.source_image), to_rgb(&e.target_image));
            for text in [&e.instruction, &e.instruction_refined] {
                let rep = j.evaluate(&src, &tgt, text).unwrap();
                effects.push(rep.effect);
                if rep.effect < 0.8 || rep.quality < 0.8 {
                    failures.push(format!(
                        "{size}px seed {seed} `{text}`: effect {:.2} quality {:.2} {:?}",
                        rep.effect, rep.quality, rep.notes
                    ));
                }
            }
            let rep = j.evaluate(&src, &src, &e.instruction).unwrap();
            if rep.effect > 0.1 {
                failures.push(format!(
                    "{size}px seed {seed} no-op `{}`: effect {:.2}",
                    e.instruction, rep.effect
                ));
            }
        }
    }
    // 32-pixel objects can be 3 pixels across: allow a few misreadings, no more.
    assert!(
        failures.len() * 50 <= effects.len(),
        "{} of {}:\n{}",
        failures.len(),
        effects.len(),
        failures.join("\n")
    );
}
