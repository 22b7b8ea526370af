//! Scoring image files on disk: the library side of `cocoflow score` (one triplet or a folder).
//!
//! Images are PNG or JPEG, read by [`crate::imageio`]: 8-bit values / 255, grey files
//! repeated to RGB (which scores exactly like one grey channel), alpha dropped. A mask pixel is
//! white when its grey level is ≥ 128; with `--mask-polarity edit` (the default, as in
//! dataset manifests) white is the edited region and `keep_mask = 1 − white`; with `keep`
//! (CoCoEdit's published masks) white is the kept region. All three files of a triplet must
//! have the same size.
//!
//! A folder holds triplets `<key>_SRCIMG.<ext>` (source), `<key>.<ext>` (edited) and
//! `<key>_mask.<ext>`, ext ∈ {png, jpg, jpeg} in any case; every `<key>_SRCIMG` file defines a
//! key. Means are over the samples with a defined value; undefined (empty keep mask) and
//! failed samples are counted apart.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tch::Tensor;

use super::MetricsConfig;
use super::error::{MetricsError, Undefined};
use super::pixel::{SampleResult, masked_metrics};
use crate::data::MaskPolarity;
use crate::imageio::ImageError;
use crate::imageio::tensor;

/// Why a triplet could not be scored. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{what} `{}` is {width}×{height} but the source `{}` is {source_width}×{source_height}", path.display(), source_path.display())]
    Size {
        what: &'static str,
        path: PathBuf,
        width: i64,
        height: i64,
        source_path: PathBuf,
        source_width: i64,
        source_height: i64,
    },
    #[error("`{}`: {source}", path.display())]
    Metrics { path: PathBuf, source: MetricsError },
    #[error("no {what} for key `{key}` in `{}` (looked for {expected})", dir.display())]
    Missing {
        key: String,
        what: &'static str,
        dir: PathBuf,
        expected: String,
    },
    #[error("cannot read directory `{}`: {reason}", dir.display())]
    Dir { dir: PathBuf, reason: String },
    #[error("no `<key>_SRCIMG.png` (or .jpg, .jpeg) files in `{}`", dir.display())]
    EmptyDir { dir: PathBuf },
}

/// The score of one (source, edited, mask) triplet.
#[derive(Debug, Clone)]
pub struct FileScore {
    pub source: PathBuf,
    pub edited: PathBuf,
    pub mask: PathBuf,
    pub polarity: MaskPolarity,
    pub width: i64,
    pub height: i64,
    pub result: SampleResult,
}

/// Scores one triplet of files.
pub fn score_files(
    source: &Path,
    edited: &Path,
    mask: &Path,
    polarity: MaskPolarity,
    cfg: &MetricsConfig,
) -> Result<FileScore, ScoreError> {
    let a = tensor::load_rgb(source)?;
    let b = tensor::load_rgb(edited)?;
    let edit_mask = tensor::load_mask(mask, polarity)?;
    let (h, w) = (a.size()[1], a.size()[2]);
    for (what, path, t) in [("edited image", edited, &b), ("mask", mask, &edit_mask)] {
        let (th, tw) = (t.size()[1], t.size()[2]);
        if (th, tw) != (h, w) {
            return Err(ScoreError::Size {
                what,
                path: path.into(),
                width: tw,
                height: th,
                source_path: source.into(),
                source_width: w,
                source_height: h,
            });
        }
    }
    let keep: Tensor = 1.0 - edit_mask; // keep_mask = 1 − edit_mask
    let result = masked_metrics(&a.unsqueeze(0), &b.unsqueeze(0), &keep.unsqueeze(0), cfg)
        .map_err(|e| ScoreError::Metrics {
            path: edited.into(),
            source: e,
        })?
        .remove(0);
    Ok(FileScore {
        source: source.into(),
        edited: edited.into(),
        mask: mask.into(),
        polarity,
        width: w,
        height: h,
        result,
    })
}

/// One key of a folder.
#[derive(Debug)]
pub struct DirEntry {
    pub key: String,
    pub score: Result<FileScore, ScoreError>,
}

/// Means over the samples with a defined value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Means {
    pub count: usize,
    /// Mean of the per-sample PSNR in dB (+∞ if any sample is +∞).
    pub psnr_db: f64,
    pub ssim: f64,
    pub r_sim: f64,
}

/// The scores of a folder.
#[derive(Debug)]
pub struct DirScore {
    pub dir: PathBuf,
    pub polarity: MaskPolarity,
    pub entries: Vec<DirEntry>,
    /// `None` when no sample has a defined value.
    pub mean: Option<Means>,
    pub undefined: usize,
    pub failed: usize,
}

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// `name` without a `.png`/`.jpg`/`.jpeg` extension (any case), if it has one.
fn stem_of_image(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    EXTENSIONS
        .iter()
        .any(|e| ext.eq_ignore_ascii_case(e))
        .then_some(stem)
}

