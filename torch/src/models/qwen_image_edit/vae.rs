//! diffusers' `AutoencoderKLQwenImage` (`vae/`) on images: the encoder to the posterior's mean
//! (the edit pipeline encodes the source with `sample_mode="argmax"`), the decoder back to
//! pixels (clamped to [−1, 1] as diffusers' `_decode`), and the pipeline's latent
//! normalisation with the config's per-channel `latents_mean` / `latents_std`.
//!
//! Images are `(B, 3, H, W)` in [−1, 1], H and W multiples of 8; latents
//! `(B, z_dim, H/8, W/8)`. diffusers works on videos `(B, C, T, H, W)`; an image is its
//! `T = 1` case (the pipeline's `unsqueeze(2)` / `[:, :, 0]`), see [`super::vae_blocks`].

use super::super::error::ModelError;
use super::super::flux_kontext::layers::{check_weight_kind, var_store};
use super::super::flux_kontext::transformer::check_class;
use super::super::flux_kontext::weights::{Checkpoint, DIFFUSERS_STEM, same_name};
use super::config::{AutoencoderKLQwenImageConfig, read_config};
use super::vae_blocks::{
    AttentionBlock, CausalConv3d, DownLayer, MidBlock, Resample, ResidualBlock, RmsNorm3d, UpBlock,
};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

pub const CLASS_NAME: &str = "AutoencoderKLQwenImage";

/// `QwenImageEncoder3d`: image → `2·z_dim` moments (mean, log-variance).
#[derive(Debug)]
pub struct Encoder {
    pub conv_in: CausalConv3d,
    /// Residual (and attention) blocks and downsamplers, in the flat order of the state dict.
    pub down_blocks: Vec<DownLayer>,
    pub mid_block: MidBlock,
    pub norm_out: RmsNorm3d,
    pub conv_out: CausalConv3d,
}

impl Encoder {
    pub fn new(p: &nn::Path, cfg: &AutoencoderKLQwenImageConfig, kind: Kind) -> Self {
        // dims = base · [1] + dim_mult
        let dims: Vec<i64> = std::iter::once(1)
            .chain(cfg.dim_mult.iter().copied())
            .map(|u| cfg.base_dim * u)
            .collect();
        let mut layers = Vec::new();
        let mut scale = 1.0;
        let levels = cfg.dim_mult.len();
        for i in 0..levels {
            let (mut in_dim, out_dim) = (dims[i], dims[i + 1]);
            for _ in 0..cfg.num_res_blocks {
                let q = p / "down_blocks" / layers.len() as i64;
                layers.push(DownLayer::Residual(ResidualBlock::new(
                    &q, in_dim, out_dim, kind,
                )));
                if cfg.attn_scales.contains(&scale) {
                    let q = p / "down_blocks" / layers.len() as i64;
                    layers.push(DownLayer::Attention(AttentionBlock::new(&q, out_dim, kind)));
                }
                in_dim = out_dim;
            }
            if i != levels - 1 {
                let mode = if cfg.temperal_downsample[i] {
                    "downsample3d"
                } else {
                    "downsample2d"
                };
                let q = p / "down_blocks" / layers.len() as i64;
                layers.push(DownLayer::Resample(Resample::new(&q, out_dim, mode, kind)));
                scale /= 2.0;
            }
        }
        let last = dims[levels];
        Encoder {
            conv_in: CausalConv3d::new(
                &(p / "conv_in"),
                cfg.input_channels,
                dims[0],
                (3, 3),
                1,
                kind,
            ),
            down_blocks: layers,
            mid_block: MidBlock::new(&(p / "mid_block"), last, kind),
            norm_out: RmsNorm3d::new(&(p / "norm_out"), last, false, kind),
            conv_out: CausalConv3d::new(&(p / "conv_out"), last, 2 * cfg.z_dim, (3, 3), 1, kind),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(x);
        for l in &self.down_blocks {
            h = l.forward(&h);
        }
        let h = self.mid_block.forward(&h);
        self.conv_out.forward(&self.norm_out.forward(&h).silu())
    }
}

/// `QwenImageDecoder3d`: latent → image; `num_res_blocks + 1` residual blocks per level, each
/// upsampler halving the channels.
#[derive(Debug)]
pub struct Decoder {
    pub conv_in: CausalConv3d,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub norm_out: RmsNorm3d,
    pub conv_out: CausalConv3d,
}

impl Decoder {
    pub fn new(p: &nn::Path, cfg: &AutoencoderKLQwenImageConfig, kind: Kind) -> Self {
        let levels = cfg.dim_mult.len();
        // dims = base · ([dim_mult[-1]] + reversed(dim_mult))
        let dims: Vec<i64> = std::iter::once(cfg.dim_mult[levels - 1])
            .chain(cfg.dim_mult.iter().rev().copied())
            .map(|u| cfg.base_dim * u)
            .collect();
        let temperal_upsample: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let up_blocks = (0..levels)
            .map(|i| {
                let in_dim = if i > 0 { dims[i] / 2 } else { dims[i] };
                let mode = (i != levels - 1).then(|| {
                    if temperal_upsample[i] {
                        "upsample3d"
                    } else {
                        "upsample2d"
                    }
                });
                UpBlock::new(
                    &(p / "up_blocks" / i as i64),
                    in_dim,
                    dims[i + 1],
                    cfg.num_res_blocks,
                    mode,
                    kind,
                )
            })
            .collect();
        let last = dims[levels];
        Decoder {
            conv_in: CausalConv3d::new(&(p / "conv_in"), cfg.z_dim, dims[0], (3, 3), 1, kind),
            mid_block: MidBlock::new(&(p / "mid_block"), dims[0], kind),
            up_blocks,
            norm_out: RmsNorm3d::new(&(p / "norm_out"), last, false, kind),
            conv_out: CausalConv3d::new(
                &(p / "conv_out"),
                last,
                cfg.input_channels,
                (3, 3),
                1,
                kind,
            ),
        }
    }

