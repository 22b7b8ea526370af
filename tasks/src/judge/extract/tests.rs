//! Tests of answer extraction: the logprob expectation (digit-split and multi-digit
//! tokenizers, the 0–10 scale), missing logprobs, strict JSON and field type errors.

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
        e(r#"Sure! {"editing_effect": 4}"#).starts_with("the answer is not a single JSON object")
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
    let ok =
        r#"{"edit_type": "add", "edited_object": "a red ball", "bounding_box": [1, 2, 30, 40]}"#;
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
