//! The building blocks of diffusers' `AutoencoderKLQwenImage` (`autoencoder_kl_qwenimage.py`,
//! the Wan-2.1 video VAE) on single frames.
//!
//! The VAE is a causal video model: every 3-D convolution pads time with zeros in front and
//! caches past frames. An image is one frame, which diffusers encodes and decodes as the first
//! chunk (no cache): the zero padding is all its temporal kernel sees besides the frame, so a
//! causal `Conv3d` with kernel `(k_t, k, k)` on one frame equals a 2-D convolution with its
//! last temporal slice `weight[:, :, k_t − 1]` — which is how [`CausalConv3d`] computes it.
//! The resamplers' `time_conv`s never run on a first frame (diffusers caches the frame there);
//! their weights are loaded and left unused. Tensors here are `(B, C, H, W)`: the frame axis
//! is implicit.

use super::super::flux_kontext::layers::{Conv2d, var};
use tch::{Kind, Tensor, nn};

/// `QwenImageCausalConv3d` (stride 1) applied to one frame: `weight (out, in, k_t, k, k)`,
/// `bias (out,)`, spatial zero padding.
#[derive(Debug)]
pub struct CausalConv3d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub padding: i64,
}

impl CausalConv3d {
    /// `kernel (k_t, k)`; `padding`: the spatial padding (diffusers pads time by `2·p_t` in
    /// front, which for one frame leaves only the last temporal tap).
    pub fn new(
        p: &nn::Path,
        in_ch: i64,
        out_ch: i64,
        kernel: (i64, i64),
        padding: i64,
        kind: Kind,
    ) -> Self {
        let (kt, k) = kernel;
        CausalConv3d {
            weight: var(p, "weight", &[out_ch, in_ch, kt, k, k], kind),
            bias: var(p, "bias", &[out_ch], kind),
            padding,
        }
    }

    /// `(B, in, H, W)` → `(B, out, H', W')`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kt = self.weight.size()[2];
        let w = self.weight.select(2, kt - 1);
        x.conv2d(&w, Some(&self.bias), [1], [self.padding], [1], 1)
    }
}

/// `QwenImageRMS_norm(channel_first=True)`: `normalize(x, dim=1) · √C · gamma` (L2 over the
/// channels, in float32 for half-precision inputs). `gamma` is `(C, 1, 1, 1)` in the video
/// layers (`images=False`) and `(C, 1, 1)` in the attention block.
#[derive(Debug)]
pub struct RmsNorm3d {
    pub gamma: Tensor,
    pub scale: f64,
}

impl RmsNorm3d {
    pub fn new(p: &nn::Path, dim: i64, images: bool, kind: Kind) -> Self {
        let shape: &[i64] = if images {
            &[dim, 1, 1]
        } else {
            &[dim, 1, 1, 1]
        };
        RmsNorm3d {
            gamma: var(p, "gamma", shape, kind),
            scale: (dim as f64).sqrt(),
        }
    }

    /// `(B, C, H, W)` → same.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let xf = match x.kind() {
            Kind::Half | Kind::BFloat16 => x.to_kind(Kind::Float),
            _ => x.shallow_clone(),
        };
        // F.normalize: x / max(‖x‖₂, 1e-12) over the channels
        let norm = xf
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        let normalized = (xf / norm).to_kind(x.kind());
        let c = self.gamma.size()[0];
        normalized * self.scale * self.gamma.view([c, 1, 1])
    }
}

/// `QwenImageResidualBlock`: `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`, with a
/// 1×1×1 `conv_shortcut` when the channel count changes.
#[derive(Debug)]
pub struct ResidualBlock {
    pub norm1: RmsNorm3d,
    pub conv1: CausalConv3d,
    pub norm2: RmsNorm3d,
    pub conv2: CausalConv3d,
    pub conv_shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub fn new(p: &nn::Path, in_dim: i64, out_dim: i64, kind: Kind) -> Self {
        ResidualBlock {
            norm1: RmsNorm3d::new(&(p / "norm1"), in_dim, false, kind),
            conv1: CausalConv3d::new(&(p / "conv1"), in_dim, out_dim, (3, 3), 1, kind),
            norm2: RmsNorm3d::new(&(p / "norm2"), out_dim, false, kind),
            conv2: CausalConv3d::new(&(p / "conv2"), out_dim, out_dim, (3, 3), 1, kind),
            conv_shortcut: (in_dim != out_dim).then(|| {
                CausalConv3d::new(&(p / "conv_shortcut"), in_dim, out_dim, (1, 1), 0, kind)
            }),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x.shallow_clone(),
        };
        let y = self.conv1.forward(&self.norm1.forward(x).silu());
        let y = self.conv2.forward(&self.norm2.forward(&y).silu());
        y + h
    }
}

/// `QwenImageAttentionBlock`: single-head self-attention over the pixels of a frame, with a
/// 1×1 `to_qkv` and `proj`, and a residual connection.
#[derive(Debug)]
pub struct AttentionBlock {
    pub norm: RmsNorm3d,
    /// `(3C, C, 1, 1)`
    pub to_qkv_weight: Tensor,
    pub to_qkv_bias: Tensor,
    pub proj_weight: Tensor,
    pub proj_bias: Tensor,
}

