//! Box-prompted segmentation for data curation (issue 7): an image and a box in, the mask of
//! the object in the box out.
//!
//! - [`Segmenter`]: the trait (image + box → [`Segmentation`]); [`crate::synth::ColorSegmenter`] is
//!   the built-in one for the synthetic world (flat coloured shapes on textured backgrounds).
//! - [`server`]: `cocoflow segment serve`, a segmenter behind HTTP with fault injection.
//! - [`client`]: the HTTP client (timeouts, retries with backoff and jitter, a concurrency
//!   limit, a response cache keyed by image digest and box, call counters).
//!
//! # Protocol (cocoflow's own, version 1)
//!
//! `POST /v1/segment` with a JSON body
//!
//! ```json
//! {"image": "<base64 PNG (or JPEG), no data: prefix>", "box": [x0, y0, x1, y1]}
//! ```
//!
//! The box is in pixels of the image, `x0`/`y0` inclusive and `x1`/`y1` exclusive, so it
//! must satisfy `0 ≤ x0 < x1 ≤ width` and `0 ≤ y0 < y1 ≤ height`. The answer:
//!
//! - `200 {"mask": "<base64 PNG>", "score": s}`: an 8-bit greyscale PNG of the *whole image*'s
//!   size, 255 (white) = object, 0 = not; nothing outside the box is white. `score` in [0, 1]
//!   is the segmenter's confidence.
//! - `400 {"error": {"message": "...", "code": 400}}` for a body that is not such a request,
//!   an image that does not decode, or a bad box; the message names the problem (e.g.
//!   "box: x1 = 70 is past the image width 64").
//! - `422` (same error shape) when the segmenter finds no object in the box.
//! - `429`/`5xx`: transient; a client retries them.
//!
//! `GET /health` answers `200 {"status": "ok", "segmenter": "<describe()>"}`.

pub mod client;
pub mod server;

use crate::imageio::{self, Png};
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

/// A box in pixels: `x0`/`y0` inclusive, `x1`/`y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BoxPx {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl BoxPx {
    pub fn new(x0: u32, y0: u32, x1: u32, y1: u32) -> Self {
        BoxPx { x0, y0, x1, y1 }
    }

    /// `[x0, y0, x1, y1]`, as sent.
    pub fn to_array(self) -> [u32; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }

    pub fn width(self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    pub fn height(self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    pub fn contains(self, x: u32, y: u32) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }

    /// Reads a wire box (`[x0, y0, x1, y1]` as JSON numbers) and checks it against an image of
    /// `width × height`.
    pub fn from_wire(v: &[serde_json::Value], width: u32, height: u32) -> Result<Self, BoxError> {
        if v.len() != 4 {
            return Err(BoxError::Arity(v.len()));
        }
        const NAMES: [&str; 4] = ["x0", "y0", "x1", "y1"];
        let mut c = [0u32; 4];
        for (k, x) in v.iter().enumerate() {
            c[k] = match x.as_u64() {
                Some(u) if u <= u32::MAX as u64 => u as u32,
                _ => {
                    return Err(BoxError::NotAPixel {
                        name: NAMES[k],
                        value: x.to_string(),
                    });
                }
            };
        }
        let b = BoxPx::new(c[0], c[1], c[2], c[3]);
        b.validate(width, height)?;
        Ok(b)
    }

    /// Checks `0 ≤ x0 < x1 ≤ width` and `0 ≤ y0 < y1 ≤ height`.
    pub fn validate(self, width: u32, height: u32) -> Result<(), BoxError> {
        if self.x1 > width {
            return Err(BoxError::Outside {
                name: "x1",
                value: self.x1,
                dim: "width",
                size: width,
            });
        }
        if self.y1 > height {
            return Err(BoxError::Outside {
                name: "y1",
                value: self.y1,
                dim: "height",
                size: height,
            });
        }
        if self.x0 >= self.x1 {
            return Err(BoxError::Empty {
                lo: "x0",
                lo_v: self.x0,
                hi: "x1",
                hi_v: self.x1,
            });
        }
        if self.y0 >= self.y1 {
            return Err(BoxError::Empty {
                lo: "y0",
                lo_v: self.y0,
                hi: "y1",
                hi_v: self.y1,
            });
        }
        Ok(())
    }
}

/// Why a box is not usable (the server's 400 messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoxError {
    #[error("box: expected 4 numbers [x0, y0, x1, y1], got {0}")]
    Arity(usize),
    #[error("box: {name} = {value} is not a pixel coordinate (a non-negative integer)")]
    NotAPixel { name: &'static str, value: String },
    #[error("box: {name} = {value} is past the image {dim} {size}")]
    Outside {
        name: &'static str,
        value: u32,
        dim: &'static str,
        size: u32,
    },
    #[error("box: {lo} = {lo_v} must be less than {hi} = {hi_v} (x1/y1 are exclusive)")]
    Empty {
        lo: &'static str,
        lo_v: u32,
        hi: &'static str,
        hi_v: u32,
    },
}

