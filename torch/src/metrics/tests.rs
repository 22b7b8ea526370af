//! Unit and property tests of the pixel metrics: invariants over random images and masks,
//! hand-computed values and backend agreement; the config and the exact text of every input
//! error in [`errors`].
//! (Golden values against scikit-image and a NumPy implementation: `tasks/tests/it/metrics_golden.rs`.)

use tch::{Device, Kind, Tensor};

use super::*;

mod errors;

/// Random test data from [`crate::rng::SplitMix64`], independent of libtorch's global RNG so
/// that tests running in parallel stay reproducible.
struct Rng(crate::rng::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(crate::rng::SplitMix64::new(seed))
    }
    fn unit(&mut self) -> f64 {
        self.0.next_f64()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below_mod(n)
    }
    fn uniform(&mut self, shape: &[i64]) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| self.unit()).collect();
        Tensor::from_slice(&v).view(shape)
    }
    /// Image-like data: a blurred random field plus fine noise, in [0, 1], float64.
    fn image(&mut self, b: i64, c: i64, h: i64, w: i64) -> Tensor {
        let smooth = torch_ops::blur(&self.uniform(&[b, c, h, w]));
        let lo = smooth.amin([2i64, 3].as_slice(), true);
        let hi = smooth.amax([2i64, 3].as_slice(), true);
        let base = (&smooth - &lo) / (hi - &lo + 1e-9);
        (base * 0.8 + self.uniform(&[b, c, h, w]) * 0.2).clamp(0.0, 1.0)
    }
    /// `image` with mild noise added: a plausible "edited" image.
    fn distort(&mut self, a: &Tensor, amount: f64) -> Tensor {
        let noise = self.uniform(&a.size()) - 0.5;
        (a + noise * amount).clamp(0.0, 1.0)
    }
    /// Irregular blobs covering about `fraction` of each image, `(b, 1, h, w)` in {0, 1}.
    fn blobs(&mut self, b: i64, h: i64, w: i64, fraction: f64) -> Tensor {
        let field = torch_ops::blur(&torch_ops::blur(&self.uniform(&[b, 1, h, w])));
        let q = field
            .view([b, -1])
            .quantile_scalar(1.0 - fraction, 1, true, "linear")
            .view([b, 1, 1, 1]);
        field.gt_tensor(&q).to_kind(Kind::Double)
    }
}

fn cfg(backend: Backend) -> MetricsConfig {
    MetricsConfig {
        backend,
        ..MetricsConfig::default()
    }
}

const BACKENDS: [Backend; 3] = [Backend::Native, Backend::TorchF64, Backend::TorchF32];

fn ok(r: &SampleResult) -> SampleMetrics {
    *r.as_ref().expect("defined")
}

fn map_close(x: &Tensor, y: &Tensor) -> f64 {
    (x - y).abs().max().double_value(&[])
}

/// Identical images give PSNR = +∞, PSNR̄ = 1, SSIM = 1 and r_sim = 1 — exactly, for any mask
/// with a keep pixel, on every backend.
#[test]
fn identical_images_are_perfect() {
    let mut rng = Rng::new(1);
    for round in 0..6 {
        let (h, w) = (5 + rng.below(40) as i64, 5 + rng.below(40) as i64);
        let c = if round % 2 == 0 { 3 } else { 1 };
        let a = rng.image(2, c, h, w);
        let fraction = 0.1 + 0.8 * rng.unit();
        let keep = rng.blobs(2, h, w, fraction);
        for backend in BACKENDS {
            for r in masked_metrics(&a, &a, &keep, &cfg(backend)).unwrap() {
                let m = ok(&r);
                assert_eq!(m.mse, 0.0, "{backend:?}");
                assert_eq!(m.psnr_db, f64::INFINITY, "{backend:?}");
                assert_eq!(m.psnr_norm, 1.0, "{backend:?}");
                assert_eq!(m.ssim, 1.0, "{backend:?}");
                assert_eq!(m.r_sim, 1.0, "{backend:?}");
            }
        }
    }
}

