//! The conditioning embedding of FLUX (`time_text_embed`, diffusers'
//! `CombinedTimestepGuidanceTextProjEmbeddings`, or `CombinedTimestepTextProjEmbeddings`
//! without guidance): sinusoidal projections of the timestep and of the guidance value, each
//! through its own MLP, plus a projection of the pooled CLIP embedding.

use super::super::lora::LoraLinear;
use super::layers::linear;
use tch::{Kind, Tensor, nn};

/// Channels of the sinusoidal projection (`Timesteps(num_channels=256)`).
pub const TIME_PROJ_DIM: i64 = 256;

/// diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)`
/// in float32: `[cos(t·f_k), sin(t·f_k)]`, `f_k = exp(−ln(10000)·k / (dim/2))`.
/// `t (B,)` → `(B, dim)`.
pub fn timestep_proj(t: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let exponent =
        Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln())) / half as f64;
    let args = t.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0); // (B, half)
    let emb = Tensor::cat(&[args.cos(), args.sin()], -1);
    if dim % 2 == 1 {
        emb.pad([0, 1], "constant", Some(0.0))
    } else {
        emb
    }
}

/// `linear_2(silu(linear_1(x)))`: diffusers' `TimestepEmbedding` and
/// `PixArtAlphaTextProjection(act_fn="silu")`.
#[derive(Debug)]
pub struct Mlp {
    pub linear_1: LoraLinear,
    pub linear_2: LoraLinear,
}

impl Mlp {
    pub fn new(p: &nn::Path, in_dim: i64, dim: i64, kind: Kind) -> Mlp {
        Mlp {
            linear_1: linear(&(p / "linear_1"), in_dim, dim, true, kind),
            linear_2: linear(&(p / "linear_2"), dim, dim, true, kind),
        }
    }

    pub fn forward(&self, x: &Tensor, adapter: Option<&str>) -> Tensor {
        self.linear_2
            .forward(&self.linear_1.forward(x, adapter).silu(), adapter)
    }
}

/// `time_text_embed`.
#[derive(Debug)]
pub struct TimeTextEmbed {
    pub timestep_embedder: Mlp,
    /// Present when the config has `guidance_embeds`.
    pub guidance_embedder: Option<Mlp>,
    pub text_embedder: Mlp,
}

impl TimeTextEmbed {
    pub fn new(p: &nn::Path, dim: i64, pooled_dim: i64, guidance: bool, kind: Kind) -> Self {
        TimeTextEmbed {
            timestep_embedder: Mlp::new(&(p / "timestep_embedder"), TIME_PROJ_DIM, dim, kind),
            guidance_embedder: guidance
                .then(|| Mlp::new(&(p / "guidance_embedder"), TIME_PROJ_DIM, dim, kind)),
            text_embedder: Mlp::new(&(p / "text_embedder"), pooled_dim, dim, kind),
        }
    }

    /// `timestep`, `guidance`: `(B,)` already scaled by 1000; `pooled`: `(B, pooled_dim)`
    /// in the model's kind. The projections are computed in float32 and cast to `pooled`'s
    /// kind. → `(B, dim)`
    pub fn forward(
        &self,
        timestep: &Tensor,
        guidance: Option<&Tensor>,
        pooled: &Tensor,
        adapter: Option<&str>,
    ) -> Tensor {
        let kind = pooled.kind();
        let proj = |t: &Tensor| timestep_proj(t, TIME_PROJ_DIM).to_kind(kind);
        let t_emb = self.timestep_embedder.forward(&proj(timestep), adapter);
        let emb = match (guidance, &self.guidance_embedder) {
            (Some(g), Some(embedder)) => t_emb + embedder.forward(&proj(g), adapter),
            _ => t_emb,
        };
        emb + self.text_embedder.forward(pooled, adapter)
    }
}
