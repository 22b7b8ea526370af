//! A small AdamW over named tensors whose moments can be saved and restored bit-for-bit
//! (tch's optimizer does not expose them). Same update as `torch.optim.AdamW` (single-tensor
//! path, `amsgrad=False`, `maximize=False`):
//!
//! ```text
//! p ← p·(1 − lr·wd)
//! m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
//! ```
//!
//! plus global-norm gradient clipping as `torch.nn.utils.clip_grad_norm_` (coefficient
//! `max_norm / (‖g‖ + 1e−6)`, applied only when below 1).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Method-spec §4: lr 3e−4, betas (0.9, 0.999), weight decay 1e−4, eps 1e−8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 1e-4,
            eps: 1e-8,
        }
    }
}

/// Moments by parameter name plus the step count (for bias correction).
#[derive(Debug)]
pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Optimiser steps taken so far.
    pub t: u64,
    pub exp_avg: BTreeMap<String, Tensor>,
    pub exp_avg_sq: BTreeMap<String, Tensor>,
}

/// Key prefixes of the moments in `optimizer.safetensors`.
pub const EXP_AVG: &str = "exp_avg/";
pub const EXP_AVG_SQ: &str = "exp_avg_sq/";

impl AdamW {
    /// Zero moments shaped like `params`.
    pub fn fresh(cfg: AdamWConfig, params: &BTreeMap<String, Tensor>) -> AdamW {
        let z = |p: &Tensor| Tensor::zeros_like(p).detach();
        AdamW {
            cfg,
            t: 0,
            exp_avg: params.iter().map(|(k, p)| (k.clone(), z(p))).collect(),
            exp_avg_sq: params.iter().map(|(k, p)| (k.clone(), z(p))).collect(),
        }
    }

