//! The DiffusionNFT objective with CoCoEdit's region regularisers (method-spec §4, paper
//! eq. 3–6, 10–12, Alg. 1). Everything here is per training timestep on a batch of rollout
//! samples; the caller draws t and ε, runs the three velocity predictions and accumulates.

use super::{Anchor, Distance, MaskDown, NftConfig, TauMinus};
use tch::{Kind, Tensor};

/// One timestep's inputs. Latents are `(B, C, h, w)`; `t`, `r`, `valid` are `(B,)`.
pub struct NftBatch<'a> {
    pub x0: &'a Tensor,
    pub x_t: &'a Tensor,
    pub t: &'a Tensor,
    /// θ_old's prediction (no grad).
    pub v_old: &'a Tensor,
    /// θ's prediction (the only input with a gradient).
    pub v_theta: &'a Tensor,
    /// θ_ref's prediction, adapters off (no grad).
    pub v_ref: &'a Tensor,
    /// Optimality probability r ∈ [0, 1].
    pub r: &'a Tensor,
    /// Samples in the loss (valid judge score, not in a banned group): 1.0 or 0.0.
    pub valid: &'a Tensor,
    pub z_src: &'a Tensor,
    /// Edit-region weights on the latent grid `(B, 1, h, w)` (see [`downsample_mask`]).
    pub edit_w: &'a Tensor,
    /// Keep-region weights on the latent grid `(B, 1, h, w)`.
    pub keep_w: &'a Tensor,
}

/// Every term, as scalars (`loss` carries the gradient).
pub struct NftTerms {
    pub loss: Tensor,
    pub policy: Tensor,
    pub kl: Tensor,
    pub ner: Tensor,
    pub er: Tensor,
    /// Fraction of valid samples whose L_ner⁺ / L_er⁻ hinge is active.
    pub ner_active: f64,
    pub er_active: f64,
}

/// `(edit_w, keep_w)` on an `(h, w)` latent grid from a pixel `edit_mask` `(B, 1, H, W)`.
pub fn downsample_mask(edit_mask: &Tensor, h: i64, w: i64, mode: MaskDown) -> (Tensor, Tensor) {
    let size = edit_mask.size();
    let (hh, ww) = (size[2], size[3]);
    let e = edit_mask.to_kind(Kind::Float);
    let nearest = |m: &Tensor| {
        if (hh, ww) == (h, w) {
            m.shallow_clone()
        } else {
            m.upsample_nearest2d([h, w], None, None)
        }
    };
    match mode {
        MaskDown::Maxpool => {
            let down = if (hh, ww) == (h, w) {
                e
            } else {
                e.adaptive_max_pool2d([h, w]).0
            };
            let keep = 1.0 - &down;
            (down, keep)
        }
        MaskDown::Nearest => {
            let down = nearest(&e);
            let keep = 1.0 - &down;
            (down, keep)
        }
        MaskDown::ErodeRing => {
            let down = nearest(&e);
            // Erosion by radius 2 = 1 − dilation of the complement (5×5 max-pool).
            let complement: Tensor = 1.0 - &down;
            let core: Tensor = 1.0 - complement.max_pool2d([5, 5], [1, 1], [2, 2], [1, 1], false);
            let ring = &down - &core;
            let keep = 1.0 - &down;
            (core + ring * 0.2, keep)
        }
    }
}

/// d(a, b; W) per sample `(B,)`; 0 where Σ W = 0.
pub fn region_distance(a: &Tensor, b: &Tensor, wgt: &Tensor, kind: Distance) -> Tensor {
    let diff2 = (a - b).square();
    let c = a.size()[1] as f64;
    match kind {
        Distance::Mse => {
            let num = (wgt * &diff2).sum_dim_intlist([1i64, 2, 3].as_slice(), false, diff2.kind());
            let den = wgt.sum_dim_intlist([1i64, 2, 3].as_slice(), false, diff2.kind()) * c;
            // Σ W·(a−b)² / (C·Σ W), defined as 0 on an empty region.
            num / den.clamp_min(1e-12) * den.gt(0.0).to_kind(diff2.kind())
        }
        // ‖W⊙(a−b)‖₂; the clamp keeps the gradient finite where the difference vanishes.
        Distance::L2 => (wgt.square() * &diff2)
            .sum_dim_intlist([1i64, 2, 3].as_slice(), false, diff2.kind())
            .clamp_min(1e-30)
            .sqrt(),
    }
}