/// Both metrics are symmetric in (source, edited): bit for bit on every backend (the
/// formulas are evaluated symmetrically operation by operation), maps included.
#[test]
fn metrics_are_symmetric() {
    let mut rng = Rng::new(2);
    for round in 0..6 {
        let (h, w) = (3 + rng.below(50) as i64, 3 + rng.below(50) as i64);
        let c = if round % 3 == 0 { 1 } else { 3 };
        let a = rng.image(3, c, h, w);
        let amount = 0.3 * rng.unit();
        let b = rng.distort(&a, amount);
        let fraction = 0.2 + 0.7 * rng.unit();
        let keep = rng.blobs(3, h, w, fraction);
        for backend in BACKENDS {
            let ab = masked_metrics(&a, &b, &keep, &cfg(backend)).unwrap();
            let ba = masked_metrics(&b, &a, &keep, &cfg(backend)).unwrap();
            assert_eq!(ab, ba, "{backend:?} {h}x{w}");
            let (mab, mba) = (
                ssim_map(&a, &b, &keep, &cfg(backend)).unwrap(),
                ssim_map(&b, &a, &keep, &cfg(backend)).unwrap(),
            );
            assert!(mab.s.equal(&mba.s), "{backend:?}");
        }
    }
}

/// Pixels outside the keep mask never change the result: rewriting every K = 0 pixel of
/// either image leaves the metrics, and even the whole SSIM map, bit-identical. (They enter
/// the sums only as `value·0`.)
#[test]
fn pixels_outside_the_keep_mask_never_matter() {
    let mut rng = Rng::new(3);
    for round in 0..6 {
        let (h, w) = (4 + rng.below(60) as i64, 4 + rng.below(60) as i64);
        let c = if round % 2 == 0 { 3 } else { 1 };
        let a = rng.image(2, c, h, w);
        let b = rng.distort(&a, 0.2);
        let fraction = 0.05 + 0.9 * rng.unit();
        let keep = rng.blobs(2, h, w, fraction);
        let outside = keep.eq(0.0);
        let a2 = a.where_self(&outside.logical_not(), &rng.uniform(&a.size()));
        let b2 = b.where_self(&outside.logical_not(), &rng.uniform(&b.size()).zeros_like());
        assert!(!a2.equal(&a) || keep.min().double_value(&[]) == 1.0);
        for backend in BACKENDS {
            let c = cfg(backend);
            assert_eq!(
                masked_metrics(&a, &b, &keep, &c).unwrap(),
                masked_metrics(&a2, &b2, &keep, &c).unwrap(),
                "{backend:?}"
            );
            let (m1, m2) = (
                ssim_map(&a, &b, &keep, &c).unwrap(),
                ssim_map(&a2, &b2, &keep, &c).unwrap(),
            );
            assert!(
                m1.s.equal(&m2.s) && m1.support.equal(&m2.support),
                "{backend:?}"
            );
        }
    }
}

