//! `QwenImageTransformer2DModel` (diffusers' `transformer_qwenimage.py`): Qwen-Image's MMDiT
//! on packed latents.
//!
//! `img_in` maps the packed latent tokens (the target's, then the source image's) to the model
//! width; `txt_norm` (RMSNorm) and `txt_in` map the Qwen2.5-VL prompt states; `time_text_embed`
//! turns σ into `temb` (sinusoids of 1000·σ, an MLP); `num_layers` double-stream blocks with
//! the 3-axis RoPE of [`super::rope`] follow; `norm_out` and `proj_out` give the velocity of
//! every image token. The pipeline keeps the target's.
//!
//! Variables are named as diffusers' state dict (`transformer_blocks.0.attn.to_q.weight`,
//! `transformer_blocks.0.img_mod.1.weight`, `time_text_embed.timestep_embedder.linear_1.bias`,
//! `txt_norm.weight`, ...), so a `save_pretrained` directory loads unchanged (single file or
//! shards + index).
//!
//! Dtypes follow diffusers: weights and activations in the load kind, the sinusoids and RoPE
//! in float32, σ rounded to the model kind first (`timestep.to(hidden_states.dtype)`).

use super::super::error::ModelError;
use super::super::flux_kontext::embeddings::Mlp;
use super::super::flux_kontext::layers::{check_weight_kind, linear, var, var_store};
use super::super::flux_kontext::normalization::AdaLayerNormContinuous;
use super::super::flux_kontext::transformer::{check_class, check_shape};
use super::super::flux_kontext::weights::{Checkpoint, DIFFUSERS_STEM, same_name};
use super::super::lora::{LoraConfig, LoraLinear};
use super::config::{QwenImageTransformer2DModelConfig, read_config};
use super::layers::{TIME_PROJ_DIM, rms_norm_diffusers, timestep_proj};
use super::rope::{ImageShape, rope_angles};
use super::transformer_blocks::QwenImageTransformerBlock;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

pub const CLASS_NAME: &str = "QwenImageTransformer2DModel";

/// eps of `txt_norm` and `norm_out`.
const EPS: f64 = 1e-6;

/// One velocity evaluation's inputs (diffusers' `QwenImageTransformer2DModel.forward`
/// arguments, the source tokens separate from the target's).
#[derive(Debug)]
pub struct QwenInputs<'a> {
    /// Packed noisy target latents `(B, N, in_channels)`.
    pub hidden_states: &'a Tensor,
    /// Packed source-image latents `(B, N_src, in_channels)`, appended after the target
    /// tokens; `None` for text-to-image.
    pub source: Option<&'a Tensor>,
    /// Prompt states `(B, L, joint_attention_dim)`.
    pub encoder_hidden_states: &'a Tensor,
    /// `(B, L)`: nonzero = a real token, 0 = padding (masked out as a key); `None`: all real.
    pub encoder_hidden_states_mask: Option<&'a Tensor>,
    /// σ in [0, 1], `(B,)` (the pipeline's `timestep / 1000`).
    pub timestep: &'a Tensor,
    /// The packed grids `(frames, h/2, w/2)` of the images in token order: the target's, then
    /// the source's (the pipeline's `img_shapes[0]`); their sizes sum to `N + N_src`.
    pub img_shapes: &'a [ImageShape],
    /// The LoRA adapter active in every linear layer that has it.
    pub adapter: Option<&'a str>,
}

pub struct QwenImageTransformer2DModel {
    pub cfg: QwenImageTransformer2DModelConfig,
    vs: nn::VarStore,
    kind: Kind,
    pub img_in: LoraLinear,
    /// `txt_norm.weight` `(joint_attention_dim,)`
    pub txt_norm: Tensor,
    pub txt_in: LoraLinear,
    /// `time_text_embed.timestep_embedder`
    pub timestep_embedder: Mlp,
    pub transformer_blocks: Vec<QwenImageTransformerBlock>,
    pub norm_out: AdaLayerNormContinuous,
    pub proj_out: LoraLinear,
}

