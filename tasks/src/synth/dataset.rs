//! The synthetic world as datasets in the manifest format (what the `synth-data` kind
//! writes): one record per edit with its source, target, exact edit mask, instructions and
//! type; no (image, instruction) pair twice, and none shared with an `avoid` set (the bench
//! split never repeats a training pair).

use super::EditType;
use crate::data::{DatasetWriter, MaskPolarity, Record};
use cocoflow_engine::kind::{TaskCtx, TaskError};
use std::collections::HashSet;
use std::path::Path;

/// The world's settings that shape a dataset.
#[derive(Debug, Clone)]
pub struct World {
    pub seed: u64,
    /// Image side in pixels.
    pub size: usize,
    pub max_objects: usize,
    pub dilate_px: usize,
    /// Records without `edit_mask` and `instruction_refined` (curation input).
    pub raw: bool,
}

/// Writes one split; returns the content keys (source digest + instruction) it used.
pub fn write_split(
    ctx: &TaskCtx,
    dir: &Path,
    w0: &World,
    split: &str,
    n: usize,
    types: &[EditType],
    drift: f32,
    avoid: &HashSet<String>,
) -> Result<HashSet<String>, TaskError> {
    let p = w0;
    let mut w = DatasetWriter::create(dir)?;
    let mut used = HashSet::new();
    let mut attempt = 0u64;
    let mut i = 0usize;
    while i < n {
        ctx.check_cancelled()?;
        let t = types[i % types.len()];
        let mut rng = super::stream(p.seed, split, attempt);
        attempt += 1;
        if attempt > (n as u64 + 10) * 50 {
            return Err(TaskError::Failed(format!(
                "could not generate {n} `{split}` samples (scene size {} too small?)",
                p.size
            )));
        }
        let scene = super::random_scene(&mut rng, p.size, p.max_objects);
        let Some(edit) = super::make_edit(&mut rng, &scene, t, p.dilate_px) else {
            continue;
        };
        let src = edit.source_image.to_rgb8();
        let content = format!(
            "{}|{}",
            blake3::hash(&bytemuck_f32(&edit.source_image.data)).to_hex(),
            edit.instruction
        );
        if avoid.contains(&content) || !used.insert(content) {
            continue;
        }
        let target = if drift > 0.0 {
            super::drift(&mut rng, &edit.target_image, &edit.edit_mask, drift)
        } else {
            edit.target_image.clone()
        };
        let key = format!("{split}-{i:06}");
        // written in this order (source, target, mask) as before `raw` existed
        let source = w.rgb(&format!("{key}_src"), &src)?;
        let target = w.rgb(&format!("{key}_tgt"), &target.to_rgb8())?;
        let edit_mask = if p.raw {
            None
        } else {
            let mask = image::GrayImage::from_raw(
                p.size as u32,
                p.size as u32,
                edit.edit_mask
                    .iter()
                    .map(|&b| if b { 255 } else { 0 })
                    .collect(),
            )
            .expect("size² values");
            Some(w.grey(&format!("{key}_mask"), &mask)?)
        };
        let record = Record {
            key: key.clone(),
            source,
            target: Some(target),
            edit_mask,
            mask_polarity: MaskPolarity::Edit,
            instruction: edit.instruction.clone(),
            instruction_refined: (!p.raw).then(|| edit.instruction_refined.clone()),
            edit_type: Some(t.name().to_string()),
            extra: serde_json::json!({"local": t.is_local(), "source_scene": edit.source, "target_scene": edit.target}).as_object().cloned().unwrap_or_default(),
        };
        w.push(&record)?;
        i += 1;
        if i % 32 == 0 || i == n {
            ctx.progress(i as u64, n as u64, format!("{split} samples"));
        }
    }
    w.finish()?;
    Ok(used)
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
