//! The judge's response cache key: re-runs never pay for the same question twice.
//!
//! The key is BLAKE3 over the canonical JSON of everything that decides the server's answer:
//! the model, the prompt (`id@version` and its digest), the rendered system and user text
//! (which holds the instruction), the image digests in the order sent with their roles, and
//! the decoding parameters (temperature, max tokens, logprobs, top_logprobs, seed, JSON mode).
//! The base URL is not part of it: the same model behind another server answers the same.
//! Only responses that passed validation are stored ([`crate::net::cache`]); the value is the
//! raw response body.

use super::prompts::{ImageRole, Prompt};

/// Everything that decides a judge response (module docs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheKeyParts<'a> {
    pub model: &'a str,
    pub prompt: String,
    pub prompt_digest: String,
    pub system: &'a str,
    pub user: &'a str,
    pub instruction: &'a str,
    /// `(role, pixel digest)` in the order sent.
    pub images: Vec<(ImageRole, &'a str)>,
    pub decoding: serde_json::Value,
}

impl<'a> CacheKeyParts<'a> {
    pub fn new(model: &'a str, prompt: &Prompt) -> Self {
        CacheKeyParts {
            model,
            prompt: prompt.key(),
            prompt_digest: prompt.digest(),
            system: prompt.system,
            user: "",
            instruction: "",
            images: Vec::new(),
            decoding: serde_json::Value::Null,
        }
    }

    /// The cache key: BLAKE3 (hex) over the canonical JSON of the parts.
    pub fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"cocoflow-judge-response/1\0");
        h.update(&serde_json::to_vec(self).expect("key parts serialise"));
        h.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::prompts::{REWARD, REWARD_SINGLE};
    use super::*;

    fn parts() -> CacheKeyParts<'static> {
        let mut p = CacheKeyParts::new("m", &REWARD);
        p.user = "u";
        p.instruction = "i";
        p.images = vec![(ImageRole::Source, "a"), (ImageRole::Edited, "b")];
        p.decoding = serde_json::json!({"temperature": 0.0});
        p
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = parts().key();
        assert_eq!(base, parts().key());
        assert_eq!(base.len(), 64);
        let mut variants = Vec::new();
        let mut p = parts();
        p.model = "m2";
        variants.push(p.key());
        let mut p = parts();
        p.prompt = REWARD_SINGLE.key();
        variants.push(p.key());
        let mut p = parts();
        p.user = "u2";
        variants.push(p.key());
        let mut p = parts();
        p.instruction = "i2";
        variants.push(p.key());
        let mut p = parts();
        p.images.swap(0, 1);
        variants.push(p.key());
        let mut p = parts();
        p.images[1].1 = "c";
        variants.push(p.key());
        let mut p = parts();
        p.decoding = serde_json::json!({"temperature": 0.5});
        variants.push(p.key());
        for v in &variants {
            assert_ne!(v, &base);
        }
    }
}