/// A segmenter's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// The image's size; 255 = object, 0 = not.
    pub mask: GrayImage,
    /// Confidence in [0, 1].
    pub score: f64,
}

/// Why a segmenter gives no mask.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Box(#[from] BoxError),
    #[error("no object found in the box: {0}")]
    NoObject(String),
}

/// Image + box → the mask of the object in the box.
pub trait Segmenter: Send + Sync {
    /// One line for logs and `/health`.
    fn describe(&self) -> String;
    /// The mask of the object in `bx` (the box is checked against the image first).
    fn segment(&self, image: &RgbImage, bx: BoxPx) -> Result<Segmentation, SegmentError>;
}

/// The request body of `POST /v1/segment`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SegmentRequest {
    /// Base64 PNG or JPEG (standard alphabet, padded).
    pub image: String,
    /// `[x0, y0, x1, y1]`; kept as JSON values so the server can name what is wrong.
    #[serde(rename = "box")]
    pub bbox: Vec<serde_json::Value>,
}

/// The `200` body of `POST /v1/segment`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SegmentResponse {
    /// Base64 greyscale PNG of the image's size (255 = object).
    pub mask: String,
    pub score: f64,
}

/// Base64 (standard, padded) of an 8-bit greyscale PNG of `mask`.
pub fn encode_mask(mask: &GrayImage) -> String {
    imageio::to_base64(&imageio::grey_png(mask, Png::Default))
}

/// Decodes a base64 PNG (or JPEG) as a binary mask: a pixel is object when its luma ≥ 128.
pub fn decode_mask(b64: &str) -> Result<GrayImage, String> {
    let bytes = imageio::from_base64(b64).map_err(|e| format!("mask is not base64: {e}"))?;
    let img =
        imageio::decode(&bytes).map_err(|e| format!("mask does not decode: {}", e.reason()))?;
    Ok(imageio::binarize(img.to_luma8(), false))
}

/// Decodes a base64 PNG or JPEG image as RGB.
pub fn decode_image(b64: &str) -> Result<RgbImage, String> {
    let bytes = imageio::from_base64(b64).map_err(|e| format!("image is not base64: {e}"))?;
    let img =
        imageio::decode(&bytes).map_err(|e| format!("image does not decode: {}", e.reason()))?;
    Ok(img.to_rgb8())
}

/// Intersection over union of two binary masks (pixels ≥ 128 are set); 1 when both are empty.
pub fn iou(a: &GrayImage, b: &GrayImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "masks of different sizes");
    let (mut inter, mut union) = (0u64, 0u64);
    for (p, q) in a.as_raw().iter().zip(b.as_raw()) {
        let (p, q) = (*p >= 128, *q >= 128);
        inter += (p && q) as u64;
        union += (p || q) as u64;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_checked_with_named_problems() {
        let j = |v: serde_json::Value| v.as_array().unwrap().clone();
        let ok = BoxPx::from_wire(&j(serde_json::json!([0, 1, 64, 2])), 64, 32).unwrap();
        assert_eq!(ok.to_array(), [0, 1, 64, 2]);
        let err = |v| BoxPx::from_wire(&j(v), 64, 32).unwrap_err().to_string();
        assert_eq!(
            err(serde_json::json!([1, 2, 3])),
            "box: expected 4 numbers [x0, y0, x1, y1], got 3"
        );
        assert_eq!(
            err(serde_json::json!([-1, 0, 3, 3])),
            "box: x0 = -1 is not a pixel coordinate (a non-negative integer)"
        );
        assert_eq!(
            err(serde_json::json!([0, 0, 65, 3])),
            "box: x1 = 65 is past the image width 64"
        );
        assert_eq!(
            err(serde_json::json!([0, 0, 5, 33])),
            "box: y1 = 33 is past the image height 32"
        );
        assert_eq!(
            err(serde_json::json!([5, 0, 5, 3])),
            "box: x0 = 5 must be less than x1 = 5 (x1/y1 are exclusive)"
        );
    }

    #[test]
    fn masks_round_trip_and_iou() {
        let mut m = GrayImage::new(6, 4);
        m.put_pixel(1, 1, image::Luma([255]));
        m.put_pixel(2, 1, image::Luma([255]));
        let back = decode_mask(&encode_mask(&m)).unwrap();
        assert_eq!(back, m);
        let mut n = m.clone();
        n.put_pixel(3, 1, image::Luma([255]));
        assert!((iou(&m, &n) - 2.0 / 3.0).abs() < 1e-12);
        assert!(decode_mask("not base64!").is_err());
    }
}
