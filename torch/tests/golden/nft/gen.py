"""Reference values for the NFT loss (method-spec §4), written from the spec with PyTorch,
independently of the Rust code. Writes inputs (.npy, float32) and expected terms and
gradients into this directory. Run: .venv/bin/python torch/tests/golden/nft/gen.py
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)
B, C, H, W = 4, 3, 8, 8


def mse_dist(a, b, w):
    # d(a,b;W) = Σ W (a−b)² / (channels · Σ W); 0 on an empty region
    num = (w * (a - b) ** 2).sum(dim=(1, 2, 3))
    den = w.sum(dim=(1, 2, 3)) * a.shape[1]
    out = torch.zeros_like(num)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    return out


def l2_dist(a, b, w):
    # clamp: a finite gradient where the difference vanishes
    return torch.sqrt(torch.clamp(((w * (a - b)) ** 2).sum(dim=(1, 2, 3)), min=1e-30))


def masks(pix_mask, mode):
    # pix_mask (B,1,2H,2W) in {0,1} → latent (B,1,H,W)
    if mode == "maxpool":
        e = F.max_pool2d(pix_mask, kernel_size=2)
        return e, 1 - e
    if mode == "nearest":
        e = pix_mask[:, :, ::2, ::2]
        return e, 1 - e
    if mode == "erode-ring":
        e = pix_mask[:, :, ::2, ::2]
        core = 1 - F.max_pool2d(1 - e, kernel_size=5, stride=1, padding=2)
        ring = e - core
        return core + 0.2 * ring, 1 - e
    raise ValueError(mode)


def loss(inp, cfg):
    x0, xt, t, vold, vth, vref, r, valid, zsrc = (inp[k] for k in ["x0", "x_t", "t", "v_old", "v_theta", "v_ref", "r", "valid", "z_src"])
    ew, kw = masks(inp["pix_mask"], cfg["mask_down"])
    beta = cfg["beta"]
    tt = t.view(-1, 1, 1, 1)
    vp = beta * vth + (1 - beta) * vold
    vn = (1 + beta) * vold - beta * vth
    xp = xt - tt * vp
    xn = xt - tt * vn

    def adaptive(xh):
        err = xh - x0
        w = torch.clamp(err.abs().mean(dim=(1, 2, 3)), min=1e-5).detach()
        return (err ** 2).mean(dim=(1, 2, 3)) / w

    nv = torch.clamp(valid.sum(), min=1.0)
    mv = lambda v: (v * valid).sum() / nv
    policy = cfg["adv_clip"] / beta * mv(r * adaptive(xp) + (1 - r) * adaptive(xn))
    kl = cfg["kl_weight"] * mv(((vth - vref) ** 2).mean(dim=(1, 2, 3)))
    dist = mse_dist if cfg["distance"] == "mse" else l2_dist
    anchor = zsrc if cfg["anchor"] == "source" else x0
    ner = torch.clamp(dist(xp, anchor, kw) - cfg["tau_plus"], min=0)
    tau_m = dist(x0, zsrc, ew).detach() if cfg["tau_minus"] == "adaptive" else torch.full_like(r, cfg["tau_minus"])
    er = torch.clamp(tau_m - dist(xn, zsrc, ew), min=0)
    reg = mv(r * cfg["lambda_ner"] * ner + (1 - r) * cfg["lambda_er"] * er)
    return {"loss": policy + kl + reg, "policy": policy, "kl": kl, "ner": mv(ner), "er": mv(er)}


def main():
    x0 = torch.rand(B, C, H, W)
    zsrc = x0 + 0.05 * torch.randn(B, C, H, W)
    eps = torch.randn(B, C, H, W)
    t = torch.tensor([0.9, 0.6, 0.35, 0.1])
    xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    v_true = eps - x0
    vold = v_true + 0.3 * torch.randn(B, C, H, W)
    vth = vold + 0.1 * torch.randn(B, C, H, W)
    vref = vold + 0.05 * torch.randn(B, C, H, W)
    r = torch.tensor([0.9, 0.2, 0.55, 0.7])
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0])
    pix = torch.zeros(B, 1, 2 * H, 2 * W)
    pix[0, :, 3:9, 4:12] = 1
    pix[1, :, 0:16, 0:5] = 1
    pix[2, :, 7:8, 7:8] = 1
    pix[3, :, 2:14, 2:14] = 1
    inputs = {"x0": x0, "x_t": xt, "t": t, "v_old": vold, "v_theta": vth, "v_ref": vref, "r": r, "valid": valid, "z_src": zsrc, "pix_mask": pix}
    for k, v in inputs.items():
        np.save(os.path.join(HERE, f"{k}.npy"), v.numpy().astype(np.float32))
    base = {"beta": 1.0, "adv_clip": 5.0, "kl_weight": 1e-4, "lambda_ner": 0.5, "lambda_er": 0.2, "tau_plus": 1e-3,
            "tau_minus": "adaptive", "distance": "mse", "anchor": "source", "mask_down": "maxpool"}
    cases = {
        "default": base,
        "variants": {**base, "beta": 0.7, "distance": "l2", "anchor": "x0", "tau_minus": 0.03, "mask_down": "erode-ring", "lambda_ner": 0.02, "lambda_er": 0.02},
        "nearest_big_lambda": {**base, "mask_down": "nearest", "lambda_ner": 50.0, "lambda_er": 50.0, "kl_weight": 0.1},
        "er_active": {**base, "tau_minus": 0.5, "lambda_ner": 0.0, "lambda_er": 1.0},
    }
    out = {}
    for name, cfg in cases.items():
        inp = {k: v.clone().double() for k, v in inputs.items()}
        inp["v_theta"].requires_grad_(True)
        terms = loss(inp, cfg)
        terms["loss"].backward()
        np.save(os.path.join(HERE, f"grad_{name}.npy"), inp["v_theta"].grad.numpy().astype(np.float64))
        out[name] = {"config": cfg, "terms": {k: float(v.detach()) for k, v in terms.items()}}
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
