//! diffusers' `AutoencoderKL` (`vae/`): encoder to the posterior's mean (FLUX Kontext encodes
//! the source image with `sample_mode="argmax"`), decoder back to pixels, FLUX's latent
//! normalisation `(z − shift_factor) · scaling_factor`, and the pipeline's 2×2 packing of
//! latents into tokens.
//!
//! Images are `(B, 3, H, W)` in [−1, 1]; latents `(B, latent_channels, H/f, W/f)` with
//! `f = 2^(levels − 1)` (FLUX: 8, 16 channels). FLUX has no `quant_conv`/`post_quant_conv`;
//! they are supported when the config enables them.

use super::super::error::ModelError;
use super::config::{AutoencoderKLConfig, read_config};
use super::layers::{Conv2d, GroupNorm, check_weight_kind, var_store};
use super::transformer::check_class;
use super::vae_blocks::{ResampleBlock, UNetMidBlock2D, VAE_EPS};
use super::weights::{Checkpoint, DIFFUSERS_STEM, PendingWeights, same_name};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

pub const CLASS_NAME: &str = "AutoencoderKL";

/// `Encoder(double_z=True)`: image → `2·latent_channels` moments (mean, log-variance).
#[derive(Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<ResampleBlock>,
    pub mid_block: UNetMidBlock2D,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    pub fn new(p: &nn::Path, cfg: &AutoencoderKLConfig, kind: Kind) -> Self {
        let ch = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let n = ch.len();
        let down_blocks = (0..n)
            .map(|i| {
                let in_ch = if i == 0 { ch[0] } else { ch[i - 1] };
                let p = p / "down_blocks" / i as i64;
                ResampleBlock::down(&p, in_ch, ch[i], cfg.layers_per_block, g, i + 1 < n, kind)
            })
            .collect();
        let last = ch[n - 1];
        Encoder {
            conv_in: Conv2d::new(&(p / "conv_in"), cfg.in_channels, ch[0], 3, 1, 1, kind),
            down_blocks,
            mid_block: UNetMidBlock2D::new(
                &(p / "mid_block"),
                last,
                g,
                cfg.mid_block_add_attention,
                kind,
            ),
            conv_norm_out: GroupNorm::new(&(p / "conv_norm_out"), g, last, VAE_EPS, kind),
            conv_out: Conv2d::new(
                &(p / "conv_out"),
                last,
                2 * cfg.latent_channels,
                3,
                1,
                1,
                kind,
            ),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(x);
        for b in &self.down_blocks {
            h = b.forward(&h);
        }
        let h = self.mid_block.forward(&h);
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h).silu())
    }
}

/// `Decoder`: latent → image; `layers_per_block + 1` ResNets per level.
#[derive(Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: UNetMidBlock2D,
    pub up_blocks: Vec<ResampleBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    pub fn new(p: &nn::Path, cfg: &AutoencoderKLConfig, kind: Kind) -> Self {
        let rev: Vec<i64> = cfg.block_out_channels.iter().rev().copied().collect();
        let g = cfg.norm_num_groups;
        let n = rev.len();
        let up_blocks = (0..n)
            .map(|i| {
                let prev = if i == 0 { rev[0] } else { rev[i - 1] };
                let p = p / "up_blocks" / i as i64;
                ResampleBlock::up(
                    &p,
                    prev,
                    rev[i],
                    cfg.layers_per_block + 1,
                    g,
                    i + 1 < n,
                    kind,
                )
            })
            .collect();
        Decoder {
            conv_in: Conv2d::new(&(p / "conv_in"), cfg.latent_channels, rev[0], 3, 1, 1, kind),
            mid_block: UNetMidBlock2D::new(
                &(p / "mid_block"),
                rev[0],
                g,
                cfg.mid_block_add_attention,
                kind,
            ),
            up_blocks,
            conv_norm_out: GroupNorm::new(&(p / "conv_norm_out"), g, rev[n - 1], VAE_EPS, kind),
            conv_out: Conv2d::new(
                &(p / "conv_out"),
                rev[n - 1],
                cfg.out_channels,
                3,
                1,
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
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h).silu())
    }
}

pub struct AutoencoderKL {
    pub cfg: AutoencoderKLConfig,
    vs: nn::VarStore,
    kind: Kind,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
}

