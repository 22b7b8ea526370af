//! ODE solvers for flow matching (method-spec §6), on any velocity field `v(x, σ)`:
//! `euler`, and `dpm2` = deterministic, first step DDIM, middle steps 2nd-order multistep
//! DPM-Solver++ in x0 form, last step DDIM to σ = 0.
//!
//! With `x_σ = α_σ·x0 + σ·ε`, `α_σ = 1 − σ`, `λ = ln(α/σ)` and `x̂0 = x − σ·v`:
//! - DDIM (= DPM-Solver++ 1st order; equal to an Euler step for flow matching):
//!   `x' = (σ'/σ)·x + (α' − α·σ'/σ)·x̂0`.
//! - 2M (Lu et al. 2022, DPM-Solver++ Alg. 2): the same update with
//!   `D = x̂0 + (x̂0 − x̂0_prev)/(2r)`, `r = h_prev/h`, `h = λ' − λ`; `α' − α·σ'/σ` is
//!   `−α'(e^{−h} − 1)` written without the exponential.

use super::SamplerKind;
use tch::Tensor;

fn lambda(sigma: f64) -> f64 {
    // ln(α/σ); −∞ at σ = 1, +∞ at σ = 0
    ((1.0 - sigma) / sigma).ln()
}

/// `x' = (σ'/σ)·x + (α' − α·σ'/σ)·d`.
fn ddim(x: &Tensor, d: &Tensor, s: f64, s_next: f64) -> Tensor {
    let ratio = s_next / s;
    x * ratio + d * ((1.0 - s_next) - (1.0 - s) * ratio)
}

/// Integrates `dx/dσ = v(x, σ)` from `sigmas[0]` (`x` there) down to `sigmas[last]`, one
/// velocity evaluation per step. `sigmas` must be decreasing and positive except the last.
pub fn integrate<E>(
    kind: SamplerKind,
    x: Tensor,
    sigmas: &[f64],
    mut velocity: impl FnMut(&Tensor, f64) -> Result<Tensor, E>,
) -> Result<Tensor, E> {
    let steps = sigmas.len().saturating_sub(1);
    let mut x = x;
    let mut prev: Option<(Tensor, f64)> = None; // (x̂0, λ) of the previous step
    for i in 0..steps {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let v = velocity(&x, s)?;
        x = match kind {
            SamplerKind::Euler => &x + v * (s_next - s),
            SamplerKind::Dpm2 => {
                let x0 = &x - v * s;
                let last = i + 1 == steps || s_next <= 0.0;
                let next = match (&prev, last) {
                    (Some((x0_prev, l_prev)), false) => {
                        let (l, l_next) = (lambda(s), lambda(s_next));
                        let h = l_next - l;
                        // 1/(2r) = h/(2·h_prev); 0 when the previous step started at σ = 1
                        let c = h / (2.0 * (l - l_prev));
                        let d = &x0 + (&x0 - x0_prev) * c;
                        ddim(&x, &d, s, s_next)
                    }
                    _ if last && s_next <= 0.0 => x0.shallow_clone(),
                    _ => ddim(&x, &x0, s, s_next),
                };
                prev = Some((x0, lambda(s)));
                next
            }
        };
    }
    Ok(x)
}
