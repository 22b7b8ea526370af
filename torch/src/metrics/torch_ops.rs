//! The tch backend: method-spec §1 as tensor ops, batched, on any device (CPU or CUDA).
//!
//! The five fields of eq. 16–18 per channel plus K are stacked into one `(B, 1 + 5C, H, W)`
//! tensor and blurred with the separable window as 11 shifted, weighted slices per axis over
//! a zero-padded copy (exact zero padding; no convolution kernel, so no TF32 on GPUs and the
//! same arithmetic on every device):
//!
//! ```text
//! A = G*K,  μ_a = G*(a⊙K)/A,  σ_a² = G*(a²⊙K)/A − μ_a²,  σ_ab = G*(ab⊙K)/A − μ_aμ_b
//! S = (2μ_aμ_b + C1)(2σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))
//! ```
//!
//! Support (A > 0) comes from an 11×11 max-pool of K, so it is exact in any precision.

use tch::{Kind, Tensor};

use super::window::{C1, C2, RADIUS, TAPS, gaussian_1d};

pub(crate) struct TorchOut {
    /// `(B,)` float64: `Σ_p K_p Σ_c (a − b)²`.
    pub sse: Tensor,
    /// `(B,)` float64: `Σ_c Σ_p S K`.
    pub ssim: Tensor,
    /// `(B, C, H, W)` float64 S (0 without support) and `(B, 1, H, W)` bool support.
    pub map: Option<(Tensor, Tensor)>,
}

/// `G * x` over the last two axes with zero padding; `x` is `(N, F, H, W)`.
pub(crate) fn blur(x: &Tensor) -> Tensor {
    let g = gaussian_1d();
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let r = RADIUS as i64;
    let along = |x: &Tensor, dim: i64, len: i64, pad: [i64; 4]| -> Tensor {
        let p = x.constant_pad_nd(pad);
        let mut acc = p.narrow(dim, 0, len) * g[0];
        for (t, &gt) in g.iter().enumerate().skip(1) {
            // acc += g_t · p[t : t + len] in place (a 0-d weight: no temporary image)
            let weight = Tensor::from(gt).to_kind(x.kind()).to_device(x.device());
            let _ = acc.addcmul_(&p.narrow(dim, t as i64, len), &weight);
        }
        acc
    };
    debug_assert_eq!(g.len(), TAPS);
    let v = along(x, 2, h, [0, 0, r, r]);
    along(&v, 3, w, [r, r, 0, 0])
}

/// Sums (and the map when asked) with every tensor op in `kind` (Float or Double); the final
/// sums are float64 in both cases. `keep` is the binary `(B, 1, H, W)` bool mask.
pub(crate) fn run(a: &Tensor, b: &Tensor, keep: &Tensor, kind: Kind, want_map: bool) -> TorchOut {
    tch::no_grad(|| {
        let c = a.size()[1];
        let a = a.to_kind(kind);
        let b = b.to_kind(kind);
        let k = keep.to_kind(kind);
        let (ak, bk) = (&a * &k, &b * &k);
        // (B, 1 + 5C, H, W): K, a⊙K, b⊙K, a²⊙K, b²⊙K, ab⊙K
        let fields = Tensor::cat(&[&k, &ak, &bk, &(&ak * &a), &(&bk * &b), &(&ak * &b)], 1);
        let blurred = blur(&fields);
        let part = |i: i64| blurred.narrow(1, 1 + i * c, c);
        let area = blurred.narrow(1, 0, 1);
        let win = 2 * RADIUS as i64 + 1;
        let r = RADIUS as i64;
        let support = k
            .max_pool2d([win, win], [1, 1], [r, r], [1, 1], false)
            .gt(0.0);
        let inv = area.reciprocal().where_self(&support, &area.zeros_like()); // 1/A, 0 off support
        let mu_a = part(0) * &inv; // eq. 16
        let mu_b = part(1) * &inv;
        let var_a = part(2) * &inv - &mu_a * &mu_a; // eq. 17
        let var_b = part(3) * &inv - &mu_b * &mu_b;
        let cov = part(4) * &inv - &mu_a * &mu_b; // eq. 18
        let num = (&mu_a * &mu_b * 2.0 + C1) * (cov * 2.0 + C2);
        let den = (&mu_a * &mu_a + &mu_b * &mu_b + C1) * (var_a + var_b + C2);
        let s = num / den; // off support: C1·C2 / (C1·C2) = 1, masked below
        let dims: &[i64] = &[1, 2, 3];
        let ssim = (&s * &k).sum_dim_intlist(dims, false, Kind::Double);
        let diff = &a - &b;
        let sse = (&diff * &diff * &k).sum_dim_intlist(dims, false, Kind::Double);
        let map = want_map.then(|| {
            (
                s.to_kind(Kind::Double)
                    .where_self(&support, &Tensor::from(0.0f64).to_device(s.device())),
                support,
            )
        });
        TorchOut { sse, ssim, map }
    })
}
