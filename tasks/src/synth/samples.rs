//! Test scenes for the rule judge, from the synthetic edit world (`crate::synth`).
//!
//! The plan was a stand-alone minimal scene generator here until the synthetic world
//! existed; the world landed first, so the rule judge reads that world's images and
//! instructions, and this module only adapts them: 8-bit images, a sample of a given edit
//! type, and noise for degraded edits.

use crate::rng::SplitMix64;
use crate::synth::{self, EditType};
use image::{Rgb, RgbImage};

/// A world image (`H × W × 3` floats in [0, 1]) as 8-bit RGB (rounded).
pub fn to_rgb(img: &synth::Image) -> RgbImage {
    let n = img.size as u32;
    RgbImage::from_fn(n, n, |x, y| {
        Rgb(img
            .get(x as usize, y as usize)
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8))
    })
}

/// Renders a scene as 8-bit RGB.
pub fn render(scene: &synth::Scene) -> RgbImage {
    to_rgb(&scene.render())
}

/// A sample of edit type `t` on a `size`-pixel scene with up to 4 objects, reproducible
/// from `seed` (the first of a few tries that the scene can take).
pub fn sample(seed: u64, size: usize, t: EditType) -> Option<synth::Edit> {
    (0..20).find_map(|k| {
        let mut rng = synth::stream(seed, "judge-test", k);
        let scene = synth::random_scene(&mut rng, size, 4);
        synth::make_edit(&mut rng, &scene, t, 1)
    })
}

/// Adds N(0, σ²) noise (levels of 255) per channel inside the inclusive box.
pub fn add_noise(
    img: &RgbImage,
    sigma: f64,
    (x0, y0, x1, y1): (u32, u32, u32, u32),
    seed: u64,
) -> RgbImage {
    let mut out = img.clone();
    let mut rng = SplitMix64::new(seed);
    for y in y0..=y1.min(img.height() - 1) {
        for x in x0..=x1.min(img.width() - 1) {
            let p = out.get_pixel_mut(x, y);
            for c in 0..3 {
                p.0[c] = (p.0[c] as f64 + sigma * rng.normal())
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_reproducible_and_convert() {
        let a = sample(1, 32, EditType::Remove).unwrap();
        let b = sample(1, 32, EditType::Remove).unwrap();
        assert_eq!(a.instruction, b.instruction);
        let img = to_rgb(&a.source_image);
        assert_eq!(img.dimensions(), (32, 32));
        assert_eq!(img, render(&a.source));
        let noisy = add_noise(&img, 10.0, (0, 0, 3, 3), 2);
        assert_ne!(noisy, img);
        assert_eq!(noisy.get_pixel(10, 10), img.get_pixel(10, 10));
    }
}
