//! The MLLM judge of [`cocoflow_tasks::judge`] (re-exported here), with images from tensors:
//! bring [`JudgeImageTensor`] into scope to use it.

pub use cocoflow_tasks::judge::*;

use crate::imageio;
use crate::imageio::ImageError;
use ::image::RgbImage;
use tch::Tensor;

/// A [`JudgeImage`] from a tensor.
pub trait JudgeImageTensor: Sized {
    /// A `(3, H, W)` float tensor in [0, 1] (clamped, rounded to 8 bits).
    fn from_tensor(t: &Tensor) -> Result<Self, ImageError>;
    /// An `edit_mask` `(1, H, W)` tensor (1 = edit) as a white-on-black image.
    fn mask_from_tensor(t: &Tensor) -> Result<Self, ImageError>;
}

impl JudgeImageTensor for JudgeImage {
    fn from_tensor(t: &Tensor) -> Result<JudgeImage, ImageError> {
        Ok(JudgeImage::from_rgb(imageio::tensor::to_rgb(t)?))
    }

    fn mask_from_tensor(t: &Tensor) -> Result<JudgeImage, ImageError> {
        let (w, h, grey) = imageio::tensor::to_bytes(t, "a mask", 1)?;
        let rgb = grey
            .iter()
            .flat_map(|&v| {
                let v = if v >= 128 { 255 } else { 0 };
                [v, v, v]
            })
            .collect();
        Ok(JudgeImage::from_rgb(
            RgbImage::from_raw(w, h, rgb).expect("sizes match"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_convert_and_bad_shapes_are_named() {
        let t = tch::Tensor::ones([3, 2, 4], (tch::Kind::Float, tch::Device::Cpu)) * 0.5;
        let img = JudgeImage::from_tensor(&t).unwrap();
        assert_eq!((img.width(), img.height()), (4, 2));
        assert_eq!(img.pixels().get_pixel(0, 0).0, [128, 128, 128]);
        let m = tch::Tensor::ones([1, 2, 2], (tch::Kind::Float, tch::Device::Cpu));
        assert_eq!(
            JudgeImage::mask_from_tensor(&m)
                .unwrap()
                .pixels()
                .get_pixel(1, 1)
                .0,
            [255, 255, 255]
        );
        let err = JudgeImage::from_tensor(&m).unwrap_err().to_string();
        assert_eq!(err, "an RGB image must be (3, H, W), got shape [1, 2, 2]");
        assert!(JudgeImage::from_data_url("http://x").is_err());
    }
}
