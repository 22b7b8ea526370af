//! The MLLM judge (method-spec §2): trait, prompts, OpenAI-compatible client, rule judge, server.
