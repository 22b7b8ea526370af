//! The building blocks of diffusers' `AutoencoderKL` (`resnet.py`, `downsampling.py`,
//! `upsampling.py`, `unet_2d_blocks.py`, the VAE's `Attention`), all without time embedding:
//! GroupNorm eps 1e-6, SiLU, output scale factor 1.

use super::super::lora::LoraLinear;
use super::layers::{Conv2d, GroupNorm, linear};
use tch::{Kind, Tensor, nn};

pub const VAE_EPS: f64 = 1e-6;

/// `ResnetBlock2D(temb_channels=None)`: `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`, with
/// a 1×1 `conv_shortcut` on `x` when the channel count changes.
#[derive(Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn new(p: &nn::Path, in_ch: i64, out_ch: i64, groups: i64, kind: Kind) -> Self {
        ResnetBlock2D {
            norm1: GroupNorm::new(&(p / "norm1"), groups, in_ch, VAE_EPS, kind),
            conv1: Conv2d::new(&(p / "conv1"), in_ch, out_ch, 3, 1, 1, kind),
            norm2: GroupNorm::new(&(p / "norm2"), groups, out_ch, VAE_EPS, kind),
            conv2: Conv2d::new(&(p / "conv2"), out_ch, out_ch, 3, 1, 1, kind),
            conv_shortcut: (in_ch != out_ch)
                .then(|| Conv2d::new(&(p / "conv_shortcut"), in_ch, out_ch, 1, 1, 0, kind)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(&self.norm1.forward(x).silu());
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        match &self.conv_shortcut {
            Some(c) => c.forward(x) + h,
            None => x + h,
        }
    }
}

/// `Downsample2D(use_conv=True, padding=0)` (`downsamplers.0`): pad right and bottom by one,
/// then a 3×3 conv with stride 2.
#[derive(Debug)]
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn new(p: &nn::Path, ch: i64, kind: Kind) -> Self {
        Downsample2D {
            conv: Conv2d::new(&(p / "conv"), ch, ch, 3, 2, 0, kind),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
    }
}

/// `Upsample2D(use_conv=True)` (`upsamplers.0`): nearest ×2, then a 3×3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn new(p: &nn::Path, ch: i64, kind: Kind) -> Self {
        Upsample2D {
            conv: Conv2d::new(&(p / "conv"), ch, ch, 3, 1, 1, kind),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("(B, C, H, W)");
        let up = x.upsample_nearest2d([2 * h, 2 * w], Some(2.0), Some(2.0));
        self.conv.forward(&up)
    }
}

/// The mid block's single-head self-attention over all pixels (diffusers' `Attention` with
/// `group_norm`, `residual_connection=True`, `to_q/to_k/to_v/to_out.0`).
#[derive(Debug)]
pub struct VaeAttention {
    pub group_norm: GroupNorm,
    pub to_q: LoraLinear,
    pub to_k: LoraLinear,
    pub to_v: LoraLinear,
    pub to_out: LoraLinear,
}

impl VaeAttention {
    pub fn new(p: &nn::Path, ch: i64, groups: i64, kind: Kind) -> Self {
        let lin = |name: &str| linear(&(p / name), ch, ch, true, kind);
        VaeAttention {
            group_norm: GroupNorm::new(&(p / "group_norm"), groups, ch, VAE_EPS, kind),
            to_q: lin("to_q"),
            to_k: lin("to_k"),
            to_v: lin("to_v"),
            to_out: linear(&(p / "to_out" / 0), ch, ch, true, kind),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("(B, C, H, W)");
        // (B, C, H·W) normalised, then tokens (B, H·W, C)
        let t = self
            .group_norm
            .forward(&x.view([b, c, h * w]))
            .transpose(1, 2);
        let heads = |l: &LoraLinear| l.forward(&t, None).unsqueeze(1); // (B, 1, HW, C)
        let o = Tensor::scaled_dot_product_attention::<Tensor>(
            &heads(&self.to_q),
            &heads(&self.to_k),
            &heads(&self.to_v),
            None,
            0.0,
            false,
            None,
            false,
        )
        .squeeze_dim(1);
        let o = self.to_out.forward(&o, None); // (B, HW, C)
        o.transpose(1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D`: resnet, (attention, resnet) once.
#[derive(Debug)]
pub struct UNetMidBlock2D {
    pub resnets: [ResnetBlock2D; 2],
    pub attention: Option<VaeAttention>,
}

impl UNetMidBlock2D {
    pub fn new(p: &nn::Path, ch: i64, groups: i64, attention: bool, kind: Kind) -> Self {
        let r = p / "resnets";
        UNetMidBlock2D {
            resnets: [
                ResnetBlock2D::new(&(&r / 0), ch, ch, groups, kind),
                ResnetBlock2D::new(&(&r / 1), ch, ch, groups, kind),
            ],
            attention: attention
                .then(|| VaeAttention::new(&(p / "attentions" / 0), ch, groups, kind)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.resnets[0].forward(x);
        let x = match &self.attention {
            Some(a) => a.forward(&x),
            None => x,
        };
        self.resnets[1].forward(&x)
    }
}

/// `DownEncoderBlock2D` / `UpDecoderBlock2D`: ResNet blocks, then an optional resampler.
#[derive(Debug)]
pub struct ResampleBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Downsample2D>,
    pub upsampler: Option<Upsample2D>,
}

impl ResampleBlock {
    /// `DownEncoderBlock2D`: `layers` resnets, `downsamplers.0` unless it is the last level.
    pub fn down(
        p: &nn::Path,
        in_ch: i64,
        out_ch: i64,
        layers: i64,
        groups: i64,
        down: bool,
        kind: Kind,
    ) -> Self {
        ResampleBlock {
            resnets: Self::resnets(p, in_ch, out_ch, layers, groups, kind),
            downsampler: down.then(|| Downsample2D::new(&(p / "downsamplers" / 0), out_ch, kind)),
            upsampler: None,
        }
    }

    /// `UpDecoderBlock2D`: `layers` resnets, `upsamplers.0` unless it is the last level.
    pub fn up(
        p: &nn::Path,
        in_ch: i64,
        out_ch: i64,
        layers: i64,
        groups: i64,
        up: bool,
        kind: Kind,
    ) -> Self {
        ResampleBlock {
            resnets: Self::resnets(p, in_ch, out_ch, layers, groups, kind),
            downsampler: None,
            upsampler: up.then(|| Upsample2D::new(&(p / "upsamplers" / 0), out_ch, kind)),
        }
    }

    fn resnets(
        p: &nn::Path,
        in_ch: i64,
        out_ch: i64,
        layers: i64,
        groups: i64,
        kind: Kind,
    ) -> Vec<ResnetBlock2D> {
        (0..layers)
            .map(|i| {
                let c = if i == 0 { in_ch } else { out_ch };
                ResnetBlock2D::new(&(p / "resnets" / i), c, out_ch, groups, kind)
            })
            .collect()
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for r in &self.resnets {
            x = r.forward(&x);
        }
        if let Some(d) = &self.downsampler {
            x = d.forward(&x);
        }
        if let Some(u) = &self.upsampler {
            x = u.forward(&x);
        }
        x
    }
}
