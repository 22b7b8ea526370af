#!/usr/bin/env python3
"""A tiny, randomly initialised Qwen2.5-VL served by `transformers serve`: a judge server made
of real parts (transformers' OpenAI-compatible server, its Qwen2.5-VL model and processor
classes) for cocoflow's judge client tests (``torch/tests/it/judge_real_server.rs``).

``build OUT``: writes a model directory in the layout of the published Qwen2.5-VL checkpoints:

- ``config.json`` + ``model.safetensors``: ``Qwen2_5_VLForConditionalGeneration`` built from
  ``Qwen2_5_VLConfig`` with a 2-layer text model (hidden 64) and a 2-block vision tower (hidden
  32), random weights (seeded: the same bytes every time), float32;
- ``tokenizer.json`` + ``tokenizer_config.json``: a byte-level BPE trained here on a few lines
  of text (no download), through transformers' own ``Qwen2Tokenizer``, so it has the Qwen2
  pre-tokenizer (numbers split into single digits, as the real Qwen2.5-VL tokenizer does) and
  the Qwen2.5-VL special tokens (``<|im_start|>``, ``<|vision_start|>``, ``<|image_pad|>``...);
- ``chat_template.jinja``: the Qwen2.5-VL chat format (ChatML with a default system message;
  an image part becomes ``<|vision_start|><|image_pad|><|vision_end|>``), written here;
- ``processor_config.json`` (transformers 5's one file for the processor):
  ``Qwen2VLImageProcessor`` and ``Qwen2VLVideoProcessor`` with small pixel limits
  (``min_pixels`` 56², ``max_pixels`` 112²), so an image costs at most 16 vision tokens and
  requests stay cheap on a CPU.

``serve --model DIR --port P [--image-log FILE] [--exit-with-parent]``: runs
``transformers serve DIR`` on 127.0.0.1:P on the CPU, in this process (``--exit-with-parent``:
it exits when the process that started it is gone). One change is made for tests: with
``--image-log``, every call of ``Qwen2_5_VLProcessor`` appends one JSON line to FILE,
``{"images": [{"width", "height", "mean": [r, g, b]}...], "grid_thw": [[t, h, w]...]}``: the
images the served model's processor decoded from the request's data URLs (recorded in its
image processor's ``fetch_images``), in order (``mean``: the mean of each RGB channel, 0–255,
to tell images of one size apart), and the patch grid it made of them. This is the
observation point the tests use to check that images arrive in the order a prompt expects.
The server is otherwise unchanged: its API process runs the processor; the model runs in a
process of its own, which the hook does not touch.

``transformers serve`` needs ``fastapi``, ``uvicorn`` and ``openai`` (transformers' `serving`
extra; ``scripts/setup.sh`` installs them). It ignores ``logprobs``/``top_logprobs`` in chat
completions (transformers 5.25.0), so this server tests the judge's ``generate`` path; the
logprobs reader is tested against recorded vLLM and SGLang responses (``torch/tests/golden/judge``).

Usage::

    .venv/bin/python tools/tiny_qwen_vl.py build target/tiny-qwen-vl
    .venv/bin/python tools/tiny_qwen_vl.py serve --model target/tiny-qwen-vl --port 8011
    cocoflow judge check --base-url http://127.0.0.1:8011/v1 \\
        --model target/tiny-qwen-vl --extraction generate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SEED = 0

#: Qwen2.5-VL's special tokens, in the order of the published tokenizer (ids follow the BPE).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

#: The ChatML format of Qwen2.5-VL: a default system message when the conversation has none;
#: images and videos become a vision block in place.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{%- endif -%}"
    "<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in part -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)

#: Text the BPE is trained on: judge-like English, JSON and digits.
CORPUS = [
    "You review instruction-guided image edits. You get the source image first, then the edited "
    "image, then the instruction that was given to the editor.",
    "Answer with a single JSON object and no other text. Reply with exactly this JSON object.",
    '{"editing_effect": 4, "visual_quality": 5}',
    '{"score": 3} {"instruction_clarity": 10, "mask_accuracy": 9, "target_prominence": 8}',
    '{"edit_type": "replace", "edited_object": "the red ball", "bounding_box": [12, 30, 48, 61]}',
    '{"reasoning": "the background is unchanged", "consistency_score": 7}',
    "Editing instruction: change the colour of the car to blue. Remove the cup from the table.",
    "Mask (white = edited region, black = untouched). Source image (before the edit). Edited "
    "image (after the edit).",
    "naturalness artifacts editing_success overediting prompt_compliance visual_naturalness "
    "physical_integrity refined_instruction",
    "0 1 2 3 4 5 6 7 8 9 10 0-5 1-10 0-10 1-5",
]

IMAGE_LIMITS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


def build(out: Path) -> None:
    """Writes the model directory (module docs)."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )
    from transformers.models.qwen2 import tokenization_qwen2

    out.mkdir(parents=True, exist_ok=True)

    # A byte-level BPE with the Qwen2 pre-tokenizer (its regex, from transformers), trained here.
    bpe = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                tokenization_qwen2.Regex(tokenization_qwen2.PRETOKENIZE_REGEX),
                behavior="isolated",
                invert=False,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=480,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    vocab = model_json["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token=SPECIAL_TOKENS[0],
        pad_token=SPECIAL_TOKENS[0],
        model_max_length=4096,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.eos_token = "<|im_end|>"  # the instruct models' end of turn
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS), ids
    digits = tokenizer.tokenize("10")
    assert len(digits) == 2, f"numbers must split into digits: {digits}"

    image_processor = Qwen2VLImageProcessor(**IMAGE_LIMITS)
    video_processor = Qwen2VLVideoProcessor(**IMAGE_LIMITS)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )

    hidden = 64
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            # head_dim 16: the three M-RoPE sections (time, height, width) split its 8 frequencies
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(SEED)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    processor.save_pretrained(out)
    print(
        f"[tiny-qwen-vl] {out}: vocab {len(tokenizer)}, "
        f"{sum(p.numel() for p in model.parameters())} parameters"
    )


