//! The two tokenizers of a FLUX repository, built with the `tokenizers` crate the way
//! transformers 5 builds them, with the pipeline's padding and truncation.
//!
//! - [`ClipTokenizer`] (`tokenizer/`: `vocab.json`, `merges.txt`, `tokenizer_config.json`; no
//!   `tokenizer.json` in the FLUX repos): byte-level BPE with `</w>` end-of-word suffix;
//!   normaliser NFC → runs of whitespace to one space → lowercase; pre-tokeniser CLIP's
//!   regex (`<|startoftext|>`, `<|endoftext|>`, contractions, letter runs, single digits,
//!   runs of other non-space characters), then byte-level; `bos … eos`; truncated and padded
//!   (with the pad token, `<|endoftext|>` in FLUX) to `model_max_length` (77).
//! - [`T5Tokenizer`] (`tokenizer_2/tokenizer.json`): the Unigram vocabulary of
//!   `tokenizer.json` with the pipeline transformers 5's `T5Tokenizer` rebuilds around it:
//!   the file's SentencePiece `Precompiled` normaliser (only), whitespace split, `▁` metaspace
//!   prepended to every word, `… </s>`; truncated and padded with `<pad>` to the pipeline's
//!   `max_sequence_length`.

use super::super::error::ModelError;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};
use tokenizers::Tokenizer;
use tokenizers::utils::padding::{PaddingDirection, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams, TruncationStrategy};

/// CLIP's pre-tokeniser regex (transformers' `CLIPTokenizer`).
pub const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

fn config_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Config {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read_text(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

fn read_value(path: &Path) -> Result<Value, ModelError> {
    serde_json::from_str(&read_text(path)?).map_err(|e| config_err(path, e.to_string()))
}

/// A special token of `tokenizer_config.json`: a string, or an `AddedToken` object.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The padded, truncated ids of `texts` as a `(B, max_length)` int64 tensor.
fn encode_fixed(
    tok: &Tokenizer,
    texts: &[&str],
    source: &Path,
    device: Device,
) -> Result<Tensor, ModelError> {
    let encodings = tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| config_err(source, format!("tokenising failed: {e}")))?;
    let rows: Vec<Tensor> = encodings
        .iter()
        .map(|e| {
            let ids: Vec<i64> = e.get_ids().iter().map(|&i| i as i64).collect();
            Tensor::from_slice(&ids)
        })
        .collect();
    if rows.is_empty() {
        return Ok(Tensor::zeros([0, 0], (tch::Kind::Int64, device)));
    }
    Ok(Tensor::stack(&rows, 0).to_device(device))
}

/// Fixed-length padding on the right and right-side truncation (`longest_first`), as
/// `tokenizer(..., padding="max_length", max_length=n, truncation=True)` sets them.
fn set_fixed_length(
    tok: &mut Tokenizer,
    n: usize,
    pad_id: u32,
    pad_token: &str,
    source: &Path,
) -> Result<(), ModelError> {
    tok.with_truncation(Some(TruncationParams {
        direction: TruncationDirection::Right,
        max_length: n,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
    }))
    .map_err(|e| config_err(source, e.to_string()))?;
    tok.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(n),
        direction: PaddingDirection::Right,
        pad_to_multiple_of: None,
        pad_id,
        pad_type_id: 0,
        pad_token: pad_token.to_string(),
    }));
    Ok(())
}

/// CLIP's BPE tokenizer from `vocab.json` + `merges.txt` + `tokenizer_config.json`.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    tok: Tokenizer,
    dir: PathBuf,
    /// Every encoding has exactly this many ids (`model_max_length`, 77).
    pub max_length: usize,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
}

