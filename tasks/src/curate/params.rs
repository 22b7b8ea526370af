//! The `curate` kind's params (module docs of [`super`] list them with their defaults).

use super::source::Columns;
use super::stages::{BackgroundMask, LOCAL_TYPES};
use crate::judge::spec::JudgeParams;
use crate::segment::client::SegmentConfig;
use cocoflow_engine::kind::ParamError;
use serde::{Deserialize, Serialize};

/// What the `data` output is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum OutputMode {
    /// The curated dataset.
    #[default]
    Curated,
    /// The `data` input unchanged (nothing is curated); `exact` is a synonym (the input's own,
    /// exact masks).
    #[serde(alias = "exact")]
    Input,
}

/// How `dataset` is stored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A directory with `manifest.jsonl` is a manifest dataset; anything else parquet.
    #[default]
    Auto,
    Manifest,
    Parquet,
}

/// Which segmenter turns boxes into masks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SegmenterParams {
    /// The built-in colour segmenter, in-process.
    #[default]
    Builtin,
    /// A segmentation server (`base_url`, `model`, `timeout_ms`, `retry`, `max_concurrency`).
    Http(SegmentConfig),
    /// No segmenter: the box is the mask.
    Box,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CurateParams {
    pub output: OutputMode,
    /// A dataset on disk, instead of the `data` input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    pub format: Format,
    pub columns: Columns,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    pub shard_size: usize,
    pub judge: JudgeParams,
    pub segmenter: SegmenterParams,
    pub box_fallback: bool,
    pub background_mask: BackgroundMask,
    pub difference_threshold: f64,
    pub dilate_px: u32,
    pub dilate_px_replace: u32,
    pub dilate_px_motion: u32,
    pub difference_union: Vec<String>,
    pub threshold: f64,
    pub min_keep_fraction: f64,
    pub types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Fraction of the judged samples whose judge answer may be unusable (reason
    /// `judge-answer`) before the task fails.
    pub max_invalid_fraction: f64,
}

impl Default for CurateParams {
    fn default() -> Self {
        CurateParams {
            output: OutputMode::default(),
            dataset: None,
            format: Format::default(),
            columns: Columns::default(),
            limit: None,
            shard_size: 64,
            judge: JudgeParams::default(),
            segmenter: SegmenterParams::default(),
            box_fallback: true,
            background_mask: BackgroundMask::default(),
            difference_threshold: 0.1,
            dilate_px: 1,
            dilate_px_replace: 2,
            dilate_px_motion: 2,
            difference_union: vec!["motion".into()],
            threshold: 9.4,
            min_keep_fraction: 0.05,
            types: LOCAL_TYPES.iter().map(|s| s.to_string()).collect(),
            concurrency: None,
            max_invalid_fraction: 0.5,
        }
    }
}

fn bad(path: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        path: path.into(),
        message: message.into(),
    }
}

/// Checks what the types cannot, naming the key.
pub fn check(p: &CurateParams) -> Result<(), ParamError> {
    if p.shard_size == 0 {
        return Err(bad("shard_size", "must be at least 1"));
    }
    if !(1.0..=10.0).contains(&p.threshold) {
        return Err(bad(
            "threshold",
            format!(
                "must be in [1, 10] (the scores' scale), got {}",
                p.threshold
            ),
        ));
    }
    if !(0.0..1.0).contains(&p.min_keep_fraction) {
        return Err(bad(
            "min_keep_fraction",
            format!("must be in [0, 1), got {}", p.min_keep_fraction),
        ));
    }
    if !(p.difference_threshold > 0.0 && p.difference_threshold < 1.0) {
        return Err(bad(
            "difference_threshold",
            format!("must be in (0, 1), got {}", p.difference_threshold),
        ));
    }
    for (i, t) in p.difference_union.iter().enumerate() {
        if !LOCAL_TYPES.contains(&t.as_str()) {
            return Err(bad(
                &format!("difference_union[{i}]"),
                format!(
                    "`{t}` is not a local edit type; expected one of {}",
                    LOCAL_TYPES.join(", ")
                ),
            ));
        }
    }
    if p.types.is_empty() {
        return Err(bad("types", "must name at least one edit type"));
    }
    for (i, t) in p.types.iter().enumerate() {
        if !LOCAL_TYPES.contains(&t.as_str()) {
            return Err(bad(
                &format!("types[{i}]"),
                format!(
                    "`{t}` is not a local edit type; expected one of {}",
                    LOCAL_TYPES.join(", ")
                ),
            ));
        }
    }
    if p.concurrency == Some(0) {
        return Err(bad("concurrency", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&p.max_invalid_fraction) {
        return Err(bad(
            "max_invalid_fraction",
            format!("must be in [0, 1], got {}", p.max_invalid_fraction),
        ));
    }
    if p.limit == Some(0) {
        return Err(bad("limit", "must be at least 1"));
    }
    if p.dataset.is_none() && (p.format != Format::Auto) {
        return Err(bad("format", "only applies with `dataset`"));
    }
    if p.output == OutputMode::Input && p.dataset.is_some() {
        return Err(bad(
            "output",
            "`input` passes the `data` input through; it cannot be used with `dataset`",
        ));
    }
    Ok(())
}
