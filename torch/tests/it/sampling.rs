//! Samplers on an analytic flow, schedules, and per-sample seeds with tiny-kontext.

use cocoflow_torch::models::{
    ActiveAdapter, EditPolicy, TextEncoderConfig, TinyKontext, TinyKontextConfig,
};
use cocoflow_torch::sampling::*;
use tch::{Device, Kind, Tensor};

/// Gaussian data `x0 ~ N(m, s²)` per coordinate, `ε ~ N(0, 1)`, `x_t = (1 − t)·x0 + t·ε`.
/// The marginal velocity is `u(x, t) = −m + (t − (1 − t)s²)/V_t · (x − (1 − t)m)` with
/// `V_t = (1 − t)²s² + t²`, and the ODE from `x_1 = ε` ends exactly at `m + s·ε`.
struct Gaussian {
    m: f64,
    s: f64,
}

impl Gaussian {
    fn velocity(&self, x: &Tensor, t: f64) -> Tensor {
        let (m, s2) = (self.m, self.s * self.s);
        let v = (1.0 - t).powi(2) * s2 + t * t;
        (x - (1.0 - t) * m) * ((t - (1.0 - t) * s2) / v) - m
    }
}

fn endpoint_error(kind: SamplerKind, steps: usize, g: &Gaussian, eps: &Tensor) -> f64 {
    let sigmas = SchedulerConfig::default().sigmas(steps, 1024);
    let x = integrate(kind, eps.shallow_clone(), &sigmas, |x, t| {
        Ok::<_, ()>(g.velocity(x, t))
    })
    .unwrap();
    let exact = eps * g.s + g.m;
    (x - exact).abs().max().double_value(&[])
}

/// Endpoint errors for N = 16 … 1024 steps, with the ratios when N doubles, printed.
fn ratios(kind: SamplerKind) -> (Vec<f64>, Vec<f64>) {
    let g = Gaussian { m: 0.7, s: 0.3 };
    let eps = noise::sample_noise(7, &[4096], Kind::Double, Device::Cpu);
    let ns: Vec<usize> = (4..=10).map(|k| 1 << k).collect();
    let errs: Vec<f64> = ns
        .iter()
        .map(|&n| endpoint_error(kind, n, &g, &eps))
        .collect();
    let mut ratios = vec![];
    for i in 1..ns.len() {
        let ratio = errs[i - 1] / errs[i];
        println!(
            "{kind:?}: N {:>4} → {:>4}: max error {:.3e} → {:.3e}, ratio {ratio:.2} (order {:.2})",
            ns[i - 1],
            ns[i],
            errs[i - 1],
            errs[i],
            ratio.log2()
        );
        ratios.push(ratio);
    }
    (errs, ratios)
}

/// Euler converges with order 1: doubling N halves the endpoint error.
#[test]
fn euler_is_first_order() {
    let (_, r) = ratios(SamplerKind::Euler);
    for x in &r[1..] {
        assert!(
            (1.8..2.2).contains(x),
            "euler error ratio {x:.2} when N doubles, expected ≈ 2 ({r:?})"
        );
    }
}

/// dpm2 converges with order 2: doubling N divides the endpoint error by ≈ 4. The uniform-σ
/// schedule's first steps have λ-widths ln((i+1)/i) that do not shrink with N, which adds a
/// ln N factor (error ≈ (a + b·ln N)/N²), so the ratio approaches 4 from below (3.35 at
/// N = 1024, where Euler's is 2.00).
#[test]
fn dpm2_is_second_order() {
    let (e, r) = ratios(SamplerKind::Dpm2);
    let (euler, _) = ratios(SamplerKind::Euler);
    let last = *r.last().unwrap();
    assert!(
        (3.0..4.5).contains(&last),
        "dpm2 error ratio {last:.2} when N doubles, expected ≈ 4 ({r:?})"
    );
    assert!(
        r[r.len() - 3..].windows(2).all(|w| w[1] > w[0]),
        "ratios should rise towards 4: {r:?}"
    );
    assert!(
        e.last().unwrap() * 20.0 < *euler.last().unwrap(),
        "dpm2 {e:?} vs euler {euler:?}"
    );
}

