"""Golden references for cocoflow's Qwen-Image-Edit components (torch/tests/it/qwen.rs).

Builds a tiny random Qwen-Image-Edit pipeline with diffusers' and transformers' own classes
(`QwenImageTransformer2DModel`, `AutoencoderKLQwenImage`, `Qwen2_5_VLForConditionalGeneration`
from a `Qwen2_5_VLConfig`, a byte-level BPE `Qwen2Tokenizer` trained here, `Qwen2VLProcessor`),
saves it with `QwenImageEditPipeline.save_pretrained` in the layout of Qwen/Qwen-Image-Edit
(the transformer re-saved in shards + `diffusion_pytorch_model.safetensors.index.json`),
reloads it from disk and records what diffusers / transformers compute:

  tiny-qwen-image-edit/  the repository (checked in; the Rust tests load it)
  golden.safetensors     float32 tensors (inputs and outputs) and uint8 source images
  golden.json            token ids, image sizes, schedules, checksums, every call's settings

Run from the repository root with `.venv/bin/python torch/tests/golden/qwen/gen.py`
(diffusers 0.42.1, transformers 5.25.0, tokenizers 0.23.3, torch 2.11.0, torchvision 0.26.0,
Pillow 13.0.0). It is deterministic: a rerun rewrites the same bytes.

What the prompt-encoder references show about the reference pipeline (asserted below):
- `QwenImageEditPipeline._get_qwen_prompt_embeds` passes `input_ids`, `attention_mask`,
  `pixel_values` and `image_grid_thw` but not the processor's `mm_token_type_ids`, so
  transformers 5.25 cannot build Qwen2.5-VL's 3-D M-RoPE positions and uses 1-D positions
  `0..L` for every token (text and image). `prompt.mrope.*` records the 3-D variant too.
- `hidden_states[-1]` is the final RMS-normed state (transformers' `tie_last_hidden_states`).
- A single PIL image is resized by the pipeline to `calculate_dimensions(1024², w/h)` with
  PIL's Lanczos before the processor sees it; the processor then resizes it (bicubic,
  antialiased, on uint8) to `smart_resize`'s size.
"""

import json
import os
import shutil

os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImageTransformer2DModel,
)
import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as qwen_edit  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, pre_tokenizers, trainers  # noqa: E402
from tokenizers.models import BPE  # noqa: E402
from transformers import (  # noqa: E402
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.models.qwen2 import tokenization_qwen2  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "tiny-qwen-image-edit")

#: Qwen2.5-VL's special tokens, in the order of the published tokenizer.
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


CORPUS = [
    "Describe the key features of the input image (color, shape, size, texture, objects, background), "
    "then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where appropriate.",
    "Replace the red car with a blue bicycle.",
    "Make the sky look like a sunset with orange and pink clouds.",
    "Add a small hat to the dog sitting on the left.",
    "Remove the person standing next to the tree.",
    "Change the color of the wall to light green.",
    "Turn the photo into a watercolor painting.",
    "Put sunglasses on the woman and make her smile.",
    "Add 3 red balloons tied to the bench.",
    "It's a dog's life; they're happy, we'll see.",
    "system user assistant",
]

#: (instruction, source image size (width, height)) pairs of the prompt-encoder references.
PAIRS = [
    ("Replace the red car with a blue bicycle.", (48, 32)),
    ("Make the sky look like a sunset!", (40, 40)),
    ("add 3 balloons", (23, 61)),
    ("Remove the person on the left; keep everything else exactly the same.", (64, 36)),
    ("Change the café sign to say “Bonjour” — in gold letters.", (50, 50)),
    ("", (30, 45)),
    (" ", (45, 30)),
    ("multiple\t\ttabs\nand\nnewlines   ", (17, 90)),
    ("日本語のテキストを追加する", (77, 33)),
    ("Turn day into night, numbers 1234567890 and 3.14", (36, 64)),
    ("<|im_end|> literal special tokens <|vision_start|>", (56, 42)),
    ("Make her smile and add sunglasses", (90, 18)),
]

