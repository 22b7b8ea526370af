//! Datasets as tensors: the records' images and masks of a [`Dataset`] loaded, and tensors
//! saved into a [`DatasetWriter`], on the manifest format of [`cocoflow_tasks::data`]
//! (re-exported here). Bring [`RecordTensors`] and [`WriterTensors`] into scope to use them.

pub use cocoflow_tasks::data::manifest::DataError;
pub use cocoflow_tasks::data::*;

use crate::imageio::tensor;
use tch::Tensor;

/// The images of a dataset's records as tensors.
pub trait RecordTensors {
    /// Source image as a `(3, H, W)` float tensor in [0, 1].
    fn source(&self, r: &Record) -> Result<Tensor, DataError>;
    /// Target image as a `(3, H, W)` float tensor in [0, 1], where the record has one.
    fn target(&self, r: &Record) -> Result<Option<Tensor>, DataError>;
    /// The record's `edit_mask` as `(1, H, W)` in {0, 1} (1 = changes), whatever its polarity on disk.
    fn edit_mask(&self, r: &Record) -> Result<Option<Tensor>, DataError>;
}

impl RecordTensors for Dataset {
    fn source(&self, r: &Record) -> Result<Tensor, DataError> {
        Ok(tensor::load_rgb(&self.path(&r.source))?)
    }

    fn target(&self, r: &Record) -> Result<Option<Tensor>, DataError> {
        r.target
            .as_ref()
            .map(|t| tensor::load_rgb(&self.path(t)))
            .transpose()
            .map_err(Into::into)
    }

    fn edit_mask(&self, r: &Record) -> Result<Option<Tensor>, DataError> {
        r.edit_mask
            .as_ref()
            .map(|m| tensor::load_mask(&self.path(m), r.mask_polarity))
            .transpose()
            .map_err(Into::into)
    }
}

/// Tensors saved into a dataset being written.
pub trait WriterTensors {
    /// Saves an RGB `(3, H, W)` tensor in [0, 1] as `images/<name>.png`; returns its relative path.
    fn image(&self, name: &str, img: &Tensor) -> Result<String, DataError>;
    /// Saves an `edit_mask` `(1, H, W)` in {0, 1} as `images/<name>.png` (white = edit).
    fn mask(&self, name: &str, mask: &Tensor) -> Result<String, DataError>;
}

impl WriterTensors for DatasetWriter {
    fn image(&self, name: &str, img: &Tensor) -> Result<String, DataError> {
        let rel = format!("images/{name}.png");
        tensor::save_rgb(&self.root().join(&rel), img)?;
        Ok(rel)
    }

    fn mask(&self, name: &str, mask: &Tensor) -> Result<String, DataError> {
        let rel = format!("images/{name}.png");
        tensor::save_mask(&self.root().join(&rel), mask)?;
        Ok(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::manifest::MANIFEST;
    use crate::imageio::tensor;
    use std::io::Write as _;
    use tch::{Kind, Tensor};

    fn rec(key: &str, src: &str) -> Record {
        Record {
            key: key.into(),
            source: src.into(),
            target: None,
            edit_mask: None,
            mask_polarity: MaskPolarity::Edit,
            instruction: "remove the red circle".into(),
            instruction_refined: None,
            edit_type: Some("remove".into()),
            extra: Default::default(),
        }
    }

    #[test]
    fn round_trip_and_rejections_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(dir.path()).unwrap();
        let img = Tensor::rand([3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let src = w.image("a_src", &img).unwrap();
        let mask = Tensor::zeros([1, 8, 8], (Kind::Float, tch::Device::Cpu));
        let _ = mask.narrow(1, 2, 3).narrow(2, 2, 3).fill_(1.0);
        let m = w.mask("a_mask", &mask).unwrap();
        let mut r = rec("a", &src);
        r.edit_mask = Some(m);
        w.push(&r).unwrap();
        w.push(&rec("b", "../outside.png")).unwrap();
        w.push(&rec("c", "/etc/passwd")).unwrap();
        w.push(&rec("d", "images/missing.png")).unwrap();
        w.push(&rec("a", &src)).unwrap();
        w.finish().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(MANIFEST))
            .unwrap()
            .write_all(b"{not json\n")
            .unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.records.len(), 1);
        let lines: Vec<(usize, &str)> = ds
            .rejected
            .iter()
            .map(|e| (e.line, e.reason.as_str()))
            .collect();
        assert_eq!(
            lines[0],
            (2, "`source`: path `../outside.png` leaves the dataset root")
        );
        assert_eq!(
            lines[1],
            (
                3,
                "`source`: path `/etc/passwd` is absolute; paths must be relative to the dataset root"
            )
        );
        assert_eq!(
            lines[2],
            (4, "`source`: file `images/missing.png` does not exist")
        );
        assert_eq!(lines[3], (5, "key `a` repeats an earlier line"));
        assert_eq!(lines[4].0, 6);
        let back = ds.source(&ds.records[0]).unwrap();
        // PNG stores 8 bits: within half a step.
        assert!((back - &img).abs().max().double_value(&[]) <= 0.5 / 255.0 + 1e-6);
        let em = ds.edit_mask(&ds.records[0]).unwrap().unwrap();
        assert_eq!(em.sum(Kind::Double).double_value(&[]), 9.0);
    }

    #[test]
    fn keep_polarity_masks_are_inverted_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let keep = Tensor::ones([1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let _ = keep.narrow(1, 0, 1).narrow(2, 0, 1).fill_(0.0);
        tensor::save_mask(&dir.path().join("k.png"), &keep).unwrap();
        let edit = tensor::load_mask(&dir.path().join("k.png"), MaskPolarity::Keep).unwrap();
        assert_eq!(edit.sum(Kind::Double).double_value(&[]), 1.0);
        assert_eq!(edit.double_value(&[0, 0, 0]), 1.0);
    }
}
