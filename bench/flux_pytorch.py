#!/usr/bin/env python3
"""The PyTorch baseline of `cocoflow bench-flux`: diffusers' FluxTransformer2DModel + peft LoRA.

Measures what tasks/src/models/flux_kontext/bench.rs measures, with the same shapes, steps,
warm-ups and JSON keys, so bench/gpu_flux.sh can print cocoflow ÷ PyTorch ratios:

- rollout: K samples of one prompt, dpm2 over the FLUX σ schedule (method-spec §6), embedded
  guidance, the Kontext source tokens appended (as FluxKontextPipeline does), θ_old's adapter
  active, under torch.no_grad; latents only.
- nft: one DiffusionNFT step on a micro-batch at one timestep (method-spec §4): θ_old and
  reference (adapters disabled) forwards without grad, θ's forward with diffusers' gradient
  checkpointing (`enable_gradient_checkpointing()`: torch.utils.checkpoint per block), the NFT
  loss with region regularisers (λ_ner = λ_er = 0.2), backward, clip_grad_norm_(1.0), one
  torch.optim.AdamW step on θ's LoRA (lr 3e-4, betas (0.9, 0.999), wd 1e-4, eps 1e-8).
- vae: one AutoencoderKL decode of K latents at the rollout size.

Weights: the modules' default initialisation, drawn on the device in the model dtype. LoRA:
peft `LoraConfig(r, lora_alpha, target_modules=[attention projections])`, two adapters
(`default` = θ, `old` = θ_old) added with diffusers' `add_adapter`; B is U(±1e-3) instead of
zero (no matrix product on zeros), as cocoflow does. peft keeps adapters in float32 on a bf16
model by default; `--lora-dtype model` (default) casts them to the model dtype, which is what
cocoflow does, so both run the same arithmetic. Peak memory: torch.cuda.max_memory_allocated /
max_memory_reserved, reset at the start of each phase. Every timed region is bracketed by
torch.cuda.synchronize(); warm-ups are not timed.

  python3 bench/flux_pytorch.py --config tiny --device cpu --dtype f32 --k 2 --json
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
GIB = float(1 << 30)


def transformer_config(size):
    """FLUX.1-Kontext-dev/transformer/config.json, or the tiny test repository's."""
    if size == "full":
        return dict(patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
                    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                    pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
    return dict(patch_size=1, in_channels=16, out_channels=None, num_layers=2, num_single_layers=2,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))


def vae_config(size):
    """FLUX.1's vae/config.json, or a small VAE with the same 8x downsampling (as cocoflow's)."""
    blocks = (128, 256, 512, 512) if size == "full" else (8, 16, 16, 16)
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=blocks, layers_per_block=2,
                act_fn="silu", latent_channels=transformer_config(size)["in_channels"] // 4,
                norm_num_groups=32 if size == "full" else 4, scaling_factor=0.3611, shift_factor=0.1159,
                use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def memory(dev):
    if dev.type != "cuda":
        return dict(allocated_gib=None, peak_allocated_gib=None, reserved_gib=None, peak_reserved_gib=None)
    return dict(allocated_gib=torch.cuda.memory_allocated(dev) / GIB,
                peak_allocated_gib=torch.cuda.max_memory_allocated(dev) / GIB,
                reserved_gib=torch.cuda.memory_reserved(dev) / GIB,
                peak_reserved_gib=torch.cuda.max_memory_reserved(dev) / GIB)


def elapsed(dev, t0):
    sync(dev)
    return time.perf_counter() - t0


def construct(cls, cfg, dev, dtype):
    """`cls(**cfg)` with its default initialisation drawn directly on `dev` in `dtype`."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            m = cls(**cfg)
    finally:
        torch.set_default_dtype(old)
    return m.to(device=dev, dtype=dtype)


# --- the σ schedule and dpm2 (method-spec §6; the same formulas as tasks/src/sampling) ---

def sigmas(steps, image_seq_len, base_seq=256, max_seq=4096, base_shift=0.5, max_shift=1.15):
    """linspace(1, 1/N, N) with FLUX's exponential time shift (μ from the token count), then 0."""
    mu = base_shift + (max_shift - base_shift) / (max_seq - base_seq) * (image_seq_len - base_seq)
    e = math.exp(mu)
    out = [e / (e + (1.0 / (1.0 - i / steps) - 1.0)) for i in range(steps)]
    return out + [0.0]