/// The three backends agree: float64 ones to 1e-12, float32 to 2e-5 (SSIM) / 1e-4 dB.
#[test]
fn backends_agree() {
    let mut rng = Rng::new(4);
    for (h, w) in [(1, 1), (2, 13), (17, 5), (33, 47), (64, 64)] {
        for c in [1, 3] {
            let a = rng.image(3, c, h, w);
            let b = rng.distort(&a, 0.15);
            let keep = rng.blobs(3, h, w, 0.6);
            let native = masked_metrics(&a, &b, &keep, &cfg(Backend::Native)).unwrap();
            for (backend, tol_ssim, tol_db) in [
                (Backend::TorchF64, 1e-12, 1e-10),
                (Backend::TorchF32, 2e-5, 1e-4),
            ] {
                let other = masked_metrics(&a, &b, &keep, &cfg(backend)).unwrap();
                for (x, y) in native.iter().zip(&other) {
                    let (Ok(x), Ok(y)) = (x, y) else {
                        assert_eq!(x, y, "{h}x{w}: both undefined");
                        continue;
                    };
                    assert!(
                        (x.ssim - y.ssim).abs() <= tol_ssim,
                        "{backend:?} {h}x{w}x{c}: {} vs {}",
                        x.ssim,
                        y.ssim
                    );
                    assert!(
                        (x.psnr_db - y.psnr_db).abs() <= tol_db,
                        "{backend:?}: {} vs {}",
                        x.psnr_db,
                        y.psnr_db
                    );
                    assert_eq!(x.keep_pixels, y.keep_pixels);
                }
            }
            let (mn, mt) = (
                ssim_map(&a, &b, &keep, &cfg(Backend::Native)).unwrap(),
                ssim_map(&a, &b, &keep, &cfg(Backend::TorchF64)).unwrap(),
            );
            assert!(mn.support.equal(&mt.support));
            assert!(
                map_close(&mn.s, &mt.s) < 1e-12,
                "{}",
                map_close(&mn.s, &mt.s)
            );
        }
    }
}

/// Constant images by hand: μ_a = α, μ_b = β, σ = 0 everywhere, so
/// S = (2αβ + C1)/(α² + β² + C1) whatever the mask, and MSE = (α − β)².
#[test]
fn constant_images_by_hand() {
    let (alpha, beta) = (0.25, 0.75);
    let a = Tensor::full([1, 3, 20, 30], alpha, (Kind::Double, Device::Cpu));
    let b = Tensor::full([1, 3, 20, 30], beta, (Kind::Double, Device::Cpu));
    let keep = Tensor::zeros([1, 1, 20, 30], (Kind::Double, Device::Cpu));
    let _ = keep.narrow(2, 0, 7).narrow(3, 3, 9).fill_(1.0);
    let c1 = 0.01f64 * 0.01;
    let want_ssim = (2.0 * alpha * beta + c1) / (alpha * alpha + beta * beta + c1);
    let want_mse = (alpha - beta) * (alpha - beta);
    let want_psnr = 10.0 * (1.0 / want_mse).log10(); // 6.0206 dB
    for backend in BACKENDS {
        let m = ok(&masked_metrics(&a, &b, &keep, &cfg(backend)).unwrap()[0]);
        assert_eq!(m.keep_pixels, 63);
        assert!((m.mse - want_mse).abs() < 1e-15, "{backend:?} {}", m.mse);
        assert!((m.psnr_db - want_psnr).abs() < 1e-12, "{backend:?}");
        // float32: σ² = E[a²] − μ² cancels to ~1e-8, which is ~1e-5 of C2 in flat regions
        let tol = if backend == Backend::TorchF32 {
            1e-4
        } else {
            1e-12
        };
        assert!(
            (m.ssim - want_ssim).abs() < tol,
            "{backend:?} {} vs {want_ssim}",
            m.ssim
        );
        assert!((m.r_sim - (0.5 * m.ssim + 0.5 * want_psnr / 40.0)).abs() < 1e-15);
    }
    assert!((want_psnr - 6.020_599_913_279_624).abs() < 1e-12);
}

/// MSE divides by the channel count: an error of 0.1 in one of three channels is
/// MSE = 0.01/3 (PSNR 24.77 dB), not 0.01 (20 dB, the reference code's bug).
#[test]
fn mse_divides_by_the_channel_count() {
    let a = Tensor::full([1, 3, 8, 8], 0.5, (Kind::Double, Device::Cpu));
    let b = a.copy();
    let _ = b.narrow(1, 0, 1).fill_(0.6);
    let keep = Tensor::ones([1, 1, 8, 8], (Kind::Double, Device::Cpu));
    let p = masked_psnr(&a, &b, &keep, &MetricsConfig::default()).unwrap()[0].unwrap();
    let want = 10.0 * (3.0 / (0.1f64 * 0.1)).log10();
    assert!((p - want).abs() < 1e-9, "{p} vs {want}");
    assert!((p - 24.771_212_547).abs() < 1e-6, "{p}");
    let m = ok(&masked_metrics(&a, &b, &keep, &MetricsConfig::default()).unwrap()[0]);
    assert!((m.psnr_db - p).abs() < 1e-9);
}

