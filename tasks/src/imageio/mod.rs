//! Every image decode and encode of this crate: files and bytes (PNG, JPEG; the format is
//! guessed from the content), base64 and data URLs, PNG encodings, pixel digests, binary
//! masks, and the `datasets` Image struct of parquet files. The conversions between images
//! and tensors are `cocoflow_torch::imageio::tensor`.
//!
//! Grey images become RGB by repetition and alpha is dropped when RGB is asked for; a mask
//! pixel is set when its grey level is ≥ 128 (0.5).

use base64::Engine as _;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, GrayImage, ImageEncoder, RgbImage};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file that cannot be opened or decoded.
    #[error("cannot read image `{}`: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// A file that cannot be written.
    #[error("cannot write image `{}`: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    /// Bytes that are not a PNG or JPEG image.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// A data URL that is not `data:image/...;base64,...`.
    #[error("not a base64 image data URL: {0}")]
    DataUrl(String),
    /// A tensor of the wrong shape.
    #[error("{what} must be {expected}, got shape {shape:?}")]
    Shape {
        what: &'static str,
        expected: &'static str,
        shape: Vec<i64>,
    },
}

impl ImageError {
    /// The cause alone, without the file or the "cannot decode" prefix (for messages that
    /// name the image their own way).
    pub fn reason(&self) -> String {
        match self {
            ImageError::Read { reason, .. } | ImageError::Write { reason, .. } => reason.clone(),
            ImageError::Decode(r) | ImageError::DataUrl(r) => r.clone(),
            other => other.to_string(),
        }
    }
}

/// Opens an image file, its format guessed from the content.
pub fn open(path: &Path) -> Result<DynamicImage, ImageError> {
    let read = |reason: String| ImageError::Read {
        path: path.into(),
        reason,
    };
    image::ImageReader::open(path)
        .map_err(|e| read(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| read(e.to_string()))?
        .decode()
        .map_err(|e| read(e.to_string()))
}

/// Decodes PNG or JPEG bytes.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, ImageError> {
    image::load_from_memory(bytes).map_err(|e| ImageError::Decode(e.to_string()))
}

/// Base64 (standard, padded; surrounding white space ignored) to bytes.
pub fn from_base64(b64: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(b64.trim())
}

/// Bytes as standard padded base64.
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of a `data:image/png;base64,...` (or jpeg) URL.
pub fn data_url_bytes(url: &str) -> Result<Vec<u8>, ImageError> {
    let short = || url.chars().take(40).collect::<String>();
    let rest = url
        .strip_prefix("data:image/")
        .ok_or_else(|| ImageError::DataUrl(short()))?;
    let (_, b64) = rest
        .split_once(";base64,")
        .ok_or_else(|| ImageError::DataUrl(short()))?;
    from_base64(b64).map_err(|e| ImageError::DataUrl(e.to_string()))
}

/// `data:image/png;base64,...` of PNG bytes.
pub fn png_data_url(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", to_base64(png))
}

/// How hard the PNG encoder works. Both are lossless; the bytes differ, the pixels do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Png {
    /// The `image` crate's defaults (files and protocol masks).
    Default,
    /// Fast compression, adaptive filter (images sent to a judge many times).
    Fast,
}

fn encode(raw: &[u8], w: u32, h: u32, color: image::ExtendedColorType, how: Png) -> Vec<u8> {
    let mut png = Vec::new();
    let enc = match how {
        Png::Default => PngEncoder::new(&mut png),
        Png::Fast => {
            PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Adaptive)
        }
    };
    enc.write_image(raw, w, h, color)
        .expect("encoding an in-memory image as PNG cannot fail");
    png
}

/// An RGB image as PNG bytes.
pub fn rgb_png(img: &RgbImage, how: Png) -> Vec<u8> {
    encode(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
        how,
    )
}

/// A grey image as 8-bit grey PNG bytes.
pub fn grey_png(img: &GrayImage, how: Png) -> Vec<u8> {
    encode(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::L8,
        how,
    )
}

/// Writes an image as PNG (whatever the file's extension).
pub fn save_png<P, C>(path: &Path, img: &image::ImageBuffer<P, C>) -> Result<(), ImageError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| ImageError::Write {
            path: path.into(),
            reason: e.to_string(),
        })
}

/// `jpg` for JPEG bytes, else `png`.
pub fn extension_of(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => "jpg",
        _ => "png",
    }
}

/// A grey image as a binary mask (255 where the grey level is ≥ 128, else 0); `invert` flips
/// it (a keep mask read as an edit mask).
pub fn binarize(mut g: GrayImage, invert: bool) -> GrayImage {
    for p in g.pixels_mut() {
        let on = (p.0[0] >= 128) != invert;
        p.0[0] = if on { 255 } else { 0 };
    }
    g
}

/// BLAKE3 (hex) over `rgb8`, width, height (little-endian u32) and the raw pixels: a digest
/// of the pixels that does not depend on the encoder.
pub fn pixel_digest(img: &RgbImage) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"rgb8");
    h.update(&img.width().to_le_bytes());
    h.update(&img.height().to_le_bytes());
    h.update(img.as_raw());
    h.finalize().to_hex().to_string()
}

/// The `bytes` and `path` of a Hugging Face `datasets` Image struct `{bytes, path}` as a
/// parquet record holds it; each is `None` when absent or not of that type.
pub fn datasets_image_struct(row: &parquet::record::Row) -> (Option<Vec<u8>>, Option<String>) {
    use parquet::record::Field;
    let mut bytes = None;
    let mut path = None;
    for (k, v) in row.get_column_iter() {
        match (k.as_str(), v) {
            ("bytes", Field::Bytes(b)) => bytes = Some(b.data().to_vec()),
            ("path", Field::Str(p)) => path = Some(p.clone()),
            _ => {}
        }
    }
    (bytes, path)
}
