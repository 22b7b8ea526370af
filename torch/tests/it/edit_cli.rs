//! `cocoflow edit` (run in-process through the worker's subcommand): one edit for each backend
//! (tiny-kontext, the tiny random FLUX.1 Kontext and Qwen-Image-Edit repositories), `--latents`
//! in the packed and the unpacked layout giving the same edit, `--save-latents` equal to the
//! library's result, and the exit code and message of a directory that is no model.

use cocoflow_torch::edit::{EditSettings, Noise, edit};
use cocoflow_torch::models::checkpoint::{read_safetensors, write_safetensors};
use cocoflow_torch::models::flux_kontext::vae::pack_latents;
use cocoflow_torch::models::{EditPolicy, TextEncoderConfig, TinyKontext, TinyKontextConfig, open};
use cocoflow_torch::sampling::SamplerKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn flux_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/flux/tiny-flux-kontext")
}

/// Runs `cocoflow edit ARGS` in-process; the exit code.
fn cli(args: &[&str]) -> i32 {
    let ext = cocoflow_torch::cli::edit::extension();
    let m = ext
        .command
        .clone()
        .try_get_matches_from(std::iter::once("edit").chain(args.iter().copied()))
        .unwrap();
    (ext.run)(&m)
}

fn tiny_model(dir: &Path) {
    let cfg = TinyKontextConfig {
        num_layers: 2,
        num_attention_heads: 2,
        attention_head_dim: 16,
        mlp_ratio: 2.0,
        timestep_freq_dim: 32,
        text_encoder: TextEncoderConfig {
            hidden_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 64,
            ..TextEncoderConfig::default()
        },
        ..TinyKontextConfig::default()
    };
    TinyKontext::new(&cfg, Device::Cpu, 3)
        .unwrap()
        .save(dir)
        .unwrap();
}

fn save_png(path: &Path, h: i64, w: i64) -> Tensor {
    let img = (Tensor::rand([3, h, w], (Kind::Float, Device::Cpu)) * 255.0).round() / 255.0;
    cocoflow_torch::imageio::tensor::save_rgb(path, &img).unwrap();
    img
}

