//! Datasets: the manifest format (real and synthetic data alike) and image I/O.

pub mod image_io;
pub mod manifest;

pub use manifest::{Dataset, DatasetWriter, MaskPolarity, Record};
