//! Tests of the prompts: digests pinned to versions, unique ids, rendering and placeholders,
//! reading the instruction back, and the benchmark formulas.

use super::*;
use std::collections::BTreeSet;

/// Pinned digests: when a prompt changes, its version must change too (update both here).
const PINNED: &[(&str, u32, &str)] = &[
    (
        "reward",
        1,
        "f4b9a90efc8b77d332af1cc10298160df18e4b7f8a5a6a4a71c0661bf020ea56",
    ),
    (
        "reward-single",
        1,
        "f67cc505e40796a874f7a6ee5735651ef42d10e67016998e610054b42f2729d3",
    ),
    (
        "curation-locate",
        1,
        "fd912a26cd0763e14ff89db6b49ed17cc7d0efdc605ed138e6ead2b9c34116fd",
    ),
    (
        "curation-refine",
        1,
        "60b8590199805e8a99d8ea8ae544a0c6b42aab2a8e2f267398a2e29624fc9b61",
    ),
    (
        "curation-filter",
        1,
        "20f5fbfa31ed70d9404bd7fe05a24cd1d6a442ed3ccf9aa97f317026eef2924a",
    ),
    (
        "consistency",
        1,
        "8ecee05f5edc373ecf23b27e7b2a49c7028ab90bda5d1865c6ea6798ed0b8b63",
    ),
    (
        "gedit-sc",
        1,
        "0224a5a2e2632cfe7ed2b039a0374413d4d9bce3a5b21b6dced377878e3d57bc",
    ),
    (
        "gedit-pq",
        1,
        "bb961a1a417d4c42ce3715b53265c7ef72618318ae8722bd54c3615ea3fe80c1",
    ),
    (
        "imgedit",
        1,
        "d0cdd276fe31e2a821e902ed97c99b985513387c30fcd2afa47d7340f3950324",
    ),
];

#[test]
fn prompt_digests_are_pinned_to_versions() {
    let mut mismatched = Vec::new();
    for p in ALL {
        let pin = PINNED.iter().find(|(id, _, _)| *id == p.id);
        match pin {
            Some((_, v, d)) if *v == p.version && *d == p.digest() => {}
            _ => mismatched.push(format!(
                "(\"{}\", {}, \"{}\"),",
                p.id,
                p.version,
                p.digest()
            )),
        }
    }
    assert!(
        mismatched.is_empty(),
        "a prompt changed: bump its version and pin the new digest:\n{}",
        mismatched.join("\n")
    );
}

#[test]
fn ids_are_unique_and_every_prompt_renders() {
    let ids: BTreeSet<_> = ALL.iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), ALL.len());
    for p in ALL {
        let text = p.render_user(|name| Some(format!("<{name}>"))).unwrap();
        assert!(text.contains(&p.answer_format()), "{}", p.id);
        assert!(!text.contains("{format}"));
        for f in p.fields {
            assert!(
                text.contains(&format!("\"{}\"", f.name)),
                "{} lacks {}",
                p.id,
                f.name
            );
        }
        assert!(!p.images.is_empty());
    }
}

#[test]
fn reward_format_and_placeholders() {
    assert_eq!(
        REWARD.answer_format(),
        r#"{"editing_effect": <integer 0-5>, "visual_quality": <integer 0-5>}"#
    );
    assert_eq!(REWARD.placeholders(), vec!["instruction", "format"]);
    assert_eq!(
        LOCATE.placeholders(),
        vec!["instruction", "edit_type", "format"]
    );
    assert_eq!(
        LOCATE.answer_format(),
        r#"{"edit_type": "<text>", "edited_object": "<text>", "bounding_box": [x1, y1, x2, y2]}"#
    );
    assert_eq!(REWARD.key(), "reward@1");
    assert_eq!(
        REWARD.json_schema(),
        serde_json::json!({
            "type": "object",
            "properties": {
                "editing_effect": {"type": "integer", "minimum": 0, "maximum": 5},
                "visual_quality": {"type": "integer", "minimum": 0, "maximum": 5},
            },
            "required": ["editing_effect", "visual_quality"],
            "additionalProperties": false,
        })
    );
    assert_eq!(by_id("gedit-pq"), Some(&GEDIT_PQ));
}

#[test]
fn missing_var_is_named_and_values_are_not_rescanned() {
    let err = LOCATE
        .render_user(|n| (n == "instruction").then(|| "x".to_string()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "prompt `curation-locate@1` needs `{edit_type}`, which the request does not give"
    );
    let text = REWARD
        .render_user(|_| Some("make it {format}".to_string()))
        .unwrap();
    assert!(text.contains("Editing instruction: \"make it {format}\""));
}

#[test]
fn instruction_reads_back_from_rendered_text() {
    let instr = "change the \"red\" circle to blue";
    let text = REWARD.render_user(|_| Some(instr.to_string())).unwrap();
    assert_eq!(
        REWARD.extract_var(&text, "instruction").as_deref(),
        Some(instr)
    );
    assert_eq!(GEDIT_PQ.extract_var(&text, "instruction"), None);
}

#[test]
fn benchmark_formulas() {
    assert_eq!(gedit_overall(8.0, 6.0, 9.0, 4.0), (6.0f64 * 4.0).sqrt());
    assert_eq!(imgedit_score(3.0, 4.0, 5.0), 4.0);
}
