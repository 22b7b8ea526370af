//! The curation statistics as pictures: samples per edit type (paper Fig. 4) and the
//! histogram of mean filter scores on a log scale with finer bins above 9 (Fig. 8). PNG and
//! SVG, drawn with the report's embedded font (no system fonts).

use crate::report::plots::{FONT_FAMILY, PALETTE, register_font};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

/// One histogram bin `[lo, hi)` (the last one closed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

/// Bins of width 1 from 1 to 9, then of width 0.1 from 9 to 10 (Fig. 8's finer bins where
/// the threshold is).
pub fn histogram(scores: impl Iterator<Item = f64>) -> Vec<Bin> {
    let mut edges: Vec<f64> = (1..=9).map(f64::from).collect();
    edges.extend((1..=10).map(|k| 9.0 + k as f64 / 10.0));
    let mut bins: Vec<Bin> = edges
        .windows(2)
        .map(|w| Bin {
            lo: w[0],
            hi: w[1],
            count: 0,
        })
        .collect();
    let n = bins.len();
    for s in scores.filter(|s| s.is_finite()) {
        // small tolerance: means of three integers are thirds (9.333…, 9.666…)
        let i = bins.iter().position(|b| s < b.hi - 1e-9).unwrap_or(n - 1);
        bins[i].count += 1;
    }
    bins
}

/// Per type: (name, annotated, kept).
pub type TypeCounts = [(String, u64, u64)];

fn draw_types<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    types: &TypeCounts,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let ymax = types.iter().map(|t| t.1.max(t.2)).max().unwrap_or(1).max(1) as f64 * 1.15;
    let n = types.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Curated samples per edit type",
            (FONT_FAMILY, 22).into_font(),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(e)?;
    let names: Vec<String> = types.iter().map(|t| t.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            let i = (x - 0.5).round();
            if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("samples")
        .label_style((FONT_FAMILY, 14).into_font())
        .draw()
        .map_err(e)?;
    let series = [
        ("annotated", PALETTE[0], 1usize),
        ("kept", PALETTE[1], 2usize),
    ];
    for (name, color, col) in series {
        let bars: Vec<Rectangle<(f64, f64)>> = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = if col == 1 { t.1 } else { t.2 } as f64;
                let x0 = i as f64 + 0.1 + 0.4 * (col - 1) as f64;
                Rectangle::new([(x0, 0.0), (x0 + 0.4, v)], color.filled())
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .label_font((FONT_FAMILY, 14).into_font())
        .draw()
        .map_err(e)?;
    Ok(())
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bins: &[Bin],
    threshold: f64,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let ymax = bins.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64 * 2.0;
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Mean filter score (clarity, mask accuracy, prominence)",
            (FONT_FAMILY, 22).into_font(),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..10f64, (0.8f64..ymax).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_labels(10)
        .x_desc("mean score (bins of 1 below 9, of 0.1 above)")
        .y_desc("samples (log scale)")
        .label_style((FONT_FAMILY, 14).into_font())
        .draw()
        .map_err(e)?;
    chart
        .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
            let color = if b.lo >= threshold - 1e-9 {
                PALETTE[1]
            } else {
                PALETTE[0]
            };
            Rectangle::new([(b.lo, 0.8), (b.hi, b.count as f64)], color.filled())
        }))
        .map_err(e)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(threshold, 0.8), (threshold, ymax)],
            BLACK.stroke_width(2),
        )))
        .map_err(e)?
        .label(format!("threshold {threshold}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .label_font((FONT_FAMILY, 14).into_font())
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Writes `<stem>.png` and `<stem>.svg` of a chart drawn by `$body` on `$root`.
macro_rules! write_both {
    ($dir:expr, $stem:expr, ($w:expr, $h:expr), |$root:ident| $body:expr) => {{
        register_font();
        let (w, h): (u32, u32) = ($w, $h);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let $root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            $body?;
            $root.present().map_err(|e| e.to_string())?;
        }
        let img = image::RgbImage::from_raw(w, h, buf).expect("buffer of w·h·3 bytes");
        let png = $dir.join(format!("{}.png", $stem));
        crate::imageio::save_png(&png, &img).map_err(|e| e.to_string())?;
        let mut svg = String::new();
        {
            let $root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            $body?;
            $root.present().map_err(|e| e.to_string())?;
        }
        let path = $dir.join(format!("{}.svg", $stem));
        std::fs::write(&path, svg).map_err(|e| format!("writing `{}`: {e}", path.display()))?;
        Ok::<(), String>(())
    }};
}

/// `types.png`/`.svg`: annotated and kept samples per edit type.
pub fn write_types(dir: &Path, types: &TypeCounts) -> Result<(), String> {
    write_both!(dir, "types", (800, 450), |root| draw_types(&root, types))
}

/// `scores.png`/`.svg`: the score histogram, log scale, with the threshold marked.
pub fn write_histogram(dir: &Path, bins: &[Bin], threshold: f64) -> Result<(), String> {
    write_both!(dir, "scores", (800, 450), |root| draw_histogram(
        &root, bins, threshold
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_coarse_below_nine_and_fine_above() {
        let b = histogram(
            [
                1.0,
                8.999,
                9.0,
                9.333_333_333_333_334,
                9.4,
                9.666_666_666_666_666,
                10.0,
                10.0,
            ]
            .into_iter(),
        );
        assert_eq!(b.len(), 18);
        assert_eq!((b[0].lo, b[0].hi, b[0].count), (1.0, 2.0, 1));
        assert_eq!(b[7].count, 1); // [8, 9)
        assert_eq!(b[8].count, 1); // [9.0, 9.1)
        assert_eq!(b[11].count, 1); // [9.3, 9.4): 9.333
        assert_eq!(b[12].count, 1); // [9.4, 9.5)
        assert_eq!(b[14].count, 1); // [9.6, 9.7)
        assert_eq!(b[17].count, 2); // [9.9, 10]: 10 is in the last bin
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 8);
    }

    #[test]
    fn plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let types = vec![("add".to_string(), 10, 4), ("remove".to_string(), 7, 0)];
        write_types(dir.path(), &types).unwrap();
        write_histogram(dir.path(), &histogram([9.4, 9.7, 3.0].into_iter()), 9.4).unwrap();
        for f in ["types.png", "types.svg", "scores.png", "scores.svg"] {
            assert!(dir.path().join(f).metadata().unwrap().len() > 1000, "{f}");
        }
        let img = image::open(dir.path().join("scores.png")).unwrap();
        assert_eq!((img.width(), img.height()), (800, 450));
    }
}
