//! Loss parity with an independent PyTorch implementation of method-spec §4
//! (`tests/golden/nft/gen.py`): every term and the gradient wrt v_θ within 1e-5 relative,
//! plus finite-difference checks of both regularisers and the special cases of the spec.

use cocoflow_torch::nft::{
    Anchor, Distance, MaskDown, NftBatch, NftConfig, NftTerms, TauMinus, downsample_mask, nft_loss,
    region_distance,
};
use std::path::PathBuf;
use tch::{Kind, Tensor};

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/nft")
}

fn load(name: &str) -> Tensor {
    Tensor::read_npy(golden().join(format!("{name}.npy")))
        .unwrap()
        .to_kind(Kind::Double)
}

fn config(v: &serde_json::Value) -> NftConfig {
    NftConfig {
        beta: v["beta"].as_f64().unwrap(),
        adv_clip: v["adv_clip"].as_f64().unwrap(),
        kl_weight: v["kl_weight"].as_f64().unwrap(),
        lambda_ner: v["lambda_ner"].as_f64().unwrap(),
        lambda_er: v["lambda_er"].as_f64().unwrap(),
        tau_plus: v["tau_plus"].as_f64().unwrap(),
        tau_minus: match &v["tau_minus"] {
            serde_json::Value::String(_) => TauMinus::Adaptive,
            x => TauMinus::Fixed(x.as_f64().unwrap()),
        },
        distance: if v["distance"] == "mse" {
            Distance::Mse
        } else {
            Distance::L2
        },
        anchor: if v["anchor"] == "source" {
            Anchor::Source
        } else {
            Anchor::X0
        },
        mask_down: match v["mask_down"].as_str().unwrap() {
            "maxpool" => MaskDown::Maxpool,
            "nearest" => MaskDown::Nearest,
            _ => MaskDown::ErodeRing,
        },
        ner: true,
        er: true,
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

struct Inputs {
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    v_old: Tensor,
    v_theta: Tensor,
    v_ref: Tensor,
    r: Tensor,
    valid: Tensor,
    z_src: Tensor,
    pix: Tensor,
}

fn inputs() -> Inputs {
    Inputs {
        x0: load("x0"),
        x_t: load("x_t"),
        t: load("t"),
        v_old: load("v_old"),
        v_theta: load("v_theta"),
        v_ref: load("v_ref"),
        r: load("r"),
        valid: load("valid"),
        z_src: load("z_src"),
        pix: load("pix_mask"),
    }
}

fn run_with(
    inp: &Inputs,
    v_theta: &Tensor,
    r: &Tensor,
    valid: &Tensor,
    cfg: &NftConfig,
) -> NftTerms {
    let (ew, kw) = downsample_mask(&inp.pix, 8, 8, cfg.mask_down);
    let (ew, kw) = (ew.to_kind(Kind::Double), kw.to_kind(Kind::Double));
    nft_loss(
        &NftBatch {
            x0: &inp.x0,
            x_t: &inp.x_t,
            t: &inp.t,
            v_old: &inp.v_old,
            v_theta,
            v_ref: &inp.v_ref,
            r,
            valid,
            z_src: &inp.z_src,
            edit_w: &ew,
            keep_w: &kw,
        },
        cfg,
    )
}

fn run(inp: &Inputs, v_theta: &Tensor, cfg: &NftConfig) -> NftTerms {
    run_with(inp, v_theta, &inp.r, &inp.valid, cfg)
}

#[test]
fn terms_and_gradient_match_pytorch() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden().join("expected.json")).unwrap()).unwrap();
    let inp = inputs();
    assert_eq!(expected.as_object().unwrap().len(), 4);
    for (name, case) in expected.as_object().unwrap() {
        let cfg = config(&case["config"]);
        let v = inp.v_theta.detach().set_requires_grad(true);
        let terms = run(&inp, &v, &cfg);
        for (term, got) in [
            ("loss", &terms.loss),
            ("policy", &terms.policy),
            ("kl", &terms.kl),
            ("ner", &terms.ner),
            ("er", &terms.er),
        ] {
            let want = case["terms"][term].as_f64().unwrap();
            let got = got.double_value(&[]);
            if want == 0.0 {
                assert!(got.abs() < 1e-12, "{name}.{term}: {got} vs 0");
            } else {
                assert!(rel(got, want) < 1e-5, "{name}.{term}: {got} vs {want}");
            }
        }
        terms.loss.backward();
        let grad = v.grad();
        let want = Tensor::read_npy(golden().join(format!("grad_{name}.npy"))).unwrap();
        let err = (&grad - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(
            err / scale < 1e-5,
            "{name}: gradient differs by {err} (scale {scale})"
        );
    }
}