/// The first existing file among `<base>.<ext>` in `names` (png before jpg before jpeg).
fn find(names: &[String], base: &str) -> Option<String> {
    EXTENSIONS.iter().find_map(|want| {
        names
            .iter()
            .find(|n| {
                stem_of_image(n) == Some(base)
                    && n.rsplit_once('.')
                        .is_some_and(|(_, e)| e.eq_ignore_ascii_case(want))
            })
            .cloned()
    })
}

/// Scores every `<key>_SRCIMG` / `<key>` / `<key>_mask` triplet of a folder, keys in order.
pub fn score_dir(
    dir: &Path,
    polarity: MaskPolarity,
    cfg: &MetricsConfig,
) -> Result<DirScore, ScoreError> {
    let read = std::fs::read_dir(dir).map_err(|e| ScoreError::Dir {
        dir: dir.into(),
        reason: e.to_string(),
    })?;
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| ScoreError::Dir {
            dir: dir.into(),
            reason: e.to_string(),
        })?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    let mut keys: Vec<String> = names
        .iter()
        .filter_map(|n| stem_of_image(n)?.strip_suffix("_SRCIMG").map(str::to_owned))
        .collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Err(ScoreError::EmptyDir { dir: dir.into() });
    }
    let missing = |key: &str, what: &'static str, base: String| ScoreError::Missing {
        key: key.into(),
        what,
        dir: dir.into(),
        expected: format!("`{base}.png`, `.jpg` or `.jpeg`"),
    };
    let entries: Vec<DirEntry> = keys
        .into_iter()
        .map(|key| {
            let source =
                find(&names, &format!("{key}_SRCIMG")).expect("the key came from this file");
            let score = match (find(&names, &key), find(&names, &format!("{key}_mask"))) {
                (None, _) => Err(missing(&key, "edited image", key.clone())),
                (_, None) => Err(missing(&key, "mask", format!("{key}_mask"))),
                (Some(edited), Some(mask)) => score_files(
                    &dir.join(source),
                    &dir.join(edited),
                    &dir.join(mask),
                    polarity,
                    cfg,
                ),
            };
            DirEntry { key, score }
        })
        .collect();
    let defined: Vec<_> = entries
        .iter()
        .filter_map(|e| e.score.as_ref().ok()?.result.as_ref().ok())
        .collect();
    let undefined = entries
        .iter()
        .filter(|e| e.score.as_ref().is_ok_and(|s| s.result.is_err()))
        .count();
    let failed = entries.iter().filter(|e| e.score.is_err()).count();
    let mean = (!defined.is_empty()).then(|| {
        let n = defined.len() as f64;
        Means {
            count: defined.len(),
            psnr_db: defined.iter().map(|m| m.psnr_db).sum::<f64>() / n,
            ssim: defined.iter().map(|m| m.ssim).sum::<f64>() / n,
            r_sim: defined.iter().map(|m| m.r_sim).sum::<f64>() / n,
        }
    });
    Ok(DirScore {
        dir: dir.into(),
        polarity,
        entries,
        mean,
        undefined,
        failed,
    })
}

fn polarity_name(p: MaskPolarity) -> &'static str {
    match p {
        MaskPolarity::Edit => "edit",
        MaskPolarity::Keep => "keep",
    }
}

/// A number for JSON: +∞ (PSNR of identical keep regions) becomes the string `"inf"`.
fn num(x: f64) -> Value {
    if x == f64::INFINITY {
        json!("inf")
    } else {
        json!(x)
    }
}

fn db(x: f64) -> String {
    if x == f64::INFINITY {
        "inf".into()
    } else {
        format!("{x:.4}")
    }
}

impl FileScore {
    /// Fraction of the image in the keep region.
    fn keep_fraction(&self) -> f64 {
        let kept = self.result.as_ref().map_or(0, |m| m.keep_pixels);
        kept as f64 / (self.width * self.height) as f64
    }