impl ClipTokenizer {
    pub fn load(dir: &Path) -> Result<ClipTokenizer, ModelError> {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        let config_path = dir.join("tokenizer_config.json");
        let vocab: serde_json::Map<String, Value> = match read_value(&vocab_path)? {
            Value::Object(m) => m,
            _ => return Err(config_err(&vocab_path, "expected a JSON object token → id")),
        };
        let merges: Vec<Value> = read_text(&merges_path)?
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(|l| match l.split_once(' ') {
                Some((a, b)) => Ok(json!([a, b])),
                None => Err(config_err(&merges_path, format!("bad merge line `{l}`"))),
            })
            .collect::<Result<_, _>>()?;
        let config = if config_path.exists() {
            read_value(&config_path)?
        } else {
            json!({})
        };
        let special = |key: &str, default: &str| {
            config
                .get(key)
                .and_then(token_content)
                .unwrap_or_else(|| default.to_string())
        };
        let bos = special("bos_token", "<|startoftext|>");
        let eos = special("eos_token", "<|endoftext|>");
        let pad = special("pad_token", "<|endoftext|>");
        let unk = special("unk_token", "<|endoftext|>");
        let id_of = |t: &str| -> Result<u32, ModelError> {
            vocab
                .get(t)
                .and_then(Value::as_u64)
                .map(|i| i as u32)
                .ok_or_else(|| {
                    config_err(
                        &vocab_path,
                        format!("special token `{t}` is not in the vocabulary"),
                    )
                })
        };
        let (bos_id, eos_id, pad_id) = (id_of(&bos)?, id_of(&eos)?, id_of(&pad)?);
        // Special tokens as `added_tokens_decoder` lists them (their flags), else bos/eos/pad/unk.
        let mut added: Vec<Value> = Vec::new();
        if let Some(Value::Object(dec)) = config.get("added_tokens_decoder") {
            for (id, t) in dec {
                let id: u64 = id
                    .parse()
                    .map_err(|_| config_err(&config_path, format!("bad added token id `{id}`")))?;
                let flag = |k: &str, d: bool| t.get(k).and_then(Value::as_bool).unwrap_or(d);
                added.push(json!({
                    "id": id,
                    "content": t.get("content").and_then(Value::as_str).unwrap_or_default(),
                    "single_word": flag("single_word", false),
                    "lstrip": flag("lstrip", false),
                    "rstrip": flag("rstrip", false),
                    "normalized": flag("normalized", false),
                    "special": flag("special", true),
                }));
            }
        } else {
            let mut seen = std::collections::BTreeSet::new();
            for t in [&bos, &eos, &pad, &unk] {
                if seen.insert(t.clone()) {
                    added.push(json!({
                        "id": id_of(t)?, "content": t, "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": true,
                    }));
                }
            }
        }
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"},
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            ]},
            "post_processor": {
                "type": "RobertaProcessing",
                "sep": [eos, eos_id],
                "cls": [bos, bos_id],
                "trim_offsets": false,
                "add_prefix_space": false,
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": unk,
                "continuing_subword_prefix": "",
                "end_of_word_suffix": "</w>",
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": merges,
            },
        });
        let mut tok: Tokenizer = serde_json::from_value(spec).map_err(|e| {
            config_err(&vocab_path, format!("cannot build the CLIP tokenizer: {e}"))
        })?;
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_f64)
            .filter(|n| *n >= 2.0 && *n <= 1e6)
            .map_or(77, |n| n as usize);
        set_fixed_length(&mut tok, max_length, pad_id, &pad, &vocab_path)?;
        Ok(ClipTokenizer {
            tok,
            dir: dir.to_owned(),
            max_length,
            bos_id,
            eos_id,
            pad_id,
        })
    }

    /// `(B, max_length)` int64 ids.
    pub fn encode(&self, texts: &[&str], device: Device) -> Result<Tensor, ModelError> {
        encode_fixed(&self.tok, texts, &self.dir, device)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }
}

/// T5's Unigram tokenizer from `tokenizer.json` (see the module docs for what is rebuilt).
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    tok: Tokenizer,
    path: PathBuf,
    pub pad_id: u32,
    pub eos_id: u32,
}

