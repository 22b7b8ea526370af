//! The metrics' configuration (r_sim's weights, the PSNR normaliser, what is refused) and
//! the exact text of every input error.

use tch::{Device, Kind, Tensor};

use super::*;

/// r_sim's weights and the PSNR normaliser come from the config; invalid configs are refused.
#[test]
fn config_weights_and_validation() {
    assert_eq!(psnr_db(0.0), f64::INFINITY);
    assert!((psnr_db(0.01) - 20.0).abs() < 1e-12);
    assert_eq!(psnr_norm(f64::INFINITY, 40.0), 1.0);
    assert_eq!(psnr_norm(20.0, 40.0), 0.5);
    assert_eq!(psnr_norm(50.0, 40.0), 1.0);
    let c = MetricsConfig {
        w_s: 0.35,
        tau_db: 30.0,
        ..MetricsConfig::default()
    };
    assert!((r_sim(0.8, 24.0, &c) - (0.35 * 0.8 + 0.65 * 0.8)).abs() < 1e-15);
    let d = MetricsConfig::default();
    assert_eq!(
        (d.w_s, d.tau_db, d.mask_rule, d.backend),
        (0.5, 40.0, MaskRule::Threshold, Backend::Auto)
    );
    let parsed: MetricsConfig =
        serde_json::from_str(r#"{"w_s": 0.35, "backend": "torch-f32", "mask_rule": "strict"}"#)
            .unwrap();
    assert_eq!(
        (parsed.w_s, parsed.tau_db, parsed.backend, parsed.mask_rule),
        (0.35, 40.0, Backend::TorchF32, MaskRule::Strict)
    );
    assert!(
        serde_json::from_str::<MetricsConfig>(r#"{"ws": 0.35}"#)
            .unwrap_err()
            .to_string()
            .contains("unknown field `ws`")
    );

    let a = Tensor::full([1, 3, 4, 4], 0.5, (Kind::Double, Device::Cpu));
    let k = Tensor::ones([1, 1, 4, 4], (Kind::Double, Device::Cpu));
    let err = |c: MetricsConfig| masked_metrics(&a, &a, &k, &c).unwrap_err().to_string();
    assert_eq!(
        err(MetricsConfig {
            w_s: 1.5,
            ..d.clone()
        }),
        "invalid metrics config: `w_s` = 1.5 (in [0, 1])"
    );
    assert_eq!(
        err(MetricsConfig {
            tau_db: 0.0,
            ..d.clone()
        }),
        "invalid metrics config: `tau_db` = 0 (a finite number of dB > 0)"
    );
}

/// Every input error names the input and says what was expected (exact texts).
#[test]
fn input_errors_name_the_input() {
    let cpu = (Kind::Double, Device::Cpu);
    let img = Tensor::full([2, 3, 8, 8], 0.5, cpu);
    let keep = Tensor::ones([2, 1, 8, 8], cpu);
    let c = MetricsConfig::default();
    let err =
        |a: &Tensor, b: &Tensor, k: &Tensor| masked_metrics(a, b, k, &c).unwrap_err().to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            err(&Tensor::full([3, 8, 8], 0.5, cpu), &img, &keep),
            "`source` must have shape (B, C, H, W), got [3, 8, 8]",
        ),
        (
            err(&img, &Tensor::full([2, 3, 8, 9], 0.5, cpu), &keep),
            "`edited` has shape [2, 3, 8, 9], which does not match `source` [2, 3, 8, 8] (edited must have the same (B, C, H, W))",
        ),
        (
            err(&img, &img, &Tensor::ones([2, 3, 8, 8], cpu)),
            "`keep_mask` has shape [2, 3, 8, 8], which does not match `source` [2, 3, 8, 8] (keep_mask must be (B, 1, H, W))",
        ),
        (
            err(&img, &img, &Tensor::ones([2, 8, 8], cpu)),
            "`keep_mask` must have shape (B, 1, H, W), got [2, 8, 8]",
        ),
        (
            err(
                &Tensor::full([2, 4, 8, 8], 0.5, cpu),
                &Tensor::full([2, 4, 8, 8], 0.5, cpu),
                &keep,
            ),
            "`source` has 4 channels; 1 (grey) or 3 (RGB) are allowed",
        ),
        (
            err(
                &Tensor::full([2, 2, 8, 8], 0.5, cpu),
                &Tensor::full([2, 2, 8, 8], 0.5, cpu),
                &keep,
            ),
            "`source` has 2 channels; 1 (grey) or 3 (RGB) are allowed",
        ),
        (
            err(&(&img * 255.0), &img, &keep),
            "`source` has values outside [0, 1] (min 127.5, max 127.5): 8-bit values? divide by 255",
        ),
        (
            err(&img, &(&img * 2.0 - 1.5), &keep),
            "`edited` has values outside [0, 1] (min -0.5, max -0.5): values in [-1, 1]? map them with (x + 1) / 2",
        ),
        (
            err(&img, &(&img * 1000.0), &keep),
            "`edited` has values outside [0, 1] (min 500, max 500)",
        ),
        (
            err(
                &img,
                &img.where_self(&img.lt(0.0), &Tensor::from(f64::NAN)),
                &keep,
            ),
            "`edited` contains NaN or infinite values",
        ),
        (
            err(&(&img + f64::INFINITY), &img, &keep),
            "`source` contains NaN or infinite values",
        ),
        (
            err(&img, &img, &(&keep * 255.0)),
            "`keep_mask` has values outside [0, 1] (min 255, max 255): 8-bit values? divide by 255",
        ),
        (
            err(&img.to_kind(Kind::Uint8), &img, &keep),
            "`source` must be a floating-point tensor in [0, 1], got Uint8",
        ),
        (
            err(&img, &img.to_kind(Kind::Int64), &keep),
            "`edited` must be a floating-point tensor in [0, 1], got Int64",
        ),
        (
            err(
                &Tensor::zeros([0, 3, 8, 8], cpu),
                &Tensor::zeros([0, 3, 8, 8], cpu),
                &Tensor::zeros([0, 1, 8, 8], cpu),
            ),
            "`source` is empty (shape [0, 3, 8, 8])",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    // values a rounding error outside [0, 1] are accepted
    let near = &img * 0.0 + 1.0 + 5e-7;
    assert!(masked_metrics(&near, &img, &keep, &c).is_ok());
    if tch::Cuda::is_available() {
        let e = masked_metrics(&img, &img.to_device(Device::Cuda(0)), &keep, &c)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`edited` is on Cuda(0) but `source` is on Cpu");
        let n = MetricsConfig {
            backend: Backend::Native,
            ..c.clone()
        };
        let (g, k) = (
            img.to_device(Device::Cuda(0)),
            keep.to_device(Device::Cuda(0)),
        );
        assert_eq!(
            masked_metrics(&g, &g, &k, &n).unwrap_err().to_string(),
            "backend `native` cannot run on Cuda(0) tensors"
        );
    }
}
