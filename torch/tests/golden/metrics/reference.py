"""Independent NumPy/SciPy implementation of method-spec §1 (paper eq. 14-19).

Written from the formulas, not from the Rust code. Used by `gen.py` (golden data) and by
`scripts/bench_metrics.py` (the same-run baseline of `cocoflow bench-metrics`).

Images are float64 arrays in [0, 1] of shape (C, H, W); a keep mask is (H, W) with values in
[0, 1], thresholded at 0.5 (value >= 0.5 -> keep). All sums use float64.

    MSE_K  = sum_p K_p sum_c (a_cp - b_cp)^2 / (C * sum_p K_p)
    PSNR   = 10 log10(1 / MSE_K)            (+inf when MSE_K == 0)
    PSNR~  = clip(PSNR / tau_db, 0, 1)
    A      = G * K                          (G: 11x11 Gaussian, sigma 1.5, zero padding)
    mu_a   = G * (a K) / A,  var_a = G * (a^2 K) / A - mu_a^2,  cov = G * (a b K) / A - mu_a mu_b
    S      = (2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))
    SSIM_K = mean_c [ sum_p S_cp K_p / sum_p K_p ]      (pixels with A == 0 have no S)
    r_sim  = w_s SSIM_K + (1 - w_s) PSNR~
"""

import math

import numpy as np
import scipy.ndimage as ndi

SIGMA = 1.5
RADIUS = 5  # 11 taps
C1 = 0.01**2
C2 = 0.03**2


def gaussian_window():
    """The normalised 1-D Gaussian, 11 taps, sigma 1.5 (the 2-D window is its outer product)."""
    x = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2.0 * SIGMA * SIGMA))
    return g / g.sum()


G1 = gaussian_window()
G2 = np.outer(G1, G1)


def gblur(x, separable=True):
    """G * x over the last two axes with zero padding ('constant' mode, cval 0)."""
    if separable:
        y = ndi.correlate1d(x, G1, axis=-2, mode="constant", cval=0.0)
        return ndi.correlate1d(y, G1, axis=-1, mode="constant", cval=0.0)
    w = G2.reshape((1,) * (x.ndim - 2) + G2.shape)
    return ndi.correlate(x, w, mode="constant", cval=0.0)


def binarize(mask):
    """The documented mask rule: a value >= 0.5 keeps the pixel."""
    return (np.asarray(mask, dtype=np.float64) >= 0.5).astype(np.float64)


def masked_mse(a, b, keep):
    """MSE_K, or None for an empty keep mask."""
    k = binarize(keep)
    n = k.sum()
    if n == 0:
        return None
    return float((k * ((a - b) ** 2).sum(axis=0)).sum() / (a.shape[0] * n))


def psnr_db(mse):
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim_map(a, b, keep, separable=True):
    """(S of shape (C, H, W) with NaN where A == 0, support of shape (H, W))."""
    k = binarize(keep)
    area = gblur(k, separable)
    support = area > 0
    inv = np.where(support, 1.0 / np.where(support, area, 1.0), 0.0)
    ka, kb = a * k, b * k
    mu_a = gblur(ka, separable) * inv
    mu_b = gblur(kb, separable) * inv
    var_a = gblur(ka * a, separable) * inv - mu_a * mu_a
    var_b = gblur(kb * b, separable) * inv - mu_b * mu_b
    cov = gblur(ka * b, separable) * inv - mu_a * mu_b
    s = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / (
        (mu_a * mu_a + mu_b * mu_b + C1) * (var_a + var_b + C2)
    )
    return np.where(support, s, np.nan), support


def masked_ssim(a, b, keep, separable=True):
    """SSIM_K, or None for an empty keep mask."""
    k = binarize(keep)
    n = k.sum()
    if n == 0:
        return None
    s, _ = ssim_map(a, b, k, separable)
    s = np.where(k > 0, s, 0.0)  # every keep pixel has support (A >= G_center > 0)
    return float((s * k).sum(axis=(-2, -1)).mean() / n)


def r_sim(ssim, psnr, w_s=0.5, tau_db=40.0):
    return w_s * ssim + (1.0 - w_s) * min(max(psnr / tau_db, 0.0), 1.0)


def metrics(a, b, keep, w_s=0.5, tau_db=40.0, separable=True):
    """dict with keep_pixels, mse, psnr_db, psnr_norm, ssim, r_sim; or {'undefined': True}."""
    k = binarize(keep)
    mse = masked_mse(a, b, k)
    if mse is None:
        return {"keep_pixels": 0, "undefined": True}
    ssim = masked_ssim(a, b, k, separable)
    p = psnr_db(mse)
    return {
        "keep_pixels": int(k.sum()),
        "mse": mse,
        "psnr_db": p,
        "psnr_norm": min(max(p / tau_db, 0.0), 1.0),
        "ssim": ssim,
        "r_sim": r_sim(ssim, p, w_s, tau_db),
    }


def batch_metrics(a, b, keep):
    """Batched, as the benchmark times it: a, b (B, C, H, W), keep (B, 1, H, W) binary.

    Returns (mse, ssim) arrays of shape (B,); NaN marks an empty keep mask. One scipy call per
    field over the whole batch (the fastest plain NumPy/SciPy formulation we know)."""
    k = keep
    n = k.sum(axis=(1, 2, 3))
    c = a.shape[1]
    d = a - b
    mse = (k * (d * d)).sum(axis=(1, 2, 3)) / (c * n)
    area = gblur(k)
    support = area > 0
    inv = np.where(support, 1.0 / np.where(support, area, 1.0), 0.0)
    ka, kb = a * k, b * k
    mu_a = gblur(ka) * inv
    mu_b = gblur(kb) * inv
    var_a = gblur(ka * a) * inv - mu_a * mu_a
    var_b = gblur(kb * b) * inv - mu_b * mu_b
    cov = gblur(ka * b) * inv - mu_a * mu_b
    s = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / (
        (mu_a * mu_a + mu_b * mu_b + C1) * (var_a + var_b + C2)
    )
    ssim = (s * k).sum(axis=(1, 2, 3)) / (c * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, mse, np.nan), np.where(n > 0, ssim, np.nan)
