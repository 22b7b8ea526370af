//! DiffusionNFT with CoCoEdit's region regularisers (method-spec §4); the settings are
//! [`cocoflow_tasks::nft`] (re-exported here).

pub mod ema;
pub mod loss;

pub use cocoflow_tasks::nft::*;
pub use loss::{NftBatch, NftTerms, downsample_mask, nft_loss, region_distance};