impl std::fmt::Debug for AutoencoderKL {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoencoderKL")
            .field("cfg", &self.cfg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl AutoencoderKL {
    /// A model with zero weights of `kind` on `device`.
    pub fn new(cfg: &AutoencoderKLConfig, device: Device, kind: Kind) -> Result<Self, ModelError> {
        cfg.validate()?;
        check_weight_kind(kind)?;
        let vs = var_store(device, kind);
        let root = vs.root();
        let lc = cfg.latent_channels;
        Ok(AutoencoderKL {
            encoder: Encoder::new(&(&root / "encoder"), cfg, kind),
            decoder: Decoder::new(&(&root / "decoder"), cfg, kind),
            quant_conv: cfg
                .use_quant_conv
                .then(|| Conv2d::new(&(&root / "quant_conv"), 2 * lc, 2 * lc, 1, 1, 0, kind)),
            post_quant_conv: cfg
                .use_post_quant_conv
                .then(|| Conv2d::new(&(&root / "post_quant_conv"), lc, lc, 1, 1, 0, kind)),
            cfg: cfg.clone(),
            vs,
            kind,
        })
    }

    /// Loads a diffusers `vae/` directory.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        let (model, weights) = Self::unloaded(dir, device, kind)?;
        weights.load()?;
        Ok(model)
    }

    /// The model of `dir`'s `config.json` with zero weights, and its checkpoint (headers read,
    /// data not yet).
    pub fn unloaded(
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<(Self, PendingWeights), ModelError> {
        let config = dir.join("config.json");
        check_class(&config, CLASS_NAME)?;
        let cfg: AutoencoderKLConfig = read_config(&config)?;
        let ckpt = Checkpoint::open(dir, DIFFUSERS_STEM)?;
        let model = Self::new(&cfg, device, kind)?;
        let vars = model.vs.variables().into_iter().collect();
        Ok((model, PendingWeights::new(ckpt, vars, same_name)))
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

    /// Pixels per latent cell along a side.
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

    /// The posterior's mean (`latent_dist.mode()`), not normalised: `(B, 3, H, W)` in
    /// [−1, 1] → `(B, latent_channels, H/f, W/f)`.
    pub fn encode_mean(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        self.check_image("images", images, self.cfg.in_channels, self.scale_factor())?;
        let x = images.to_device(self.device()).to_kind(self.kind);
        let mut moments = self.encoder.forward(&x);
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments);
        }
        // moments = [mean; logvar] along the channels
        Ok(moments.narrow(1, 0, self.cfg.latent_channels))
    }

    /// Decodes un-normalised latents `(B, latent_channels, h, w)` → images `(B, 3, h·f, w·f)`
    /// (roughly in [−1, 1], not clamped).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor, ModelError> {
        self.check_image("latents", z, self.cfg.latent_channels, 1)?;
        let mut z = z.to_device(self.device()).to_kind(self.kind);
        if let Some(q) = &self.post_quant_conv {
            z = q.forward(&z);
        }
        Ok(self.decoder.forward(&z))
    }

    /// FLUX's model-space latent: `(z − shift_factor) · scaling_factor`.
    pub fn normalize(&self, z: &Tensor) -> Tensor {
        (z - self.cfg.shift_factor.unwrap_or(0.0)) * self.cfg.scaling_factor
    }

    /// Inverse of [`Self::normalize`]: `z / scaling_factor + shift_factor`.
    pub fn denormalize(&self, z: &Tensor) -> Tensor {
        z / self.cfg.scaling_factor + self.cfg.shift_factor.unwrap_or(0.0)
    }
}

/// The pipeline's `_pack_latents`: `(B, C, h, w)` → `(B, (h/2)(w/2), C·4)`, each token the
/// 2×2 cell `(c, dy, dx)` in that order.
pub fn pack_latents(z: &Tensor) -> Result<Tensor, ModelError> {
    let s = z.size();
    if s.len() != 4 || s[2] % 2 != 0 || s[3] % 2 != 0 {
        return Err(ModelError::Input {
            what: "latents",
            message: format!("expected (B, C, h, w) with even h and w, got {s:?}"),
        });
    }
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    Ok(z.view([b, c, h / 2, 2, w / 2, 2])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, (h / 2) * (w / 2), c * 4]))
}

/// The pipeline's `_unpack_latents` for latents of `h × w` cells (even): `(B, (h/2)(w/2), C·4)`
/// → `(B, C, h, w)`.
pub fn unpack_latents(x: &Tensor, h: i64, w: i64) -> Result<Tensor, ModelError> {
    let s = x.size();
    if s.len() != 3 || h % 2 != 0 || w % 2 != 0 || s[1] != (h / 2) * (w / 2) || s[2] % 4 != 0 {
        return Err(ModelError::Input {
            what: "packed latents",
            message: format!(
                "expected (B, {}, 4·C) for a {h}×{w} latent (even sides), got {s:?}",
                (h / 2) * (w / 2)
            ),
        });
    }
    let (b, c) = (s[0], s[2] / 4);
    Ok(x.view([b, h / 2, w / 2, c, 2, 2])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([b, c, h, w]))
}
