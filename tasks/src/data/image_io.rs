//! Images on disk ↔ tensors: RGB images as `(3, H, W)` float in [0, 1], masks as `(1, H, W)`
//! in {0, 1}. PNG and JPEG. Grayscale files become RGB by repetition; alpha is dropped.
//! A mask pixel counts as white when its grey level is ≥ 0.5 (128 of 255 and up).

use super::manifest::MaskPolarity;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image `{}`: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cannot write image `{}`: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("{what} must be {expected}, got shape {shape:?}")]
    Shape {
        what: &'static str,
        expected: &'static str,
        shape: Vec<i64>,
    },
}

fn read(path: &Path) -> Result<image::DynamicImage, ImageError> {
    image::ImageReader::open(path)
        .map_err(|e| ImageError::Read {
            path: path.into(),
            reason: e.to_string(),
        })?
        .with_guessed_format()
        .map_err(|e| ImageError::Read {
            path: path.into(),
            reason: e.to_string(),
        })?
        .decode()
        .map_err(|e| ImageError::Read {
            path: path.into(),
            reason: e.to_string(),
        })
}

/// An image file as a `(3, H, W)` float tensor in [0, 1].
pub fn load_rgb(path: &Path) -> Result<Tensor, ImageError> {
    let img = read(path)?.to_rgb8();
    let (w, h) = img.dimensions();
    let t = Tensor::from_slice(img.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1]);
    Ok(t.to_kind(Kind::Float) / 255.0)
}

/// A mask file as an `edit_mask` `(1, H, W)` in {0, 1}: white pixels (grey ≥ 0.5) are the
/// edit region for `Edit` polarity and the kept region for `Keep` polarity.
pub fn load_mask(path: &Path, polarity: MaskPolarity) -> Result<Tensor, ImageError> {
    let img = read(path)?.to_luma8();
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

fn to_bytes(
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

/// Saves a `(3, H, W)` tensor in [0, 1] (clamped, rounded to 8 bits) as PNG.
pub fn save_rgb(path: &Path, t: &Tensor) -> Result<(), ImageError> {
    let (w, h, bytes) = to_bytes(t, "an RGB image", 3)?;
    let img = image::RgbImage::from_raw(w, h, bytes).expect("sizes match");
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| ImageError::Write {
            path: path.into(),
            reason: e.to_string(),
        })
}

/// Saves an `edit_mask` `(1, H, W)` (white = 1) as an 8-bit grey PNG.
pub fn save_mask(path: &Path, t: &Tensor) -> Result<(), ImageError> {
    let (w, h, bytes) = to_bytes(t, "a mask", 1)?;
    let img = image::GrayImage::from_raw(w, h, bytes).expect("sizes match");
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| ImageError::Write {
            path: path.into(),
            reason: e.to_string(),
        })
}