def install_image_log(path: Path) -> None:
    """Makes the processor log the images it decodes for each call (module docs).

    Two wrappers: `Qwen2VLImageProcessor.fetch_images` (where the processor turns each image
    URL into pixels) records every decoded image, in order; `Qwen2_5_VLProcessor.__call__`
    writes them, with the patch grid it made, as one JSON line per call.
    """
    import threading

    import numpy as np
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor

    seen = threading.local()
    fetch, call = Qwen2VLImageProcessor.fetch_images, Qwen2_5_VLProcessor.__call__

    def describe(image) -> dict:
        if hasattr(image, "convert"):  # a PIL image
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
        else:  # a tensor or an array, (C, H, W) as `load_image_as_tensor` gives, or (H, W, C)
            rgb = np.asarray(image.cpu() if hasattr(image, "cpu") else image, dtype=np.float64)
            if rgb.ndim == 3 and rgb.shape[0] in (1, 3) and rgb.shape[-1] not in (1, 3):
                rgb = rgb.transpose(1, 2, 0)
        h, w = rgb.shape[:2]
        mean = rgb.reshape(h * w, -1).mean(axis=0)
        return {"width": int(w), "height": int(h), "mean": [round(float(m), 3) for m in mean]}

    def fetch_logged(self, image_url_or_urls):
        out = fetch(self, image_url_or_urls)
        if isinstance(image_url_or_urls, str) and hasattr(seen, "images"):  # a URL decoded
            seen.images.append(describe(out))
        return out

    def call_logged(self, *args, **kwargs):
        seen.images = []
        try:
            result = call(self, *args, **kwargs)
            grid = result.get("image_grid_thw")
            line = {
                "images": seen.images,
                "grid_thw": [] if grid is None else [[int(v) for v in g] for g in grid],
            }
        finally:
            del seen.images
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        return result

    Qwen2VLImageProcessor.fetch_images = fetch_logged
    Qwen2_5_VLProcessor.__call__ = call_logged


def exit_with_parent() -> None:
    """Exits when the process that started this one is gone (a test that panicked and left
    nothing to kill the server); the model's process follows, as `transformers serve` makes
    it exit with its parent."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def serve(args: argparse.Namespace) -> None:
    """`transformers serve MODEL` on 127.0.0.1:PORT, CPU, in this process (module docs)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if args.image_log:
        install_image_log(Path(args.image_log))
    if args.exit_with_parent:
        exit_with_parent()
    from transformers.cli.transformers import app

    argv = [
        "serve",
        str(args.model),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--log-level",
        args.log_level,
    ]
    sys.argv = ["transformers", *argv]
    app()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the tiny model directory")
    b.add_argument("out", type=Path)
    s = sub.add_parser("serve", help="transformers serve the tiny model on 127.0.0.1")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8011)
    s.add_argument("--image-log", type=Path, default=None)
    s.add_argument("--log-level", default="warning")
    s.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the parent process is gone (for tests)",
    )
    args = p.parse_args()
    if args.command == "build":
        build(args.out)
    else:
        serve(args)


if __name__ == "__main__":
    main()
