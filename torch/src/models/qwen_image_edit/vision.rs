//! Qwen2.5-VL's vision tower (transformers' `Qwen2_5_VisionTransformerPretrainedModel`): the
//! patch embedding (a 3-D convolution whose stride is its kernel, i.e. one matrix product per
//! flattened patch), the axial 2-D RoPE over (row, column) patch coordinates, blocks with
//! window attention (`window_size` pixels) except the `fullatt_block_indexes` ones (attention
//! over each whole image), tokens permuted into window order and back, and the patch merger
//! (RMSNorm, 2×2 neighbours concatenated, GELU MLP) to the language model's width.
//!
//! Variables are named as the checkpoint (`visual.blocks.0.attn.qkv.weight`, ...).

use super::super::error::ModelError;
use super::super::flux_kontext::layers::linear;
use super::super::flux_kontext::layers::{Activation, activation, var};
use super::super::lora::LoraLinear;
use super::config_vl::Qwen25VlVisionConfig;
use super::layers::RmsNorm;
use tch::{Kind, Tensor, nn};

/// `Qwen2_5_VLMLP` (gate, up, down, all with biases in the vision tower).
#[derive(Debug)]
pub struct GatedMlp {
    pub gate_proj: LoraLinear,
    pub up_proj: LoraLinear,
    pub down_proj: LoraLinear,
    pub act: Activation,
}

impl GatedMlp {
    pub fn new(
        p: &nn::Path,
        dim: i64,
        hidden: i64,
        bias: bool,
        act: Activation,
        kind: Kind,
    ) -> Self {
        GatedMlp {
            gate_proj: linear(&(p / "gate_proj"), dim, hidden, bias, kind),
            up_proj: linear(&(p / "up_proj"), dim, hidden, bias, kind),
            down_proj: linear(&(p / "down_proj"), hidden, dim, bias, kind),
            act,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let g = self.act.forward(&self.gate_proj.forward(x, None));
        self.down_proj
            .forward(&(g * self.up_proj.forward(x, None)), None)
    }
}

/// `1 / base^(arange(0, dim, 2) / dim)` in float32, as transformers computes RoPE frequencies.
pub fn inv_freq(base: f64, dim: i64, device: tch::Device) -> Tensor {
    let e = Tensor::arange_start_step(0, dim, 2, (Kind::Float, device)) / dim as f64;
    Tensor::pow_scalar(base, &e).reciprocal()
}

/// `rotate_half`: `[−x₂, x₁]` over the last dimension.
pub fn rotate_half(x: &Tensor) -> Tensor {
    let d = x.size()[x.dim() - 1];
    let x1 = x.narrow(-1, 0, d / 2);
    let x2 = x.narrow(-1, d / 2, d / 2);
    Tensor::cat(&[-x2, x1], -1)
}

#[derive(Debug)]
struct VisionBlock {
    norm1: RmsNorm,
    norm2: RmsNorm,
    qkv: LoraLinear,
    proj: LoraLinear,
    mlp: GatedMlp,
}

/// The vision tower.
#[derive(Debug)]
pub struct Qwen25VisionTransformer {
    pub cfg: Qwen25VlVisionConfig,
    /// `patch_embed.proj.weight` `(hidden, C, T, P, P)`
    patch_embed: Tensor,
    blocks: Vec<VisionBlock>,
    ln_q: RmsNorm,
    mlp0: LoraLinear,
    mlp2: LoraLinear,
}

/// Token order and attention segments of a batch of images (transformers'
/// `get_vision_window_index`, `get_vision_cu_seqlens`, `get_vision_position_ids`).
#[derive(Debug)]
pub struct VisionLayout {
    /// Merge units (groups of `merge²` patches) in window order.
    pub window_index: Vec<i64>,
    /// Cumulative token boundaries of the windows (window order), zero-length ones removed.
    pub cu_window_seqlens: Vec<i64>,
    /// Cumulative token boundaries of the images (one frame each).
    pub cu_seqlens: Vec<i64>,
    /// `(row, column)` of every patch, in the processor's (merge-block major) order.
    pub positions: Vec<(i64, i64)>,
}

impl VisionLayout {
    pub fn new(grids: &[(i64, i64, i64)], cfg: &Qwen25VlVisionConfig) -> Self {
        let m = cfg.spatial_merge_size;
        let unit = m * m;
        let win = cfg.window_size / m / cfg.patch_size;
        let mut window_index = Vec::new();
        let mut cu_window = vec![0i64];
        let mut cu = vec![0i64];
        let mut positions = Vec::new();
        let mut offset = 0;
        for &(t, h, w) in grids {
            for _ in 0..t {
                cu.push(cu.last().unwrap() + h * w);
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for ih in 0..m {
                            for iw in 0..m {
                                positions.push((bh * m + ih, bw * m + iw));
                            }
                        }
                    }
                }
            }
            let (lh, lw) = (h / m, w / m);
            let (pad_h, pad_w) = (win - lh % win, win - lw % win);
            let (nh, nw) = ((lh + pad_h) / win, (lw + pad_w) / win);
            for ti in 0..t {
                for wh in 0..nh {
                    for ww in 0..nw {
                        let mut n = 0;
                        for y in wh * win..(wh + 1) * win {
                            for x in ww * win..(ww + 1) * win {
                                if y < lh && x < lw {
                                    window_index.push(offset + ti * lh * lw + y * lw + x);
                                    n += 1;
                                }
                            }
                        }
                        let next = cu_window.last().unwrap() + n * unit;
                        if next != *cu_window.last().unwrap() {
                            cu_window.push(next);
                        }
                    }
                }
            }
            offset += t * lh * lw;
        }
        VisionLayout {
            window_index,
            cu_window_seqlens: cu_window,
            cu_seqlens: cu,
            positions,
        }
    }
}