/// An empty keep mask gives `Undefined::EmptyKeepMask` for that sample only, and NaN with
/// `defined = false` in the tensors, never 0.
#[test]
fn an_empty_keep_mask_is_undefined() {
    let mut rng = Rng::new(5);
    let a = rng.image(3, 3, 16, 16);
    let b = rng.distort(&a, 0.1);
    let keep = Tensor::ones([3, 1, 16, 16], (Kind::Double, Device::Cpu));
    let _ = keep.narrow(0, 1, 1).fill_(0.0);
    for backend in BACKENDS {
        let r = masked_metrics(&a, &b, &keep, &cfg(backend)).unwrap();
        assert!(r[0].is_ok() && r[2].is_ok());
        assert_eq!(r[1], Err(Undefined::EmptyKeepMask));
        let t = masked_metrics_tensors(&a, &b, &keep, &cfg(backend)).unwrap();
        assert_eq!(
            Vec::<bool>::try_from(&t.defined).unwrap(),
            vec![true, false, true]
        );
        for v in [&t.mse, &t.psnr_db, &t.psnr_norm, &t.ssim, &t.r_sim] {
            let v = Vec::<f64>::try_from(v).unwrap();
            assert!(
                v[0].is_finite() && v[1].is_nan() && v[2].is_finite(),
                "{backend:?} {v:?}"
            );
        }
        assert_eq!(
            masked_psnr(&a, &b, &keep, &cfg(backend)).unwrap()[1],
            Err(Undefined::EmptyKeepMask)
        );
        assert_eq!(
            masked_ssim(&a, &b, &keep, &cfg(backend)).unwrap()[1],
            Err(Undefined::EmptyKeepMask)
        );
    }
    assert_eq!(
        Undefined::EmptyKeepMask.to_string(),
        "the keep mask is empty: masked PSNR/SSIM are undefined"
    );
}

/// A sample's metrics do not depend on the batch it is in (chunking and indexing).
#[test]
fn batching_does_not_change_results() {
    let mut rng = Rng::new(6);
    let (h, w) = (37, 29); // not a multiple of the chunk height
    let a = rng.image(4, 3, h, w);
    let b = rng.distort(&a, 0.2);
    let keep = rng.blobs(4, h, w, 0.5);
    for backend in BACKENDS {
        let all = masked_metrics(&a, &b, &keep, &cfg(backend)).unwrap();
        for i in 0..4 {
            let one = masked_metrics(
                &a.narrow(0, i, 1),
                &b.narrow(0, i, 1),
                &keep.narrow(0, i, 1),
                &cfg(backend),
            )
            .unwrap();
            assert_eq!(one[0], all[i as usize], "{backend:?} sample {i}");
        }
    }
}

/// Grey images score as one channel, and exactly like the same image repeated in RGB.
#[test]
fn grey_equals_repeated_rgb() {
    let mut rng = Rng::new(7);
    let a = rng.image(2, 1, 24, 40);
    let b = rng.distort(&a, 0.2);
    let keep = rng.blobs(2, 24, 40, 0.5);
    let (a3, b3) = (a.repeat([1, 3, 1, 1]), b.repeat([1, 3, 1, 1]));
    for backend in [Backend::Native, Backend::TorchF64] {
        let g = masked_metrics(&a, &b, &keep, &cfg(backend)).unwrap();
        let rgb = masked_metrics(&a3, &b3, &keep, &cfg(backend)).unwrap();
        for (x, y) in g.iter().zip(&rgb) {
            let (x, y) = (ok(x), ok(y));
            assert!(
                (x.ssim - y.ssim).abs() < 1e-14 && (x.psnr_db - y.psnr_db).abs() < 1e-12,
                "{x:?} {y:?}"
            );
        }
    }
}

