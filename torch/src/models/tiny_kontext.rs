//! tiny-kontext: a small flow-matching editing transformer, Kontext-style.
//!
//! - Latent = the RGB image scaled to [−1, 1] (`encode`/`decode` are affine; a VAE takes
//!   this place in full-size backends), patchified into `p×p` tokens like FLUX's packing.
//! - Sequence: `[text tokens; target tokens; source tokens]`. Target and source patches share
//!   `x_embedder`; a learned `stream_embed` (row 0 target, row 1 source) tells them apart and
//!   a fixed 2-D sin-cos embedding gives each its grid position (FLUX Kontext uses RoPE with
//!   the first position id 0/1 for the same purpose).
//! - Text: the word-level `text_encoder`, projected by `context_embedder`; its masked-mean
//!   pooled output joins the timestep in `time_text_embed`, which drives adaLN modulation.
//! - Blocks: double-stream (`transformer_blocks.N`) with joint attention over the whole
//!   sequence (no separate cross-attention), padded text keys masked.
//! - Output: `norm_out` (adaptive LayerNorm) and `proj_out` on the target tokens only.
//!
//! Its [`EditPolicy`] implementation (latent coding, adapters, trainable weights) is in
//! `tiny_kontext/edit_policy.rs`.

use super::block::{TransformerBlock, layer_norm, modulate};
use super::checkpoint::{self, CONFIG_FILE, WEIGHTS_FILE};
use super::config::TinyKontextConfig;
use super::embeddings::{TimeTextEmbed, pos_embed_2d};
use super::error::ModelError;
use super::lora::{AdapterSet, LoraConfig, LoraLinear, adapter_shapes};
use super::policy::{Conditioning, EditPolicy, Trainable};
use super::random::uniform_tensor;
use super::text_encoder::TextEncoder;
use crate::rng::StreamRng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

mod edit_policy;
pub use edit_policy::TEXT_IDS;

pub const BACKEND: &str = "tiny-kontext";

pub struct TinyKontext {
    cfg: TinyKontextConfig,
    vs: nn::VarStore,
    x_embedder: LoraLinear,
    /// `(2, dim)`: row 0 for target tokens, row 1 for source tokens.
    stream_embed: Tensor,
    context_embedder: LoraLinear,
    time_text_embed: TimeTextEmbed,
    text_encoder: TextEncoder,
    transformer_blocks: Vec<TransformerBlock>,
    /// `norm_out.linear`: `(dim → 2·dim)`, scale then shift (diffusers' `AdaLayerNormContinuous`).
    norm_out: LoraLinear,
    proj_out: LoraLinear,
    base_names: BTreeSet<String>,
    adapters: AdapterSet,
    /// Built on a [`SharedBase`]: the base tensors are shared with other models and must
    /// never be written (the base cannot be made trainable).
    shared_base: bool,
}

impl std::fmt::Debug for TinyKontext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TinyKontext")
            .field("cfg", &self.cfg)
            .field("adapters", &self.adapters)
            .finish_non_exhaustive()
    }
}

fn input_err(what: &'static str, message: String) -> ModelError {
    ModelError::Input { what, message }
}

impl TinyKontext {
    /// A freshly initialised model; the same `(cfg, seed)` gives bit-identical weights on any
    /// device (every tensor comes from its own stream derived from the seed and its name).
    pub fn new(
        cfg: &TinyKontextConfig,
        device: Device,
        seed: u64,
    ) -> Result<TinyKontext, ModelError> {
        cfg.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let dim = cfg.dim();
        let tdim = cfg.text_encoder.hidden_size;
        let x_embedder = LoraLinear::new(&(&root / "x_embedder"), cfg.patch_dim(), dim, true, seed);
        let se = uniform_tensor(
            &mut StreamRng::derive(seed, "stream_embed"),
            &[2, dim],
            0.02 * 3f64.sqrt(),
        );
        let stream_embed = (&root / "stream_embed").var_copy("weight", &se);
        let context_embedder =
            LoraLinear::new(&(&root / "context_embedder"), tdim, dim, true, seed);
        let time_text_embed = TimeTextEmbed::new(
            &(&root / "time_text_embed"),
            cfg.timestep_freq_dim,
            tdim,
            dim,
            seed,
        );
        let text_encoder = TextEncoder::new(&(&root / "text_encoder"), &cfg.text_encoder, seed);
        let transformer_blocks = (0..cfg.num_layers)
            .map(|i| {
                TransformerBlock::new(
                    &(&root / "transformer_blocks" / i),
                    dim,
                    cfg.num_attention_heads,
                    cfg.mlp_ratio,
                    seed,
                )
            })
            .collect();
        let norm_out = LoraLinear::new(&(&root / "norm_out" / "linear"), dim, 2 * dim, true, seed);
        let proj_out = LoraLinear::new(&(&root / "proj_out"), dim, cfg.patch_dim(), true, seed);
        let base_names = vs.variables().into_keys().collect();
        Ok(TinyKontext {
            cfg: cfg.clone(),
            vs,
            x_embedder,
            stream_embed,
            context_embedder,
            time_text_embed,
            text_encoder,
            transformer_blocks,
            norm_out,
            proj_out,
            base_names,
            adapters: AdapterSet::new(Trainable::Base),
            shared_base: false,
        })
    }