def _lambda(s):
    """ln(α/σ); −∞ at σ = 1, +∞ at σ = 0."""
    if s >= 1.0:
        return -math.inf
    if s <= 0.0:
        return math.inf
    return math.log((1.0 - s) / s)


def dpm2(x, sig, velocity):
    """First step DDIM, middle steps DPM-Solver++(2M) in x0 form, last step to σ = 0."""
    steps = len(sig) - 1
    prev = None
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        x0 = x - velocity(x, s) * s
        last = i + 1 == steps or s_next <= 0.0
        if last and s_next <= 0.0:
            nxt = x0
        else:
            d = x0
            if prev is not None and not last:
                h = _lambda(s_next) - _lambda(s)
                d = x0 + (x0 - prev[0]) * (h / (2.0 * (_lambda(s) - prev[1])))
            ratio = s_next / s
            nxt = x * ratio + d * ((1.0 - s_next) - (1.0 - s) * ratio)
        prev = (x0, _lambda(s))
        x = nxt
    return x


# --- the DiffusionNFT loss (method-spec §4; the same formulas as tasks/src/nft/loss.rs) ---

def _per_sample_mean(x):
    return x.mean(dim=(1, 2, 3))


def _mean_valid(x, valid):
    return (x * valid).sum() / valid.sum().clamp_min(1.0)


def _region_distance(a, b, w):
    """Σ W·(a−b)² / (C·Σ W), 0 on an empty region."""
    d2 = (a - b).square()
    num = (w * d2).sum(dim=(1, 2, 3))
    den = w.sum(dim=(1, 2, 3)) * a.shape[1]
    return num / den.clamp_min(1e-12) * (den > 0).to(d2.dtype)


def nft_loss(x0, x_t, t, v_old, v_theta, v_ref, r, valid, z_src, edit_w, keep_w,
             beta=1.0, adv_clip=5.0, kl_weight=1e-4, lambda_ner=0.2, lambda_er=0.2, tau_plus=1e-3):
    t = t.view(-1, 1, 1, 1)
    v_pos = v_theta * beta + v_old * (1.0 - beta)
    v_neg = v_old * (1.0 + beta) - v_theta * beta
    x0_pos = x_t - t * v_pos
    x0_neg = x_t - t * v_neg

    def adaptive(xh):
        err = xh - x0
        w = _per_sample_mean(err.abs()).clamp_min(1e-5).detach()
        return _per_sample_mean(err.square()) / w

    policy = _mean_valid(r * adaptive(x0_pos) + (1.0 - r) * adaptive(x0_neg), valid) * (adv_clip / beta)
    kl = _mean_valid(_per_sample_mean((v_theta - v_ref).square()), valid) * kl_weight
    ner = (_region_distance(x0_pos, z_src, keep_w) - tau_plus).clamp_min(0.0)
    tau = _region_distance(x0, z_src, edit_w).detach()
    er = (tau - _region_distance(x0_neg, z_src, edit_w)).clamp_min(0.0)
    reg = _mean_valid(r * ner * lambda_ner + (1.0 - r) * er * lambda_er, valid)
    # the fractions of active hinges cocoflow reports (three host reads, as there)
    nvalid = max(valid.sum().item(), 1.0)
    _ = ((ner > 0).double() * valid.double()).sum().item() / nvalid
    _ = ((er > 0).double() * valid.double()).sum().item() / nvalid
    return policy + kl + reg


# --- Kontext inputs ---

def latent_image_ids(h, w, first, dev):
    rows = torch.arange(h, dtype=torch.float32, device=dev).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32, device=dev).view(1, w).expand(h, w)
    return torch.stack([torch.full((h, w), first, device=dev), rows, cols], -1).reshape(h * w, 3)


