//! The image I/O of [`cocoflow_tasks::imageio`] (re-exported here) and, in [`tensor`], the
//! conversions between images and tensors.

pub use cocoflow_tasks::imageio::*;

pub mod tensor;
