//! `FluxTransformer2DModel` (diffusers' `transformer_flux.py`): the FLUX.1 (Kontext)
//! flow-matching transformer on packed latents.
//!
//! `x_embedder` (packed latent tokens) and `context_embedder` (T5 states) map both streams to
//! the model width; `time_text_embed` turns σ·1000, guidance·1000 and the pooled CLIP
//! embedding into `temb`; `num_layers` double-stream and `num_single_layers` single-stream
//! blocks follow, with 3-axis RoPE from the position ids; `norm_out` and `proj_out` give the
//! velocity. Kontext appends the source image's tokens after the target's (position ids with
//! first coordinate 1); the output is sliced back to the target tokens.
//!
//! Variables are named as diffusers' state dict (`transformer_blocks.0.attn.to_q.weight`,
//! `time_text_embed.guidance_embedder.linear_1.bias`, ...), so a `save_pretrained` directory
//! loads unchanged (single file or shards + index).
//!
//! Dtypes follow diffusers: weights and activations in the load kind (e.g. bf16), the
//! sinusoidal projections and RoPE in float32 (cast on use), σ and guidance rounded to the
//! model kind before the ×1000, as `timestep.to(hidden_states.dtype) * 1000` does.

use super::super::error::ModelError;
use super::super::lora::LoraLinear;
use super::config::{FluxTransformer2DModelConfig, read_config};
use super::embeddings::TimeTextEmbed;
use super::layers::{check_weight_kind, linear, var_store};
use super::normalization::AdaLayerNormContinuous;
use super::rope::rope_cos_sin;
use super::transformer_blocks::{Block, FluxSingleTransformerBlock, FluxTransformerBlock, Rope};
use super::weights::{Checkpoint, DIFFUSERS_STEM, PendingWeights, same_name};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

pub const CLASS_NAME: &str = "FluxTransformer2DModel";

/// One velocity evaluation's inputs (diffusers' `FluxTransformer2DModel.forward` arguments,
/// with Kontext's source tokens separate).
#[derive(Debug)]
pub struct FluxInputs<'a> {
    /// Packed noisy target latents `(B, N, in_channels)`.
    pub hidden_states: &'a Tensor,
    /// Packed source-image latents `(B, N_src, in_channels)`, appended after the target
    /// tokens (Kontext); `None` for plain text-to-image.
    pub source: Option<&'a Tensor>,
    /// T5 hidden states `(B, L, joint_attention_dim)`.
    pub encoder_hidden_states: &'a Tensor,
    /// Pooled CLIP embedding `(B, pooled_projection_dim)`.
    pub pooled_projections: &'a Tensor,
    /// σ in [0, 1], `(B,)` (the pipeline's `timestep / 1000`); scaled by 1000 inside.
    pub timestep: &'a Tensor,
    /// The embedded guidance value `(B,)` (e.g. 2.5; not CFG); scaled by 1000 inside.
    /// Required when the config has `guidance_embeds`, ignored otherwise (as diffusers).
    pub guidance: Option<&'a Tensor>,
    /// Text position ids `(L, 3)` (zeros).
    pub txt_ids: &'a Tensor,
    /// Image position ids `(N + N_src, 3)`: target ids, then source ids.
    pub img_ids: &'a Tensor,
    /// The LoRA adapter active in every linear layer that has it.
    pub adapter: Option<&'a str>,
}

/// The block inputs before the first block.
#[derive(Debug)]
pub struct Embedded {
    /// `(B, N + N_src, dim)`
    pub img: Tensor,
    /// `(B, L, dim)`
    pub txt: Tensor,
    /// `(B, dim)`
    pub temb: Tensor,
    pub rope: Rope,
    /// Target tokens N (the output keeps these).
    pub n_target: i64,
}

pub struct FluxTransformer2DModel {
    pub cfg: FluxTransformer2DModelConfig,
    vs: nn::VarStore,
    kind: Kind,
    pub x_embedder: LoraLinear,
    pub context_embedder: LoraLinear,
    pub time_text_embed: TimeTextEmbed,
    /// `transformer_blocks.*` then `single_transformer_blocks.*`.
    pub blocks: Vec<Block>,
    pub norm_out: AdaLayerNormContinuous,
    pub proj_out: LoraLinear,
}