/// Threshold rule: a keep value ≥ 0.5 keeps the pixel. A soft mask scores like its
/// thresholded binary version; `strict` refuses it.
#[test]
fn soft_masks_are_thresholded_at_one_half() {
    let mut rng = Rng::new(8);
    let a = rng.image(2, 3, 30, 30);
    let b = rng.distort(&a, 0.2);
    let soft = torch_ops::blur(&rng.blobs(2, 30, 30, 0.5));
    let binary = soft.ge(0.5).to_kind(Kind::Float);
    let cfg = MetricsConfig::default();
    assert_eq!(
        masked_metrics(&a, &b, &soft, &cfg).unwrap(),
        masked_metrics(&a, &b, &binary, &cfg).unwrap()
    );
    // exactly 0.5 keeps; just below does not
    let half = Tensor::full([2, 1, 30, 30], 0.5, (Kind::Double, Device::Cpu));
    assert_eq!(
        ok(&masked_metrics(&a, &b, &half, &cfg).unwrap()[0]).keep_pixels,
        900
    );
    let below = Tensor::full([2, 1, 30, 30], 0.499_999, (Kind::Double, Device::Cpu));
    assert_eq!(
        masked_metrics(&a, &b, &below, &cfg).unwrap()[0],
        Err(Undefined::EmptyKeepMask)
    );
    // bool masks work too
    assert_eq!(
        masked_metrics(&a, &b, &soft.ge(0.5), &cfg).unwrap(),
        masked_metrics(&a, &b, &binary, &cfg).unwrap()
    );
    let strict = MetricsConfig {
        mask_rule: MaskRule::Strict,
        ..cfg.clone()
    };
    assert!(masked_metrics(&a, &b, &binary, &strict).is_ok());
    let err = masked_metrics(&a, &b, &half, &strict).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`keep_mask` must be binary (0 or 1) under `mask_rule: strict`, found 0.5"
    );
}

/// The map: S where some keep pixel lies within 5 pixels (in both axes), 0 elsewhere; the
/// support of a one-pixel mask is the 11×11 square around it, clipped at the border.
#[test]
fn ssim_map_support_is_the_window_around_keep_pixels() {
    let mut rng = Rng::new(9);
    let a = rng.image(1, 3, 20, 20);
    let b = rng.distort(&a, 0.2);
    let keep = Tensor::zeros([1, 1, 20, 20], (Kind::Double, Device::Cpu));
    let _ = keep.narrow(2, 2, 1).narrow(3, 15, 1).fill_(1.0);
    for backend in BACKENDS {
        let m = ssim_map(&a, &b, &keep, &cfg(backend)).unwrap();
        assert_eq!(m.s.size(), vec![1, 3, 20, 20]);
        assert_eq!(m.support.size(), vec![1, 1, 20, 20]);
        let want = Tensor::zeros([1, 1, 20, 20], (Kind::Bool, Device::Cpu));
        let _ = want.narrow(2, 0, 8).narrow(3, 10, 10).fill_(1);
        assert!(m.support.equal(&want), "{backend:?}");
        let off =
            m.s.masked_select(&m.support.logical_not().expand([1, 3, 20, 20], false));
        assert_eq!(off.abs().max().double_value(&[]), 0.0);
        // with one keep pixel, σ = 0 and S is the luminance term of that pixel
        let (x, y) = (
            a.double_value(&[0, 1, 2, 15]),
            b.double_value(&[0, 1, 2, 15]),
        );
        let c1 = 1e-4;
        let want_s = (2.0 * x * y + c1) / (x * x + y * y + c1);
        for (yy, xx) in [(0, 10), (2, 15), (7, 19)] {
            let s = m.s.double_value(&[0, 1, yy, xx]);
            let tol = if backend == Backend::TorchF32 {
                1e-3
            } else {
                1e-12
            };
            assert!(
                (s - want_s).abs() < tol,
                "{backend:?} ({yy},{xx}): {s} vs {want_s}"
            );
        }
    }
}