impl AttentionBlock {
    pub fn new(p: &nn::Path, dim: i64, kind: Kind) -> Self {
        AttentionBlock {
            norm: RmsNorm3d::new(&(p / "norm"), dim, true, kind),
            to_qkv_weight: var(&(p / "to_qkv"), "weight", &[3 * dim, dim, 1, 1], kind),
            to_qkv_bias: var(&(p / "to_qkv"), "bias", &[3 * dim], kind),
            proj_weight: var(&(p / "proj"), "weight", &[dim, dim, 1, 1], kind),
            proj_bias: var(&(p / "proj"), "bias", &[dim], kind),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("(B, C, H, W)");
        let n = self.norm.forward(x);
        let qkv = n.conv2d(
            &self.to_qkv_weight,
            Some(&self.to_qkv_bias),
            [1],
            [0],
            [1],
            1,
        );
        // (B, 3C, H·W) → (B, 1, H·W, 3C) → q, k, v (B, 1, H·W, C)
        let qkv = qkv.reshape([b, 1, 3 * c, h * w]).permute([0, 1, 3, 2]);
        let p = qkv.chunk(3, -1);
        let o = Tensor::scaled_dot_product_attention::<Tensor>(
            &p[0], &p[1], &p[2], None, 0.0, false, None, false,
        );
        let o = o.squeeze_dim(1).permute([0, 2, 1]).reshape([b, c, h, w]);
        o.conv2d(&self.proj_weight, Some(&self.proj_bias), [1], [0], [1], 1) + x
    }
}

/// `QwenImageResample` in the modes the VAE uses, on a first frame.
///
/// - `downsample2d` / `downsample3d`: zero-pad right and bottom by one, 3×3 conv with stride 2
///   (`resample.1`);
/// - `upsample2d` / `upsample3d`: nearest ×2 (in float32), 3×3 conv halving the channels
///   (`resample.1`).
///
/// The 3-D modes' `time_conv` (weights loaded) does not touch a first frame.
#[derive(Debug)]
pub struct Resample {
    pub up: bool,
    pub conv: Conv2d,
    /// `time_conv.weight`, `time_conv.bias` of the 3-D modes (unused on images).
    pub time_conv: Option<(Tensor, Tensor)>,
}

impl Resample {
    /// `mode`: `downsample2d`, `downsample3d`, `upsample2d` or `upsample3d`.
    pub fn new(p: &nn::Path, dim: i64, mode: &str, kind: Kind) -> Self {
        let r = p / "resample" / 1;
        let up = mode.starts_with("up");
        // time_conv: (dim → dim, stride 2 in time) down, (dim → 2·dim) up
        let time_out = if up { 2 * dim } else { dim };
        let t = p / "time_conv";
        Resample {
            up,
            conv: if up {
                Conv2d::new(&r, dim, dim / 2, 3, 1, 1, kind)
            } else {
                Conv2d::new(&r, dim, dim, 3, 2, 0, kind)
            },
            time_conv: mode.ends_with("3d").then(|| {
                (
                    var(&t, "weight", &[time_out, dim, 3, 1, 1], kind),
                    var(&t, "bias", &[time_out], kind),
                )
            }),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.up {
            let (_, _, h, w) = x.size4().expect("(B, C, H, W)");
            // nearest-exact ×2 is plain nearest for an integer factor
            let up = x
                .to_kind(Kind::Float)
                .upsample_nearest2d([2 * h, 2 * w], Some(2.0), Some(2.0))
                .to_kind(x.kind());
            self.conv.forward(&up)
        } else {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
        }
    }
}

/// One entry of the encoder's flat `down_blocks` list.
#[derive(Debug)]
pub enum DownLayer {
    Residual(ResidualBlock),
    Attention(AttentionBlock),
    Resample(Resample),
}

impl DownLayer {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            DownLayer::Residual(b) => b.forward(x),
            DownLayer::Attention(b) => b.forward(x),
            DownLayer::Resample(b) => b.forward(x),
        }
    }
}

/// `QwenImageMidBlock(num_layers=1)`: residual, attention, residual.
#[derive(Debug)]
pub struct MidBlock {
    pub resnets: [ResidualBlock; 2],
    pub attention: AttentionBlock,
}

impl MidBlock {
    pub fn new(p: &nn::Path, dim: i64, kind: Kind) -> Self {
        let r = p / "resnets";
        MidBlock {
            resnets: [
                ResidualBlock::new(&(&r / 0), dim, dim, kind),
                ResidualBlock::new(&(&r / 1), dim, dim, kind),
            ],
            attention: AttentionBlock::new(&(p / "attentions" / 0), dim, kind),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.resnets[0].forward(x);
        let x = self.attention.forward(&x);
        self.resnets[1].forward(&x)
    }
}

/// `QwenImageUpBlock`: `num_res_blocks + 1` residual blocks, then an optional upsampler
/// (`upsamplers.0`).
#[derive(Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResidualBlock>,
    pub upsampler: Option<Resample>,
}

impl UpBlock {
    pub fn new(
        p: &nn::Path,
        in_dim: i64,
        out_dim: i64,
        num_res_blocks: i64,
        upsample_mode: Option<&str>,
        kind: Kind,
    ) -> Self {
        let resnets = (0..=num_res_blocks)
            .map(|i| {
                let d = if i == 0 { in_dim } else { out_dim };
                ResidualBlock::new(&(p / "resnets" / i), d, out_dim, kind)
            })
            .collect();
        UpBlock {
            resnets,
            upsampler: upsample_mode
                .map(|m| Resample::new(&(p / "upsamplers" / 0), out_dim, m, kind)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for r in &self.resnets {
            x = r.forward(&x);
        }
        match &self.upsampler {
            Some(u) => u.forward(&x),
            None => x,
        }
    }
}