#[test]
fn schedule_values() {
    let c = SchedulerConfig::default();
    assert!((c.mu(256) - 0.5).abs() < 1e-12 && (c.mu(4096) - 1.15).abs() < 1e-12);
    assert!((c.mu(1024) - 0.63).abs() < 1e-12);
    // reference values from the formula in Python (e^μ / (e^μ + 1/σ − 1), FLUX's μ line)
    let s = c.sigmas(4, 1024);
    let want = [
        1.0,
        0.8492348306829303,
        0.6524894621927445,
        0.38494474881746926,
        0.0,
    ];
    assert_eq!(s.len(), 5);
    for (a, b) in s.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{s:?}");
    }
    let s = c.sigmas(4, 64);
    assert!(
        (s[1] - 0.8272286778144335).abs() < 1e-12 && (s[3] - 0.3472583725250905).abs() < 1e-12,
        "{s:?}"
    );
    // no shift: exactly linspace(1, 1/N, N) then 0
    let off = SchedulerConfig {
        use_dynamic_shifting: false,
        ..c.clone()
    };
    assert_eq!(off.sigmas(4, 1024), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    assert_eq!(c.sigmas(1, 1024), vec![1.0, 0.0]);
    assert_eq!(time_shift(0.3, 1.0), 1.0);
    assert_eq!(time_shift(0.3, 0.0), 0.0);
    // strictly decreasing for any size
    for n in [1, 2, 10, 50] {
        let s = c.sigmas(n, 4096 * 4);
        assert!(s.windows(2).all(|w| w[0] > w[1]), "{s:?}");
    }
    let cfg: SchedulerConfig = serde_json::from_str(r#"{"base_shift": 0.3}"#).unwrap();
    assert_eq!(cfg.base_shift, 0.3);
    assert_eq!(cfg.max_image_seq_len, 4096);
}

/// One dpm2 step is a DDIM step from σ = 1 straight to 0: x0 = ε − v(ε, 1).
#[test]
fn one_step_is_x0_prediction() {
    let g = Gaussian { m: 0.7, s: 0.3 };
    let eps = noise::sample_noise(1, &[16], Kind::Double, Device::Cpu);
    for kind in [SamplerKind::Euler, SamplerKind::Dpm2] {
        let x = integrate(kind, eps.shallow_clone(), &[1.0, 0.0], |x, t| {
            Ok::<_, ()>(g.velocity(x, t))
        })
        .unwrap();
        assert!(x.allclose(&(&eps - g.velocity(&eps, 1.0)), 1e-12, 1e-12, false));
    }
}

fn small_policy() -> TinyKontext {
    let c = TinyKontextConfig {
        num_layers: 1,
        num_attention_heads: 2,
        attention_head_dim: 8,
        mlp_ratio: 2.0,
        timestep_freq_dim: 16,
        text_encoder: TextEncoderConfig {
            hidden_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 32,
            ..TextEncoderConfig::default()
        },
        ..TinyKontextConfig::default()
    };
    TinyKontext::new(&c, Device::Cpu, 5).unwrap()
}

fn sources(m: &TinyKontext) -> (Tensor, Vec<&'static str>) {
    let img = (noise::sample_noise(99, &[3, 3, 16, 16], Kind::Float, Device::Cpu) * 0.25 + 0.5)
        .clamp(0.0, 1.0);
    (
        m.encode(&img).unwrap(),
        vec![
            "remove the red circle",
            "make the background mint",
            "add a blue square",
        ],
    )
}

/// Each sample's noise depends on its seed alone, so a sample is reproduced in any batch:
/// bit-identical noise, bit-identical results for the same batch, equal up to float rounding
/// of batched matrix products in another batch.
#[test]
fn per_sample_seeds_reproduce_in_any_batch() {
    let m = small_policy();
    let (src, instr) = sources(&m);
    let cfg = SamplerConfig {
        steps: 4,
        ..SamplerConfig::default()
    };
    let cond = m.condition(&src, &instr).unwrap();
    let a = sample(&m, &cond, &[11, 22, 33], &cfg, &ActiveAdapter::Off).unwrap();
    let again = sample(&m, &cond, &[11, 22, 33], &cfg, &ActiveAdapter::Off).unwrap();
    assert!(a.iter().zip(&again).all(|(x, y)| x.x0.equal(&y.x0)));
    assert_eq!(a[1].seed, 22);
    assert_eq!(a[0].sigmas, m.scheduler().sigmas(4, 16));
    assert_eq!(a[0].x0.size(), vec![3, 16, 16]);
    assert!(!a[0].x0.requires_grad(), "sampling runs under no_grad");

    // sample 2 (seed 33) alone, and first in a reordered batch
    let idx = Tensor::from_slice(&[2i64]);
    let alone = sample(&m, &cond.select(&idx), &[33], &cfg, &ActiveAdapter::Off).unwrap();
    let order = Tensor::from_slice(&[2i64, 0, 1]);
    let reordered = sample(
        &m,
        &cond.select(&order),
        &[33, 11, 22],
        &cfg,
        &ActiveAdapter::Off,
    )
    .unwrap();
    for other in [&alone[0], &reordered[0]] {
        let d = (&other.x0 - &a[2].x0).abs().max().double_value(&[]);
        assert!(d < 1e-5, "seed 33 differs by {d} across batches");
    }
    assert!(
        batch_noise(&[33], &[3, 16, 16], Kind::Float, Device::Cpu)
            .get(0)
            .equal(&batch_noise(&[11, 22, 33], &[3, 16, 16], Kind::Float, Device::Cpu).get(2))
    );
    assert!((&a[0].x0 - &reordered[1].x0).abs().max().double_value(&[]) < 1e-5);
    // different seeds, different samples
    let other = sample(&m, &cond, &[12, 22, 33], &cfg, &ActiveAdapter::Off).unwrap();
    assert!((&other[0].x0 - &a[0].x0).abs().max().double_value(&[]) > 1e-2);
    assert_eq!(stack_x0(&a).size(), vec![3, 3, 16, 16]);
}

/// Guidance g: v = v_u + g·(v_c − v_u), the negative being the empty instruction; g = 1 is off.
#[test]
fn classifier_free_guidance() {
    let m = small_policy();
    let (src, instr) = sources(&m);
    let cond = m.condition(&src, &instr).unwrap();
    let seeds = [1, 2, 3];
    let one_step = |g: Option<f64>| {
        let cfg = SamplerConfig {
            sampler: SamplerKind::Euler,
            steps: 1,
            guidance: g,
        };
        stack_x0(&sample(&m, &cond, &seeds, &cfg, &ActiveAdapter::Off).unwrap())
    };
    let plain = one_step(None);
    assert!(one_step(Some(1.0)).equal(&plain));
    let guided = one_step(Some(3.0));
    // by hand: x0 = ε − v at σ = 1
    let eps = batch_noise(&seeds, &[3, 16, 16], Kind::Float, Device::Cpu);
    let t = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let uncond = m.unconditional(&cond).unwrap();
    let (vc, vu) = tch::no_grad(|| {
        (
            m.velocity_with(&eps, &t, &cond, &ActiveAdapter::Off, None)
                .unwrap(),
            m.velocity_with(&eps, &t, &uncond, &ActiveAdapter::Off, None)
                .unwrap(),
        )
    });
    let want = &eps - (&vu + (&vc - &vu) * 3.0);
    assert!(guided.allclose(&want, 1e-5, 1e-5, false));
    assert!((&guided - &plain).abs().max().double_value(&[]) > 1e-3);
}

#[test]
fn sampler_errors() {
    let m = small_policy();
    let (src, instr) = sources(&m);
    let cond = m.condition(&src, &instr).unwrap();
    let e = sample(
        &m,
        &cond,
        &[1, 2],
        &SamplerConfig::default(),
        &ActiveAdapter::Off,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "sampler: 2 seeds for a batch of 3");
    let cfg = SamplerConfig {
        steps: 0,
        ..SamplerConfig::default()
    };
    let e = sample(&m, &cond, &[1, 2, 3], &cfg, &ActiveAdapter::Off).unwrap_err();
    assert_eq!(e.to_string(), "sampler: `steps` must be at least 1");
    let e = sample(
        &m,
        &cond,
        &[1, 2, 3],
        &SamplerConfig::default(),
        &ActiveAdapter::theta(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "no adapter named `default` (known: none)");
    let cfg: SamplerConfig = serde_json::from_str(r#"{"sampler": "euler", "steps": 6}"#).unwrap();
    assert_eq!(
        (cfg.sampler, cfg.steps, cfg.guidance),
        (SamplerKind::Euler, 6, None)
    );
    assert!(serde_json::from_str::<SamplerConfig>(r#"{"step": 6}"#).is_err());
}
