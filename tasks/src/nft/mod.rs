//! DiffusionNFT with CoCoEdit's region regularisers (method-spec §4).

pub mod ema;
pub mod loss;

pub use loss::{
    Anchor, Distance, MaskDown, NftBatch, NftConfig, NftTerms, TauMinus, downsample_mask, nft_loss,
    region_distance,
};