    pub fn forward(&self, z: &Tensor) -> Tensor {
        let h = self.conv_in.forward(z);
        let mut h = self.mid_block.forward(&h);
        for b in &self.up_blocks {
            h = b.forward(&h);
        }
        self.conv_out.forward(&self.norm_out.forward(&h).silu())
    }
}

pub struct AutoencoderKLQwenImage {
    pub cfg: AutoencoderKLQwenImageConfig,
    vs: nn::VarStore,
    kind: Kind,
    pub encoder: Encoder,
    pub decoder: Decoder,
    /// 1×1×1 causal convolutions on the moments and on the latent.
    pub quant_conv: CausalConv3d,
    pub post_quant_conv: CausalConv3d,
}

impl std::fmt::Debug for AutoencoderKLQwenImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoencoderKLQwenImage")
            .field("cfg", &self.cfg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl AutoencoderKLQwenImage {
    /// A model with zero weights of `kind` on `device`.
    pub fn new(
        cfg: &AutoencoderKLQwenImageConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        check_weight_kind(kind)?;
        let vs = var_store(device, kind);
        let root = vs.root();
        let z = cfg.z_dim;
        Ok(AutoencoderKLQwenImage {
            encoder: Encoder::new(&(&root / "encoder"), cfg, kind),
            decoder: Decoder::new(&(&root / "decoder"), cfg, kind),
            quant_conv: CausalConv3d::new(&(&root / "quant_conv"), 2 * z, 2 * z, (1, 1), 0, kind),
            post_quant_conv: CausalConv3d::new(&(&root / "post_quant_conv"), z, z, (1, 1), 0, kind),
            cfg: cfg.clone(),
            vs,
            kind,
        })
    }

    /// Loads a diffusers `vae/` directory.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        let config = dir.join("config.json");
        check_class(&config, CLASS_NAME)?;
        let cfg: AutoencoderKLQwenImageConfig = read_config(&config)?;
        let model = Self::new(&cfg, device, kind)?;
        Checkpoint::open(dir, DIFFUSERS_STEM)?
            .load_into(&model.vs.variables().into_iter().collect(), &same_name)?;
        Ok(model)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Pixels per latent cell along a side (8).
    pub fn scale_factor(&self) -> i64 {
        self.cfg.scale_factor()
    }

    fn check_image(
        &self,
        what: &'static str,
        x: &Tensor,
        channels: i64,
        multiple: i64,
    ) -> Result<(), ModelError> {
        let s = x.size();
        if s.len() != 4
            || s[1] != channels
            || s[2] % multiple != 0
            || s[3] % multiple != 0
            || s[2] == 0
            || s[3] == 0
        {
            return Err(ModelError::Input {
                what,
                message: format!(
                    "expected (B, {channels}, H, W) with H and W positive multiples of {multiple}, got {s:?}"
                ),
            });
        }
        Ok(())
    }

    /// The posterior's moments `(mean, logvar)` before any normalisation: `(B, 3, H, W)` in
    /// [−1, 1] → two `(B, z_dim, H/8, W/8)`. (diffusers clamps the log-variance to [−30, 20]
    /// when it samples; cocoflow only uses the mean.)
    pub fn encode_moments(&self, images: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        self.check_image(
            "images",
            images,
            self.cfg.input_channels,
            self.scale_factor(),
        )?;
        let x = images.to_device(self.device()).to_kind(self.kind);
        let moments = self.quant_conv.forward(&self.encoder.forward(&x));
        let z = self.cfg.z_dim;
        Ok((moments.narrow(1, 0, z), moments.narrow(1, z, z)))
    }

    /// The posterior's mean (`latent_dist.mode()`), not normalised.
    pub fn encode_mean(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.encode_moments(images)?.0)
    }

    /// Decodes un-normalised latents `(B, z_dim, h, w)` → images `(B, 3, 8h, 8w)` clamped to
    /// [−1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor, ModelError> {
        self.check_image("latents", z, self.cfg.z_dim, 1)?;
        let z = z.to_device(self.device()).to_kind(self.kind);
        let x = self.decoder.forward(&self.post_quant_conv.forward(&z));
        Ok(x.clamp(-1.0, 1.0))
    }

    /// `(1, z_dim, 1, 1)` of a per-channel statistic in `z`'s kind.
    fn stat(&self, v: &[f64], z: &Tensor) -> Tensor {
        Tensor::from_slice(v)
            .to_kind(Kind::Float)
            .view([1, self.cfg.z_dim, 1, 1])
            .to_device(z.device())
            .to_kind(z.kind())
    }

    /// The pipeline's model-space latent (`_encode_vae_image`): `(z − mean) / std`.
    pub fn normalize(&self, z: &Tensor) -> Tensor {
        (z - self.stat(&self.cfg.latents_mean, z)) / self.stat(&self.cfg.latents_std, z)
    }

    /// Inverse of [`Self::normalize`], as the pipeline writes it before decoding:
    /// `z / (1 / std) + mean`.
    pub fn denormalize(&self, z: &Tensor) -> Tensor {
        let inv_std = self.stat(&self.cfg.latents_std, z).reciprocal();
        z / inv_std + self.stat(&self.cfg.latents_mean, z)
    }
}
