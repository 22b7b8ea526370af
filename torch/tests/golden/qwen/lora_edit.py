"""One QwenImageEditPipeline edit with true CFG and a LoRA loaded by `load_lora_weights`, for
the test `qwen_lora` of torch/tests/it (it runs this with the repository's .venv/bin/python).

    python lora_edit.py ARGS.json

ARGS.json: {"repo", "lora" (a directory with pytorch_lora_weights.safetensors, or null),
"inputs" (safetensors: `image` (3, H, W) uint8, `latents` packed (1, N, 4·z_dim)), "prompt",
"steps", "true_cfg_scale", "out", "plus" (optional: run `QwenImageEditPlusPipeline`)}. The
source is used at its own size: the pipeline's `calculate_dimensions` for the VAE's condition
area (1024²) is replaced for this call by the source's (width, height), as cocoflow encodes the
source at its size (the Plus pipeline's prompt-encoder image keeps its 384² area). Writes `out`
(safetensors): `latents` (the final packed latents) and `image` (1, 3, H, W) in [0, 1].
"""

import json
import sys

import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as qwen_edit
import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as qwen_edit_plus
import torch
from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
from PIL import Image
from safetensors.torch import load_file, save_file


def main():
    args = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)
    plus = bool(args.get("plus"))
    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    pipe = cls.from_pretrained(args["repo"], dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if args["lora"]:
        pipe.load_lora_weights(args["lora"])
        n = sum(1 for k, _ in pipe.transformer.named_modules() if k.endswith(".lora_A"))
        assert n > 0, "no LoRA layer was injected"
    t = load_file(args["inputs"])
    img = t["image"]
    h, w = img.shape[1], img.shape[2]
    if plus:
        original = qwen_edit_plus.calculate_dimensions
        vae_area = qwen_edit_plus.VAE_IMAGE_SIZE
        # (this module's version returns (width, height))
        qwen_edit_plus.calculate_dimensions = lambda area, ratio: (
            (w, h) if area == vae_area else original(area, ratio)
        )
    else:
        qwen_edit.calculate_dimensions = lambda area, ratio: (w, h, None)
    pil = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy(), "RGB")
    call = dict(
        image=pil,
        prompt=[args["prompt"]],
        negative_prompt=[" "],
        true_cfg_scale=args["true_cfg_scale"],
        height=h,
        width=w,
        num_inference_steps=args["steps"],
    )
    with torch.no_grad():
        lat = pipe(**call, latents=t["latents"].clone(), output_type="latent").images
        out = pipe(**call, latents=t["latents"].clone(), output_type="pt").images.float()
    save_file({"latents": lat.contiguous(), "image": out.contiguous()}, args["out"])


if __name__ == "__main__":
    main()
