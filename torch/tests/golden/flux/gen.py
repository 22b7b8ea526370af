"""Golden references for cocoflow's FLUX.1 Kontext components (tasks/tests/flux.rs).

Builds a tiny random FLUX.1 Kontext pipeline with diffusers' and transformers' own classes,
saves it in the layout of black-forest-labs/FLUX.1-Kontext-dev (sharded transformer, CLIP
tokenizer as vocab.json + merges.txt without tokenizer.json, T5 tokenizer as spiece.model +
tokenizer.json), reloads it from disk and records what diffusers / transformers compute:

  tiny-flux-kontext/   the repository (checked in; the Rust tests load it)
  golden.safetensors   float32 tensors (inputs and outputs)
  golden.json          token ids, schedules, the settings of every recorded call

Run from the repository root with `.venv/bin/python torch/tests/golden/flux/gen.py`
(diffusers 0.42.1, transformers 5.25.0, tokenizers 0.23.3, sentencepiece, torch 2.11.0).
It is deterministic: a rerun rewrites the same bytes.
"""

import io
import json
import os
import shutil

os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxTransformer2DModel,
)
from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "tiny-flux-kontext")

# Text the tokenizers are trained on: editing instructions like the ones cocoflow sees.
CORPUS = [
    "Replace the red car with a blue bicycle.",
    "Make the sky look like a sunset with orange and pink clouds.",
    "Add a small hat to the dog sitting on the left.",
    "Remove the person standing next to the tree.",
    "Change the color of the wall to light green.",
    "Turn the photo into a watercolor painting.",
    "Put sunglasses on the woman and make her smile.",
    "Replace the text on the sign with the word hello.",
    "Make it snow in the background and add footprints.",
    "Change the season to autumn, with yellow and red leaves.",
    "Add two birds flying above the house.",
    "Remove the watermark in the bottom right corner.",
    "Make the cat look like a tiger, keep the pose.",
    "Replace the cup of coffee with a glass of orange juice.",
    "Turn day into night and switch on the street lights.",
    "Add a rainbow over the mountains and the lake.",
    "Change the shirt from white to dark blue, keep everything else.",
    "Make the old building look brand new.",
    "Erase the cables and the poles from the picture.",
    "Add 3 red balloons tied to the bench.",
    "The café on the corner sells croissants for 2.50 euros.",
    "It's a dog's life; they're happy, we'll see, I'm sure you'd agree.",
    "Numbers like 1234567890 and 3.14 should be split into digits.",
    "Keep the face, the hair and the background exactly the same!",
    "Über die Straße gehen zwei Kinder mit einem großen Ball.",
    "Make the photo black and white except for the red umbrella.",
    "Swap the positions of the two chairs in the room.",
    "Add a reflection of the moon in the water.",
    "Replace the sandwich on the plate with a slice of pizza.",
    "Make the man's beard longer and grey.",
]

# Instructions whose token ids are recorded for both tokenizers.
INSTRUCTIONS = [
    "Replace the red car with a blue bicycle.",
    "",
    "make the SKY look like a Sunset!!!",
    "Add 3 cats, 2 dogs and 10 birds to the garden",
    "Remove the person on the left; keep everything else exactly the same.",
    "Change the café sign to say “Bonjour” — in gold letters.",
    "Turn the photo into a watercolor painting (soft edges, pastel colors).",
    "  leading and trailing spaces   ",
    "multiple\t\ttabs\nand\nnewlines",
    "It's the dog's ball; we'll fix it, they've said, I'm sure, you'd agree, they're right",
    "ÜBER GRÖSSE straße naïve façade",
    "日本語のテキストを追加する",
    "emoji 😀👍 test",
    "numbers 1234567890 and 3.14159 and -42%",
    "<|startoftext|> literal special tokens <|endoftext|>",
    "</s> t5 special <pad> tokens <unk> <extra_id_0>",
    "repeat " * 100,
    "a" * 300,
    "MiXeD CaSe WoRdS",
    "punctuation!?.,:;'\"()[]{}<>@#$&*+=/\\|^~`",
    "   ",
    "new\r\nline\u00a0nbsp\u2003em space",
    "Ωmega αβγ ﬁne ligature Ⅻ",
    "Make her smile and add sunglasses",
]

CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_alphabet():
    """The 256 byte-level symbols in GPT-2 / CLIP order: printable bytes map to themselves,
    the others to the code points from 256 on."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def make_clip_tokenizer(out):
    """A byte-level BPE trained with CLIP's normaliser and pre-tokeniser, written as CLIP's
    vocab.json (bytes, bytes + '</w>', merges, then the two special tokens last) and
    merges.txt, with FLUX's tokenizer_config.json and special_tokens_map.json."""
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS, trainer)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in json.loads(tok.to_str())["model"]["merges"]]
    base = byte_alphabet()
    tokens = base + [b + "</w>" for b in base]
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    added = {
        str(vocab[t]): {
            "content": t,
            "lstrip": False,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in (BOS, EOS)
    }
    write_json(
        os.path.join(out, "tokenizer_config.json"),
        {
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "bos_token": BOS,
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "eos_token": EOS,
            "errors": "replace",
            "model_max_length": 77,
            "pad_token": EOS,
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": EOS,
        },
    )
    tok_obj = lambda t: {"content": t, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}  # noqa: E731
    write_json(
        os.path.join(out, "special_tokens_map.json"),
        {"bos_token": tok_obj(BOS), "eos_token": tok_obj(EOS), "pad_token": EOS, "unk_token": tok_obj(EOS)},
    )
    return vocab


def make_t5_tokenizer(out):
    """A SentencePiece unigram model (pad 0, eos 1, unk 2, as T5's), its tokenizer.json as
    transformers converts it, and FLUX's tokenizer_config.json (100 extra ids)."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=buf,
        model_type="unigram",
        vocab_size=280,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    stage = out + ".stage"
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    with open(os.path.join(stage, "spiece.model"), "wb") as f:
        f.write(buf.getvalue())
    write_json(
        os.path.join(stage, "tokenizer_config.json"),
        {
            "eos_token": "</s>",
            "extra_ids": 100,
            "model_max_length": 512,
            "pad_token": "<pad>",
            "tokenizer_class": "T5Tokenizer",
            "unk_token": "<unk>",
        },
    )
    T5Tokenizer.from_pretrained(stage).save_pretrained(out)
    shutil.copy(os.path.join(stage, "spiece.model"), os.path.join(out, "spiece.model"))
    shutil.rmtree(stage)


def perturb(module, gen, scale=0.1):
    """Adds noise to every 1-D parameter (norm weights, biases), so that loading them
    wrongly shows in the outputs (they start as exact ones and zeros)."""
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def build_repo():
    shutil.rmtree(REPO, ignore_errors=True)
    os.makedirs(REPO)
    tmp = os.path.join(HERE, ".tokenizers.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vocab = make_clip_tokenizer(os.path.join(tmp, "tokenizer"))
    make_t5_tokenizer(os.path.join(tmp, "tokenizer_2"))
    t5_vocab_size = len(json.load(open(os.path.join(tmp, "tokenizer_2", "tokenizer.json")))["model"]["vocab"])
    t5_vocab_size = max(t5_vocab_size, 1 + max(
        t["id"] for t in json.load(open(os.path.join(tmp, "tokenizer_2", "tokenizer.json")))["added_tokens"]
    ))

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        out_channels=None,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    perturb(transformer, gen)
    torch.manual_seed(1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[8, 16, 16],
        layers_per_block=2,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=True,
    )
    perturb(vae, gen)
    torch.manual_seed(2)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=32,
            bos_token_id=vocab[BOS],
            eos_token_id=2,  # the legacy value FLUX's CLIP config has: pooled at argmax(ids)
            pad_token_id=1,
        )
    ).eval()
    perturb(clip, gen)
    torch.manual_seed(3)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=t5_vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            layer_norm_epsilon=1e-6,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            tie_word_embeddings=False,
        )
    ).eval()
    perturb(t5, gen)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )
    pipe = FluxKontextPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(tmp, "tokenizer")),
        text_encoder_2=t5,
        tokenizer_2=T5Tokenizer.from_pretrained(os.path.join(tmp, "tokenizer_2")),
        transformer=transformer,
    )
    pipe.save_pretrained(REPO)
    # The real repository layout: a sharded transformer ...
    for f in os.listdir(os.path.join(REPO, "transformer")):
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            os.remove(os.path.join(REPO, "transformer", f))
    transformer.save_pretrained(os.path.join(REPO, "transformer"), max_shard_size="150KB")
    # ... and the tokenizers as FLUX ships them (CLIP without tokenizer.json).
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(os.path.join(REPO, name))
        shutil.copytree(os.path.join(tmp, name), os.path.join(REPO, name))
    shutil.rmtree(tmp)


def main():
    build_repo()
    pipe = FluxKontextPipeline.from_pretrained(REPO, torch_dtype=torch.float32)
    assert not os.path.exists(os.path.join(REPO, "tokenizer", "tokenizer.json"))
    tensors = {}
    meta = {"tolerance_note": "max|a - b| / max|b| <= 1e-4 in float32 on CPU"}
    gen = torch.Generator().manual_seed(1234)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    # --- tokenizers ---------------------------------------------------------------------
    clip_ids = pipe.tokenizer(
        INSTRUCTIONS, padding="max_length", max_length=pipe.tokenizer_max_length, truncation=True
    ).input_ids
    meta["tokens"] = {
        "instructions": INSTRUCTIONS,
        "clip": clip_ids,
        "t5_max_length_16": pipe.tokenizer_2(INSTRUCTIONS, padding="max_length", max_length=16, truncation=True).input_ids,
        "t5_max_length_64": pipe.tokenizer_2(INSTRUCTIONS, padding="max_length", max_length=64, truncation=True).input_ids,
    }

    # --- text encoders ------------------------------------------------------------------
    prompts = [INSTRUCTIONS[0], INSTRUCTIONS[4], INSTRUCTIONS[16]]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    # a row without end-of-text token whose largest id is not first: the two pooling rules differ
    v = pipe.text_encoder.config.vocab_size
    odd = torch.tensor([[5, v // 2, 40, v - 3, 7] + [11] * 72])
    ids = torch.cat([ids, odd])
    with torch.no_grad():
        out = pipe.text_encoder(ids)
        tensors["clip.ids"] = ids.to(torch.int64)
        tensors["clip.hidden"] = out.last_hidden_state
        tensors["clip.pooled"] = out.pooler_output
        eos_cfg = CLIPTextConfig.from_pretrained(os.path.join(REPO, "text_encoder"))
        eos_cfg.eos_token_id = pipe.tokenizer.eos_token_id
        clip_eos = CLIPTextModel.from_pretrained(os.path.join(REPO, "text_encoder"), config=eos_cfg).eval()
        tensors["clip.pooled_eos_rule"] = clip_eos(ids).pooler_output
    meta["clip"] = {"prompts": prompts, "eos_rule_eos_token_id": pipe.tokenizer.eos_token_id}
    t5_ids = pipe.tokenizer_2(prompts, padding="max_length", max_length=64, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        tensors["t5.ids"] = t5_ids.to(torch.int64)
        tensors["t5.hidden"] = pipe.text_encoder_2(t5_ids)[0]

    # --- transformer --------------------------------------------------------------------
    tf = pipe.transformer
    b, h2, w2, c4, L = 2, 4, 6, 16, 16
    n = h2 * w2
    img_ids = FluxKontextPipeline._prepare_latent_image_ids(b, h2, w2, "cpu", torch.float32)
    src_ids = img_ids.clone()
    src_ids[..., 0] = 1
    inputs = {
        "tf.hidden_states": randn(b, n, c4),
        "tf.source": randn(b, n, c4),
        "tf.encoder_hidden_states": randn(b, L, 32),
        "tf.pooled": randn(b, 32),
        "tf.txt_ids": torch.zeros(L, 3),
        "tf.img_ids": img_ids,
        "tf.img_ids_kontext": torch.cat([img_ids, src_ids]),
    }
    tensors.update(inputs)
    timesteps, guidances = [1.0, 0.6, 0.05], [1.0, 3.5]
    meta["transformer"] = {"timesteps": timesteps, "guidances": guidances, "timestep_of_row_1": "t / 2"}
    for ti, t in enumerate(timesteps):
        for gi, g in enumerate(guidances):
            for src in (False, True):
                hs = inputs["tf.hidden_states"]
                if src:
                    hs = torch.cat([hs, inputs["tf.source"]], dim=1)
                with torch.no_grad():
                    v = tf(
                        hidden_states=hs,
                        encoder_hidden_states=inputs["tf.encoder_hidden_states"],
                        pooled_projections=inputs["tf.pooled"],
                        timestep=torch.tensor([t, t / 2]),
                        guidance=torch.full([b], g),
                        img_ids=inputs["tf.img_ids_kontext" if src else "tf.img_ids"],
                        txt_ids=inputs["tf.txt_ids"],
                        return_dict=False,
                    )[0]
                key = f"tf.out.{'src' if src else 'nosrc'}.t{ti}.g{gi}"
                tensors[key] = v[:, :n]
                if src and (ti, gi) == (1, 1):
                    tensors[key + ".all_tokens"] = v  # target and source tokens
    # bfloat16: the same model cast, the first setting with source tokens
    tf_bf16 = FluxTransformer2DModel.from_pretrained(os.path.join(REPO, "transformer"), torch_dtype=torch.bfloat16)
    with torch.no_grad():
        bf = lambda x: x.to(torch.bfloat16)  # noqa: E731
        v = tf_bf16(
            hidden_states=bf(torch.cat([inputs["tf.hidden_states"], inputs["tf.source"]], dim=1)),
            encoder_hidden_states=bf(inputs["tf.encoder_hidden_states"]),
            pooled_projections=bf(inputs["tf.pooled"]),
            timestep=torch.tensor([0.6, 0.3]),
            guidance=torch.full([b], 3.5),
            img_ids=inputs["tf.img_ids_kontext"],
            txt_ids=inputs["tf.txt_ids"],
            return_dict=False,
        )[0]
    tensors["tf.out_bf16.src.t1.g1"] = v[:, :n].float()

    # --- VAE ----------------------------------------------------------------------------
    image = (torch.rand(2, 3, 32, 48, generator=gen) * 2 - 1).clamp(-1, 1)
    z = randn(2, 4, 8, 12)
    with torch.no_grad():
        mean = pipe.vae.encode(image).latent_dist.mode()
        tensors["vae.image"] = image
        tensors["vae.mean"] = mean
        norm = (mean - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        tensors["vae.packed"] = FluxKontextPipeline._pack_latents(norm, 2, 4, 8, 12)
        tensors["vae.z"] = z
        tensors["vae.decoded"] = pipe.vae.decode(z).sample

    # --- schedules ----------------------------------------------------------------------
    schedules = []
    for seq_len, steps in [(24, 4), (256, 10), (1024, 28), (4096, 50), (6000, 1), (1, 2), (4080, 10)]:
        sched = FlowMatchEulerDiscreteScheduler.from_pretrained(os.path.join(REPO, "scheduler"))
        cfg = sched.config
        mu = calculate_shift(seq_len, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
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

    # --- one whole edit -----------------------------------------------------------------
    edit_prompts = ["Add a red hat to the cat", "Make the sky look like a sunset!"]
    edit_image = torch.rand(2, 3, 32, 48, generator=gen)
    edit_latents = randn(2, n, c4)
    edit = {
        "prompts": edit_prompts,
        "height": 32,
        "width": 48,
        "num_inference_steps": 4,
        "guidance_scale": 2.5,
        "max_sequence_length": 16,
    }
    meta["edit"] = edit
    tensors["edit.image"] = edit_image
    tensors["edit.latents"] = edit_latents
    call = dict(
        image=edit_image,
        prompt=edit_prompts,
        height=32,
        width=48,
        max_area=32 * 48,
        num_inference_steps=4,
        guidance_scale=2.5,
        max_sequence_length=16,
        _auto_resize=False,
    )
    with torch.no_grad():
        pe, pooled, _ = pipe.encode_prompt(prompt=edit_prompts, prompt_2=None, max_sequence_length=16)
        tensors["edit.prompt_embeds"] = pe
        tensors["edit.pooled_prompt_embeds"] = pooled
        tensors["edit.output_latents"] = pipe(**call, latents=edit_latents.clone(), output_type="latent").images
        tensors["edit.output"] = pipe(**call, latents=edit_latents.clone(), output_type="pt").images.float()

    # --- bfloat16: the same repository loaded in bf16 ----------------------------------
    # (T5's `_keep_in_fp32_modules = ["wo"]` applies to float16 only; in bf16 `wo` is bf16)
    pipe16 = FluxKontextPipeline.from_pretrained(REPO, torch_dtype=torch.bfloat16)
    wo = pipe16.text_encoder_2.encoder.block[0].layer[1].DenseReluDense.wo.weight
    assert wo.dtype == torch.bfloat16, wo.dtype
    with torch.no_grad():
        tensors["t5.hidden_bf16"] = pipe16.text_encoder_2(t5_ids)[0].float()
        tensors["clip.pooled_bf16"] = pipe16.text_encoder(ids).pooler_output.float()
        tensors["vae.mean_bf16"] = pipe16.vae.encode(image.to(torch.bfloat16)).latent_dist.mode().float()
        tensors["edit_bf16.output_latents"] = pipe16(
            **call, latents=edit_latents.clone(), output_type="latent"
        ).images.float()
        tensors["edit_bf16.output"] = pipe16(**call, latents=edit_latents.clone(), output_type="pt").images.float()

    tensors = {k: v.detach().contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, os.path.join(HERE, "golden.safetensors"), metadata={"generator": "gen.py"})
    write_json(os.path.join(HERE, "golden.json"), meta)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(REPO) for f in fs)
    print(f"repository: {total / 1e6:.2f} MB; golden tensors: {len(tensors)}")


if __name__ == "__main__":
    main()