    /// Loads `config.json` and `model.safetensors` from `dir`. A config that does not match
    /// the weights is an error naming every missing, unexpected and mis-shaped tensor.
    pub fn load(dir: &Path, device: Device) -> Result<TinyKontext, ModelError> {
        let cfg: TinyKontextConfig = checkpoint::read_json(&dir.join(CONFIG_FILE))?;
        cfg.validate()?;
        let model = TinyKontext::new(&cfg, device, 0)?;
        model.load_weights(&dir.join(WEIGHTS_FILE))?;
        Ok(model)
    }

    /// A model whose base tensors are those of `base` (shared, not copied; read-only from
    /// here on: [`EditPolicy::set_trainable`] refuses `Trainable::Base`). Adapters added to it
    /// are its own. Gives the same outputs as [`TinyKontext::load`] of the same directory.
    pub fn from_shared(base: &SharedBase, device: Device) -> Result<TinyKontext, ModelError> {
        let mut model = TinyKontext::new(&base.cfg, device, 0)?;
        let weights = base.weights.lock().expect("not poisoned");
        tch::no_grad(|| {
            for (k, mut v) in model.base_variables() {
                let w = &weights[&k];
                if w.device() != device {
                    return Err(ModelError::InvalidConfig(format!(
                        "shared weights live on {:?}, the model on {device:?}",
                        w.device()
                    )));
                }
                v.set_data(w);
            }
            Ok(())
        })?;
        drop(weights);
        model.set_trainable(Trainable::Nothing)?;
        model.shared_base = true;
        Ok(model)
    }

    /// Loads base weights from a safetensors file into this model (all-or-nothing).
    pub fn load_weights(&self, path: &Path) -> Result<(), ModelError> {
        checkpoint::load_into(&self.base_variables(), path)
    }

