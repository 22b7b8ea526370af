//! Embeddings of tiny-kontext: the sinusoidal timestep embedding and its MLP, the pooled-text
//! projection (together diffusers' `CombinedTimestepTextProjEmbeddings`, `time_text_embed`),
//! and the fixed 2-D sin-cos position embedding of patch tokens.

use super::lora::LoraLinear;
use tch::{Device, Kind, Tensor, nn};

/// diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)`:
/// `[cos(t·f_k), sin(t·f_k)]`, `f_k = exp(−ln(10000)·k/half)`. `t`: `(B,)` → `(B, dim)`.
pub fn timestep_embedding(t: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let k = Tensor::arange(half, (Kind::Float, t.device()));
    let freqs = (k * (-(10000f64.ln()) / half as f64)).exp(); // (half,)
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0); // (B, half)
    let emb = Tensor::cat(&[args.cos(), args.sin()], 1);
    if dim % 2 == 1 {
        emb.pad([0, 1], "constant", Some(0.0))
    } else {
        emb
    }
}

/// `linear_2(silu(linear_1(x)))` (diffusers' `TimestepEmbedding` and
/// `PixArtAlphaTextProjection(act_fn="silu")` share this shape).
#[derive(Debug)]
pub struct Mlp2 {
    pub linear_1: LoraLinear,
    pub linear_2: LoraLinear,
}

impl Mlp2 {
    pub fn new(p: &nn::Path, in_dim: i64, hidden: i64, out_dim: i64, seed: u64) -> Mlp2 {
        Mlp2 {
            linear_1: LoraLinear::new(&(p / "linear_1"), in_dim, hidden, true, seed),
            linear_2: LoraLinear::new(&(p / "linear_2"), hidden, out_dim, true, seed),
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.linear_2
            .forward(&self.linear_1.forward(x, None).silu(), None)
    }
}

/// `time_text_embed`: `timestep_embedder(sinusoid(1000·t)) + text_embedder(pooled text)`.
#[derive(Debug)]
pub struct TimeTextEmbed {
    pub freq_dim: i64,
    pub timestep_embedder: Mlp2,
    pub text_embedder: Mlp2,
}

impl TimeTextEmbed {
    pub fn new(p: &nn::Path, freq_dim: i64, pooled_dim: i64, dim: i64, seed: u64) -> TimeTextEmbed {
        TimeTextEmbed {
            freq_dim,
            timestep_embedder: Mlp2::new(&(p / "timestep_embedder"), freq_dim, dim, dim, seed),
            text_embedder: Mlp2::new(&(p / "text_embedder"), pooled_dim, dim, dim, seed),
        }
    }

    /// `t`: `(B,)` in [0, 1]; `pooled`: `(B, pooled_dim)` → `(B, dim)`.
    pub fn forward(&self, t: &Tensor, pooled: &Tensor) -> Tensor {
        // FLUX feeds the scheduler's timestep, σ·1000, to the sinusoid.
        let t_freq = timestep_embedding(&(t * 1000.0), self.freq_dim).to_kind(pooled.kind());
        self.timestep_embedder.forward(&t_freq) + self.text_embedder.forward(pooled)
    }
}

/// Fixed 2-D sin-cos position embedding of an `h × w` token grid: the first half of the
/// channels encodes the row, the second the column (MAE/SD3 style). `(h·w, dim)`, row-major.
pub fn pos_embed_2d(h: i64, w: i64, dim: i64, device: Device) -> Tensor {
    let half = dim / 2;
    let axis = |n: i64| -> Tensor {
        // (n, half): [sin(p·f), cos(p·f)], f_k = 10000^(−k/(half/2))
        let quarter = half / 2;
        let k = Tensor::arange(quarter, (Kind::Float, device));
        let freqs = (k * (-(10000f64.ln()) / quarter.max(1) as f64)).exp();
        let pos = Tensor::arange(n, (Kind::Float, device)).unsqueeze(1) * freqs.unsqueeze(0);
        let e = Tensor::cat(&[pos.sin(), pos.cos()], 1);
        e.pad([0, half - 2 * quarter], "constant", Some(0.0))
    };
    let rows = axis(h).unsqueeze(1).expand([h, w, half], false);
    let cols = axis(w).unsqueeze(0).expand([h, w, half], false);
    let e = Tensor::cat(&[rows, cols], 2).reshape([h * w, 2 * half]);
    e.pad([0, dim - 2 * half], "constant", Some(0.0))
}
