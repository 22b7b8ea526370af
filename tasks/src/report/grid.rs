//! Sample grids (paper Fig. 6): one row per chosen benchmark item, columns instruction (the
//! edit type and the instruction's words, wrapped) | source | target | edit mask | base output |
//! each arm's final output, every image scaled up by an integer factor with nearest-neighbour
//! sampling, and a header band with the column names (up to two lines each), so a person can
//! judge each edit against what was asked and what was expected.
//!
//! Layout (pixels): a text column `TEXT_W` wide, then tiles of `tile_w × tile_h` = the first
//! item's source size × `scale`; `PAD` between and around columns; a header band of `HEADER`
//! pixels on top. So the image is `PAD + TEXT_W + PAD + cols·(tile_w + PAD)` wide and
//! `HEADER + rows·(tile_h + PAD)` high. A missing image (no target, or an item an evaluation
//! did not cover) is a grey tile.

use super::plots::{FONT_FAMILY, register_font};
use crate::data::{Dataset, MaskPolarity, Record};
use image::{Rgb, RgbImage, imageops};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const PAD: u32 = 4;
pub const HEADER: u32 = 36;
/// Width of the instruction column.
pub const TEXT_W: u32 = 200;
/// Line height of the instruction text.
const LINE_H: u32 = 14;

/// One output column: its name and the edited image of each item (by record key).
pub struct OutputColumn {
    pub name: String,
    pub images: BTreeMap<String, PathBuf>,
}

/// Sizes of a grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLayout {
    pub rows: u32,
    pub cols: u32,
    pub tile_w: u32,
    pub tile_h: u32,
    /// Left edge of the first image column.
    pub x0: u32,
    pub width: u32,
    pub height: u32,
}

impl GridLayout {
    pub fn new(rows: u32, cols: u32, tile_w: u32, tile_h: u32) -> GridLayout {
        GridLayout {
            rows,
            cols,
            tile_w,
            tile_h,
            x0: PAD + TEXT_W + PAD,
            width: PAD + TEXT_W + PAD + cols * (tile_w + PAD),
            height: HEADER + rows * (tile_h + PAD),
        }
    }
}

