//! The word-level instruction tokenizer of tiny-kontext: lowercase, split on
//! non-alphanumerics, look each word up in the config's vocabulary (`<unk>` otherwise),
//! prepend `<bos>`, truncate and pad with `<pad>` to a fixed length.

use std::collections::{BTreeSet, HashMap};
use tch::{Device, Tensor};

pub const PAD: &str = "<pad>";
pub const UNK: &str = "<unk>";
pub const BOS: &str = "<bos>";
/// Ids of the special tokens, which come first in every vocabulary.
pub const PAD_ID: i64 = 0;
pub const UNK_ID: i64 = 1;
pub const BOS_ID: i64 = 2;
const SPECIALS: [&str; 3] = [PAD, UNK, BOS];

/// Splits an instruction into lowercase words (runs of alphanumerics).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// A sorted, de-duplicated vocabulary of every word in `texts` (for building a config's
/// `vocab` from a dataset's instructions).
pub fn vocab_from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<String> = texts.into_iter().flat_map(words).collect();
    set.into_iter().collect()
}

#[derive(Debug, Clone)]
pub struct WordTokenizer {
    /// Specials first, then the config's words in order (duplicates dropped).
    tokens: Vec<String>,
    index: HashMap<String, i64>,
    max_len: usize,
}

impl WordTokenizer {
    /// `vocab`: the config's words (specials are added in front; words are lowercased);
    /// `max_len`: the sequence length including `<bos>`.
    pub fn new(vocab: &[String], max_len: usize) -> WordTokenizer {
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        let mut index: HashMap<String, i64> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as i64))
            .collect();
        for w in vocab {
            let w = w.to_lowercase();
            if !index.contains_key(&w) {
                index.insert(w.clone(), tokens.len() as i64);
                tokens.push(w);
            }
        }
        WordTokenizer {
            tokens,
            index,
            max_len: max_len.max(1),
        }
    }

    /// Number of token ids (specials included): the embedding table's row count.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn token(&self, id: i64) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// `[<bos>, w1, w2, …]`, at most `max_len` ids (longer texts are truncated), no padding.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut ids = vec![BOS_ID];
        ids.extend(words(text).map(|w| self.index.get(&w).copied().unwrap_or(UNK_ID)));
        ids.truncate(self.max_len);
        ids
    }

    /// `(B, L)` int64 ids of a batch of instructions, padded with `<pad>` to the longest
    /// (`L ≤ max_len`; pads are masked out, so padding never changes what a model computes
    /// beyond floating-point rounding).
    pub fn encode_batch(&self, texts: &[&str], device: Device) -> Tensor {
        let seqs: Vec<Vec<i64>> = texts.iter().map(|t| self.encode(t)).collect();
        let l = seqs.iter().map(Vec::len).max().unwrap_or(1);
        let flat: Vec<i64> = seqs
            .into_iter()
            .flat_map(|mut s| {
                s.resize(l, PAD_ID);
                s
            })
            .collect();
        Tensor::from_slice(&flat)
            .reshape([texts.len() as i64, l as i64])
            .to(device)
    }
}