    /// `{"source", "edited", "mask", "mask_polarity", "width", "height", "defined", ...}`; a
    /// defined sample adds `keep_pixels`, `keep_fraction`, `mse`, `psnr_db` (a number or
    /// `"inf"`), `psnr_norm`, `ssim`, `r_sim`; an undefined one adds `undefined` (the reason).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "source": self.source.display().to_string(),
            "edited": self.edited.display().to_string(),
            "mask": self.mask.display().to_string(),
            "mask_polarity": polarity_name(self.polarity),
            "width": self.width,
            "height": self.height,
            "defined": self.result.is_ok(),
        });
        let o = v.as_object_mut().expect("an object");
        match &self.result {
            Ok(m) => {
                o.insert("keep_pixels".into(), json!(m.keep_pixels));
                o.insert("keep_fraction".into(), json!(self.keep_fraction()));
                o.insert("mse".into(), json!(m.mse));
                o.insert("psnr_db".into(), num(m.psnr_db));
                o.insert("psnr_norm".into(), json!(m.psnr_norm));
                o.insert("ssim".into(), json!(m.ssim));
                o.insert("r_sim".into(), json!(m.r_sim));
            }
            Err(u) => {
                o.insert("keep_pixels".into(), json!(0));
                o.insert("undefined".into(), json!(u.to_string()));
            }
        }
        v
    }

    /// The human-readable report of one triplet.
    pub fn to_text(&self, cfg: &MetricsConfig) -> String {
        let white = match self.polarity {
            MaskPolarity::Edit => "white = edit",
            MaskPolarity::Keep => "white = keep",
        };
        let mut s = format!(
            "source  {} ({}×{})\nedited  {}\nmask    {} ({white})\n",
            self.source.display(),
            self.width,
            self.height,
            self.edited.display(),
            self.mask.display()
        );
        match &self.result {
            Ok(m) => s.push_str(&format!(
                "keep    {} px ({:.1} % of the image)\nPSNR    {} dB (PSNR̄ = {:.4} with τ = {} dB)\nSSIM    {:.6}\nr_sim   {:.6} (w_s = {})\n",
                m.keep_pixels,
                100.0 * self.keep_fraction(),
                db(m.psnr_db),
                m.psnr_norm,
                cfg.tau_db,
                m.ssim,
                m.r_sim,
                cfg.w_s
            )),
            Err(Undefined::EmptyKeepMask) => s.push_str(&format!(
                "keep    0 px: masked PSNR, SSIM and r_sim are undefined (is the mask polarity right? {white} now)\n"
            )),
        }
        s
    }
}

impl DirScore {
    /// `{"dir", "mask_polarity", "samples": [{"key", ...FileScore::to_json or "error"}],
    /// "mean": {"count", "psnr_db", "ssim", "r_sim"} or null, "undefined", "failed"}`.
    pub fn to_json(&self) -> Value {
        let samples: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let mut v = match &e.score {
                    Ok(s) => s.to_json(),
                    Err(err) => json!({"error": err.to_string()}),
                };
                v.as_object_mut()
                    .expect("an object")
                    .insert("key".into(), json!(e.key));
                v
            })
            .collect();
        let mean = self.mean.map(|m| json!({"count": m.count, "psnr_db": num(m.psnr_db), "ssim": m.ssim, "r_sim": m.r_sim}));
        json!({
            "dir": self.dir.display().to_string(),
            "mask_polarity": polarity_name(self.polarity),
            "samples": samples,
            "mean": mean,
            "undefined": self.undefined,
            "failed": self.failed,
        })
    }

    /// A table: one line per key, then the means and the counts.
    pub fn to_text(&self) -> String {
        let width = self
            .entries
            .iter()
            .map(|e| e.key.len())
            .max()
            .unwrap_or(0)
            .max(10);
        let mut s = format!(
            "{:width$}  {:>9}  {:>8}  {:>8}  {:>6}\n",
            "key", "PSNR dB", "SSIM", "r_sim", "keep %"
        );
        for e in &self.entries {
            match &e.score {
                Ok(f) => match &f.result {
                    Ok(m) => s.push_str(&format!(
                        "{:width$}  {:>9}  {:>8.5}  {:>8.5}  {:>6.1}\n",
                        e.key,
                        db(m.psnr_db),
                        m.ssim,
                        m.r_sim,
                        100.0 * f.keep_fraction()
                    )),
                    Err(u) => s.push_str(&format!("{:width$}  undefined: {u}\n", e.key)),
                },
                Err(err) => s.push_str(&format!("{:width$}  error: {err}\n", e.key)),
            }
        }
        match self.mean {
            Some(m) => s.push_str(&format!(
                "{:width$}  {:>9}  {:>8.5}  {:>8.5}\n",
                format!("mean ({})", m.count),
                db(m.psnr_db),
                m.ssim,
                m.r_sim
            )),
            None => s.push_str("mean: no sample with a defined value\n"),
        }
        s.push_str(&format!(
            "{} scored, {} undefined (empty keep mask), {} failed; masks read with white = {}\n",
            self.mean.map_or(0, |m| m.count),
            self.undefined,
            self.failed,
            polarity_name(self.polarity)
        ));
        s
    }
}
