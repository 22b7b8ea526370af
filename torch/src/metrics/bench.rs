//! Throughput of masked PSNR + SSIM against the NumPy/SciPy baseline, measured in the same run.
//!
//! `cocoflow bench-metrics [--batch 8] [--size 512] [--repeat 3]` builds a deterministic batch of
//! photo-like RGB images (smooth random fields, an edited copy with noise and a pasted block,
//! irregular keep masks over ~70 % of the pixels), times [`masked_metrics`] (validation, both
//! metrics, results on the host) on every backend this machine has, runs
//! `scripts/bench_metrics.py` (the NumPy/SciPy implementation of the same formulas, float64)
//! on the same arrays, checks that the values agree, and prints megapixels (B·H·W) per second
//! and the ratio to NumPy. Each figure is the best of `--repeat` timed runs after a warm-up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::pixel::{SampleResult, masked_metrics};
use super::torch_ops::blur;
use super::{Backend, MetricsConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub batch: i64,
    /// Height and width of the square images.
    pub size: i64,
    pub repeat: usize,
    /// Python interpreter (default: `.venv/bin/python` of the repository, else `python3`).
    pub python: Option<PathBuf>,
    /// The baseline script (default: `scripts/bench_metrics.py` of the repository).
    pub script: Option<PathBuf>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            batch: 8,
            size: 512,
            repeat: 3,
            python: None,
            script: None,
        }
    }
}

/// One timed implementation.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub name: String,
    pub seconds: f64,
    pub mpix_per_s: f64,
    /// Throughput over NumPy's (None when the baseline did not run).
    pub ratio: Option<f64>,
}

/// The whole measurement.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub batch: i64,
    pub size: i64,
    pub megapixels: f64,
    pub threads: i32,
    pub numpy: Result<BenchRow, String>,
    pub rows: Vec<BenchRow>,
    /// Largest |ΔSSIM| and |ΔPSNR| (dB) between the native kernel and NumPy.
    pub agreement: Option<(f64, f64)>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python(cfg: &BenchConfig) -> PathBuf {
    if let Some(p) = &cfg.python {
        return p.clone();
    }
    for venv in [
        repo_root().join(".venv/bin/python"),
        PathBuf::from(".venv/bin/python"),
    ] {
        if venv.exists() {
            return venv;
        }
    }
    PathBuf::from("python3")
}

fn script(cfg: &BenchConfig) -> PathBuf {
    if let Some(s) = &cfg.script {
        return s.clone();
    }
    let in_repo = repo_root().join("scripts/bench_metrics.py");
    if in_repo.exists() {
        in_repo
    } else {
        PathBuf::from("scripts/bench_metrics.py")
    }
}

/// The benchmark batch: (source, edited, keep_mask), float32 on the CPU.
pub fn bench_batch(batch: i64, size: i64) -> (Tensor, Tensor, Tensor) {
    tch::no_grad(|| {
        tch::manual_seed(20261130);
        let cpu = (Kind::Float, Device::Cpu);
        let coarse = Tensor::rand([batch, 3, size / 8 + 1, size / 8 + 1], cpu);
        let up = coarse.upsample_bilinear2d([size, size], false, None, None);
        let fine = blur(&Tensor::rand([batch, 3, size, size], cpu));
        let source = (up * 0.7 + fine * 0.3 + Tensor::rand([batch, 3, size, size], cpu) * 0.05)
            .clamp(0.0, 1.0);
        let edited = (&source + Tensor::randn([batch, 3, size, size], cpu) * 0.03).clamp(0.0, 1.0);
        let (s4, s2) = (size / 4, size / 2);
        let block = source.narrow(2, 0, s4).narrow(3, 0, s4).flip([2]);
        edited.narrow(2, s2, s4).narrow(3, s2, s4).copy_(&block);
        let field = blur(&blur(&Tensor::rand(
            [batch, 1, size / 4 + 1, size / 4 + 1],
            cpu,
        )))
        .upsample_bilinear2d([size, size], false, None, None);
        let q = field
            .view([batch, -1])
            .quantile_scalar(0.3, 1, true, "linear")
            .view([batch, 1, 1, 1]);
        let keep = field.gt_tensor(&q).to_kind(Kind::Float);
        (source, edited, keep)
    })
}

fn time_best<F: FnMut() -> Vec<SampleResult>>(repeat: usize, mut f: F) -> (f64, Vec<SampleResult>) {
    let mut out = f(); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, out)
}