impl std::fmt::Debug for QwenImageTransformer2DModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenImageTransformer2DModel")
            .field("cfg", &self.cfg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn input_err(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

impl QwenImageTransformer2DModel {
    /// A model with zero weights of `kind` on `device` (fill it with [`Self::load_weights`]).
    pub fn new(
        cfg: &QwenImageTransformer2DModelConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        check_weight_kind(kind)?;
        let vs = var_store(device, kind);
        let root = vs.root();
        let dim = cfg.inner_dim();
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                QwenImageTransformerBlock::new(
                    &(&root / "transformer_blocks" / i),
                    dim,
                    cfg.num_attention_heads,
                    cfg.attention_head_dim,
                    kind,
                )
            })
            .collect();
        Ok(QwenImageTransformer2DModel {
            img_in: linear(&(&root / "img_in"), cfg.in_channels, dim, true, kind),
            txt_norm: var(
                &(&root / "txt_norm"),
                "weight",
                &[cfg.joint_attention_dim],
                kind,
            ),
            txt_in: linear(
                &(&root / "txt_in"),
                cfg.joint_attention_dim,
                dim,
                true,
                kind,
            ),
            timestep_embedder: Mlp::new(
                &(&root / "time_text_embed" / "timestep_embedder"),
                TIME_PROJ_DIM,
                dim,
                kind,
            ),
            transformer_blocks: blocks,
            norm_out: AdaLayerNormContinuous::new(&(&root / "norm_out"), dim, kind),
            proj_out: linear(&(&root / "proj_out"), dim, cfg.out_dim(), true, kind),
            cfg: cfg.clone(),
            vs,
            kind,
        })
    }

    /// Loads `config.json` and the weights of a diffusers `transformer/` directory.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        let config = dir.join("config.json");
        check_class(&config, CLASS_NAME)?;
        let cfg: QwenImageTransformer2DModelConfig = read_config(&config)?;
        let model = Self::new(&cfg, device, kind)?;
        model.load_weights(dir)?;
        Ok(model)
    }

    /// Fills the weights from `dir`'s `diffusion_pytorch_model` safetensors (all-or-nothing).
    pub fn load_weights(&self, dir: &Path) -> Result<(), ModelError> {
        Checkpoint::open(dir, DIFFUSERS_STEM)?.load_into(&self.base_variables(), &same_name)
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

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The diffusers state dict: every variable that is not a LoRA matrix.
    pub fn base_variables(&self) -> BTreeMap<String, Tensor> {
        self.vs
            .variables()
            .into_iter()
            .filter(|(k, _)| !k.contains(".lora_A.") && !k.contains(".lora_B."))
            .collect()
    }

    /// Every linear layer of the model, in state-dict order.
    pub fn linears_mut(&mut self) -> Vec<&mut LoraLinear> {
        all_linears(
            &mut self.img_in,
            &mut self.txt_in,
            &mut self.timestep_embedder,
            &mut self.transformer_blocks,
            &mut self.norm_out,
            &mut self.proj_out,
        )
    }

    /// Adds LoRA adapter `name` (A kaiming-uniform, B zero: the output is unchanged) to every
    /// linear layer whose module path `cfg` targets (PEFT's suffix rule: `to_q` matches
    /// `transformer_blocks.0.attn.to_q`); returns how many layers got one.
    pub fn add_lora(&mut self, name: &str, cfg: &LoraConfig) -> usize {
        let root = self.vs.root();
        let mut n = 0;
        for l in all_linears(
            &mut self.img_in,
            &mut self.txt_in,
            &mut self.timestep_embedder,
            &mut self.transformer_blocks,
            &mut self.norm_out,
            &mut self.proj_out,
        ) {
            if cfg.targets(&l.path) {
                l.add_adapter(&root, name, cfg);
                n += 1;
            }
        }
        n
    }

    /// Removes every LoRA adapter (from the layers and the variable store): the model is its
    /// base again, as loaded, for the next task that uses it (the per-worker model cache).
    pub fn clear_lora(&mut self) {
        let vars = self.vs.variables_.clone();
        super::super::lora::clear_adapters(self.linears_mut(), &vars);
    }

    /// The velocity of the target tokens, `(B, N, patch² · out_channels)`.
    pub fn forward(&self, inp: &QwenInputs) -> Result<Tensor, ModelError> {
        let n = inp.hidden_states.size().get(1).copied().unwrap_or(0);
        Ok(self.forward_all(inp)?.narrow(1, 0, n))
    }

    /// diffusers' raw output: the velocity of every image token (target and source),
    /// `(B, N + N_src, patch² · out_channels)`.
    pub fn forward_all(&self, inp: &QwenInputs) -> Result<Tensor, ModelError> {
        let cfg = &self.cfg;
        let s = check_shape(
            "hidden_states",
            inp.hidden_states,
            &[None, None, Some(cfg.in_channels)],
        )?;
        let (b, n) = (s[0], s[1]);
        let n_src = match inp.source {
            Some(src) => check_shape("source", src, &[Some(b), None, Some(cfg.in_channels)])?[1],
            None => 0,
        };
        let l = check_shape(
            "encoder_hidden_states",
            inp.encoder_hidden_states,
            &[Some(b), None, Some(cfg.joint_attention_dim)],
        )?[1];
        check_shape("timestep", inp.timestep, &[Some(b)])?;
        if let Some(m) = inp.encoder_hidden_states_mask {
            check_shape("encoder_hidden_states_mask", m, &[Some(b), Some(l)])?;
        }
        let tokens: i64 = inp.img_shapes.iter().map(|(f, h, w)| f * h * w).sum();
        if tokens != n + n_src || inp.img_shapes.is_empty() {
            return Err(input_err(
                "img_shapes",
                format!(
                    "{:?} describe {tokens} image tokens, the inputs have {n} + {n_src}",
                    inp.img_shapes
                ),
            ));
        }
        let (kind, dev) = (self.kind, self.device());
        let cast = |t: &Tensor| t.to_device(dev).to_kind(kind);
        let latents = match inp.source {
            Some(src) => Tensor::cat(&[cast(inp.hidden_states), cast(src)], 1),
            None => cast(inp.hidden_states),
        };
        let adapter = inp.adapter;
        let mut img = self.img_in.forward(&latents, adapter); // (B, N + N_src, dim)
        let mut timestep = cast(inp.timestep);
        // zero_cond_t: a second batch half at t = 0 modulates the source tokens
        let modulate_index = if cfg.zero_cond_t {
            timestep = Tensor::cat(&[&timestep, &(&timestep * 0.0)], 0);
            let (f, h, w) = inp.img_shapes[0];
            let first = f * h * w;
            let second = Tensor::arange(n + n_src, (Kind::Int64, dev)).ge(first);
            Some(
                second
                    .view([1, n + n_src, 1])
                    .expand([b, n + n_src, 1], false),
            )
        } else {
            None
        };
        let txt = rms_norm_diffusers(&cast(inp.encoder_hidden_states), &self.txt_norm, EPS);
        let mut txt = self.txt_in.forward(&txt, adapter); // (B, L, dim)
        let temb = self
            .timestep_embedder
            .forward(&timestep_proj(&timestep).to_kind(kind), adapter); // (B or 2B, dim)
        let angles = rope_angles(inp.img_shapes, l, &cfg.axes_dims_rope, dev);
        // [text mask; image tokens all valid] as keys: (B, 1, 1, L + N + N_src)
        let mask = inp.encoder_hidden_states_mask.map(|m| {
            let m = m.to_device(dev).ne(0.0);
            let img_ok = Tensor::ones([b, n + n_src], (Kind::Bool, dev));
            Tensor::cat(&[m, img_ok], 1).view([b, 1, 1, l + n + n_src])
        });
        for block in &self.transformer_blocks {
            (img, txt) = block.forward(
                &img,
                &txt,
                &temb,
                (&angles.image, &angles.text),
                mask.as_ref(),
                modulate_index.as_ref(),
                adapter,
            );
        }
        let temb = match modulate_index {
            Some(_) => temb.narrow(0, 0, b),
            None => temb,
        };
        let x = self.norm_out.forward(&img, &temb, adapter);
        Ok(self.proj_out.forward(&x, adapter))
    }
}

/// The linear layers of the model's parts (borrowed apart from its `VarStore`).
fn all_linears<'a>(
    img_in: &'a mut LoraLinear,
    txt_in: &'a mut LoraLinear,
    t: &'a mut Mlp,
    blocks: &'a mut [QwenImageTransformerBlock],
    norm_out: &'a mut AdaLayerNormContinuous,
    proj_out: &'a mut LoraLinear,
) -> Vec<&'a mut LoraLinear> {
    let mut v = vec![img_in, txt_in, &mut t.linear_1, &mut t.linear_2];
    for b in blocks {
        v.extend(b.linears_mut());
    }
    v.extend([&mut norm_out.linear, proj_out]);
    v
}
