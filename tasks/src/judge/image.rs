//! Images as a judge sees them: 8-bit RGB pixels, their PNG encoding (sent as a base64 data
//! URL) and a digest of the pixels ([`pixel_digest`]: BLAKE3 over size and raw RGB bytes, so it
//! does not depend on the PNG encoder). Cheap to clone. Decoding and encoding are
//! [`crate::imageio`]'s.

use crate::imageio::{self, Png};
pub use crate::imageio::{ImageError, pixel_digest};
use bytes::Bytes;
use image::RgbImage;
use std::sync::Arc;

/// One image of a judge request.
#[derive(Clone)]
pub struct JudgeImage {
    pixels: Arc<RgbImage>,
    png: Bytes,
    digest: String,
}

impl std::fmt::Debug for JudgeImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeImage")
            .field("width", &self.width())
            .field("height", &self.height())
            .field("digest", &self.digest)
            .finish()
    }
}

impl JudgeImage {
    /// Wraps RGB pixels (encodes the PNG once).
    pub fn from_rgb(pixels: RgbImage) -> JudgeImage {
        let png = imageio::rgb_png(&pixels, Png::Fast);
        let digest = pixel_digest(&pixels);
        JudgeImage {
            pixels: Arc::new(pixels),
            png: Bytes::from(png),
            digest,
        }
    }

    /// Decodes PNG or JPEG bytes (grey becomes RGB, alpha is dropped).
    pub fn from_encoded(bytes: &[u8]) -> Result<JudgeImage, ImageError> {
        Ok(JudgeImage::from_rgb(imageio::decode(bytes)?.to_rgb8()))
    }

    /// Decodes a `data:image/png;base64,...` (or jpeg) URL.
    pub fn from_data_url(url: &str) -> Result<JudgeImage, ImageError> {
        JudgeImage::from_encoded(&imageio::data_url_bytes(url)?)
    }

    pub fn pixels(&self) -> &RgbImage {
        &self.pixels
    }

    pub fn png(&self) -> &Bytes {
        &self.png
    }

    /// BLAKE3 (hex) over `rgb8`, width, height (little-endian u32) and the raw pixels.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn width(&self) -> u32 {
        self.pixels.width()
    }

    pub fn height(&self) -> u32 {
        self.pixels.height()
    }

    /// `data:image/png;base64,...`
    pub fn data_url(&self) -> String {
        imageio::png_data_url(&self.png)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_url_round_trip_keeps_pixels_and_digest() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 80, 7]));
        let a = JudgeImage::from_rgb(img);
        let b = JudgeImage::from_data_url(&a.data_url()).unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.pixels(), b.pixels());
        assert!(a.data_url().starts_with("data:image/png;base64,"));
        assert!(format!("{a:?}").contains("width: 5"));
    }

    #[test]
    fn digest_depends_on_size_and_pixels() {
        let a = JudgeImage::from_rgb(RgbImage::new(4, 2));
        let b = JudgeImage::from_rgb(RgbImage::new(2, 4));
        let mut c = RgbImage::new(4, 2);
        c.put_pixel(0, 0, image::Rgb([1, 0, 0]));
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), JudgeImage::from_rgb(c).digest());
    }
}