    /// The moments as one flat map (`exp_avg/<name>`, `exp_avg_sq/<name>`), for saving.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (k, t) in &self.exp_avg {
            out.insert(format!("{EXP_AVG}{k}"), t.shallow_clone());
        }
        for (k, t) in &self.exp_avg_sq {
            out.insert(format!("{EXP_AVG_SQ}{k}"), t.shallow_clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::tensors`]; every parameter of `params` must have
    /// both moments with its shape, and nothing else may be there.
    pub fn from_tensors(
        cfg: AdamWConfig,
        t: u64,
        saved: BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
    ) -> Result<AdamW, String> {
        let mut exp_avg = BTreeMap::new();
        let mut exp_avg_sq = BTreeMap::new();
        for (k, v) in saved {
            if let Some(name) = k.strip_prefix(EXP_AVG_SQ) {
                exp_avg_sq.insert(name.to_string(), v);
            } else if let Some(name) = k.strip_prefix(EXP_AVG) {
                exp_avg.insert(name.to_string(), v);
            } else {
                return Err(format!("unexpected tensor `{k}`"));
            }
        }
        for (which, map) in [("exp_avg", &exp_avg), ("exp_avg_sq", &exp_avg_sq)] {
            for (k, p) in params {
                match map.get(k) {
                    None => return Err(format!("no `{which}` moment for parameter `{k}`")),
                    Some(m) if m.size() != p.size() => {
                        return Err(format!(
                            "`{which}` of `{k}` has shape {:?}, the parameter {:?}",
                            m.size(),
                            p.size()
                        ));
                    }
                    Some(_) => {}
                }
            }
            if let Some(k) = map.keys().find(|k| !params.contains_key(*k)) {
                return Err(format!("`{which}` moment for unknown parameter `{k}`"));
            }
        }
        let dev = |m: BTreeMap<String, Tensor>| {
            m.into_iter()
                .map(|(k, v)| {
                    let p = &params[&k];
                    (k, v.to_kind(p.kind()).to_device(p.device()))
                })
                .collect()
        };
        Ok(AdamW {
            cfg,
            t,
            exp_avg: dev(exp_avg),
            exp_avg_sq: dev(exp_avg_sq),
        })
    }

    /// One update of `params` with `grads` (same names). A parameter without a gradient is
    /// left alone, moments and weight decay included (as PyTorch skips `grad is None`).
    /// Runs under `no_grad`.
    pub fn step(&mut self, params: &BTreeMap<String, Tensor>, grads: &BTreeMap<String, Tensor>) {
        self.t += 1;
        let c = self.cfg.clone();
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.t as i32)).sqrt();
        let step_size = c.lr / bc1;
        tch::no_grad(|| {
            for (k, p) in params {
                let Some(g) = grads.get(k) else {
                    continue;
                };
                let mut p = p.shallow_clone();
                let mut m = self.exp_avg[k].shallow_clone();
                let mut v = self.exp_avg_sq[k].shallow_clone();
                let _ = p.f_mul_scalar_(1.0 - c.lr * c.weight_decay);
                let _ = m.f_lerp_(g, 1.0 - c.beta1);
                let _ = v.f_mul_scalar_(c.beta2);
                let _ = v.f_add_(&(g * g * (1.0 - c.beta2)));
                let denom = v.sqrt() / bc2_sqrt + c.eps;
                let _ = p.f_sub_(&(&m / &denom * step_size));
            }
        });
    }
}

/// The global L2 norm of `grads` (float64).
pub fn grad_norm(grads: &BTreeMap<String, Tensor>) -> f64 {
    grads
        .values()
        .map(|g| {
            g.to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .double_value(&[])
        })
        .sum::<f64>()
        .sqrt()
}

/// Scales `grads` in place so their global norm is at most `max_norm`; returns the norm
/// before clipping and the coefficient applied (1 when none).
pub fn clip_grad_norm(grads: &BTreeMap<String, Tensor>, max_norm: f64) -> (f64, f64) {
    let norm = grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        tch::no_grad(|| {
            for g in grads.values() {
                let _ = g.shallow_clone().f_mul_scalar_(coef);
            }
        });
        (norm, coef)
    } else {
        (norm, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn matches_hand_computed_first_steps() {
        // One scalar parameter: after t steps with a constant gradient g, Adam's bias-corrected
        // m̂ = g and v̂ = g², so each step moves by lr·g/(|g| + eps) after the decay.
        let p = Tensor::from_slice(&[1.0f64]).to_kind(Kind::Double);
        let params: BTreeMap<String, Tensor> = [("w".to_string(), p.shallow_clone())].into();
        let grads: BTreeMap<String, Tensor> =
            [("w".to_string(), Tensor::from_slice(&[0.5f64]))].into();
        let cfg = AdamWConfig::default();
        let mut opt = AdamW::fresh(cfg.clone(), &params);
        let mut expect = 1.0f64;
        for _ in 0..3 {
            opt.step(&params, &grads);
            expect *= 1.0 - cfg.lr * cfg.weight_decay;
            expect -= cfg.lr * 0.5 / (0.5 + cfg.eps);
        }
        let got = p.double_value(&[0]);
        assert!((got - expect).abs() < 1e-12, "{got} vs {expect}");
        assert_eq!(opt.t, 3);
        // Saved and restored moments continue identically.
        // (deep copies: `tensors()` shares storage with the live moments, as a file would not)
        let saved = opt
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.copy()))
            .collect();
        let mut again = AdamW::from_tensors(cfg, 3, saved, &params).unwrap();
        let q = p.copy();
        let qp: BTreeMap<String, Tensor> = [("w".to_string(), q.shallow_clone())].into();
        opt.step(&params, &grads);
        again.step(&qp, &grads);
        assert!(p.equal(&q));
        let _ = Device::Cpu;
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let g: BTreeMap<String, Tensor> = [
            ("a".to_string(), Tensor::from_slice(&[3.0f32])),
            ("b".to_string(), Tensor::from_slice(&[4.0f32])),
        ]
        .into();
        let (n, c) = clip_grad_norm(&g, 1.0);
        assert!((n - 5.0).abs() < 1e-9 && c < 1.0);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
        let (_, c) = clip_grad_norm(&g, 10.0);
        assert_eq!(c, 1.0);
    }
}
