//! The synthetic edit world and the oracles that know it: the embedded default's data, judge
//! and segmenter, so the whole pipeline runs with no download and no service.
//!
//! - [`scene`]: procedural scenes (backgrounds, shapes, rendering) and the world's generator;
//!   [`edit`]: the eight edit types, their exact masks and the instructions they are written
//!   with (the world's grammar). Everything is a pure function of the seed.
//! - [`judge`]: [`RuleJudge`], a deterministic judge that reads only the two images and the
//!   instruction (it implements [`crate::judge::Judge`]); [`segmenter`]: [`ColorSegmenter`],
//!   box-prompted segmentation by colour (it implements [`crate::segment::Segmenter`]).
//! - [`samples`]: reproducible world samples and perturbations for tests of the oracles.

pub mod dataset;
pub mod edit;
pub mod judge;
pub mod samples;
pub mod scene;
pub mod segmenter;

pub use edit::*;
pub use judge::{RuleJudge, RuleJudgeConfig};
pub use scene::*;
pub use segmenter::ColorSegmenter;
