//! Qwen2.5-VL's tokenizer (`processor/tokenizer.json`), built with the `tokenizers` crate the
//! way transformers 5's `Qwen2Tokenizer` builds it: the file's byte-level BPE vocabulary,
//! merges and added (special) tokens, inside the class's own pipeline — NFC normaliser, the
//! Qwen2 pre-tokeniser regex (`isolated` splits: contractions, letter runs, single digits,
//! punctuation runs, newlines, spaces) then byte-level without a prefix space, no BOS/EOS.
//! Batches are padded to the longest row with `pad_token` on `padding_side`
//! (`tokenizer_config.json`; `right` by default), as the processor's `padding=True` does.

use super::super::error::ModelError;
use super::config_vl::TokenizerConfig;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

/// transformers' `Qwen2Tokenizer` pre-tokeniser regex.
pub const PRETOKENIZE_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn config_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Config {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A batch of token ids padded to its longest row.
#[derive(Debug)]
pub struct Tokens {
    /// `(B, L)` int64.
    pub input_ids: Tensor,
    /// `(B, L)` int64: 1 = token, 0 = padding.
    pub attention_mask: Tensor,
}

#[derive(Debug, Clone)]
pub struct Qwen2Tokenizer {
    tok: Tokenizer,
    path: PathBuf,
    pub pad_id: u32,
    /// Pad on the left (`padding_side: left`) instead of the right.
    pub pad_left: bool,
}

impl Qwen2Tokenizer {
    /// Loads `dir/tokenizer.json` and `dir/tokenizer_config.json` (the pipeline's
    /// `processor/` directory: the tokenizer the prompt encoder uses is the processor's).
    pub fn load(dir: &Path) -> Result<Qwen2Tokenizer, ModelError> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            op: "read",
            path: path.clone(),
            source,
        })?;
        let mut spec: Value =
            serde_json::from_str(&text).map_err(|e| config_err(&path, e.to_string()))?;
        if spec["model"]["type"] != "BPE" {
            return Err(config_err(&path, "expected a byte-level BPE model"));
        }
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig = if config_path.exists() {
            super::config::read_config(&config_path)?
        } else {
            serde_json::from_value(json!({})).expect("defaults")
        };
        let pad_left = match config.padding_side.as_str() {
            "right" => false,
            "left" => true,
            other => {
                return Err(config_err(
                    &config_path,
                    format!("`padding_side` is `{other}`, expected `right` or `left`"),
                ));
            }
        };
        let pad_token = match &config.pad_token {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("<|endoftext|>")
                .to_string(),
            _ => "<|endoftext|>".to_string(),
        };
        let tok: Tokenizer = {
            let obj = spec
                .as_object_mut()
                .ok_or_else(|| config_err(&path, "expected a JSON object"))?;
            obj.insert("normalizer".into(), json!({"type": "NFC"}));
            obj.insert(
                "pre_tokenizer".into(),
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": PRETOKENIZE_REGEX},
                     "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                     "use_regex": false},
                ]}),
            );
            obj.insert(
                "decoder".into(),
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                       "use_regex": true}),
            );
            obj.insert("post_processor".into(), Value::Null);
            obj.insert("truncation".into(), Value::Null);
            obj.insert("padding".into(), Value::Null);
            if let Some(m) = obj.get_mut("model").and_then(Value::as_object_mut) {
                m.insert("dropout".into(), Value::Null);
                m.insert("unk_token".into(), Value::Null);
                m.insert("continuing_subword_prefix".into(), json!(""));
                m.insert("end_of_word_suffix".into(), json!(""));
                m.insert("fuse_unk".into(), json!(false));
                m.insert("byte_fallback".into(), json!(false));
                m.insert("ignore_merges".into(), json!(false));
            }
            serde_json::from_value(spec)
                .map_err(|e| config_err(&path, format!("cannot build the Qwen2 tokenizer: {e}")))?
        };
        let pad_id = tok.token_to_id(&pad_token).ok_or_else(|| {
            config_err(
                &path,
                format!("pad token `{pad_token}` is not in the vocabulary"),
            )
        })?;
        Ok(Qwen2Tokenizer {
            tok,
            path,
            pad_id,
            pad_left,
        })
    }

    /// The id of a (special) token.
    pub fn token_id(&self, token: &str) -> Result<u32, ModelError> {
        self.tok.token_to_id(token).ok_or_else(|| {
            config_err(
                &self.path,
                format!("token `{token}` is not in the vocabulary"),
            )
        })
    }

    /// The ids of each text, unpadded.
    pub fn encode_each(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ModelError> {
        let encodings = self
            .tok
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| config_err(&self.path, format!("tokenising failed: {e}")))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// The texts padded to the longest (`padding=True`).
    pub fn encode(&self, texts: &[&str], device: Device) -> Result<Tokens, ModelError> {
        let rows = self.encode_each(texts)?;
        let l = rows.iter().map(Vec::len).max().unwrap_or(0);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for r in &rows {
            let pad = l - r.len();
            let body = r.iter().map(|&i| i as i64);
            let pads = std::iter::repeat_n(self.pad_id as i64, pad);
            let ones = std::iter::repeat_n(1i64, r.len());
            let zeros = std::iter::repeat_n(0i64, pad);
            if self.pad_left {
                ids.extend(pads.chain(body));
                mask.extend(zeros.chain(ones));
            } else {
                ids.extend(body.chain(pads));
                mask.extend(ones.chain(zeros));
            }
        }
        let shape = [rows.len() as i64, l as i64];
        let t = |v: Vec<i64>| {
            Tensor::from_slice(&v)
                .to_kind(Kind::Int64)
                .view(shape)
                .to_device(device)
        };
        Ok(Tokens {
            input_ids: t(ids),
            attention_mask: t(mask),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }
}