#: Sizes (width, height) of PIL Lanczos resizes recorded in full (small targets).
LANCZOS_CASES = [((48, 32), (96, 64)), ((23, 61), (40, 31)), ((90, 18), (33, 47)), ((40, 40), (40, 40))]

#: Reductions of both sides (Pillow 13 picks the pass order: vertical first when
#: `H - h > 2 (W - w)`), on either side of the rule and at its boundary; images from their own
#: generator, recorded after everything else.
LANCZOS_REDUCTIONS = [((74, 63), (30, 7)), ((39, 44), (35, 32)), ((40, 40), (13, 15)), ((20, 68), (18, 3)),
                      ((50, 60), (40, 40)), ((50, 61), (40, 40)), ((120, 90), (64, 48)), ((64, 200), (60, 100))]

#: Processor-only images (width, height): multiples of 28 inside the pixel limits (no resize),
#: a downscale, an upscale to `min_pixels`, and an odd size.
PROCESSOR_SIZES = [(84, 56), (112, 112), (300, 200), (20, 30), (57, 131)]

IMAGE_LIMITS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def perturb(module, gen, scale=0.1):
    """Adds noise to every norm weight and bias (they start as exact ones and zeros), so that
    loading them wrongly shows in the outputs."""
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim == 1 or name.endswith("gamma"):
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def make_tokenizer():
    bpe = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                tokenization_qwen2.Regex(tokenization_qwen2.PRETOKENIZE_REGEX), behavior="isolated", invert=False
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=420, min_frequency=1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tok = Qwen2Tokenizer(
        vocab=model_json["vocab"],
        merges=merges,
        unk_token=None,
        eos_token=SPECIAL_TOKENS[0],
        pad_token=SPECIAL_TOKENS[0],
        model_max_length=32768,
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.eos_token = "<|im_end|>"
    return tok


def smooth_image(gen, width, height):
    """A smooth random RGB image: a 5×5 random grid upsampled bicubically, plus fine noise."""
    base = (torch.rand(1, 3, 5, 5, generator=gen) * 255).float()
    img = torch.nn.functional.interpolate(base, size=(height, width), mode="bicubic", align_corners=False)
    img = img + torch.randn(img.shape, generator=gen) * 12
    return img.clamp(0, 255).round().to(torch.uint8)[0]  # (3, H, W)


def to_pil(chw):
    return PIL.Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def from_pil(pil):
    return torch.from_numpy(np.asarray(pil.convert("RGB"))).permute(2, 0, 1).contiguous()


def checksum(chw):
    """A position-weighted checksum of a uint8 image, as the Rust test computes it:
    Σ byte[i]·(i mod 65521 + 1) over the (C, H, W) bytes, modulo 2^61 − 1."""
    b = chw.contiguous().view(-1).to(torch.int64)
    w = torch.arange(b.numel(), dtype=torch.int64) % 65521 + 1
    return int((b * w).sum().item() % (2**61 - 1))


def build_repo():
    shutil.rmtree(REPO, ignore_errors=True)
    os.makedirs(REPO)
    tokenizer = make_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS), ids
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**IMAGE_LIMITS),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**IMAGE_LIMITS),
    )
    gen = torch.Generator().manual_seed(0)

    torch.manual_seed(0)
    hidden = 32
    vl = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": hidden,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-6,
                # head_dim 16: the three M-RoPE sections (time, height, width) split its 8 frequencies
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                "bos_token_id": ids["<|endoftext|>"],
                "eos_token_id": ids["<|im_end|>"],
                "pad_token_id": ids["<|endoftext|>"],
            },
            vision_config={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 48,
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
    ).eval()
    perturb(vl, gen)

    torch.manual_seed(1)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=hidden,
        guidance_embeds=False,
        axes_dims_rope=(4, 6, 6),
    )
    perturb(transformer, gen)

    torch.manual_seed(2)
    vae = AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        latents_mean=[-0.7571, 0.1075, 0.9653, -0.2921],
        latents_std=[2.8184, 1.4541, 0.8, 1.9160],
    )
    perturb(vae, gen, scale=0.2)

    # Qwen/Qwen-Image-Edit's scheduler/scheduler_config.json
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        invert_sigmas=False,
        max_image_seq_len=8192,
        max_shift=0.9,
        num_train_timesteps=1000,
        shift=1.0,
        shift_terminal=0.02,
        stochastic_sampling=False,
        time_shift_type="exponential",
        use_beta_sigmas=False,
        use_dynamic_shifting=True,
        use_exponential_sigmas=False,
        use_karras_sigmas=False,
    )
    pipe = QwenImageEditPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=vl,
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
    )
    pipe.save_pretrained(REPO)
    # The real repository layout: a sharded transformer.
    tdir = os.path.join(REPO, "transformer")
    for f in os.listdir(tdir):
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            os.remove(os.path.join(tdir, f))
    transformer.save_pretrained(tdir, max_shard_size="60KB")
    assert os.path.exists(os.path.join(tdir, "diffusion_pytorch_model.safetensors.index.json"))