impl std::fmt::Debug for FluxTransformer2DModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluxTransformer2DModel")
            .field("cfg", &self.cfg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn input_err(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

/// Checks `t`'s rank and the sizes given as `Some`.
pub(crate) fn check_shape(
    what: &'static str,
    t: &Tensor,
    expected: &[Option<i64>],
) -> Result<Vec<i64>, ModelError> {
    let s = t.size();
    let ok = s.len() == expected.len()
        && s.iter()
            .zip(expected)
            .all(|(a, e)| e.is_none_or(|e| e == *a));
    if !ok {
        let want: Vec<String> = expected
            .iter()
            .map(|e| e.map_or("_".to_string(), |v| v.to_string()))
            .collect();
        return Err(input_err(
            what,
            format!("expected shape ({}), got {s:?}", want.join(", ")),
        ));
    }
    Ok(s)
}

impl FluxTransformer2DModel {
    /// A model with zero weights of `kind` on `device` (fill it with [`Self::load_weights`]).
    pub fn new(
        cfg: &FluxTransformer2DModelConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        check_weight_kind(kind)?;
        let vs = var_store(device, kind);
        let root = vs.root();
        let dim = cfg.inner_dim();
        let (heads, head_dim) = (cfg.num_attention_heads, cfg.attention_head_dim);
        let mut blocks = Vec::new();
        for i in 0..cfg.num_layers {
            let p = &root / "transformer_blocks" / i;
            blocks.push(Block::Double(Box::new(FluxTransformerBlock::new(
                &p, dim, heads, head_dim, kind,
            ))));
        }
        for i in 0..cfg.num_single_layers {
            let p = &root / "single_transformer_blocks" / i;
            blocks.push(Block::Single(Box::new(FluxSingleTransformerBlock::new(
                &p, dim, heads, head_dim, kind,
            ))));
        }
        let out = cfg.patch_size * cfg.patch_size * cfg.out_channels();
        Ok(FluxTransformer2DModel {
            x_embedder: linear(&(&root / "x_embedder"), cfg.in_channels, dim, true, kind),
            context_embedder: linear(
                &(&root / "context_embedder"),
                cfg.joint_attention_dim,
                dim,
                true,
                kind,
            ),
            time_text_embed: TimeTextEmbed::new(
                &(&root / "time_text_embed"),
                dim,
                cfg.pooled_projection_dim,
                cfg.guidance_embeds,
                kind,
            ),
            blocks,
            norm_out: AdaLayerNormContinuous::new(&(&root / "norm_out"), dim, kind),
            proj_out: linear(&(&root / "proj_out"), dim, out, true, kind),
            cfg: cfg.clone(),
            vs,
            kind,
        })
    }

    /// Loads `config.json` and the weights of a diffusers `transformer/` directory.
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
        let cfg: FluxTransformer2DModelConfig = read_config(&config)?;
        let ckpt = Checkpoint::open(dir, DIFFUSERS_STEM)?;
        let model = Self::new(&cfg, device, kind)?;
        let pending = PendingWeights::new(ckpt, model.base_variables(), same_name);
        Ok((model, pending))
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
    pub fn base_variables(&self) -> std::collections::BTreeMap<String, Tensor> {
        self.vs
            .variables()
            .into_iter()
            .filter(|(k, _)| !k.contains(".lora_A.") && !k.contains(".lora_B."))
            .collect()
    }

    /// Every linear layer of the model (embedders, blocks, head), in state-dict order.
    pub fn linears_mut(&mut self) -> Vec<&mut LoraLinear> {
        all_linears(
            &mut self.x_embedder,
            &mut self.context_embedder,
            &mut self.time_text_embed,
            &mut self.blocks,
            &mut self.norm_out,
            &mut self.proj_out,
        )
    }

    /// Adds LoRA adapter `name` (A kaiming-uniform, B zero: the output is unchanged) to every
    /// linear layer whose module path `cfg` targets (PEFT's suffix rule, e.g. `to_q` matches
    /// `single_transformer_blocks.0.attn.to_q`); returns how many layers got one. The
    /// adapter is inactive until a forward names it in [`FluxInputs::adapter`].
    pub fn add_lora(&mut self, name: &str, cfg: &super::super::lora::LoraConfig) -> usize {
        let root = self.vs.root();
        let mut n = 0;
        for l in all_linears(
            &mut self.x_embedder,
            &mut self.context_embedder,
            &mut self.time_text_embed,
            &mut self.blocks,
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

    /// Every linear layer of every block's attention, in block order (the LoRA targets).
    pub fn attention_projections_mut(&mut self) -> Vec<&mut LoraLinear> {
        self.blocks
            .iter_mut()
            .flat_map(|b| b.attention_mut().projections_mut())
            .collect()
    }

    pub fn attention_projections(&self) -> Vec<&LoraLinear> {
        self.blocks
            .iter()
            .flat_map(|b| b.attention().projections())
            .collect()
    }

    /// Validates the inputs and computes the first block's inputs.
    pub fn embed(&self, inp: &FluxInputs) -> Result<Embedded, ModelError> {
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
        check_shape(
            "pooled_projections",
            inp.pooled_projections,
            &[Some(b), Some(cfg.pooled_projection_dim)],
        )?;
        check_shape("timestep", inp.timestep, &[Some(b)])?;
        check_shape("txt_ids", inp.txt_ids, &[Some(l), Some(3)])?;
        check_shape("img_ids", inp.img_ids, &[Some(n + n_src), Some(3)])?;
        let guidance = match (cfg.guidance_embeds, inp.guidance) {
            (true, None) => {
                return Err(input_err(
                    "guidance",
                    "the model embeds guidance (`guidance_embeds`); pass a value".into(),
                ));
            }
            (true, Some(g)) => {
                check_shape("guidance", g, &[Some(b)])?;
                Some(g)
            }
            (false, _) => None,
        };
        let (kind, dev) = (self.kind, self.device());
        let cast = |t: &Tensor| t.to_device(dev).to_kind(kind);
        let latents = match inp.source {
            Some(src) => Tensor::cat(&[cast(inp.hidden_states), cast(src)], 1),
            None => cast(inp.hidden_states),
        };
        let img = self.x_embedder.forward(&latents, inp.adapter); // (B, N + N_src, dim)
        // diffusers: `timestep.to(hidden_states.dtype) * 1000`, the same for guidance
        let t = cast(inp.timestep) * 1000.0;
        let g = guidance.map(|g| cast(g) * 1000.0);
        let temb = self.time_text_embed.forward(
            &t,
            g.as_ref(),
            &cast(inp.pooled_projections),
            inp.adapter,
        );
        let txt = self
            .context_embedder
            .forward(&cast(inp.encoder_hidden_states), inp.adapter);
        let ids = Tensor::cat(&[inp.txt_ids.to_device(dev), inp.img_ids.to_device(dev)], 0);
        let rope = rope_cos_sin(&ids, &cfg.axes_dims_rope);
        Ok(Embedded {
            img,
            txt,
            temb,
            rope,
            n_target: n,
        })
    }

    /// `norm_out` and `proj_out` on the first `n_target` image tokens → `(B, n_target, out)`.
    pub fn head(
        &self,
        img: &Tensor,
        temb: &Tensor,
        n_target: i64,
        adapter: Option<&str>,
    ) -> Tensor {
        let img = img.narrow(1, 0, n_target);
        let x = self.norm_out.forward(&img, temb, adapter);
        self.proj_out.forward(&x, adapter)
    }

    /// The velocity of the target tokens, `(B, N, out_channels)`.
    pub fn forward(&self, inp: &FluxInputs) -> Result<Tensor, ModelError> {
        let e = self.embed(inp)?;
        let (mut img, mut txt) = (e.img, e.txt);
        for block in &self.blocks {
            (img, txt) = block.forward(&img, &txt, &e.temb, &e.rope, inp.adapter);
        }
        Ok(self.head(&img, &e.temb, e.n_target, inp.adapter))
    }
}

/// Checks a diffusers config's `_class_name` (when present).
pub(crate) fn check_class(config: &Path, expected: &str) -> Result<(), ModelError> {
    let v: serde_json::Value = read_config(config)?;
    match v.get("_class_name").and_then(|c| c.as_str()) {
        Some(c) if c != expected => Err(ModelError::Config {
            path: config.to_owned(),
            message: format!("`_class_name` is `{c}`, expected `{expected}`"),
        }),
        _ => Ok(()),
    }
}

/// The linear layers of the model's parts (borrowed apart from its `VarStore`).
fn all_linears<'a>(
    x_embedder: &'a mut LoraLinear,
    context_embedder: &'a mut LoraLinear,
    t: &'a mut TimeTextEmbed,
    blocks: &'a mut [Block],
    norm_out: &'a mut AdaLayerNormContinuous,
    proj_out: &'a mut LoraLinear,
) -> Vec<&'a mut LoraLinear> {
    let mut v = vec![x_embedder, context_embedder];
    v.extend([
        &mut t.timestep_embedder.linear_1,
        &mut t.timestep_embedder.linear_2,
    ]);
    if let Some(g) = &mut t.guidance_embedder {
        v.extend([&mut g.linear_1, &mut g.linear_2]);
    }
    v.extend([&mut t.text_embedder.linear_1, &mut t.text_embedder.linear_2]);
    for block in blocks {
        match block {
            Block::Double(b) => {
                v.extend([&mut b.norm1.linear, &mut b.norm1_context.linear]);
                v.extend(b.attn.projections_mut());
                v.extend([&mut b.ff.proj, &mut b.ff.out]);
                v.extend([&mut b.ff_context.proj, &mut b.ff_context.out]);
            }
            Block::Single(b) => {
                v.extend([&mut b.norm.linear, &mut b.proj_mlp, &mut b.proj_out]);
                v.extend(b.attn.projections_mut());
            }
        }
    }
    v.extend([&mut norm_out.linear, proj_out]);
    v
}
