//! The SSIM window G: an 11×11 Gaussian with σ = 1.5, separable into two 1-D passes.

/// Half width of the window: 11 taps.
pub const RADIUS: usize = 5;
/// Taps of the 1-D window.
pub const TAPS: usize = 2 * RADIUS + 1;
/// σ of the Gaussian, in pixels.
pub const SIGMA: f64 = 1.5;
/// SSIM stabilisers for data range 1: `C1 = (0.01)²`, `C2 = (0.03)²`.
pub const C1: f64 = 0.01 * 0.01;
pub const C2: f64 = 0.03 * 0.03;

/// The normalised 1-D Gaussian `g_i ∝ exp(−(i − 5)² / (2σ²))`, `Σ g = 1`; `G = g gᵀ`.
/// Every tap is positive, so `A = G*K` is 0 exactly where no keep pixel lies within 5 pixels
/// (in both axes), and at a keep pixel `A ≥ g_5² ≈ 0.0708`.
pub fn gaussian_1d() -> [f64; TAPS] {
    let mut g = [0.0; TAPS];
    for (i, v) in g.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-(x * x) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f64 = g.iter().sum();
    g.map(|v| v / sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_normalised_symmetric_and_peaked() {
        let g = gaussian_1d();
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for i in 0..TAPS {
            assert_eq!(g[i], g[TAPS - 1 - i]);
        }
        // The value scipy/NumPy give for the same window (torch/tests/golden/metrics/reference.py).
        assert!(
            (g[RADIUS] - 0.266_011_724_861_794_4).abs() < 1e-15,
            "{}",
            g[RADIUS]
        );
        assert!(g[0] > 1e-3 && g[0] < 1.1e-3, "{}", g[0]);
    }
}