fn numpy_baseline(
    cfg: &BenchConfig,
    a: &Tensor,
    b: &Tensor,
    k: &Tensor,
) -> Result<(f64, Value), String> {
    let dir = std::env::temp_dir().join(format!("cocoflow-bench-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let files = [("source", a), ("edited", b), ("keep", k)]
        .map(|(n, t)| (n, dir.join(format!("{n}.npy")), t));
    for (_, path, t) in &files {
        t.write_npy(path)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    let (py, script) = (python(cfg), script(cfg));
    let mut cmd = Command::new(&py);
    cmd.arg(&script)
        .arg("--repeat")
        .arg(cfg.repeat.max(1).to_string());
    for (name, path, _) in &files {
        cmd.arg(format!("--{name}")).arg(path);
    }
    let out = cmd.output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| format!("cannot run `{}`: {e}", py.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`{} {}` failed: {}",
            py.display(),
            script.display(),
            err.trim()
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("bad output of `{}`: {e}", script.display()))?;
    let secs = v["seconds"]
        .as_f64()
        .ok_or_else(|| format!("no `seconds` in the output of `{}`", script.display()))?;
    Ok((secs, v))
}

/// Runs the benchmark.
pub fn run_bench(cfg: &BenchConfig) -> BenchReport {
    let (a, b, k) = bench_batch(cfg.batch, cfg.size);
    let megapixels = (cfg.batch * cfg.size * cfg.size) as f64 / 1e6;
    let threads = tch::get_num_threads();
    let row = |name: String, seconds: f64| BenchRow {
        name,
        seconds,
        mpix_per_s: megapixels / seconds,
        ratio: None,
    };

    let numpy = numpy_baseline(cfg, &a, &b, &k);
    let mut rows = Vec::new();
    let mut native_results = Vec::new();
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    for device in devices {
        let (a, b, k) = (
            a.to_device(device),
            b.to_device(device),
            k.to_device(device),
        );
        let mut backends = vec![Backend::TorchF64, Backend::TorchF32];
        if device == Device::Cpu {
            backends.insert(0, Backend::Native);
        }
        for backend in backends {
            let mc = MetricsConfig {
                backend,
                ..MetricsConfig::default()
            };
            let (secs, res) = time_best(cfg.repeat, || {
                masked_metrics(&a, &b, &k, &mc).expect("valid benchmark inputs")
            });
            let name = match (backend, device) {
                (Backend::Native, _) => format!("native (cpu, {threads} threads, float64)"),
                (Backend::TorchF64, Device::Cpu) => "torch-f64 (cpu)".to_string(),
                (Backend::TorchF32, Device::Cpu) => "torch-f32 (cpu)".to_string(),
                (Backend::TorchF64, _) => "torch-f64 (cuda:0)".to_string(),
                _ => "torch-f32 (cuda:0)".to_string(),
            };
            rows.push(row(name, secs));
            if backend == Backend::Native {
                native_results = res;
                if threads > 1 {
                    tch::set_num_threads(1);
                    let (secs, _) = time_best(cfg.repeat, || {
                        masked_metrics(&a, &b, &k, &mc).expect("valid")
                    });
                    tch::set_num_threads(threads);
                    rows.push(row("native (cpu, 1 thread, float64)".to_string(), secs));
                }
            }
        }
    }

    let mut agreement = None;
    let numpy = numpy.map(|(secs, v)| {
        let (mut ds, mut dd) = (0.0f64, 0.0f64);
        for (i, r) in native_results.iter().enumerate() {
            if let (Ok(m), Some(ssim), Some(mse)) = (r, v["ssim"][i].as_f64(), v["mse"][i].as_f64())
            {
                ds = ds.max((m.ssim - ssim).abs());
                dd = dd.max((m.psnr_db - super::pixel::psnr_db(mse)).abs());
            }
        }
        agreement = Some((ds, dd));
        row("numpy/scipy (float64, 1 thread)".to_string(), secs)
    });
    let numpy = numpy.map(|mut base| {
        base.ratio = Some(1.0);
        base
    });
    if let Ok(base) = &numpy {
        for r in &mut rows {
            r.ratio = Some(r.mpix_per_s / base.mpix_per_s);
        }
    }
    BenchReport {
        batch: cfg.batch,
        size: cfg.size,
        megapixels,
        threads,
        numpy,
        rows,
        agreement,
    }
}

impl BenchReport {
    /// The ratio of the native kernel to NumPy, when both ran.
    pub fn native_ratio(&self) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name.starts_with("native (cpu, ") && !r.name.contains("1 thread,"))
            .and_then(|r| r.ratio)
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "bench-metrics: masked PSNR + SSIM of {} RGB images of {}×{} ({:.2} MP), best of the timed runs\n",
            self.batch, self.size, self.size, self.megapixels
        );
        s.push_str(&format!(
            "{:38}  {:>9}  {:>9}  {:>8}\n",
            "implementation", "seconds", "MP/s", "× numpy"
        ));
        let line = |r: &BenchRow| {
            let ratio = r.ratio.map_or("-".to_string(), |x| format!("{x:.2}"));
            format!(
                "{:38}  {:>9.4}  {:>9.2}  {:>8}\n",
                r.name, r.seconds, r.mpix_per_s, ratio
            )
        };
        match &self.numpy {
            Ok(r) => s.push_str(&line(r)),
            Err(e) => s.push_str(&format!("numpy baseline did not run: {e}\n")),
        }
        for r in &self.rows {
            s.push_str(&line(r));
        }
        if let Some((ds, dd)) = self.agreement {
            s.push_str(&format!(
                "agreement of native with numpy: max |ΔSSIM| {ds:.1e}, max |ΔPSNR| {dd:.1e} dB\n"
            ));
        }
        if let Some(x) = self.native_ratio() {
            let verdict = if x >= 5.0 { "met" } else { "NOT met" };
            s.push_str(&format!(
                "goal native ≥ 5× numpy on CPU: {verdict} ({x:.1}×)\n"
            ));
        }
        if !tch::Cuda::is_available() {
            s.push_str("no CUDA device: GPU figures not measured\n");
        }
        s
    }

    pub fn to_json(&self) -> Value {
        let row = |r: &BenchRow| json!({"name": r.name, "seconds": r.seconds, "mpix_per_s": r.mpix_per_s, "ratio_to_numpy": r.ratio});
        json!({
            "batch": self.batch,
            "size": self.size,
            "megapixels": self.megapixels,
            "threads": self.threads,
            "numpy": match &self.numpy { Ok(r) => row(r), Err(e) => json!({"error": e}) },
            "rows": self.rows.iter().map(row).collect::<Vec<_>>(),
            "agreement": self.agreement.map(|(s, d)| json!({"max_abs_ssim": s, "max_abs_psnr_db": d})),
            "native_ratio": self.native_ratio(),
        })
    }
}
