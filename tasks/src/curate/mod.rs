//! The CoCoEdit-40K curation pipeline (what the `curate` kind runs, [`crate::kinds::curate`]) (paper §3.1, appendix A; method-spec §7) over
//! any editing dataset of (source, edited, instruction) triplets.
//!
//! For each sample: **annotate** (the judge, prompt A.2: edit type, edited object, its box;
//! the segmenter turns the box into a mask, or the box itself is the mask when configured),
//! **refine and augment** (prompt A.3 rewrites the instruction given the mask; the mask is
//! dilated, more for `replace` and `motion`), **score** (prompt A.4: instruction clarity, mask
//! accuracy, target prominence, 1–10). The **filter** keeps samples of the allowed local
//! types whose mean score exceeds `threshold` and whose keep area (outside the dilated mask)
//! is at least `min_keep_fraction`.
//!
//! # Shards, resume and caching
//! Samples are cut into shards of `shard_size`. A shard's outcomes are committed to the
//! store's key-value cache (namespace `curate`) in one atomic write once all its samples are
//! done, under a key made of the content of its samples (image bytes, instruction, hint) and
//! every setting the stages use (judge, segmenter, dilation, prompt versions) — not the
//! filter. So a crash or `kill -9` loses only the shards in flight; a re-run, and a run with
//! another `threshold`, `min_keep_fraction` or `types`, reads the committed shards and makes
//! no judge or segmentation calls. Remote judges and segmenters also cache every response by
//! request content. A sample whose service did not answer (after the clients' retries) keeps
//! its shard uncommitted and fails the task at the end, after every other shard is saved.
//!
//! # Inputs, params, outputs
//! - input `data` (a dataset in the manifest format), or param `dataset` (a path on disk:
//!   a manifest dataset directory, or parquet files with embedded images, `format`,
//!   `columns`). Optional input `reference`: a dataset whose `edit_mask`s (matched by key)
//!   the curated masks are compared with (IoU per type); without it, the input records' own
//!   masks, when they have some. Masks of the input are never used to curate.
//! - `judge` (default the rule judge; `{kind: openai, ...}` for a served MLLM), `segmenter`
//!   (`{kind: builtin}` colour segmenter in-process, default; `{kind: http, base_url, ...}`
//!   a server of the segmentation protocol; `{kind: box}` none), `box_fallback` (true),
//!   `background_mask` (`difference`: changed pixels, default; `segment`),
//!   `difference_threshold` (0.1), `dilate_px` (1), `dilate_px_replace` (2),
//!   `dilate_px_motion` (2), `difference_union` (types whose mask also takes the changed
//!   pixels: `[motion]`, since a moved object leaves its box), `threshold` (9.4),
//!   `min_keep_fraction` (0.05), `types` (the six local types), `shard_size` (64), `limit`,
//!   `concurrency` (samples in flight, split over two shards; default the `judge` pool's
//!   units, else 8), `max_invalid_fraction` (0.5: the task fails when more of the judged
//!   samples got an unusable judge answer, reason `judge-answer`; the statistics count them
//!   under `judge`), `output` (`curated`, default; `input` or its synonym `exact`: no
//!   curation, the `data` input is passed through, for workflows that switch between curated
//!   and ground-truth masks).
//! - outputs `data` (the curated dataset: `manifest.jsonl` with `instruction_refined`,
//!   `edit_type`, `edit_mask` = the dilated mask, scores in `extra.curation`) and `stats`
//!   (`stats.json`, `stats.md`, `samples.jsonl` with every sample's outcome and filter
//!   decision, `types.png`/`.svg`, `scores.png`/`.svg`). Shard and call counts (they depend on
//!   what earlier runs committed) are the task's metrics (`shards`, `calls`) and log lines.
//!
//! Files: [`params`], [`source`] (inputs), [`stages`] (the three stages per sample),
//! [`shards`] (commit and resume), [`assemble`] (dataset and statistics), [`plots`].

pub mod assemble;
pub mod masks;
pub mod outcome;
pub mod params;
pub mod plots;
pub mod shards;
pub mod source;
pub mod stages;

use params::CurateParams;
use stages::Annotated;

/// The filter over a sample's stored annotation: `None` = kept, else the reason.
pub fn filter(a: &Annotated, p: &CurateParams) -> Option<&'static str> {
    if !p.types.iter().any(|t| t == &a.edit_type) {
        Some("type-excluded")
    } else if a.scores.mean() <= p.threshold {
        Some("below-threshold")
    } else if a.keep_fraction < p.min_keep_fraction {
        Some("keep-area")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::params::{SegmenterParams, check};
    use super::*;
    use cocoflow_engine::kind::{ParamError, typed_params};
    use serde_json::{Value, json};

    fn params(v: Value) -> Result<CurateParams, ParamError> {
        let (p, _) = typed_params::<CurateParams>(&v)?;
        check(&p)?;
        Ok(p)
    }

    #[test]
    fn params_are_checked_with_their_key() {
        assert!(params(json!({})).is_ok());
        let e = params(json!({"threshold": 11})).unwrap_err();
        assert_eq!(e.path, "threshold");
        let e = params(json!({"types": ["add", "style"]})).unwrap_err();
        assert_eq!(e.path, "types[1]");
        assert!(
            e.message.contains("`style` is not a local edit type"),
            "{}",
            e.message
        );
        let e = params(json!({"shard_size": 0})).unwrap_err();
        assert_eq!(e.path, "shard_size");
        let e = params(json!({"segmenter": {"kind": "sam"}})).unwrap_err();
        assert_eq!(e.path, "segmenter.kind");
        assert!(e.message.contains("`sam`"), "{}", e.message);
        let p = params(json!({"segmenter": {"kind": "http", "base_url": "http://127.0.0.1:1"}}))
            .unwrap();
        assert!(matches!(p.segmenter, SegmenterParams::Http(_)));
        let e = params(json!({"thresold": 9})).unwrap_err();
        assert!(e.message.contains("thresold"), "{}", e.message);
    }

    #[test]
    fn the_filter_needs_a_mean_above_the_threshold_and_keep_area() {
        let p = params(json!({"types": ["add", "remove"]})).unwrap();
        let mut a = Annotated {
            edit_type: "add".into(),
            judge_type: "add".into(),
            object: "red circle".into(),
            bbox: [0.0, 0.0, 4.0, 4.0],
            mask_from: "segmenter".into(),
            segment_score: Some(1.0),
            refined: "add a red circle".into(),
            scores: stages::Scores {
                instruction_clarity: 10.0,
                mask_accuracy: 9.0,
                target_prominence: 10.0,
            },
            keep_fraction: 0.9,
            width: 8,
            height: 8,
            mask_png: String::new(),
        };
        assert_eq!(filter(&a, &p), None); // 9.667 > 9.4
        a.scores.mask_accuracy = 8.0; // 9.333
        assert_eq!(filter(&a, &p), Some("below-threshold"));
        a.scores.mask_accuracy = 10.0;
        a.keep_fraction = 0.01;
        assert_eq!(filter(&a, &p), Some("keep-area"));
        a.edit_type = "motion".into();
        assert_eq!(filter(&a, &p), Some("type-excluded"));
        // exactly the threshold is not above it
        let p = params(json!({"threshold": 10.0})).unwrap();
        a.edit_type = "add".into();
        a.keep_fraction = 0.5;
        assert_eq!(filter(&a, &p), Some("below-threshold"));
    }
}
