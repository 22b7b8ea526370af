"""One FluxKontextPipeline edit with a LoRA loaded by `load_lora_weights`, for the test
`flux_lora` of torch/tests/it (it runs this with the repository's .venv/bin/python).

    python lora_edit.py ARGS.json

ARGS.json: {"repo", "lora" (a directory with pytorch_lora_weights.safetensors, or null),
"inputs" (safetensors: `image` (1, 3, H, W) in [0, 1], `latents` packed (1, N, 4C)),
"prompt", "height", "width", "steps", "guidance", "max_sequence_length", "out"}.
Writes `out` (safetensors): `latents` (the final packed latents) and `image` (1, 3, H, W).
"""

import json
import sys

import torch
from diffusers import FluxKontextPipeline
from safetensors.torch import load_file, save_file


def main():
    args = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)
    pipe = FluxKontextPipeline.from_pretrained(args["repo"], dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if args["lora"]:
        pipe.load_lora_weights(args["lora"])
        # diffusers must have adapted every attention projection the file names
        n = sum(1 for k, _ in pipe.transformer.named_modules() if k.endswith(".lora_A"))
        assert n > 0, "no LoRA layer was injected"
    t = load_file(args["inputs"])
    h, w = args["height"], args["width"]
    call = dict(
        image=t["image"],
        prompt=[args["prompt"]],
        height=h,
        width=w,
        max_area=h * w,
        num_inference_steps=args["steps"],
        guidance_scale=args["guidance"],
        max_sequence_length=args["max_sequence_length"],
        _auto_resize=False,
    )
    with torch.no_grad():
        lat = pipe(**call, latents=t["latents"].clone(), output_type="latent").images
        img = pipe(**call, latents=t["latents"].clone(), output_type="pt").images.float()
    save_file({"latents": lat.contiguous(), "image": img.contiguous()}, args["out"])


if __name__ == "__main__":
    main()