    pub fn config(&self) -> &TinyKontextConfig {
        &self.cfg
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Every LoRA-capable projection (the attention projections of every block).
    fn lora_layers(&self) -> impl Iterator<Item = &LoraLinear> {
        self.transformer_blocks
            .iter()
            .flat_map(|b| b.attn.projections())
    }

    /// The `(name → (shape, kind))` an adapter with `cfg` has, without creating it.
    fn adapter_shapes(&self, cfg: &LoraConfig) -> BTreeMap<String, (Vec<i64>, Kind)> {
        adapter_shapes(
            cfg,
            self.lora_layers()
                .map(|l| (l.path.as_str(), l.in_dim, l.out_dim, Kind::Float)),
        )
    }

    /// `(B, C, H, W)` → `(B, (H/p)(W/p), C·p·p)`, FLUX's `_pack_latents` order.
    fn patchify(&self, x: &Tensor) -> Tensor {
        let p = self.cfg.patch_size;
        let (b, c, h, w) = x.size4().expect("(B, C, H, W)");
        x.view([b, c, h / p, p, w / p, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, (h / p) * (w / p), c * p * p])
    }

    /// Inverse of [`Self::patchify`].
    fn unpatchify(&self, y: &Tensor, h: i64, w: i64) -> Tensor {
        let p = self.cfg.patch_size;
        let c = self.cfg.in_channels;
        let b = y.size()[0];
        y.view([b, h / p, w / p, c, p, p])
            .permute([0, 3, 1, 4, 2, 5])
            .reshape([b, c, h, w])
    }

    fn check_latent(
        &self,
        what: &'static str,
        x: &Tensor,
        batch: Option<i64>,
    ) -> Result<(i64, i64, i64), ModelError> {
        let s = x.size();
        let p = self.cfg.patch_size;
        if s.len() != 4
            || s[1] != self.cfg.in_channels
            || s[2] % p != 0
            || s[3] % p != 0
            || s[2] == 0
            || s[3] == 0
        {
            return Err(input_err(
                what,
                format!(
                    "expected (B, {}, h, w) with h and w positive multiples of {p}, got {s:?}",
                    self.cfg.in_channels
                ),
            ));
        }
        if let Some(b) = batch
            && s[0] != b
        {
            return Err(input_err(
                what,
                format!("batch {} where {b} was expected", s[0]),
            ));
        }
        Ok((s[0], s[2], s[3]))
    }

    /// Image tokens (patch embedding + 2-D position + stream) of one latent. `(B, n, dim)`.
    fn image_tokens(&self, latent: &Tensor, stream: i64) -> Tensor {
        let (_, _, h, w) = latent.size4().expect("checked");
        let p = self.cfg.patch_size;
        let pos =
            pos_embed_2d(h / p, w / p, self.cfg.dim(), latent.device()).to_kind(latent.kind());
        self.x_embedder.forward(&self.patchify(latent), None)
            + pos.unsqueeze(0)
            + self.stream_embed.get(stream)
    }

    fn forward(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Conditioning,
        active: Option<&str>,
    ) -> Result<Tensor, ModelError> {
        let (b, h, w) = self.check_latent("x_t", x_t, None)?;
        if b == 0 {
            return Err(input_err("x_t", "the batch is empty".into()));
        }
        self.check_latent("conditioning.source", &cond.source, Some(b))?;
        let ids = cond.get(edit_policy::TEXT_IDS)?;
        let is = ids.size();
        if is.len() != 2
            || is[0] != b
            || is[1] > self.cfg.text_encoder.max_position_embeddings
            || is[1] == 0
        {
            return Err(input_err(
                "conditioning.text_ids",
                format!(
                    "expected ({b}, L) with 0 < L ≤ {}, got {is:?}",
                    self.cfg.text_encoder.max_position_embeddings
                ),
            ));
        }
        let vocab = self.text_encoder.tokenizer.len() as i64;
        if ids.kind() != Kind::Int64 {
            return Err(input_err(
                "conditioning.text_ids",
                format!("expected int64 ids, got {:?}", ids.kind()),
            ));
        }
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= vocab {
            return Err(input_err(
                "conditioning.text_ids",
                format!("ids must lie in [0, {vocab}), got [{lo}, {hi}]"),
            ));
        }
        let t = match t.size().as_slice() {
            [] | [1] => t.reshape([1]).expand([b], false),
            [n] if *n == b => t.shallow_clone(),
            s => {
                return Err(input_err(
                    "t",
                    format!("expected shape () or ({b},), got {s:?}"),
                ));
            }
        }
        .to_kind(x_t.kind());

        let tgt = self.image_tokens(x_t, 0); // (B, N_t, dim)
        let src = self.image_tokens(&cond.source, 1); // (B, N_s, dim)
        let n_t = tgt.size()[1];
        let mut img = Tensor::cat(&[tgt, src], 1); // (B, N, dim)
        let n = img.size()[1];
        let (states, pooled, mask) = self.text_encoder.forward(&ids.to_device(x_t.device()));
        let mut txt = self
            .context_embedder
            .forward(&states.to_kind(x_t.kind()), None); // (B, L, dim)
        let emb = self
            .time_text_embed
            .forward(&t, &pooled.to_kind(x_t.kind())); // (B, dim)
        let l = txt.size()[1];
        // keys: [text (masked pads); image (all)] → (B, 1, 1, L + N)
        let attn_mask = Tensor::cat(&[mask, Tensor::ones([b, n], (Kind::Bool, x_t.device()))], 1)
            .view([b, 1, 1, l + n]);
        for block in &self.transformer_blocks {
            (img, txt) = block.forward(&img, &txt, &emb, &attn_mask, active);
        }
        let out = img.narrow(1, 0, n_t);
        let m = self.norm_out.forward(&emb.silu(), None).chunk(2, 1);
        let out = modulate(&layer_norm(&out), &m[1], &m[0]);
        Ok(self.unpatchify(&self.proj_out.forward(&out, None), h, w))
    }
}

/// Base weights loaded once and shared, read-only, by every model built on them with
/// [`TinyKontext::from_shared`]: what a worker's model cache holds, keyed by the weights'
/// digest and the device, so a worker loads a base once however many tasks use it.
pub struct SharedBase {
    cfg: TinyKontextConfig,
    /// `Tensor` is `Send` but not `Sync`; the cache hands out `Arc`s across threads.
    weights: std::sync::Mutex<BTreeMap<String, Tensor>>,
    bytes: u64,
}

impl SharedBase {
    /// Loads `config.json` and `model.safetensors` from `dir` onto `device` (checked as
    /// [`TinyKontext::load`] checks them).
    pub fn load(dir: &Path, device: Device) -> Result<SharedBase, ModelError> {
        let model = TinyKontext::load(dir, device)?;
        let weights = model.base_variables();
        let bytes = weights
            .values()
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum();
        Ok(SharedBase {
            cfg: model.cfg.clone(),
            weights: std::sync::Mutex::new(
                weights.into_iter().map(|(k, v)| (k, v.detach())).collect(),
            ),
            bytes,
        })
    }

    /// Bytes the weights hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