/// Float32 inputs go through the native kernel without conversion and give the float64
/// results of the same values.
#[test]
fn float32_inputs_match_float64() {
    let mut rng = Rng::new(10);
    let a = rng.image(2, 3, 21, 34).to_kind(Kind::Float);
    let b = rng
        .distort(&a.to_kind(Kind::Double), 0.2)
        .to_kind(Kind::Float);
    let keep = rng.blobs(2, 21, 34, 0.4);
    let c = MetricsConfig::default();
    let r32 = masked_metrics(&a, &b, &keep, &c).unwrap();
    let r64 = masked_metrics(
        &a.to_kind(Kind::Double),
        &b.to_kind(Kind::Double),
        &keep,
        &c,
    )
    .unwrap();
    assert_eq!(r32, r64);
    let half = masked_metrics(&a.to_kind(Kind::Half), &b.to_kind(Kind::Half), &keep, &c).unwrap();
    assert!((ok(&half[0]).ssim - ok(&r32[0]).ssim).abs() < 1e-2);
}

/// The native kernel gives the same bits with 1 thread and with many.
#[test]
fn native_kernel_is_deterministic_across_thread_counts() {
    let mut rng = Rng::new(11);
    let (b, c, h, w) = (2usize, 3usize, 70usize, 45usize);
    let a: Vec<f64> = (0..b * c * h * w).map(|_| rng.unit()).collect();
    let e: Vec<f64> = a
        .iter()
        .map(|v| (v + 0.1 * (rng.unit() - 0.5)).clamp(0.0, 1.0))
        .collect();
    let k: Vec<u8> = (0..b * h * w).map(|_| u8::from(rng.unit() < 0.7)).collect();
    let d = native::Dims {
        batch: b,
        channels: c,
        height: h,
        width: w,
    };
    let (one, m1) = native::run(&a, &e, &k, d, true, 1);
    for threads in [2, 3, 8] {
        let (many, m) = native::run(&a, &e, &k, d, true, threads);
        assert_eq!(one, many, "{threads} threads");
        assert_eq!(m1.as_ref().unwrap().s, m.unwrap().s);
    }
}

/// CUDA (when present) agrees with the CPU kernel: float64 to 1e-12, float32 to 2e-5.
#[test]
fn cuda_matches_cpu() {
    if !tch::Cuda::is_available() {
        eprintln!("note: no CUDA device; cuda_matches_cpu checks nothing here");
        return;
    }
    let mut rng = Rng::new(12);
    let dev = Device::Cuda(0);
    for (h, w) in [(7, 9), (64, 80), (128, 128)] {
        let a = rng.image(3, 3, h, w);
        let b = rng.distort(&a, 0.2);
        let keep = rng.blobs(3, h, w, 0.5);
        let cpu = masked_metrics(&a, &b, &keep, &MetricsConfig::default()).unwrap();
        for (backend, tol) in [
            (Backend::Auto, 1e-12),
            (Backend::TorchF64, 1e-12),
            (Backend::TorchF32, 2e-5),
        ] {
            let gpu = masked_metrics(
                &a.to_device(dev),
                &b.to_device(dev),
                &keep.to_device(dev),
                &cfg(backend),
            )
            .unwrap();
            for (x, y) in cpu.iter().zip(&gpu) {
                let (x, y) = (ok(x), ok(y));
                assert!(
                    (x.ssim - y.ssim).abs() <= tol,
                    "{backend:?}: {} vs {}",
                    x.ssim,
                    y.ssim
                );
                assert!(
                    (x.psnr_db - y.psnr_db).abs() <= 1e-4,
                    "{backend:?}: {} vs {}",
                    x.psnr_db,
                    y.psnr_db
                );
            }
        }
        let t = masked_metrics_tensors(
            &a.to_device(dev),
            &b.to_device(dev),
            &keep.to_device(dev),
            &MetricsConfig::default(),
        )
        .unwrap();
        assert_eq!(t.r_sim.device(), dev);
    }
}
