//! The prompt encoder of `QwenImageEditPipeline` (`_get_qwen_prompt_embeds`): Qwen2.5-VL on
//! the edit chat template with the condition image.
//!
//! For each (instruction, condition image) pair: the processor resizes and patchifies the
//! image ([`super::image::Qwen2VlImageProcessor`]); the template's `<|image_pad|>` becomes one
//! pad per merged vision token; the texts are tokenised and padded to the longest
//! ([`super::tokenizer::Qwen2Tokenizer`]); the vision tower's tokens replace the pads'
//! embeddings; the language model's final normed states are taken; each row keeps its real
//! tokens (the attention mask), drops the template's first [`PROMPT_TEMPLATE_START_IDX`]
//! tokens, and is zero-padded to the longest remaining row, with a mask of ones and zeros.
//!
//! Weights: `text_encoder/model.safetensors` (or shards + `model.safetensors.index.json`) in
//! the published layout (`model.layers.*`, `visual.*`, `lm_head.weight`) or transformers 5's
//! in-memory names (`model.language_model.*`, `model.visual.*`); `lm_head` is not used.

use super::super::error::ModelError;
use super::super::flux_kontext::layers::{check_weight_kind, var_store};
use super::super::flux_kontext::weights::Checkpoint;
use super::config::read_config;
use super::config_vl::Qwen25VlConfig;
use super::image::Qwen2VlImageProcessor;
use super::text_model::Qwen25VlTextModel;
use super::tokenizer::Qwen2Tokenizer;
use super::vision::Qwen25VisionTransformer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

/// `QwenImageEditPipeline.prompt_template_encode` (`{}`: the instruction).
pub const PROMPT_TEMPLATE: &str = "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, background), then explain how the user's text instruction should alter or modify the image. Generate a new image that meets the user's requirements while maintaining consistency with the original input where appropriate.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n";

/// `QwenImageEditPlusPipeline` (Qwen-Image-Edit-2509 and later): the same template with the
/// image introduced as `Picture 1: ` before its vision tokens (one image per instruction).
pub const PLUS_IMAGE_PREFIX: &str = "Picture 1: ";

/// Which pipeline's template the encoder fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptStyle {
    /// `QwenImageEditPipeline`: [`PROMPT_TEMPLATE`].
    #[default]
    Edit,
    /// `QwenImageEditPlusPipeline`: [`PROMPT_TEMPLATE`] with [`PLUS_IMAGE_PREFIX`] before the
    /// image.
    EditPlus,
}

/// `prompt_template_encode_start_idx`: template tokens dropped from the front of each row.
pub const PROMPT_TEMPLATE_START_IDX: i64 = 64;

const IMAGE_PAD: &str = "<|image_pad|>";
const VIDEO_PAD: &str = "<|video_pad|>";

/// What the pipeline conditions the transformer on.
#[derive(Debug)]
pub struct PromptEncoding {
    /// `(B, L, hidden)`: each row's states after the template prefix, zero-padded.
    pub embeds: Tensor,
    /// `(B, L)` int64: 1 = token, 0 = padding.
    pub mask: Tensor,
}

impl PromptEncoding {
    /// The pipeline's `prompt_embeds_mask`: `None` when every token is real.
    pub fn pipeline_mask(&self) -> Option<&Tensor> {
        let all = self.mask.ne(0).all().int64_value(&[]) != 0;
        (!all).then_some(&self.mask)
    }
}

/// The encoder's inputs for a batch (exposed for tests and caching keys).
#[derive(Debug)]
pub struct EncoderInputs {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub pixel_values: Tensor,
    pub grid_thw: Vec<(i64, i64, i64)>,
}

pub struct QwenVlPromptEncoder {
    pub cfg: Qwen25VlConfig,
    vs: nn::VarStore,
    pub text: Qwen25VlTextModel,
    pub vision: Qwen25VisionTransformer,
    pub tokenizer: Qwen2Tokenizer,
    pub processor: Qwen2VlImageProcessor,
    /// The template [`Self::inputs`] fills (default [`PromptStyle::Edit`]).
    pub style: PromptStyle,
}

