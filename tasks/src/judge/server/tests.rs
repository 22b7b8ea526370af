//! Tests of the judge server: its logprobs have the exact score as their expectation, and
//! the `judge serve` arguments map to its config.

use super::super::extract::{Extraction, extract};
use super::*;

#[test]
fn answer_logprobs_have_the_exact_score_as_expectation() {
    for x in [0.0, 0.3, 2.5, 3.74, 4.5, 4.99, 5.0] {
        let (content, tokens) =
            answer_tokens(&[("editing_effect", x), ("visual_quality", 5.0 - x)], 10);
        let a = extract(
            &prompts::REWARD,
            &content,
            Some(&tokens),
            Extraction::Logprobs,
        )
        .unwrap();
        assert!(
            (a.scores["editing_effect"].value - x).abs() < 1e-9,
            "{x}: {content}"
        );
        assert!((a.scores["visual_quality"].value - (5.0 - x)).abs() < 1e-9);
        let g = extract(&prompts::REWARD, &content, None, Extraction::Generate).unwrap();
        assert!((g.scores["editing_effect"].value - x).abs() <= 0.5 + 1e-9);
    }
}

#[test]
fn cli_arguments_map_to_the_config() {
    let m = command()
        .try_get_matches_from([
            "judge",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--fault-rate",
            "0.5",
            "--fault",
            "429",
            "--fault",
            "drop",
            "--delay-ms",
            "700",
            "--seed",
            "9",
        ])
        .unwrap();
    use clap::FromArgMatches as _;
    let (_, sub) = m.subcommand().unwrap();
    let c = ServeArgs::from_arg_matches(sub).unwrap().config();
    assert_eq!(c.faults.rate, 0.5);
    assert_eq!(
        c.faults.kinds,
        vec![FaultKind::TooManyRequests, FaultKind::Drop]
    );
    assert_eq!(c.faults.delay, Duration::from_millis(700));
    assert_eq!(c.faults.seed, 9);
    let err = command()
        .try_get_matches_from(["judge", "serve", "--fault-rate", "1.5"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`1.5` is not in [0, 1]"), "{err}");
    let err = command()
        .try_get_matches_from(["judge", "serve", "--fault", "teapot"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid value 'teapot'"), "{err}");
    let serve = command()
        .find_subcommand("serve")
        .unwrap()
        .get_about()
        .unwrap()
        .to_string();
    assert!(
        serve.starts_with("Serve the deterministic rule judge"),
        "{serve}"
    );
    let m = command().try_get_matches_from(["judge", "serve"]).unwrap();
    let c = ServeArgs::from_arg_matches(m.subcommand().unwrap().1)
        .unwrap()
        .config();
    assert_eq!(c.faults.kinds, FaultKind::DEFAULT.to_vec());
    assert_eq!(c.faults.rate, 0.0);
}