#[test]
fn edit_runs_for_every_backend() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    // tiny-kontext, noise from a seed
    tiny_model(&tmp.path().join("tiny"));
    let _ = save_png(&tmp.path().join("src16.png"), 16, 16);
    let code = cli(&[
        "--model",
        &p("tiny"),
        "--image",
        &p("src16.png"),
        "--instruction",
        "remove the red circle",
        "--steps",
        "3",
        "--seed",
        "7",
        "--out",
        &p("tiny.png"),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0);
    assert!(tmp.path().join("tiny.png").is_file());

    // FLUX.1 Kontext: given noise, packed and unpacked, and the library's result
    let src = save_png(&tmp.path().join("src.png"), 16, 24);
    let unpacked = Tensor::randn([1, 4, 4, 6], (Kind::Float, Device::Cpu));
    let packed = pack_latents(&unpacked).unwrap();
    for (name, t) in [("packed", &packed), ("unpacked", &unpacked)] {
        let f = tmp.path().join(format!("{name}.safetensors"));
        write_safetensors(&f, &BTreeMap::from([("latents".to_string(), t.copy())])).unwrap();
        let code = cli(&[
            "--model",
            &flux_repo().display().to_string(),
            "--image",
            &p("src.png"),
            "--instruction",
            "make it blue",
            "--steps",
            "2",
            "--guidance",
            "2.5",
            "--latents",
            &f.display().to_string(),
            "--out",
            &p(&format!("{name}.png")),
            "--save-latents",
            &p(&format!("{name}.out.safetensors")),
            "--device",
            "cpu",
        ]);
        assert_eq!(code, 0, "{name}");
    }
    let out = |n: &str| read_safetensors(&tmp.path().join(n)).unwrap()["latents"].copy();
    let (a, b) = (
        out("packed.out.safetensors"),
        out("unpacked.out.safetensors"),
    );
    assert!(a.equal(&b), "packed and unpacked noise give the same edit");
    let policy = open(&flux_repo(), Device::Cpu).unwrap();
    assert_eq!(policy.backend(), "flux-kontext");
    let lib = edit(
        &*policy,
        &EditSettings {
            image: &src,
            instruction: "make it blue",
            height: None,
            width: None,
            steps: 2,
            guidance: Some(2.5),
            sampler: SamplerKind::Euler,
            noise: Noise::Latents(unpacked.copy()),
        },
    )
    .unwrap();
    assert!(
        lib.latents.equal(&a),
        "the command line runs the library's edit"
    );

    // a latent of the wrong size names both layouts
    let f = tmp.path().join("bad.safetensors");
    write_safetensors(
        &f,
        &BTreeMap::from([(
            "x".to_string(),
            Tensor::zeros([1, 4, 4, 4], (Kind::Float, Device::Cpu)),
        )]),
    )
    .unwrap();
    let e = edit(
        &*policy,
        &EditSettings {
            image: &src,
            instruction: "x",
            height: None,
            width: None,
            steps: 1,
            guidance: None,
            sampler: SamplerKind::Euler,
            noise: Noise::Latents(read_safetensors(&f).unwrap()["x"].copy()),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("(1, 4, 4, 6) or packed (1, 6, 16)"), "{e}");

    // not a model directory: exit 3
    let code = cli(&[
        "--model",
        &p("nothing"),
        "--image",
        &p("src.png"),
        "--instruction",
        "x",
        "--out",
        &p("x.png"),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 3);
}

fn qwen_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/qwen/tiny-qwen-image-edit")
}

/// Qwen-Image-Edit through `cocoflow edit`: `--latents` packed `(1, (H/16)(W/16), 4·z_dim)` (the
/// pipeline's) and unpacked `(1, z_dim, H/8, W/8)` give the same edit, the library's; without
/// `--guidance` the true-CFG scale is the pipeline's 4.0; a source whose sides are not
/// multiples of 16 is refused with exit 3.
#[test]
fn edit_runs_on_qwen_image_edit() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    let src = save_png(&tmp.path().join("src.png"), 32, 48);
    let unpacked = Tensor::randn([1, 4, 4, 6], (Kind::Float, Device::Cpu));
    let packed = pack_latents(&unpacked).unwrap();
    assert_eq!(packed.size(), [1, 6, 16]);
    let run = |name: &str, t: &Tensor, guidance: Option<&str>| {
        let f = tmp.path().join(format!("{name}.safetensors"));
        write_safetensors(&f, &BTreeMap::from([("latents".to_string(), t.copy())])).unwrap();
        let (model, image, latents, out, save) = (
            qwen_repo().display().to_string(),
            p("src.png"),
            f.display().to_string(),
            p(&format!("{name}.png")),
            p(&format!("{name}.out.safetensors")),
        );
        let mut args = vec![
            "--model",
            &model,
            "--image",
            &image,
            "--instruction",
            "make it blue",
            "--steps",
            "2",
            "--latents",
            &latents,
            "--out",
            &out,
            "--save-latents",
            &save,
            "--device",
            "cpu",
        ];
        if let Some(g) = guidance {
            args.extend(["--guidance", g]);
        }
        assert_eq!(cli(&args), 0, "{name}");
        read_safetensors(&tmp.path().join(format!("{name}.out.safetensors"))).unwrap()["latents"]
            .copy()
    };
    let a = run("packed", &packed, Some("4.0"));
    let b = run("unpacked", &unpacked, Some("4.0"));
    assert!(a.equal(&b), "packed and unpacked noise give the same edit");
    assert!(
        run("default", &packed, None).equal(&a),
        "the default guidance is 4.0"
    );
    assert!(
        !run("plain", &packed, Some("1.0")).equal(&a),
        "true CFG changes the edit"
    );
    let policy = open(&qwen_repo(), Device::Cpu).unwrap();
    assert_eq!(policy.backend(), "qwen-image-edit");
    let lib = edit(
        &*policy,
        &EditSettings {
            image: &src,
            instruction: "make it blue",
            height: None,
            width: None,
            steps: 2,
            guidance: Some(4.0),
            sampler: SamplerKind::Euler,
            noise: Noise::Latents(unpacked.copy()),
        },
    )
    .unwrap();
    assert!(
        lib.latents.equal(&a),
        "the command line runs the library's edit"
    );
    // a wrong latent names both layouts
    let e = edit(
        &*policy,
        &EditSettings {
            image: &src,
            instruction: "x",
            height: None,
            width: None,
            steps: 1,
            guidance: None,
            sampler: SamplerKind::Euler,
            noise: Noise::Latents(Tensor::zeros([1, 4, 4, 4], (Kind::Float, Device::Cpu))),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("(1, 4, 4, 6) or packed (1, 6, 16)"), "{e}");
    // sides that are not multiples of 16
    let _ = save_png(&tmp.path().join("odd.png"), 24, 24);
    let code = cli(&[
        "--model",
        &qwen_repo().display().to_string(),
        "--image",
        &p("odd.png"),
        "--instruction",
        "x",
        "--out",
        &p("x.png"),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 3);
}