/// The items of a grid: local edit types only, `n` of them, taken round-robin over the edit
/// types (sorted by name), each type's items in dataset order; deterministic.
pub fn choose_items(ds: &Dataset, n: usize) -> Vec<&Record> {
    let mut by: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in &ds.records {
        let t = r.edit_type.as_deref().unwrap_or("unknown");
        if crate::eval::is_local_type(t) {
            by.entry(t).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        let mut any = false;
        for rs in by.values() {
            if let Some(r) = rs.get(i) {
                any = true;
                if out.len() < n {
                    out.push(*r);
                }
            }
        }
        if !any {
            break;
        }
        i += 1;
    }
    out
}

fn load(path: &Path) -> Result<image::DynamicImage, String> {
    crate::imageio::open(path).map_err(|e| e.to_string())
}

/// A column name in at most two lines of `max` characters: broken at the last space that
/// fits, the rest shortened with `…`.
pub fn label_lines(name: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let cut = |c: &[char]| -> String {
        if c.len() > max {
            c[..max - 1].iter().chain(std::iter::once(&'…')).collect()
        } else {
            c.iter().collect()
        }
    };
    if chars.len() <= max {
        return vec![name.to_string()];
    }
    let split = chars[..=max.min(chars.len() - 1)]
        .iter()
        .rposition(|&c| c == ' ')
        .filter(|&i| i > 0)
        .unwrap_or(max);
    let rest: Vec<char> = chars[split..]
        .iter()
        .copied()
        .skip_while(|&c| c == ' ')
        .collect();
    vec![cut(&chars[..split]), cut(&rest)]
}

/// `text` in lines of at most `max` characters, broken at spaces (a longer word is cut), at
/// most `lines` lines; the last shortened with `…` when text is left over.
pub fn wrap(text: &str, max: usize, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut words: Vec<String> = Vec::new();
    for w in text.split_whitespace() {
        let cs: Vec<char> = w.chars().collect();
        for chunk in cs.chunks(max.max(1)) {
            words.push(chunk.iter().collect());
        }
    }
    let mut rest = words.into_iter().peekable();
    while let Some(w) = rest.next() {
        if cur.is_empty() {
            cur = w;
        } else if cur.chars().count() + 1 + w.chars().count() <= max {
            cur.push(' ');
            cur.push_str(&w);
        } else {
            out.push(std::mem::take(&mut cur));
            cur = w;
        }
        if out.len() == lines {
            break;
        }
        if rest.peek().is_none() {
            break;
        }
    }
    if out.len() < lines && !cur.is_empty() {
        out.push(cur);
        cur = String::new();
    }
    let left = rest.peek().is_some() || !cur.is_empty();
    if left && let Some(last) = out.last_mut() {
        let mut cs: Vec<char> = last.chars().collect();
        cs.truncate(max.saturating_sub(1));
        *last = cs.into_iter().chain(std::iter::once('…')).collect();
    }
    out
}

/// The record's edit mask as a white-on-black RGB image (white = the edited region).
fn mask_image(ds: &Dataset, r: &Record, w: u32, h: u32) -> Result<RgbImage, String> {
    let Some(m) = &r.edit_mask else {
        return Ok(RgbImage::new(w, h));
    };
    let grey = load(&ds.path(m))?.to_luma8();
    let keep = r.mask_polarity == MaskPolarity::Keep;
    Ok(RgbImage::from_fn(grey.width(), grey.height(), |x, y| {
        let white = grey.get_pixel(x, y).0[0] >= 128;
        if white != keep {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    }))
}

/// Writes the grid PNG and returns its layout.
pub fn write_grid(
    path: &Path,
    ds: &Dataset,
    items: &[&Record],
    outputs: &[OutputColumn],
    scale: u32,
) -> Result<GridLayout, String> {
    let first = items.first().ok_or("no benchmark items to show")?;
    let src0 = load(&ds.path(&first.source))?;
    let (w0, h0) = (src0.width(), src0.height());
    let names: Vec<String> = ["source", "target", "edit mask"]
        .into_iter()
        .map(String::from)
        .chain(outputs.iter().map(|o| o.name.clone()))
        .collect();
    let layout = GridLayout::new(
        items.len() as u32,
        names.len() as u32,
        w0 * scale,
        h0 * scale,
    );
    let mut canvas = RgbImage::from_pixel(layout.width, layout.height, Rgb([255, 255, 255]));
    let grey = RgbImage::from_pixel(w0, h0, Rgb([200, 200, 200]));
    for (row, r) in items.iter().enumerate() {
        let src = load(&ds.path(&r.source))?.to_rgb8();
        let mask = mask_image(ds, r, src.width(), src.height())?;
        let target = match &r.target {
            Some(t) => load(&ds.path(t))?.to_rgb8(),
            None => grey.clone(),
        };
        let mut tiles = vec![src, target, mask];
        for o in outputs {
            tiles.push(match o.images.get(&r.key) {
                Some(p) => load(p)?.to_rgb8(),
                None => grey.clone(),
            });
        }
        for (col, t) in tiles.iter().enumerate() {
            let t = imageops::resize(
                t,
                layout.tile_w,
                layout.tile_h,
                imageops::FilterType::Nearest,
            );
            let x = layout.x0 + col as u32 * (layout.tile_w + PAD);
            let y = HEADER + row as u32 * (layout.tile_h + PAD);
            imageops::replace(&mut canvas, &t, x as i64, y as i64);
        }
    }
    // Column names in the header band.
    register_font();
    let (w, h) = (layout.width, layout.height);
    let mut buf = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let max_chars = (layout.tile_w as usize / 7).max(4);
        root.draw(&Text::new(
            "instruction".to_string(),
            (PAD as i32, 3),
            (FONT_FAMILY, 13).into_font().color(&BLACK),
        ))
        .map_err(|e| e.to_string())?;
        let text_lines = ((layout.tile_h / LINE_H) as usize).max(1);
        for (row, r) in items.iter().enumerate() {
            let y = (HEADER + row as u32 * (layout.tile_h + PAD)) as i32;
            let text = format!(
                "[{}] {}",
                r.edit_type.as_deref().unwrap_or("unknown"),
                r.instruction
            );
            for (line, t) in wrap(&text, (TEXT_W / 7) as usize, text_lines)
                .into_iter()
                .enumerate()
            {
                root.draw(&Text::new(
                    t,
                    (PAD as i32, y + (LINE_H as i32) * line as i32),
                    (FONT_FAMILY, 12).into_font().color(&BLACK),
                ))
                .map_err(|e| e.to_string())?;
            }
        }
        for (col, name) in names.iter().enumerate() {
            let x = (layout.x0 + col as u32 * (layout.tile_w + PAD)) as i32;
            for (line, text) in label_lines(name, max_chars).iter().enumerate() {
                root.draw(&Text::new(
                    text.clone(),
                    (x, 3 + 15 * line as i32),
                    (FONT_FAMILY, 13).into_font().color(&BLACK),
                ))
                .map_err(|e| e.to_string())?;
            }
        }
        root.present().map_err(|e| e.to_string())?;
    }
    let img = RgbImage::from_raw(w, h, buf).expect("w·h·3 bytes");
    crate::imageio::save_png(path, &img).map_err(|e| e.to_string())?;
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_wrap_at_spaces_and_end_with_an_ellipsis() {
        assert_eq!(
            wrap("make the red box blue", 10, 3),
            ["make the", "red box", "blue"]
        );
        assert_eq!(
            wrap("make the red box blue", 10, 2),
            ["make the", "red box…"]
        );
        assert_eq!(wrap("abcdefghijkl", 5, 3), ["abcde", "fghij", "kl"]);
        assert_eq!(wrap("", 5, 3), Vec::<String>::new());
    }

    #[test]
    fn long_labels_take_two_lines() {
        assert_eq!(label_lines("base", 8), ["base"]);
        assert_eq!(label_lines("ratio-0.8 (it 8)", 10), ["ratio-0.8", "(it 8)"]);
        assert_eq!(label_lines("abcdefghijkl", 5), ["abcde", "fghi…"]);
    }
}
