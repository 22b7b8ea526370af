//! The settings of the masked pixel metrics (method-spec §1), torch-free so the front end
//! checks them; the metrics themselves are `cocoflow_torch::metrics`.

mod config;

pub use config::{Backend, MaskRule, MetricsConfig};
