//! Datasets: the manifest format (real and synthetic data alike).

pub mod manifest;

pub use manifest::{Dataset, DatasetWriter, MaskPolarity, Record};
