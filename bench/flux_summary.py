#!/usr/bin/env python3
"""The table of bench/gpu_flux.sh: cocoflow against PyTorch (diffusers + peft) from the JSON lines
of `cocoflow bench-flux --json` and `bench/flux_pytorch.py --json`, as Markdown.

Ratios are cocoflow ÷ PyTorch. Goals (issue 14): time ≤ 1.05×, peak memory ≤ 1.00×.

  python3 bench/flux_summary.py flux_bench.jsonl
"""

import datetime
import json
import sys

TIME_GOAL = 1.05
MEM_GOAL = 1.00


def key(v):
    """Which measurement a line is: phase, resolution, K, NFT batch."""
    return (v["phase"], v["resolution"], v.get("k"), v.get("nft_batch"))


def title(v):
    if v["phase"] == "rollout":
        return f"rollout {v['resolution']}², K={v['k']} × {v['steps']} dpm2 steps"
    if v["phase"] == "nft":
        return f"NFT step {v['resolution']}², micro-batch {v['nft_batch']}"
    return f"VAE decode {v['resolution']}², {v['k']} latents"


# (field, label, "time" | "mem" | None: what the goal column checks; higher-is-better fields have None)
FIELDS = {
    "rollout": [("batch_s_median", "s per batch (median)", "time"), ("images_per_s", "images/s", None),
                ("peak_allocated_gib", "peak allocated GiB", "mem"), ("peak_reserved_gib", "peak reserved GiB", "mem")],
    "nft": [("step_s_median", "s per step (median)", "time"), ("old_ref_s_median", "  θ_old + ref forwards s", None),
            ("theta_s_median", "  θ fwd + loss + bwd s", None), ("optim_s_median", "  clip + AdamW s", None),
            ("peak_allocated_gib", "peak allocated GiB", "mem"), ("peak_reserved_gib", "peak reserved GiB", "mem")],
    "vae": [("decode_s", "s per decode", "time"), ("peak_allocated_gib", "peak allocated GiB", "mem")],
}


def fmt(x):
    return "–" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def table(lines):
    runs = [v for v in lines if "impl" in v]
    errors = [v for v in lines if "error" in v]
    pairs = {}
    for v in runs:
        pairs.setdefault(key(v), {})[v["impl"]] = v
    some = runs[0] if runs else {}
    gpu = next((v.get("gpu") for v in runs if v.get("gpu")), "?")
    torch = next((v["torch"] for v in runs if v["impl"] == "pytorch"), "?")
    out = [f"# FLUX.1 Kontext transformer: cocoflow vs diffusers + peft ({datetime.date.today()}, {gpu})", "",
           f"Config `{some.get('config', '?')}`, random {some.get('dtype', '?')} weights, LoRA r{some.get('lora_rank', '?')}"
           f"/α{fmt(some.get('lora_alpha'))} on the 8 attention projections, T5 length "
           f"{some.get('text_len', '?')}, Kontext source tokens appended; torch {torch}. "
           f"Ratio = cocoflow ÷ PyTorch; goals: time ≤ {TIME_GOAL}×, memory ≤ {MEM_GOAL}×.", "",
           "| measurement | cocoflow | PyTorch | ratio | goal |", "|---|---|---|---|---|"]
    for k in sorted(pairs, key=lambda k: (["rollout", "vae", "nft"].index(k[0]), k[1], k[3] or 0)):
        p = pairs[k]
        c, t = p.get("cocoflow"), p.get("pytorch")
        any_v = c or t
        out.append(f"| **{title(any_v)}** | | | | |")
        for field, label, goal in FIELDS.get(k[0], []):
            a = c.get(field) if c else None
            b = t.get(field) if t else None
            ratio = a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
            verdict = ""
            if ratio is not None and goal is not None:
                verdict = "ok" if ratio <= (TIME_GOAL if goal == "time" else MEM_GOAL) + 1e-9 else "MISSED"
            out.append(f"| {label} | {fmt(a)} | {fmt(b)} | {fmt(ratio)} | {verdict} |")
    if errors:
        out += ["", "Runs that failed or were skipped:"]
        out += [f"- {v.get('run', '?')}: {v['error']}" for v in errors]
    return "\n".join(out)


def main(argv):
    path = argv[1] if len(argv) > 1 else "flux_bench.jsonl"
    with open(path) as f:
        lines = [json.loads(l) for l in f if l.strip().startswith("{")]
    print(table(lines))


if __name__ == "__main__":
    main(sys.argv)
