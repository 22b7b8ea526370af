"""Generates the golden data for the masked pixel metrics (method-spec §1).

Run from the repository root:  .venv/bin/python torch/tests/golden/metrics/gen.py

Writes next to this file:
  images/*.png         fixture images from skimage.data (real photographs), downscaled, with
                       realistic distortions (JPEG re-compression, blur, noise, pasted patches),
                       and irregular masks (blobs, thin strokes, one pixel, empty, anti-aliased)
  golden.json          per case: the files, mask polarity, and reference metrics computed by
                       `reference.py` (an independent NumPy/SciPy implementation, 2-D
                       `scipy.ndimage.correlate`, zero padding)
  maps/*.npy           float32 SSIM maps (C, H, W): `skimage_<case>.npy` is scikit-image's
                       `structural_similarity(..., full=True)` map for full-mask cases (compare
                       only the interior, 5 px from the border); `ref_<case>.npy` is the
                       reference map for partial masks (NaN where A = G*K is 0)

Nothing here calls the Rust code. The output is deterministic (fixed seeds, PNG is lossless);
rerunning it must leave `git status` clean.
"""

import io
import json
import math
import pathlib

import numpy as np
import scipy.ndimage as ndi
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity
from skimage.transform import resize

import reference as ref

HERE = pathlib.Path(__file__).resolve().parent
IMAGES = HERE / "images"
MAPS = HERE / "maps"


def to_u8(x):
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def save_png(name, u8):
    Image.fromarray(u8).save(IMAGES / name, optimize=True)
    return name


def load_png(name):
    """As the Rust side reads it: 8-bit values / 255, float64, (C, H, W)."""
    u8 = np.asarray(Image.open(IMAGES / name))
    if u8.ndim == 2:
        u8 = u8[None]
    else:
        u8 = u8.transpose(2, 0, 1)
    return u8.astype(np.float64) / 255.0


def jpeg(u8, quality):
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(Image.fromarray(u8).mode))


def blur(u8, sigma):
    x = u8.astype(np.float64) / 255.0
    s = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return to_u8(ndi.gaussian_filter(x, s))


def noise(u8, sigma, rng):
    x = u8.astype(np.float64) / 255.0
    return to_u8(x + rng.normal(0.0, sigma, x.shape))


def paste(u8, src_yx, dst_yx, size):
    out = u8.copy()
    (sy, sx), (dy, dx), (h, w) = src_yx, dst_yx, size
    out[dy : dy + h, dx : dx + w] = u8[sy : sy + h, sx : sx + w]
    return out


