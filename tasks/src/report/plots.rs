//! Line and scatter charts as PNG (plotters' bitmap backend, encoded with `image`) and SVG.
//!
//! Text is drawn with a subset of DejaVu Sans embedded in the binary (`font/`, registered
//! with plotters' `ab_glyph` backend as `sans-serif`), so charts need no system fonts and
//! render the same on every machine. SVG text is written as `<text>` elements. Nothing in a
//! chart depends on the time or the machine: equal data give equal bytes.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The embedded font (printable ASCII and a few symbols; see `font/LICENSE`).
pub const FONT: &[u8] = include_bytes!("font/DejaVuSans-subset.ttf");
pub const FONT_FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters (once per process).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            if plotters::style::register_font(FONT_FAMILY, style, FONT).is_err() {
                tracing::warn!("the embedded report font is not a valid font file");
            }
        }
    });
}

/// Distinct line colours (the "tab10" palette); series cycle through them.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One named line (or point cloud).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A fixed colour (e.g. black for the base); `None`: the next palette colour.
    pub color: Option<(u8, u8, u8)>,
    /// ± error per point (e.g. the standard deviation over seeds), drawn as vertical bars;
    /// empty: none.
    pub err: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelKind {
    /// Lines with a marker on every point.
    Lines,
    /// A scatter plot.
    Points,
}

/// One chart: a title, axis names and its series.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub kind: PanelKind,
    /// Label the x axis with integers (iterations).
    pub integer_x: bool,
}

/// Pixel size of a chart of `panels` panels stacked vertically.
pub fn chart_size(panels: usize) -> (u32, u32) {
    (800, 450 * panels.max(1) as u32)
}

/// Writes `<stem>.png` and `<stem>.svg` in `dir`: the panels stacked vertically.
pub fn write_chart(dir: &Path, stem: &str, panels: &[Panel]) -> Result<(), String> {
    register_font();
    let (w, h) = chart_size(panels.len());
    // PNG.
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root, panels)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer of w·h·3 bytes");
    let png = dir.join(format!("{stem}.png"));
    crate::imageio::save_png(&png, &img).map_err(|e| e.to_string())?;
    // SVG.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw(&root, panels)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let path = dir.join(format!("{stem}.svg"));
    std::fs::write(&path, svg).map_err(|e| format!("writing `{}`: {e}", path.display()))
}

/// `[lo, hi]` of the values with a 5 % margin; a single value gets ±0.5 (or ±5 %).
fn range(values: impl Iterator<Item = f64>, integer: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let d = if integer {
            0.5
        } else {
            (hi.abs() * 0.05).max(0.05)
        };
        return (lo - d, hi + d);
    }
    let m = if integer { 0.25 } else { (hi - lo) * 0.05 };
    (lo - m, hi + m)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, panels: &[Panel]) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(area, panel)?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let pts = || p.series.iter().flat_map(|s| s.points.iter().copied());
    // The y range covers the error bars.
    let ys = p.series.iter().flat_map(|s| {
        s.points.iter().enumerate().flat_map(move |(i, &(_, y))| {
            let e = s.err.get(i).copied().unwrap_or(0.0);
            [y - e, y + e]
        })
    });
    let (x0, x1) = range(pts().map(|(x, _)| x), p.integer_x);
    let (y0, y1) = range(ys, false);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT_FAMILY, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let int_fmt = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{}", v.round() as i64)
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .label_style((FONT_FAMILY, 12))
        .axis_desc_style((FONT_FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235));
    if p.integer_x {
        let span = (x1 - x0).ceil().max(1.0) as usize;
        mesh.x_labels(span.min(12) + 1).x_label_formatter(&int_fmt);
    }
    mesh.draw().map_err(err)?;
    if pts().next().is_none() {
        area.draw(&Text::new(
            "no data",
            (
                area.dim_in_pixel().0 as i32 / 2 - 25,
                area.dim_in_pixel().1 as i32 / 2,
            ),
            (FONT_FAMILY, 16),
        ))
        .map_err(err)?;
        return Ok(());
    }
    let mut next = 0usize;
    for s in &p.series {
        let color = match s.color {
            Some((r, g, b)) => RGBColor(r, g, b),
            None => {
                next += 1;
                PALETTE[(next - 1) % PALETTE.len()]
            }
        };
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        match p.kind {
            PanelKind::Lines => {
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&q| Circle::new(q, 3, color.filled())))
                    .map_err(err)?;
                let bars: Vec<(f64, f64, f64)> = s
                    .points
                    .iter()
                    .zip(&s.err)
                    .filter(|((x, y), e)| {
                        x.is_finite() && y.is_finite() && e.is_finite() && **e > 0.0
                    })
                    .map(|(&(x, y), &e)| (x, y, e))
                    .collect();
                chart
                    .draw_series(bars.iter().map(|&(x, y, e)| {
                        ErrorBar::new_vertical(x, y - e, y, y + e, color.stroke_width(1), 6)
                    }))
                    .map_err(err)?;
            }
            PanelKind::Points => {
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&q| Circle::new(q, 3, color.mix(0.7).filled())),
                    )
                    .map_err(err)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FONT_FAMILY, 12))
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_have_margins_and_survive_single_values() {
        assert_eq!(range([1.0, 3.0].into_iter(), true), (0.75, 3.25));
        assert_eq!(range([2.0].into_iter(), true), (1.5, 2.5));
        assert_eq!(range(std::iter::empty(), false), (0.0, 1.0));
        let (lo, hi) = range([0.5, 0.5].into_iter(), false);
        assert!(lo < 0.5 && hi > 0.5);
    }
}