/// Central finite differences of a regulariser wrt v_θ at a few coordinates.
fn fd_check(cfg: &NftConfig, pick: fn(&NftTerms) -> Tensor) {
    let inp = inputs();
    let v = inp.v_theta.detach().set_requires_grad(true);
    let out = pick(&run(&inp, &v, cfg));
    out.backward();
    let g = v.grad();
    let h = 1e-6;
    let mut nonzero = 0;
    for idx in [
        [0i64, 0, 3, 4],
        [1, 2, 5, 1],
        [3, 1, 4, 4],
        [0, 1, 2, 6],
        [3, 2, 7, 7],
        [0, 0, 1, 1],
    ] {
        let bump = |d: f64| {
            let w = inp.v_theta.copy();
            let _ = w
                .get(idx[0])
                .get(idx[1])
                .get(idx[2])
                .get(idx[3])
                .f_add_scalar_(d)
                .unwrap();
            pick(&run(&inp, &w, cfg)).double_value(&[])
        };
        let fd = (bump(h) - bump(-h)) / (2.0 * h);
        let an = g.double_value(&idx);
        assert!(
            (fd - an).abs() <= 1e-7 + 1e-4 * an.abs().max(fd.abs()),
            "at {idx:?}: finite difference {fd} vs autograd {an}"
        );
        nonzero += usize::from(an != 0.0);
    }
    assert!(
        nonzero > 0,
        "the regulariser had no gradient at any checked coordinate"
    );
}

#[test]
fn finite_differences_of_both_regularisers() {
    fd_check(
        &NftConfig {
            lambda_ner: 1.0,
            ..Default::default()
        },
        |t| t.ner.shallow_clone(),
    );
    fd_check(
        &NftConfig {
            lambda_er: 1.0,
            tau_minus: TauMinus::Fixed(0.5),
            ..Default::default()
        },
        |t| t.er.shallow_clone(),
    );
}

#[test]
fn inactive_hinge_has_zero_gradient() {
    let inp = inputs();
    let cfg = NftConfig {
        lambda_ner: 1.0,
        lambda_er: 1.0,
        tau_plus: 1e6,
        tau_minus: TauMinus::Fixed(-1.0),
        ..Default::default()
    };
    let v = inp.v_theta.detach().set_requires_grad(true);
    let terms = run(&inp, &v, &cfg);
    assert_eq!(terms.ner.double_value(&[]), 0.0);
    assert_eq!(terms.er.double_value(&[]), 0.0);
    assert_eq!(terms.ner_active, 0.0);
    (terms.ner + terms.er).backward();
    assert_eq!(v.grad().abs().sum(Kind::Double).double_value(&[]), 0.0);
}

#[test]
fn beta_one_and_r_one_is_the_plain_positive_loss() {
    let inp = inputs();
    let ones = Tensor::ones([4], (Kind::Double, tch::Device::Cpu));
    let cfg = NftConfig {
        kl_weight: 0.0,
        ..Default::default()
    };
    let terms = run_with(&inp, &inp.v_theta, &ones, &ones, &cfg);
    // With β = 1, v⁺ = v_θ: the adaptive-weighted flow-matching loss of θ itself, × adv_clip.
    let err = &inp.x_t - inp.t.view([-1, 1, 1, 1]) * &inp.v_theta - &inp.x0;
    let w = err
        .abs()
        .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double)
        .clamp_min(1e-5);
    let plain = (err
        .square()
        .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double)
        / w)
        .mean(Kind::Double)
        * 5.0;
    assert!(rel(terms.policy.double_value(&[]), plain.double_value(&[])) < 1e-10);
}

#[test]
fn distance_on_an_empty_region_is_zero_and_maxpool_marks_touched_cells() {
    let a = Tensor::ones([1, 3, 4, 4], (Kind::Double, tch::Device::Cpu));
    let b = Tensor::zeros([1, 3, 4, 4], (Kind::Double, tch::Device::Cpu));
    let w = Tensor::zeros([1, 1, 4, 4], (Kind::Double, tch::Device::Cpu));
    assert_eq!(
        region_distance(&a, &b, &w, Distance::Mse).double_value(&[0]),
        0.0
    );
    let pix = Tensor::zeros([1, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
    let _ = pix.get(0).get(0).get(3).get(3).fill_(1.0);
    let (e, k) = downsample_mask(&pix, 4, 4, MaskDown::Maxpool);
    assert_eq!(e.sum(Kind::Double).double_value(&[]), 1.0);
    assert_eq!(e.double_value(&[0, 0, 1, 1]), 1.0);
    assert_eq!(k.sum(Kind::Double).double_value(&[]), 15.0);
}