def pack(z):
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x, h, w):
    b, _, c4 = x.shape
    return x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


class Bench:
    def __init__(self, a):
        self.a = a
        if a.device == "cuda" and not torch.cuda.is_available():
            sys.exit("error: `--device cuda` but torch sees no CUDA device")
        use_cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
        self.dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        self.dtype = DTYPES[a.dtype]
        self.cfg = transformer_config(a.config)
        self.text_len = a.text_len or (512 if a.config == "full" else 16)
        if a.resolution % 16 or a.resolution < 16:
            sys.exit(f"error: `--resolution` must be a positive multiple of 16, got {a.resolution}")
        self.side = a.resolution // 8  # latent grid
        self.tokens = (self.side // 2) ** 2
        self.model = None

    def common(self, phase):
        a = self.a
        return {"impl": "pytorch", "phase": phase, "config": a.config, "resolution": a.resolution, "k": a.k,
                "steps": a.steps, "dtype": a.dtype, "lora_rank": a.lora_rank, "lora_alpha": a.lora_alpha,
                "text_len": self.text_len, "device": str(self.dev),
                "gpu": torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else None,
                "torch": torch.__version__}

    def build(self):
        from diffusers import FluxTransformer2DModel
        from peft import LoraConfig

        a, dev = self.a, self.dev
        torch.manual_seed(a.seed)
        t0 = time.perf_counter()
        m = construct(FluxTransformer2DModel, self.cfg, dev, self.dtype)
        m.requires_grad_(False)
        lora = LoraConfig(r=a.lora_rank, lora_alpha=a.lora_alpha, target_modules=TARGETS, init_lora_weights=True)
        m.add_adapter(lora, adapter_name="default")
        m.add_adapter(lora, adapter_name="old")
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_" in n:
                    if a.lora_dtype == "model":
                        p.data = p.data.to(self.dtype)
                    if "lora_B" in n:
                        p.uniform_(-1e-3, 1e-3)
        m.enable_gradient_checkpointing()
        m.set_adapter("default")
        self.build_s = elapsed(dev, t0)
        self.weights_gib = memory(dev)["allocated_gib"]
        self.lora_layers = sum(1 for n, _ in m.named_modules() if n.endswith("lora_A.default"))
        self.model = m

    def conditioning(self, b, one_prompt):
        cfg, dev, dt = self.cfg, self.dev, self.dtype
        rows = 1 if one_prompt else b
        txt = torch.randn(rows, self.text_len, cfg["joint_attention_dim"], device=dev, dtype=dt).repeat(b // rows, 1, 1)
        pooled = torch.randn(rows, cfg["pooled_projection_dim"], device=dev, dtype=dt).repeat(b // rows, 1)
        source = torch.randn(rows, self.tokens, cfg["in_channels"], device=dev, dtype=dt).repeat(b // rows, 1, 1)
        s = self.side // 2
        img_ids = torch.cat([latent_image_ids(s, s, 0.0, dev), latent_image_ids(s, s, 1.0, dev)], 0)
        txt_ids = torch.zeros(self.text_len, 3, device=dev)
        return dict(txt=txt, pooled=pooled, source=source, img_ids=img_ids, txt_ids=txt_ids)

    def velocity(self, c, x, t, g):
        """FluxKontextPipeline's transformer call: source tokens appended, output sliced."""
        n = x.shape[1]
        hidden = torch.cat([x.to(self.dtype), c["source"]], dim=1)
        out = self.model(hidden_states=hidden, timestep=t, guidance=g, pooled_projections=c["pooled"],
                         encoder_hidden_states=c["txt"], txt_ids=c["txt_ids"], img_ids=c["img_ids"],
                         return_dict=False)[0]
        return out[:, :n]

    def rollout_batch(self, c, steps):
        a, dev = self.a, self.dev
        g = torch.full((a.k,), a.guidance, device=dev)
        with torch.no_grad():
            noise = torch.randn(a.k, self.tokens, self.cfg["in_channels"], device=dev)

            def v(x, s):
                t = torch.full((a.k,), s, device=dev)
                return self.velocity(c, x, t, g).float()

            return dpm2(noise, sigmas(steps, self.tokens), v)

    def rollout(self):
        a, dev = self.a, self.dev
        c = self.conditioning(a.k, True)
        self.model.set_adapter("old")
        reset_peak(dev)
        t0 = time.perf_counter()
        self.rollout_batch(c, a.rollout_warmup_steps)
        warmup_s = elapsed(dev, t0)
        batch_s, finite = [], True
        for _ in range(a.rollout_repeats):
            t0 = time.perf_counter()
            x = self.rollout_batch(c, a.steps)
            batch_s.append(elapsed(dev, t0))
            finite &= bool(torch.isfinite(x).all())
        self.model.set_adapter("default")
        med = statistics.median(batch_s)
        out = self.common("rollout")
        out.update(tokens=[self.tokens, self.tokens, self.text_len], build_s=self.build_s,
                   weights_gib=self.weights_gib, lora_layers=self.lora_layers,
                   warmup_steps=a.rollout_warmup_steps, warmup_s=warmup_s, batch_s=batch_s, batch_s_median=med,
                   step_s=med / a.steps, images_per_s=a.k / med, finite=finite, lora_dtype=a.lora_dtype)
        out.update(memory(dev))
        return out

    def nft_step(self, c, data, params, opt, slot):
        a, dev, m = self.a, self.dev, self.model
        b, side = a.nft_batch, self.side
        sig = sigmas(a.steps, self.tokens)
        t0 = time.perf_counter()
        t = torch.tensor([sig[(slot + j) % a.steps] for j in range(b)], dtype=torch.float32, device=dev)
        eps = torch.randn_like(data["x0"])
        tb = t.view(-1, 1, 1, 1)
        x_t = (1.0 - tb) * data["x0"] + tb * eps
        packed = pack(x_t)
        g = torch.full((b,), a.guidance, device=dev)
        with torch.no_grad():
            m.set_adapter("old")
            v_old = unpack(self.velocity(c, packed, t, g), side, side).float()
            m.disable_adapters()
            v_ref = unpack(self.velocity(c, packed, t, g), side, side).float()
            m.enable_adapters()
            m.set_adapter("default")
        old_ref = elapsed(dev, t0)
        t1 = time.perf_counter()
        v_theta = unpack(self.velocity(c, packed, t, g), side, side).float()
        loss = nft_loss(data["x0"], x_t, t, v_old, v_theta, v_ref, data["r"], data["valid"], data["z_src"],
                        data["edit_w"], data["keep_w"])
        loss.backward()
        theta = elapsed(dev, t1)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        optim = elapsed(dev, t2)
        return dict(total=time.perf_counter() - t0, old_ref=old_ref, theta=theta, optim=optim, loss=loss.item())

    def nft(self):
        a, dev = self.a, self.dev
        b, side = a.nft_batch, self.side
        c = self.conditioning(b, False)
        ch = self.cfg["in_channels"] // 4
        edit_w = torch.zeros(b, 1, side, side, device=dev)
        edit_w[:, :, side // 4: side // 4 + side // 2, side // 4: side // 4 + side // 2] = 1.0
        data = dict(x0=torch.randn(b, ch, side, side, device=dev), z_src=torch.randn(b, ch, side, side, device=dev),
                    r=torch.linspace(0.2, 0.8, b, device=dev), valid=torch.ones(b, device=dev),
                    edit_w=edit_w, keep_w=1.0 - edit_w)
        params = [p for n, p in self.model.named_parameters() if ".default." in n and "lora_" in n]
        assert all(p.requires_grad for p in params), "θ's LoRA must be trainable"
        assert sum(p.requires_grad for p in self.model.parameters()) == len(params), "only θ's LoRA trains"
        opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8)
        reset_peak(dev)
        warmup_s = [self.nft_step(c, data, params, opt, i)["total"] for i in range(a.nft_warmup)]
        steps = [self.nft_step(c, data, params, opt, a.nft_warmup + i) for i in range(a.nft_repeats)]
        col = lambda k: [s[k] for s in steps]  # noqa: E731
        med = statistics.median(col("total"))
        out = self.common("nft")
        out.update(nft_batch=b, tokens=[self.tokens, self.tokens, self.text_len], build_s=self.build_s,
                   weights_gib=self.weights_gib, lora_layers=self.lora_layers,
                   lora_params=sum(p.numel() for p in params), warmup_s=warmup_s, step_s=col("total"),
                   step_s_median=med, samples_per_s=b / med, old_ref_s_median=statistics.median(col("old_ref")),
                   theta_s_median=statistics.median(col("theta")), optim_s_median=statistics.median(col("optim")),
                   loss=col("loss"), lora_dtype=a.lora_dtype)
        out.update(memory(dev))
        return out

    def vae(self):
        from diffusers import AutoencoderKL

        a, dev = self.a, self.dev
        cfg = vae_config(a.config)
        torch.manual_seed(a.seed)
        t0 = time.perf_counter()
        vae = construct(AutoencoderKL, cfg, dev, self.dtype).eval()
        build_s = elapsed(dev, t0)
        z = torch.randn(a.k, cfg["latent_channels"], self.side, self.side, device=dev, dtype=self.dtype)
        reset_peak(dev)

        def decode():
            with torch.no_grad():
                return vae.decode(z / cfg["scaling_factor"] + cfg["shift_factor"], return_dict=False)[0]

        t0 = time.perf_counter()
        decode()
        warmup_s = elapsed(dev, t0)
        t0 = time.perf_counter()
        img = decode()
        decode_s = elapsed(dev, t0)
        out = self.common("vae")
        out.update(build_s=build_s, warmup_s=warmup_s, decode_s=decode_s, images_per_s=a.k / decode_s,
                   output=list(img.shape))
        out.update(memory(dev))
        return out


def text_line(v):
    mem = ""
    if v.get("peak_allocated_gib") is not None:
        mem = f", peak {v['peak_allocated_gib']:.2f} GiB allocated / {v['peak_reserved_gib']:.2f} GiB reserved"
    head = f"{v['phase']} {v['resolution']}² {v['config']}"
    if v["phase"] == "rollout":
        return (f"{head}: K={v['k']} × {v['steps']} steps in {v['batch_s_median']:.3f} s (median): "
                f"{v['images_per_s']:.3f} images/s{mem}")
    if v["phase"] == "nft":
        return (f"{head}: batch {v['nft_batch']}: {v['step_s_median']:.3f} s/step (median; θ_old+ref "
                f"{v['old_ref_s_median']:.3f}, θ fwd+bwd {v['theta_s_median']:.3f}, optimiser "
                f"{v['optim_s_median']:.3f}){mem}")
    return f"{head}: decode of {v['k']} latents in {v['decode_s']:.3f} s{mem}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=["full", "tiny"], default="full")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--lora-alpha", type=float, default=64.0)
    p.add_argument("--lora-dtype", choices=["model", "fp32"], default="model",
                   help="adapter weights in the model dtype (as cocoflow) or peft's float32 default")
    p.add_argument("--nft-batch", type=int, default=2)
    p.add_argument("--guidance", type=float, default=2.5)
    p.add_argument("--text-len", type=int, default=None)
    p.add_argument("--phase", default="rollout,nft", help="comma-separated: rollout, nft, vae")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--rollout-warmup-steps", type=int, default=2)
    p.add_argument("--rollout-repeats", type=int, default=2)
    p.add_argument("--nft-warmup", type=int, default=1)
    p.add_argument("--nft-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    phases = [x for x in a.phase.split(",") if x]
    if any(x not in ("rollout", "nft", "vae") for x in phases):
        p.error(f"unknown phase in `--phase {a.phase}`")
    bench = Bench(a)
    if any(x != "vae" for x in phases):
        bench.build()
    for ph in phases:
        v = getattr(bench, ph)()
        print(json.dumps(v) if a.json else text_line(v), flush=True)


if __name__ == "__main__":
    main()