def main():
    build_repo()
    pipe = QwenImageEditPipeline.from_pretrained(REPO, torch_dtype=torch.float32)
    assert type(pipe.processor.image_processor).__name__ == "Qwen2VLImageProcessor", type(pipe.processor.image_processor)
    tensors = {}
    meta = {"tolerance_note": "max|a - b| / max|b| <= 1e-4 in float32 on CPU"}
    gen = torch.Generator().manual_seed(1234)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    # --- transformer ---------------------------------------------------------------------
    tf = pipe.transformer
    b, L = 2, 7
    tgt, src = (4, 6), (4, 4)  # packed grids (h/2, w/2) of target and source
    n_tgt, n_src = tgt[0] * tgt[1], src[0] * src[1]
    img_shapes = [[(1, *tgt), (1, *src)]] * b
    mask = torch.ones(b, L, dtype=torch.long)
    mask[1, 5:] = 0
    tf_in = {
        "tf.hidden_states": randn(b, n_tgt, 16),
        "tf.source": randn(b, n_src, 16),
        "tf.encoder_hidden_states": randn(b, L, 32),
        "tf.mask": mask.float(),
    }
    tensors.update(tf_in)
    timesteps = [1.0, 0.6, 0.05]
    meta["transformer"] = {
        "timesteps": timesteps,
        "timestep_of_row_1": "t / 2",
        "img_shapes": img_shapes[0],
        "text_len": L,
    }

    def tf_call(model, t, mask):
        hs = torch.cat([tf_in["tf.hidden_states"], tf_in["tf.source"]], dim=1)
        with torch.no_grad():
            return model(
                hidden_states=hs,
                encoder_hidden_states=tf_in["tf.encoder_hidden_states"],
                encoder_hidden_states_mask=mask,
                timestep=torch.tensor([t, t / 2]),
                img_shapes=img_shapes,
                return_dict=False,
            )[0]

    for ti, t in enumerate(timesteps):
        tensors[f"tf.out.mask.t{ti}"] = tf_call(tf, t, mask)
        tensors[f"tf.out.nomask.t{ti}"] = tf_call(tf, t, None)
    tf_zero = QwenImageTransformer2DModel.from_pretrained(os.path.join(REPO, "transformer"), zero_cond_t=True)
    assert tf_zero.config.zero_cond_t
    tensors["tf.out_zero_cond_t.mask.t1"] = tf_call(tf_zero, timesteps[1], mask)

    # --- VAE -----------------------------------------------------------------------------
    vae = pipe.vae
    image = (torch.rand(2, 3, 32, 48, generator=gen) * 2 - 1).clamp(-1, 1)
    z = randn(2, 4, 4, 6)
    with torch.no_grad():
        posterior = vae.encode(image.unsqueeze(2)).latent_dist
        tensors["vae.image"] = image
        tensors["vae.mean"] = posterior.mode()[:, :, 0]
        tensors["vae.logvar"] = posterior.logvar[:, :, 0]
        norm = pipe._encode_vae_image(image.unsqueeze(2), generator=None)  # (z − mean) / std
        tensors["vae.normalized"] = norm[:, :, 0]
        tensors["vae.packed"] = pipe._pack_latents(norm, 2, 4, 4, 6)
        tensors["vae.z"] = z
        tensors["vae.decoded"] = vae.decode(z.unsqueeze(2)).sample[:, :, 0]
    meta["vae"] = {"latents_mean": vae.config.latents_mean, "latents_std": vae.config.latents_std}

    # --- scheduler -----------------------------------------------------------------------
    schedules = []
    for seq_len, steps in [(24, 4), (256, 10), (1024, 40), (4096, 50), (8192, 2), (6, 2), (3600, 40)]:
        sched = FlowMatchEulerDiscreteScheduler.from_pretrained(os.path.join(REPO, "scheduler"))
        cfg = sched.config
        mu = qwen_edit.calculate_shift(
            seq_len, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
        )
        sched.set_timesteps(steps, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        schedules.append(
            {
                "image_seq_len": seq_len,
                "steps": steps,
                "mu": mu,
                "sigmas": [float(s) for s in sched.sigmas],
                "timesteps": [float(t) for t in sched.timesteps],
            }
        )
    meta["schedules"] = schedules

    # --- true CFG (the pipeline's lines, QwenImageEditPipeline.__call__) -------------------
    cond, uncond = randn(2, 24, 16), randn(2, 24, 16)
    true_cfg_scale = 4.0
    comb_pred = uncond + true_cfg_scale * (cond - uncond)
    cond_norm = torch.norm(cond, dim=-1, keepdim=True)
    noise_norm = torch.norm(comb_pred, dim=-1, keepdim=True)
    tensors["cfg.cond"], tensors["cfg.uncond"] = cond, uncond
    tensors["cfg.out"] = comb_pred * (cond_norm / noise_norm)
    meta["cfg"] = {"true_cfg_scale": true_cfg_scale}

    # --- image sizes ---------------------------------------------------------------------
    sizes = [(48, 32), (32, 48), (1, 1), (1000, 3), (1920, 1080), (1024, 1024), (513, 769), (77, 33), (6000, 40)]
    meta["calculate_dimensions"] = [
        {"width": w, "height": h, "out": list(qwen_edit.calculate_dimensions(1024 * 1024, w / h)[:2])}
        for w, h in sizes
    ]
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    meta["smart_resize"] = [
        {"height": h, "width": w, "out": list(smart_resize(h, w, 28, 56 * 56, 28 * 28 * 1280))}
        for w, h in [s for s in sizes if s != (1000, 3)] + [(1152, 928), (980, 980), (1036, 1036), (928, 1152), (1024, 1024)]
    ] + [
        {"height": h, "width": w, "min": 3136, "max": 12544, "out": list(smart_resize(h, w, 28, 3136, 12544))}
        for w, h in [(1024, 1024), (1152, 928), (20, 30), (300, 200), (57, 131), (1216, 864)]
    ]

    # --- PIL Lanczos (the pipeline's resize of a PIL source image) ------------------------
    lanczos = []
    for i, ((w0, h0), (w1, h1)) in enumerate(LANCZOS_CASES):
        img = smooth_image(gen, w0, h0)
        out = from_pil(to_pil(img).resize((w1, h1), resample=PIL.Image.LANCZOS))
        tensors[f"lanczos.{i}.in"] = img
        tensors[f"lanczos.{i}.out"] = out
        lanczos.append({"in": [w0, h0], "out": [w1, h1]})
    meta["lanczos"] = lanczos

    # --- the image processor alone ---------------------------------------------------------
    proc = pipe.processor.image_processor
    processor_cases = []
    for i, (w, h) in enumerate(PROCESSOR_SIZES):
        img = smooth_image(gen, w, h)
        out = proc(images=[to_pil(img)], return_tensors="pt")
        tensors[f"proc.{i}.image"] = img
        tensors[f"proc.{i}.pixel_values"] = out["pixel_values"]
        processor_cases.append({"width": w, "height": h, "grid_thw": out["image_grid_thw"].tolist()})
    meta["processor"] = processor_cases

    # --- vision tower: two images in one call (windows, padding windows, cu_seqlens) ---------
    imgs = [smooth_image(gen, 112, 84), smooth_image(gen, 70, 98)]
    out = proc(images=[to_pil(x) for x in imgs], return_tensors="pt")
    with torch.no_grad():
        feats = pipe.text_encoder.model.get_image_features(out["pixel_values"], out["image_grid_thw"]).pooler_output
    tensors["vision.0.image"], tensors["vision.1.image"] = imgs
    tensors["vision.embeds"] = torch.cat(feats, dim=0)
    meta["vision"] = {"grid_thw": out["image_grid_thw"].tolist()}

    # --- prompt encoder: (instruction, image) pairs as the pipeline encodes them ------------
    template = pipe.prompt_template_encode
    drop = pipe.prompt_template_encode_start_idx
    meta["prompt"] = {"template": template, "drop_idx": drop, "pairs": []}
    sources = []
    for i, (text, (w, h)) in enumerate(PAIRS):
        src_img = smooth_image(gen, w, h)
        sources.append(src_img)
        cw, ch, _ = qwen_edit.calculate_dimensions(1024 * 1024, w / h)
        prompt_image = pipe.image_processor.resize(to_pil(src_img), ch, cw)  # the pipeline's step 3
        resized = from_pil(prompt_image)
        with torch.no_grad():
            pe, pe_mask = pipe.encode_prompt(prompt=[text], image=prompt_image, device="cpu")
        assert pe_mask is None  # one prompt: every token valid, the pipeline drops the mask
        model_inputs = pipe.processor(text=[template.format(text)], images=prompt_image, padding=True, return_tensors="pt")
        tensors[f"prompt.{i}.source"] = src_img
        tensors[f"prompt.{i}.embeds"] = pe[0]
        meta["prompt"]["pairs"].append(
            {
                "instruction": text,
                "source_size": [w, h],
                "condition_size": [cw, ch],
                "condition_checksum": checksum(resized),
                "input_ids": model_inputs["input_ids"][0].tolist(),
                "grid_thw": model_inputs["image_grid_thw"].tolist(),
            }
        )
        if i == 0:
            tensors["prompt.0.pixel_values"] = model_inputs["pixel_values"]

    # A batch of three: padding, the attention mask, the per-row slice and the zero padding.
    batch = [1, 3, 7]
    b_images = [
        pipe.image_processor.resize(to_pil(sources[i]), *reversed(qwen_edit.calculate_dimensions(1024 * 1024, PAIRS[i][1][0] / PAIRS[i][1][1])[:2]))
        for i in batch
    ]
    b_texts = [PAIRS[i][0] for i in batch]
    with torch.no_grad():
        pe, pe_mask = pipe._get_qwen_prompt_embeds(prompt=b_texts, image=b_images, device="cpu")
    model_inputs = pipe.processor(text=[template.format(t) for t in b_texts], images=b_images, padding=True, return_tensors="pt")
    tensors["prompt.batch.embeds"] = pe
    tensors["prompt.batch.mask"] = pe_mask.float()
    meta["prompt"]["batch"] = {
        "pairs": batch,
        "input_ids": model_inputs["input_ids"].tolist(),
        "attention_mask": model_inputs["attention_mask"].tolist(),
        "padding_side": pipe.processor.tokenizer.padding_side,
    }

    # What the pipeline's text-encoder call is: 1-D positions, the normed last state.
    with torch.no_grad():
        args = {k: model_inputs[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
        full = pipe.text_encoder(**args, output_hidden_states=True)
        base = pipe.text_encoder.model(**args)
        assert torch.equal(full.hidden_states[-1], base.last_hidden_state)
        seq = model_inputs["input_ids"].shape[1]
        pos1d = torch.arange(seq).view(1, 1, -1).expand(3, len(batch), -1)
        explicit = pipe.text_encoder.model(**args, position_ids=pos1d).last_hidden_state
        assert torch.equal(explicit, base.last_hidden_state), "the pipeline's call uses 1-D positions"
        # The 3-D M-RoPE variant (what the model computes when given `mm_token_type_ids`).
        pipe.text_encoder.model.rope_deltas = None
        mrope = pipe.text_encoder.model(**args, mm_token_type_ids=model_inputs["mm_token_type_ids"]).last_hidden_state
        assert not torch.allclose(mrope, base.last_hidden_state)
        pos3d, _ = pipe.text_encoder.model.get_rope_index(
            model_inputs["input_ids"],
            mm_token_type_ids=model_inputs["mm_token_type_ids"],
            image_grid_thw=model_inputs["image_grid_thw"],
            attention_mask=model_inputs["attention_mask"],
        )
        tensors["prompt.batch.hidden_1d"] = base.last_hidden_state
        tensors["prompt.batch.hidden_mrope"] = mrope
        tensors["prompt.batch.position_ids_mrope"] = pos3d.float()

    # Left padding (a tokenizer_config with padding_side "left"): positions shift with the pads.
    pipe.processor.tokenizer.padding_side = "left"
    with torch.no_grad():
        pe_left, mask_left = pipe._get_qwen_prompt_embeds(prompt=b_texts, image=b_images, device="cpu")
    pipe.processor.tokenizer.padding_side = "right"
    tensors["prompt.batch_left.embeds"] = pe_left
    tensors["prompt.batch_left.mask"] = mask_left.float()

    # --- one whole 4-step edit with true CFG ------------------------------------------------
    # `calculate_dimensions` fixes the condition area at 1024²; the edit uses 96×64 (a tiny
    # model's size) by replacing it for this call only. cocoflow takes the area as a setting.
    edit_area = 96 * 64
    original = qwen_edit.calculate_dimensions
    qwen_edit.calculate_dimensions = lambda area, ratio: original(edit_area, ratio)
    edits = []
    try:
        for j, (text, (w, h)) in enumerate([("Add a red hat to the cat", (60, 40)), ("Make the sky look like a sunset!", (45, 45))]):
            src_img = smooth_image(gen, w, h)
            cw, ch, _ = original(edit_area, w / h)
            n = (ch // 16) * (cw // 16)
            latents = randn(1, n, 16)
            call = dict(
                image=to_pil(src_img),
                prompt=[text],
                negative_prompt=[" "],
                true_cfg_scale=4.0,
                num_inference_steps=4,
                max_sequence_length=512,
            )
            with torch.no_grad():
                out_latents = pipe(**call, latents=latents.clone(), output_type="latent").images
                out_image = pipe(**call, latents=latents.clone(), output_type="pt").images
            tensors[f"edit.{j}.source"] = src_img
            tensors[f"edit.{j}.latents"] = latents
            tensors[f"edit.{j}.output_latents"] = out_latents
            tensors[f"edit.{j}.output"] = out_image.float()
            edits.append({"instruction": text, "negative": " ", "source_size": [w, h], "condition_size": [cw, ch]})
    finally:
        qwen_edit.calculate_dimensions = original
    meta["edit"] = {"condition_area": edit_area, "true_cfg_scale": 4.0, "num_inference_steps": 4, "edits": edits}

    # --- PIL Lanczos reductions (own generator: the references above do not move) ----------
    gen_r = torch.Generator().manual_seed(77)
    reductions = []
    for i, ((w0, h0), (w1, h1)) in enumerate(LANCZOS_REDUCTIONS):
        img = smooth_image(gen_r, w0, h0)
        tensors[f"lanczos_reduce.{i}.in"] = img
        tensors[f"lanczos_reduce.{i}.out"] = from_pil(to_pil(img).resize((w1, h1), resample=PIL.Image.LANCZOS))
        reductions.append({"in": [w0, h0], "out": [w1, h1]})
    meta["lanczos_reduce"] = reductions

    tensors = {k: v.detach().contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, os.path.join(HERE, "golden.safetensors"), metadata={"generator": "gen.py"})
    write_json(os.path.join(HERE, "golden.json"), meta)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(REPO) for f in fs)
    gold = os.path.getsize(os.path.join(HERE, "golden.safetensors"))
    print(f"repository: {total / 1e6:.2f} MB; golden tensors: {len(tensors)} ({gold / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