impl std::fmt::Debug for QwenVlPromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QwenVlPromptEncoder")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Maps a checkpoint key to the variable it fills (`None`: not used).
pub fn text_encoder_key(key: &str) -> Option<String> {
    if key.starts_with("lm_head.") {
        return None;
    }
    if let Some(rest) = key.strip_prefix("model.language_model.") {
        return Some(format!("model.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("model.visual.") {
        return Some(format!("visual.{rest}"));
    }
    Some(key.to_string())
}

impl QwenVlPromptEncoder {
    /// Loads `text_encoder_dir` (config + weights) and `processor_dir` (tokenizer and image
    /// processor), the pipeline's `text_encoder/` and `processor/`.
    pub fn load(
        text_encoder_dir: &Path,
        processor_dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        check_weight_kind(kind)?;
        let config = text_encoder_dir.join("config.json");
        let raw: Value = read_config(&config)?;
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "qwen2_5_vl" {
            return Err(ModelError::Config {
                path: config,
                message: format!(
                    "`model_type` is `{model_type}`, expected `qwen2_5_vl` (Qwen2.5-VL)"
                ),
            });
        }
        let cfg = Qwen25VlConfig::read(&config)?;
        let tokenizer = Qwen2Tokenizer::load(processor_dir)?;
        for (name, id) in [
            (IMAGE_PAD, cfg.image_token_id),
            ("<|vision_start|>", cfg.vision_start_token_id),
            ("<|vision_end|>", cfg.vision_end_token_id),
        ] {
            let tok = tokenizer.token_id(name)? as i64;
            if tok != id {
                return Err(ModelError::Config {
                    path: config,
                    message: format!(
                        "the tokenizer in `{}` gives `{name}` id {tok}, the config {id}",
                        processor_dir.display()
                    ),
                });
            }
        }
        let processor = Qwen2VlImageProcessor::load(processor_dir)?;
        let vs = var_store(device, kind);
        let root = vs.root();
        let text = Qwen25VlTextModel::new(&(&root / "model"), &cfg.text, kind)?;
        let vision = Qwen25VisionTransformer::new(&(&root / "visual"), &cfg.vision, kind)?;
        let enc = QwenVlPromptEncoder {
            cfg,
            vs,
            text,
            vision,
            tokenizer,
            processor,
            style: PromptStyle::Edit,
        };
        Checkpoint::open(text_encoder_dir, "model")?
            .load_into(&enc.variables(), &text_encoder_key)?;
        Ok(enc)
    }

    pub fn variables(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn kind(&self) -> Kind {
        self.text.embed_tokens.weight.kind()
    }

    /// The chat-template text of one instruction with `n_image_tokens` image pads.
    pub fn template_text(instruction: &str, n_image_tokens: i64) -> Result<String, ModelError> {
        if instruction.contains(IMAGE_PAD) || instruction.contains(VIDEO_PAD) {
            return Err(ModelError::Input {
                what: "instruction",
                message: format!("must not contain `{IMAGE_PAD}` or `{VIDEO_PAD}`"),
            });
        }
        let pads = IMAGE_PAD.repeat(n_image_tokens as usize);
        Ok(PROMPT_TEMPLATE
            .replacen(IMAGE_PAD, &pads, 1)
            .replacen("{}", instruction, 1))
    }

    /// Processor + tokenizer: one condition image (uint8 `(3, H, W)`) per instruction.
    pub fn inputs(
        &self,
        instructions: &[&str],
        images: &[&Tensor],
    ) -> Result<EncoderInputs, ModelError> {
        if instructions.len() != images.len() || instructions.is_empty() {
            return Err(ModelError::Input {
                what: "images",
                message: format!(
                    "{} instructions and {} images: give one image per instruction",
                    instructions.len(),
                    images.len()
                ),
            });
        }
        let vi = self.processor.preprocess(images)?;
        let unit = self.processor.cfg.merge_size * self.processor.cfg.merge_size;
        let texts = instructions
            .iter()
            .zip(&vi.grid_thw)
            .map(|(t, (gt, gh, gw))| {
                let text = Self::template_text(t, gt * gh * gw / unit)?;
                Ok::<_, ModelError>(match self.style {
                    PromptStyle::Edit => text,
                    PromptStyle::EditPlus => text.replacen(
                        "<|vision_start|>",
                        &format!("{PLUS_IMAGE_PREFIX}<|vision_start|>"),
                        1,
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let toks = self.tokenizer.encode(&refs, Device::Cpu)?;
        Ok(EncoderInputs {
            input_ids: toks.input_ids,
            attention_mask: toks.attention_mask,
            pixel_values: vi.pixel_values,
            grid_thw: vi.grid_thw,
        })
    }

    /// The language model's final normed states `(B, L, hidden)` for prepared inputs;
    /// `positions`: explicit `(3, B, L)` M-RoPE positions (`None`: the pipeline's `0..L`).
    pub fn hidden_states(
        &self,
        inp: &EncoderInputs,
        positions: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let dev = self.device();
        let ids = inp.input_ids.to_device(dev);
        let embeds = self.text.embed_tokens.forward(&ids);
        let feats = self
            .vision
            .forward(&inp.pixel_values, &inp.grid_thw)?
            .to_kind(embeds.kind());
        let image_mask = ids.eq(self.cfg.image_token_id);
        let n_pads = image_mask.sum(Kind::Int64).int64_value(&[]);
        if n_pads != feats.size()[0] {
            return Err(ModelError::Input {
                what: "input_ids",
                message: format!(
                    "{n_pads} image tokens but {} image features",
                    feats.size()[0]
                ),
            });
        }
        let embeds = embeds.masked_scatter(&image_mask.unsqueeze(-1), &feats);
        Ok(self.text.forward(&embeds, &inp.attention_mask, positions))
    }

    /// `_get_qwen_prompt_embeds`: the prompt states of each (instruction, condition image).
    pub fn encode(
        &self,
        instructions: &[&str],
        images: &[&Tensor],
    ) -> Result<PromptEncoding, ModelError> {
        let inp = self.inputs(instructions, images)?;
        let hidden = self.hidden_states(&inp, None)?;
        Ok(slice_prompt(&hidden, &inp.attention_mask))
    }
}

/// Each row's real tokens after the template prefix, zero-padded to the longest, and the mask.
pub fn slice_prompt(hidden: &Tensor, attention_mask: &Tensor) -> PromptEncoding {
    let dev = hidden.device();
    let b = hidden.size()[0];
    let d = hidden.size()[2];
    let mask = attention_mask.to_device(dev).ne(0);
    let rows: Vec<Tensor> = (0..b)
        .map(|i| {
            let r = hidden
                .get(i)
                .index_select(0, &mask.get(i).nonzero().squeeze_dim(1));
            let n = r.size()[0];
            let drop = PROMPT_TEMPLATE_START_IDX.min(n);
            r.narrow(0, drop, n - drop)
        })
        .collect();
    let l = rows.iter().map(|r| r.size()[0]).max().unwrap_or(0);
    let embeds = Tensor::stack(
        &rows
            .iter()
            .map(|r| {
                let pad = Tensor::zeros([l - r.size()[0], d], (r.kind(), dev));
                Tensor::cat(&[r, &pad], 0)
            })
            .collect::<Vec<_>>(),
        0,
    );
    let masks: Vec<Tensor> = rows
        .iter()
        .map(|r| {
            let n = r.size()[0];
            Tensor::cat(
                &[
                    Tensor::ones([n], (Kind::Int64, dev)),
                    Tensor::zeros([l - n], (Kind::Int64, dev)),
                ],
                0,
            )
        })
        .collect();
    PromptEncoding {
        embeds,
        mask: Tensor::stack(&masks, 0),
    }
}
