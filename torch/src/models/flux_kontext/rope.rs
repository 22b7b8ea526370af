//! FLUX's 3-axis rotary position embedding (diffusers' `FluxPosEmbed` and
//! `apply_rotary_emb(use_real=True, use_real_unbind_dim=-1)`), and the position ids the
//! pipeline builds: text tokens at `(0, 0, 0)`, target latent tokens at `(0, row, col)`,
//! Kontext source tokens at `(1, row, col)`.

use tch::{Device, Kind, Tensor};

/// FLUX's RoPE base θ.
pub const THETA: f64 = 10000.0;

/// The cosines and sines of every token's rotation, each `(L, Σ axes_dims)` float32.
///
/// Axis `i` of `ids (L, 3)` fills `axes_dims[i]` channels: frequencies
/// `f_k = 1/θ^(2k/d)` for `k < d/2` (in float64), angles `pos·f_k`, each repeated twice
/// (`repeat_interleave`) so that channel pairs `(2k, 2k+1)` rotate together.
pub fn rope_cos_sin(ids: &Tensor, axes_dims: &[i64]) -> (Tensor, Tensor) {
    let pos = ids.to_kind(Kind::Float).to_kind(Kind::Double); // (L, 3)
    let mut cos = Vec::with_capacity(axes_dims.len());
    let mut sin = Vec::with_capacity(axes_dims.len());
    for (i, &d) in axes_dims.iter().enumerate() {
        let exps = Tensor::arange_start_step(0, d, 2, (Kind::Double, ids.device())) / d as f64;
        let freqs = Tensor::pow_scalar(THETA, &exps).reciprocal(); // (d/2,)
        let angles = pos.select(1, i as i64).outer(&freqs); // (L, d/2)
        cos.push(
            angles
                .cos()
                .repeat_interleave_self_int(2, 1, None)
                .to_kind(Kind::Float),
        );
        sin.push(
            angles
                .sin()
                .repeat_interleave_self_int(2, 1, None)
                .to_kind(Kind::Float),
        );
    }
    (Tensor::cat(&cos, -1), Tensor::cat(&sin, -1))
}

/// Rotates channel pairs of `x (B, heads, L, D)` by the angles of `cos`/`sin (L, D)`:
/// `out = x·cos + rot(x)·sin` with `rot(x)_{2k} = −x_{2k+1}`, `rot(x)_{2k+1} = x_{2k}`,
/// computed in float32 and returned in `x`'s kind.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let s = x.size();
    let d = s[3];
    let pairs = x.reshape([s[0], s[1], s[2], d / 2, 2]);
    let re = pairs.select(4, 0);
    let im = pairs.select(4, 1);
    let rotated = Tensor::stack(&[-im, re], -1).reshape([s[0], s[1], s[2], d]);
    (x.to_kind(Kind::Float) * cos + rotated.to_kind(Kind::Float) * sin).to_kind(x.kind())
}

/// Position ids of an `h × w` grid of packed latent tokens, row-major, `(h·w, 3)` float32:
/// `(first, row, col)`; `first` is 0 for the target image and 1 for a Kontext source image.
pub fn latent_image_ids(h: i64, w: i64, first: f64, device: Device) -> Tensor {
    let rows = Tensor::arange(h, (Kind::Float, device))
        .view([h, 1])
        .expand([h, w], false);
    let cols = Tensor::arange(w, (Kind::Float, device))
        .view([1, w])
        .expand([h, w], false);
    let first = Tensor::full([h, w], first, (Kind::Float, device));
    Tensor::stack(&[first, rows, cols], -1).reshape([h * w, 3])
}

/// Position ids of `len` text tokens: all zero, `(len, 3)` float32.
pub fn text_ids(len: i64, device: Device) -> Tensor {
    Tensor::zeros([len, 3], (Kind::Float, device))
}
