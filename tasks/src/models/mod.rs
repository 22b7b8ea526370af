//! Editing policies: the `EditPolicy` backend trait, tiny-kontext (built in), LoRA adapters.