impl Qwen25VisionTransformer {
    pub fn new(p: &nn::Path, cfg: &Qwen25VlVisionConfig, kind: Kind) -> Result<Self, ModelError> {
        let d = cfg.hidden_size;
        let act = activation(&cfg.hidden_act)?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let b = p / "blocks" / i;
                VisionBlock {
                    norm1: RmsNorm::new(&(&b / "norm1"), d, 1e-6, kind),
                    norm2: RmsNorm::new(&(&b / "norm2"), d, 1e-6, kind),
                    qkv: linear(&(&b / "attn" / "qkv"), d, 3 * d, true, kind),
                    proj: linear(&(&b / "attn" / "proj"), d, d, true, kind),
                    mlp: GatedMlp::new(&(&b / "mlp"), d, cfg.intermediate_size, true, act, kind),
                }
            })
            .collect();
        let merged = d * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let mp = p / "merger";
        Ok(Qwen25VisionTransformer {
            patch_embed: var(
                &(p / "patch_embed" / "proj"),
                "weight",
                &[
                    d,
                    cfg.in_channels,
                    cfg.temporal_patch_size,
                    cfg.patch_size,
                    cfg.patch_size,
                ],
                kind,
            ),
            blocks,
            ln_q: RmsNorm::new(&(&mp / "ln_q"), d, 1e-6, kind),
            mlp0: linear(&(&mp / "mlp" / 0), merged, merged, true, kind),
            mlp2: linear(&(&mp / "mlp" / 2), merged, cfg.out_hidden_size, true, kind),
            cfg: cfg.clone(),
        })
    }

    /// cos/sin `(N, head_dim)` of every patch (processor order), float32.
    fn rope(&self, layout: &VisionLayout, device: tch::Device) -> (Tensor, Tensor) {
        let hd = self.cfg.head_dim();
        let spatial = hd / 2;
        let inv_freq = inv_freq(self.cfg.rope_theta(), spatial, device);
        let flat: Vec<i64> = layout
            .positions
            .iter()
            .flat_map(|(h, w)| [*h, *w])
            .collect();
        let pos = Tensor::from_slice(&flat)
            .view([-1, 2])
            .to_device(device)
            .to_kind(Kind::Float);
        let freqs = pos.unsqueeze(-1) * inv_freq; // (N, 2, hd/4)
        let n = layout.positions.len() as i64;
        let recompose = |f: Tensor| {
            let hw = f.reshape([n, spatial]); // [h freqs, w freqs]
            Tensor::cat(&[&hw, &hw], -1)
        };
        (recompose(freqs.cos()), recompose(freqs.sin()))
    }

    /// `(N, C·T·P·P)` patches of images with `grids` → `(N / merge², out_hidden_size)` in the
    /// processor's token order.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grids: &[(i64, i64, i64)],
    ) -> Result<Tensor, ModelError> {
        let cfg = &self.cfg;
        let d = cfg.hidden_size;
        let want = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size * cfg.patch_size;
        let n: i64 = grids.iter().map(|(t, h, w)| t * h * w).sum();
        let s = pixel_values.size();
        if s.len() != 2 || s[0] != n || s[1] != want {
            return Err(ModelError::Input {
                what: "pixel_values",
                message: format!("expected ({n}, {want}) for grids {grids:?}, got {s:?}"),
            });
        }
        let unit = cfg.spatial_merge_size * cfg.spatial_merge_size;
        if grids.iter().any(|(t, h, w)| {
            *t <= 0 || h % cfg.spatial_merge_size != 0 || w % cfg.spatial_merge_size != 0
        }) {
            return Err(ModelError::Input {
                what: "grid_thw",
                message: format!("grids {grids:?} must be multiples of the merge size"),
            });
        }
        let dev = self.patch_embed.device();
        let kind = self.patch_embed.kind();
        let layout = VisionLayout::new(grids, cfg);
        let x = pixel_values
            .to_device(dev)
            .to_kind(kind)
            .matmul(&self.patch_embed.view([d, -1]).tr()); // (N, d)
        let widx = Tensor::from_slice(&layout.window_index).to_device(dev);
        let permute = |t: &Tensor| {
            let last = t.size()[1];
            t.reshape([n / unit, unit, last])
                .index_select(0, &widx)
                .reshape([n, last])
        };
        let mut x = permute(&x);
        let (cos, sin) = self.rope(&layout, dev);
        let (cos, sin) = (permute(&cos).unsqueeze(1), permute(&sin).unsqueeze(1));
        let heads = cfg.num_heads;
        let hd = cfg.head_dim();
        for (i, blk) in self.blocks.iter().enumerate() {
            let full = cfg.fullatt_block_indexes.contains(&(i as i64));
            let cu = if full {
                &layout.cu_seqlens
            } else {
                &layout.cu_window_seqlens
            };
            let h = blk.norm1.forward(&x);
            let qkv = blk.qkv.forward(&h, None).reshape([n, 3, heads, hd]);
            let rot = |t: Tensor| {
                let tf = t.to_kind(Kind::Float);
                (&tf * &cos + rotate_half(&tf) * &sin).to_kind(kind)
            };
            let q = rot(qkv.select(1, 0)).transpose(0, 1); // (heads, N, hd)
            let k = rot(qkv.select(1, 1)).transpose(0, 1);
            let v = qkv.select(1, 2).transpose(0, 1);
            let mut outs = Vec::with_capacity(cu.len());
            for w in cu.windows(2) {
                let (a, len) = (w[0], w[1] - w[0]);
                let o = Tensor::scaled_dot_product_attention::<Tensor>(
                    &q.narrow(1, a, len).unsqueeze(0),
                    &k.narrow(1, a, len).unsqueeze(0),
                    &v.narrow(1, a, len).unsqueeze(0),
                    None,
                    0.0,
                    false,
                    None,
                    false,
                );
                outs.push(o.squeeze_dim(0).transpose(0, 1)); // (len, heads, hd)
            }
            let o = Tensor::cat(&outs, 0).reshape([n, d]);
            x = &x + blk.proj.forward(&o, None);
            x = &x + blk.mlp.forward(&blk.norm2.forward(&x));
        }
        let merged = self.ln_q.forward(&x).view([n / unit, unit * d]);
        let merged = self
            .mlp2
            .forward(&self.mlp0.forward(&merged, None).gelu("none"), None);
        let reverse = widx.argsort(0, false);
        Ok(merged.index_select(0, &reverse))
    }
}
