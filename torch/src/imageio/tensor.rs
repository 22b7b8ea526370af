//! Images ↔ tensors: RGB images as `(3, H, W)` float in [0, 1], masks as `(1, H, W)` in
//! {0, 1}; tensors back to 8-bit pixels (clamped, rounded).

use super::ImageError;
use crate::data::MaskPolarity;
use image::{GrayImage, RgbImage};
use std::path::Path;
use tch::{Kind, Tensor};

/// RGB pixels as a `(3, H, W)` float tensor in [0, 1].
pub fn rgb_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = img.dimensions();
    let t = Tensor::from_slice(img.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1]);
    t.to_kind(Kind::Float) / 255.0
}

/// An image file as a `(3, H, W)` float tensor in [0, 1].
pub fn load_rgb(path: &Path) -> Result<Tensor, ImageError> {
    Ok(rgb_tensor(&super::open(path)?.to_rgb8()))
}

/// A mask file as an `edit_mask` `(1, H, W)` in {0, 1}: white pixels (grey ≥ 0.5) are the
/// edit region for `Edit` polarity and the kept region for `Keep` polarity.
pub fn load_mask(path: &Path, polarity: MaskPolarity) -> Result<Tensor, ImageError> {
    let img = super::open(path)?.to_luma8();
    let (w, h) = img.dimensions();
    let white = Tensor::from_slice(img.as_raw())
        .view([1, h as i64, w as i64])
        .ge(128)
        .to_kind(Kind::Float);
    Ok(match polarity {
        MaskPolarity::Edit => white,
        MaskPolarity::Keep => 1.0 - white,
    })
}

/// A `(C, H, W)` tensor in [0, 1] (clamped, rounded to 8 bits) as `(width, height, HWC bytes)`;
/// `what` names it in the error when it is not `channels` × H × W.
pub fn to_bytes(
    t: &Tensor,
    what: &'static str,
    channels: i64,
) -> Result<(u32, u32, Vec<u8>), ImageError> {
    let size = t.size();
    if size.len() != 3 || size[0] != channels {
        return Err(ImageError::Shape {
            what,
            expected: if channels == 3 {
                "(3, H, W)"
            } else {
                "(1, H, W)"
            },
            shape: size,
        });
    }
    // (C, H, W) float in [0, 1] → (H, W, C) u8
    let hwc = (t
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .clamp(0.0, 1.0)
        * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous();
    let bytes = Vec::<u8>::try_from(hwc.flatten(0, -1))
        .expect("a contiguous uint8 CPU tensor converts to bytes");
    Ok((size[2] as u32, size[1] as u32, bytes))
}

/// A `(3, H, W)` tensor in [0, 1] as 8-bit RGB pixels.
pub fn to_rgb(t: &Tensor) -> Result<RgbImage, ImageError> {
    let (w, h, bytes) = to_bytes(t, "an RGB image", 3)?;
    Ok(RgbImage::from_raw(w, h, bytes).expect("sizes match"))
}

/// An `edit_mask` `(1, H, W)` (1 = edit) as 8-bit grey pixels.
pub fn to_grey(t: &Tensor) -> Result<GrayImage, ImageError> {
    let (w, h, bytes) = to_bytes(t, "a mask", 1)?;
    Ok(GrayImage::from_raw(w, h, bytes).expect("sizes match"))
}

/// Saves a `(3, H, W)` tensor in [0, 1] (clamped, rounded to 8 bits) as PNG.
pub fn save_rgb(path: &Path, t: &Tensor) -> Result<(), ImageError> {
    super::save_png(path, &to_rgb(t)?)
}

/// Saves an `edit_mask` `(1, H, W)` (white = 1) as an 8-bit grey PNG.
pub fn save_mask(path: &Path, t: &Tensor) -> Result<(), ImageError> {
    super::save_png(path, &to_grey(t)?)
}
