//! Flow-matching training helpers (method-spec §4 conventions): `x_t = (1 − t)·x0 + t·ε`,
//! target velocity `ε − x0`, `x̂0 = x_t − t·v`.

use super::error::ModelError;
use super::policy::{ActiveAdapter, Conditioning, EditPolicy};
use tch::Tensor;

/// `t` `(B,)` broadcast over the non-batch dimensions of `like`.
pub fn per_sample(t: &Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, like.dim().saturating_sub(1)));
    t.view(shape.as_slice()).to_kind(like.kind())
}

/// `x_t = (1 − t)·x0 + t·ε`.
pub fn interpolate(x0: &Tensor, eps: &Tensor, t: &Tensor) -> Tensor {
    let t = per_sample(t, x0);
    x0 * (1.0 - &t) + eps * t
}

/// `x̂0 = x_t − t·v`.
pub fn x0_from_velocity(x_t: &Tensor, v: &Tensor, t: &Tensor) -> Tensor {
    x_t - per_sample(t, x_t) * v
}

/// The supervised flow-matching loss `mean((v(x_t, t, c) − (ε − x0))²)` under `adapter`.
pub fn flow_matching_loss(
    policy: &dyn EditPolicy,
    x0: &Tensor,
    eps: &Tensor,
    t: &Tensor,
    cond: &Conditioning,
    adapter: &ActiveAdapter,
) -> Result<Tensor, ModelError> {
    let x_t = interpolate(x0, eps, t);
    // pretraining (tiny-kontext): no embedded guidance
    let v = policy.velocity_with(&x_t, t, cond, adapter, None)?;
    Ok((v - (eps - x0)).square().mean(None))
}