fn per_sample_mean(x: &Tensor) -> Tensor {
    x.mean_dim([1i64, 2, 3].as_slice(), false, x.kind())
}

/// Mean over valid samples of a `(B,)` tensor (0 when none is valid).
fn mean_valid(x: &Tensor, valid: &Tensor) -> Tensor {
    (x * valid).sum(x.kind()) / valid.sum(x.kind()).clamp_min(1.0)
}

/// The loss of method-spec §4 for one timestep.
pub fn nft_loss(b: &NftBatch, cfg: &NftConfig) -> NftTerms {
    let beta = cfg.beta;
    let shape = [-1i64, 1, 1, 1];
    let t = b.t.view(shape);
    // 2. implicit policies: v⁺ = β·v_θ + (1−β)·v_old, v⁻ = (1+β)·v_old − β·v_θ
    let v_pos = b.v_theta * beta + b.v_old * (1.0 - beta);
    let v_neg = b.v_old * (1.0 + beta) - b.v_theta * beta;
    // 3. x0-predictions x̂0 = x_t − t·v
    let x0_pos = b.x_t - &t * &v_pos;
    let x0_neg = b.x_t - &t * &v_neg;
    // L = mean((x̂0 − x0)²) / sg(max(mean|x̂0 − x0|, 1e−5)), per sample
    let adaptive = |xh: &Tensor| {
        let err = xh - b.x0;
        let w = per_sample_mean(&err.abs()).clamp_min(1e-5).detach();
        per_sample_mean(&err.square()) / w
    };
    let l_pos = adaptive(&x0_pos);
    let l_neg = adaptive(&x0_neg);
    // 4. policy = (adv_clip/β) · mean_valid[r·L⁺ + (1−r)·L⁻]
    let policy =
        mean_valid(&(b.r * &l_pos + (1.0 - b.r) * &l_neg), b.valid) * (cfg.adv_clip / beta);
    // 5. kl = kl_weight · mean((v_θ − v_ref)²) over valid samples
    let kl = mean_valid(&per_sample_mean(&(b.v_theta - b.v_ref).square()), b.valid) * cfg.kl_weight;
    // 6. region regularisers
    let zero = || Tensor::zeros([b.r.size()[0]], (b.x0.kind(), b.r.device()));
    let anchor = match cfg.anchor {
        Anchor::Source => b.z_src,
        Anchor::X0 => b.x0,
    };
    let ner = if cfg.ner {
        (region_distance(&x0_pos, anchor, b.keep_w, cfg.distance) - cfg.tau_plus).clamp_min(0.0)
    } else {
        zero()
    };
    let er = if cfg.er {
        let tau = match cfg.tau_minus {
            TauMinus::Adaptive => region_distance(b.x0, b.z_src, b.edit_w, cfg.distance).detach(),
            TauMinus::Fixed(v) => Tensor::full([b.r.size()[0]], v, (b.x0.kind(), b.r.device())),
        };
        (tau - region_distance(&x0_neg, b.z_src, b.edit_w, cfg.distance)).clamp_min(0.0)
    } else {
        zero()
    };
    let reg = mean_valid(
        &(b.r * &ner * cfg.lambda_ner + (1.0 - b.r) * &er * cfg.lambda_er),
        b.valid,
    );
    let nvalid = b.valid.sum(Kind::Double).double_value(&[]).max(1.0);
    let active = |x: &Tensor| {
        (x.gt(0.0).to_kind(Kind::Double) * b.valid.to_kind(Kind::Double))
            .sum(Kind::Double)
            .double_value(&[])
            / nvalid
    };
    let (ner_active, er_active) = (active(&ner), active(&er));
    let loss = &policy + &kl + &reg;
    NftTerms {
        loss,
        policy,
        kl,
        ner: mean_valid(&ner, b.valid),
        er: mean_valid(&er, b.valid),
        ner_active,
        er_active,
    }
}
