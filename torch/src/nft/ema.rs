//! The old policy as an EMA of the trained one (method-spec §5, Alg. 1 l. 25):
//! `θ_old ← η·θ_old + (1−η)·θ` after each optimiser step, parameters matched by name.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::Tensor;

/// How η depends on the global step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "schedule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EmaSchedule {
    /// η = min(rate·step, cap); default rate 0.001, cap 0.5.
    LinearCapped {
        rate: f64,
        cap: f64,
    },
    /// η = 0 for the first `delay` steps, then rate·(step − delay), capped.
    Delayed {
        delay: u64,
        rate: f64,
        cap: f64,
    },
    Constant {
        eta: f64,
    },
}

impl Default for EmaSchedule {
    fn default() -> Self {
        EmaSchedule::LinearCapped {
            rate: 0.001,
            cap: 0.5,
        }
    }
}

impl EmaSchedule {
    /// The paper's `delayed` variant: 0 for 75 steps, then 0.0075·(step − 75), cap 0.999.
    pub fn delayed_default() -> Self {
        EmaSchedule::Delayed {
            delay: 75,
            rate: 0.0075,
            cap: 0.999,
        }
    }

    pub fn eta(&self, step: u64) -> f64 {
        match *self {
            EmaSchedule::LinearCapped { rate, cap } => (rate * step as f64).min(cap),
            EmaSchedule::Delayed { delay, rate, cap } => {
                if step < delay {
                    0.0
                } else {
                    (rate * (step - delay) as f64).min(cap)
                }
            }
            EmaSchedule::Constant { eta } => eta,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EmaError {
    #[error("EMA: θ_old has no parameter `{0}` that θ has")]
    MissingInOld(String),
    #[error("EMA: θ has no parameter `{0}` that θ_old has")]
    MissingInNew(String),
    #[error("EMA: parameter `{name}` has shape {old:?} in θ_old but {new:?} in θ")]
    Shape {
        name: String,
        old: Vec<i64>,
        new: Vec<i64>,
    },
}

/// `old ← η·old + (1−η)·new` in place, under `no_grad`, matching parameters by name.
/// Both maps must hold the same names and shapes.
pub fn ema_update(
    old: &BTreeMap<String, Tensor>,
    new: &BTreeMap<String, Tensor>,
    eta: f64,
) -> Result<(), EmaError> {
    if let Some(k) = new.keys().find(|k| !old.contains_key(*k)) {
        return Err(EmaError::MissingInOld(k.clone()));
    }
    if let Some(k) = old.keys().find(|k| !new.contains_key(*k)) {
        return Err(EmaError::MissingInNew(k.clone()));
    }
    for (name, o) in old {
        let n = &new[name];
        if o.size() != n.size() {
            return Err(EmaError::Shape {
                name: name.clone(),
                old: o.size(),
                new: n.size(),
            });
        }
    }
    tch::no_grad(|| {
        for (name, o) in old {
            let mut o = o.shallow_clone();
            // old = η·old + (1−η)·new
            let _ = o
                .f_mul_scalar_(eta)
                .and_then(|mut t| t.f_add_(&(&new[name] * (1.0 - eta))));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn params(seed: i64) -> BTreeMap<String, Tensor> {
        tch::manual_seed(seed);
        [
            "blocks.1.attn.to_q.lora_A",
            "blocks.0.attn.to_q.lora_A",
            "blocks.0.attn.to_v.lora_B",
        ]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Tensor::randn([3, 2], (Kind::Float, Device::Cpu)),
            )
        })
        .collect()
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.equal(b)
    }

    #[test]
    fn eta_zero_copies_theta_and_eta_one_keeps_theta_old() {
        let (old, new) = (params(1), params(2));
        let keep: BTreeMap<String, Tensor> =
            old.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
        ema_update(&old, &new, 1.0).unwrap();
        assert!(old.iter().all(|(k, v)| same(v, &keep[k])));
        ema_update(&old, &new, 0.0).unwrap();
        assert!(old.iter().all(|(k, v)| same(v, &new[k])));
    }

    #[test]
    fn matches_by_name_and_mixes() {
        let (old, new) = (params(1), params(2));
        let expect: BTreeMap<String, Tensor> = old
            .iter()
            .map(|(k, v)| (k.clone(), v * 0.3 + &new[k] * 0.7))
            .collect();
        ema_update(&old, &new, 0.3).unwrap();
        for (k, v) in &old {
            assert!((v - &expect[k]).abs().max().double_value(&[]) < 1e-6, "{k}");
        }
        let mut short = params(2);
        short.remove("blocks.0.attn.to_v.lora_B");
        assert_eq!(
            ema_update(&old, &short, 0.5),
            Err(EmaError::MissingInNew("blocks.0.attn.to_v.lora_B".into()))
        );
    }

    #[test]
    fn schedules() {
        let s = EmaSchedule::default();
        assert_eq!(s.eta(0), 0.0);
        assert!((s.eta(100) - 0.1).abs() < 1e-12);
        assert_eq!(s.eta(10_000), 0.5);
        let d = EmaSchedule::delayed_default();
        assert_eq!(d.eta(74), 0.0);
        assert!((d.eta(175) - 0.75).abs() < 1e-12);
        assert_eq!(d.eta(1_000), 0.999);
        assert_eq!(EmaSchedule::Constant { eta: 0.9 }.eta(3), 0.9);
    }
}