def blobs(shape, rng, fraction, smooth=6.0):
    """Irregular blobs: a smoothed random field, top `fraction` of it (bool)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), smooth)
    return field > np.quantile(field, 1.0 - fraction)


def strokes(shape, rng, n=6, width=1):
    """Thin random polylines, 1-2 px wide (bool)."""
    h, w = shape
    m = np.zeros(shape, dtype=bool)
    for _ in range(n):
        pts = rng.uniform([0, 0], [h - 1, w - 1], size=(4, 2))
        for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
            steps = int(max(abs(y1 - y0), abs(x1 - x0)) * 2) + 1
            for t in np.linspace(0.0, 1.0, steps):
                y, x = int(round(y0 + t * (y1 - y0))), int(round(x0 + t * (x1 - x0)))
                m[y : y + width, x : x + width] = True
    return m


def soft(mask_bool):
    """An anti-aliased mask: the mask drawn at 4x and downscaled, grey levels on its edges."""
    big = np.kron(mask_bool.astype(np.float64), np.ones((4, 4)))
    big = ndi.gaussian_filter(big, 3.0)
    return to_u8(resize(big, mask_bool.shape, order=1, anti_aliasing=True))


def mask_png(name, white_bool_or_u8):
    m = white_bool_or_u8
    u8 = (m.astype(np.uint8) * 255) if m.dtype == bool else m
    return save_png(name, u8)


def keep_from_png(name, polarity):
    """The keep mask the Rust loader derives: white = grey >= 128; keep = white or not white."""
    g = np.asarray(Image.open(IMAGES / name).convert("L"))
    white = g >= 128
    return (white if polarity == "keep" else ~white).astype(np.float64)


def jnum(x):
    return "inf" if x == math.inf else x


def main():
    IMAGES.mkdir(exist_ok=True)
    MAPS.mkdir(exist_ok=True)
    rng = np.random.default_rng(20261130)

    # --- sources: real photographs from skimage.data, downscaled ---
    astro = to_u8(resize(data.astronaut(), (128, 128), anti_aliasing=True))
    coffee = to_u8(resize(data.coffee()[:, 100:500], (128, 128), anti_aliasing=True))
    cat = to_u8(resize(data.chelsea()[6:294, 0:432], (96, 144), anti_aliasing=True))
    camera = to_u8(resize(data.camera(), (128, 128), anti_aliasing=True))
    src = {
        "astronaut": save_png("astronaut_SRCIMG.png", astro),
        "coffee": save_png("coffee_SRCIMG.png", coffee),
        "chelsea": save_png("chelsea_SRCIMG.png", cat),
        "camera": save_png("camera_SRCIMG.png", camera),
    }

    # --- edited images: an "edit" (pasted patch) plus a global degradation ---
    edited = {
        "astronaut_jpeg": ("astronaut", jpeg(paste(astro, (80, 10), (20, 70), (32, 32)), 25)),
        "astronaut_local": ("astronaut", paste(astro, (80, 10), (20, 70), (32, 32))),
        "coffee_blur": ("coffee", paste(blur(coffee, 1.0), (10, 10), (60, 40), (24, 40))),
        "chelsea_noise": ("chelsea", noise(paste(cat, (5, 100), (30, 20), (20, 30)), 0.04, rng)),
        "camera_jpeg": ("camera", jpeg(blur(camera, 0.7), 40)),
    }
    edited_files = {k: save_png(f"{k}.png", u8) for k, (_, u8) in edited.items()}

    # --- masks (PNG; `polarity` says what white means) ---
    def box(shape, y, x, h, w, pad=4):
        m = np.zeros(shape, dtype=bool)
        m[max(y - pad, 0) : y + h + pad, max(x - pad, 0) : x + w + pad] = True
        return m

    sq = (128, 128)
    wide = (96, 144)
    one = np.zeros(sq, dtype=bool)
    one[77, 31] = True
    astro_blobs = blobs(sq, rng, 0.3) | box(sq, 20, 70, 32, 32)
    masks = {
        # name: (file, polarity)
        "full": (mask_png("mask_full.png", np.zeros(sq, dtype=bool)), "edit"),
        "blobs": (mask_png("mask_blobs.png", astro_blobs), "edit"),
        "strokes": (mask_png("mask_strokes_keep.png", strokes(sq, rng)), "keep"),
        "one_pixel": (mask_png("mask_one_pixel_keep.png", one), "keep"),
        "empty": (mask_png("mask_empty.png", np.ones(sq, dtype=bool)), "edit"),
        "edit_box": (mask_png("mask_edit_box.png", box(sq, 20, 70, 32, 32)), "edit"),
        "soft": (mask_png("mask_soft.png", soft(astro_blobs)), "edit"),
        "coffee_box": (mask_png("mask_coffee_box.png", box(sq, 60, 40, 24, 40)), "edit"),
        "wide_full": (mask_png("mask_wide_full_keep.png", np.ones(wide, dtype=bool)), "keep"),
        "wide_blobs": (
            mask_png("mask_wide_blobs.png", blobs(wide, rng, 0.35) | box(wide, 30, 20, 20, 30)),
            "edit",
        ),
        "wide_strokes": (mask_png("mask_wide_strokes_keep.png", strokes(wide, rng, 5, 2)), "keep"),
    }

    cases = [
        ("astronaut_jpeg", "full"),
        ("astronaut_jpeg", "blobs"),
        ("astronaut_jpeg", "strokes"),
        ("astronaut_jpeg", "one_pixel"),
        ("astronaut_jpeg", "empty"),
        ("astronaut_jpeg", "edit_box"),
        ("astronaut_jpeg", "soft"),
        ("astronaut_local", "edit_box"),
        ("astronaut_local", "blobs"),
        ("astronaut_local", "full"),
        ("coffee_blur", "full"),
        ("coffee_blur", "coffee_box"),
        ("coffee_blur", "strokes"),
        ("chelsea_noise", "wide_full"),
        ("chelsea_noise", "wide_blobs"),
        ("chelsea_noise", "wide_strokes"),
        ("camera_jpeg", "full"),
        ("camera_jpeg", "blobs"),
        ("camera_jpeg", "one_pixel"),
    ]
    skimage_maps = {"astronaut_jpeg__full", "coffee_blur__full", "chelsea_noise__wide_full",
                    "camera_jpeg__full"}
    ref_maps = {"astronaut_jpeg__blobs", "chelsea_noise__wide_strokes", "camera_jpeg__blobs",
                "astronaut_jpeg__one_pixel"}

    out = []
    for ed, mk in cases:
        name = f"{ed}__{mk}"
        key, _ = edited[ed]
        a = load_png(src[key])
        b = load_png(edited_files[ed])
        mfile, polarity = masks[mk]
        keep = keep_from_png(mfile, polarity)
        m = ref.metrics(a, b, keep, separable=False)
        # the separable and the 2-D filter agree (a check of the reference itself)
        m_sep = ref.metrics(a, b, keep, separable=True)
        if not m.get("undefined"):
            assert abs(m["ssim"] - m_sep["ssim"]) < 1e-12, name
            assert m["mse"] == m_sep["mse"], name
        case = {
            "name": name,
            "source": src[key],
            "edited": edited_files[ed],
            "mask": mfile,
            "mask_polarity": polarity,
            "channels": int(a.shape[0]),
            "height": int(a.shape[1]),
            "width": int(a.shape[2]),
        }
        case.update({k: jnum(v) for k, v in m.items()})
        if name in skimage_maps:
            assert keep.all()
            kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                      data_range=1.0, full=True)
            if a.shape[0] == 1:
                _, smap = structural_similarity(a[0], b[0], **kw)
                smap = smap[None]
            else:
                _, smap = structural_similarity(a, b, channel_axis=0, **kw)
            # the reference agrees with scikit-image away from the border
            rmap, _ = ref.ssim_map(a, b, keep, separable=False)
            assert np.abs(rmap - smap)[:, 5:-5, 5:-5].max() < 1e-10, name
            np.save(MAPS / f"skimage_{name}.npy", smap.astype(np.float32))
            case["map"] = f"skimage_{name}.npy"
            case["map_kind"] = "skimage-interior"
        if name in ref_maps:
            rmap, _ = ref.ssim_map(a, b, keep, separable=False)
            np.save(MAPS / f"ref_{name}.npy", rmap.astype(np.float32))
            case["map"] = f"ref_{name}.npy"
            case["map_kind"] = "reference"
        out.append(case)
        print(f"{name:34s} " + ", ".join(f"{k}={v}" for k, v in m.items()))

    doc = {
        "about": "golden values for method-spec §1, generated by tests/golden/metrics/gen.py",
        "w_s": 0.5,
        "tau_db": 40.0,
        "cases": out,
    }
    (HERE / "golden.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
