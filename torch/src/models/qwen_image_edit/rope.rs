//! Qwen-Image's rotary position embedding (diffusers' `QwenEmbedRope` with `scale_rope=True`
//! and `apply_rotary_emb_qwen(use_real=False)`).
//!
//! Every image of the sequence (the target, then the source) is a `(frame, height, width)`
//! grid of packed tokens; image `i`'s tokens sit at frame position `i` and at height / width
//! positions centred on 0: `−(h − ⌊h/2⌋), …, −1, 0, …, ⌊h/2⌋ − 1`. Text tokens follow at
//! `m, m + 1, …` on all three axes, `m = max(⌊h/2⌋, ⌊w/2⌋)` over the images. Each axis `a`
//! rotates `axes_dims_rope[a] / 2` channel pairs with frequencies
//! `1/θ^(2k/d_a)`, θ = 10000. All in float32, as diffusers' complex64 tables.

use tch::{Device, Kind, Tensor};

/// Qwen-Image's RoPE base θ.
pub const THETA: f64 = 10000.0;

/// One image's grid of packed tokens: `(frames, height, width)` (an image has 1 frame).
pub type ImageShape = (i64, i64, i64);

/// Rotation angles of the image tokens `(Σ f·h·w, D/2)` and of `text_len` text tokens
/// `(text_len, D/2)`, `D = Σ axes_dims`.
#[derive(Debug)]
pub struct RopeAngles {
    pub image: Tensor,
    pub text: Tensor,
}

/// `1/θ^(arange(0, d, 2)/d)` in float32 (`rope_params`' frequencies): `(d/2,)`.
fn inv_freq(d: i64, device: Device) -> Tensor {
    let exps = Tensor::arange_start_step(0, d, 2, (Kind::Float, device)) / d as f64;
    Tensor::pow_scalar(THETA, &exps).reciprocal()
}

/// Angles of integer `positions` (`(n,)`) on an axis of width `d`: `(n, d/2)` float32,
/// `outer(position, freq)` as diffusers computes it.
fn axis_angles(positions: &Tensor, d: i64) -> Tensor {
    positions
        .to_kind(Kind::Float)
        .outer(&inv_freq(d, positions.device()))
}

/// `[−(n − ⌊n/2⌋), …, ⌊n/2⌋ − 1]`: the centred positions of `scale_rope`.
fn centred(n: i64, device: Device) -> Tensor {
    Tensor::arange(n, (Kind::Int64, device)) - (n - n / 2)
}

/// The angles of the images `shapes` (in sequence order) and of `text_len` text tokens.
pub fn rope_angles(
    shapes: &[ImageShape],
    text_len: i64,
    axes: &[i64],
    device: Device,
) -> RopeAngles {
    let mut images = Vec::with_capacity(shapes.len());
    let mut max_index = 0;
    for (idx, &(f, h, w)) in shapes.iter().enumerate() {
        let frame = Tensor::arange_start(idx as i64, idx as i64 + f, (Kind::Int64, device));
        let ff = axis_angles(&frame, axes[0]); // (f, d0/2)
        let hh = axis_angles(&centred(h, device), axes[1]); // (h, d1/2)
        let ww = axis_angles(&centred(w, device), axes[2]); // (w, d2/2)
        let (d0, d1, d2) = (axes[0] / 2, axes[1] / 2, axes[2] / 2);
        let grid = Tensor::cat(
            &[
                ff.view([f, 1, 1, d0]).expand([f, h, w, d0], false),
                hh.view([1, h, 1, d1]).expand([f, h, w, d1], false),
                ww.view([1, 1, w, d2]).expand([f, h, w, d2], false),
            ],
            -1,
        );
        images.push(grid.reshape([f * h * w, d0 + d1 + d2]));
        max_index = max_index.max(h / 2).max(w / 2);
    }
    let pos = Tensor::arange_start(max_index, max_index + text_len, (Kind::Int64, device));
    let text = Tensor::cat(
        &axes
            .iter()
            .map(|&d| axis_angles(&pos, d))
            .collect::<Vec<_>>(),
        -1,
    );
    RopeAngles {
        image: Tensor::cat(&images, 0),
        text,
    }
}

/// The rotation of `x (B, S, heads, D)` by `angles (S, D/2)`: channel pairs `(2k, 2k+1)` as
/// complex numbers times `e^{iθ}`, computed in float32 and returned in `x`'s kind.
pub fn apply_rope(x: &Tensor, angles: &Tensor) -> Tensor {
    let s = x.size();
    let d = s[3];
    let pairs = x.to_kind(Kind::Float).reshape([s[0], s[1], s[2], d / 2, 2]);
    let (re, im) = (pairs.select(4, 0), pairs.select(4, 1));
    let a = angles.unsqueeze(1); // (S, 1, D/2): broadcast over heads
    let (cos, sin) = (a.cos(), a.sin());
    let out_re = &re * &cos - &im * &sin;
    let out_im = &re * &sin + &im * &cos;
    Tensor::stack(&[out_re, out_im], -1)
        .reshape([s[0], s[1], s[2], d])
        .to_kind(x.kind())
}