impl T5Tokenizer {
    pub fn load(dir: &Path) -> Result<T5Tokenizer, ModelError> {
        let path = dir.join("tokenizer.json");
        let mut spec = read_value(&path)?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.exists() {
            read_value(&config_path)?
        } else {
            json!({})
        };
        let pad_token = config
            .get("pad_token")
            .and_then(token_content)
            .unwrap_or_else(|| "<pad>".into());
        let eos_token = config
            .get("eos_token")
            .and_then(token_content)
            .unwrap_or_else(|| "</s>".into());
        // Only the SentencePiece charsmap survives transformers 5's rebuild of the normaliser.
        let precompiled = {
            let n = &spec["normalizer"];
            let candidates: Vec<&Value> = match n["type"].as_str() {
                Some("Sequence") => n["normalizers"]
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default(),
                _ => vec![n],
            };
            candidates
                .into_iter()
                .find(|v| v["type"] == "Precompiled")
                .cloned()
                .unwrap_or(Value::Null)
        };
        if spec["model"]["type"] != "Unigram" {
            return Err(config_err(
                &path,
                "expected a Unigram (SentencePiece) model",
            ));
        }
        let mut tok: Tokenizer = {
            let obj = spec
                .as_object_mut()
                .ok_or_else(|| config_err(&path, "expected a JSON object"))?;
            obj.insert("normalizer".into(), precompiled);
            obj.insert(
                "pre_tokenizer".into(),
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "WhitespaceSplit"},
                    {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
                ]}),
            );
            obj.insert("post_processor".into(), Value::Null);
            obj.insert("truncation".into(), Value::Null);
            obj.insert("padding".into(), Value::Null);
            obj.get_mut("model")
                .and_then(Value::as_object_mut)
                .map(|m| m.insert("byte_fallback".into(), json!(false)));
            serde_json::from_value(spec)
                .map_err(|e| config_err(&path, format!("cannot build the T5 tokenizer: {e}")))?
        };
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                config_err(
                    &path,
                    format!("special token `{t}` is not in the vocabulary"),
                )
            })
        };
        let (pad_id, eos_id) = (id(&pad_token)?, id(&eos_token)?);
        let post: tokenizers::PostProcessorWrapper = serde_json::from_value(json!({
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos_token, "type_id": 0}}],
            "pair": [
                {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos_token, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": eos_token, "type_id": 0}},
            ],
            "special_tokens": {eos_token.clone(): {"id": eos_token, "ids": [eos_id], "tokens": [eos_token]}},
        }))
        .map_err(|e| config_err(&path, format!("cannot build the T5 post-processor: {e}")))?;
        tok.with_post_processor(Some(post));
        Ok(T5Tokenizer {
            tok,
            path,
            pad_id,
            eos_id,
        })
    }

    /// `(B, max_length)` int64 ids: the text's first `max_length − 1` tokens, `</s>`, then
    /// `<pad>` (what right-side `longest_first` truncation and fixed padding give).
    pub fn encode(
        &self,
        texts: &[&str],
        max_length: usize,
        device: Device,
    ) -> Result<Tensor, ModelError> {
        if max_length < 1 {
            return Err(ModelError::Input {
                what: "max_sequence_length",
                message: "must be at least 1".into(),
            });
        }
        let encodings = self
            .tok
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| config_err(&self.path, format!("tokenising failed: {e}")))?;
        let mut data = Vec::with_capacity(texts.len() * max_length);
        for e in &encodings {
            let ids = e.get_ids();
            let n = ids.len().min(max_length - 1);
            data.extend(ids[..n].iter().map(|&i| i as i64));
            data.push(self.eos_id as i64);
            data.extend(std::iter::repeat_n(self.pad_id as i64, max_length - n - 1));
        }
        Ok(Tensor::from_slice(&data)
            .view([texts.len() as i64, max_length as i64])
            .to_device(device))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }
}
