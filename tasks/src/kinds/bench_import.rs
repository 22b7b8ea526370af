//! `bench-import`: a published editing benchmark on local disk (GEdit-Bench-EN, ImgEdit-Bench)
//! as a dataset in the manifest format ([`crate::benchmarks`], whose docs list the params).
//!
//! Inputs: none. Output `data`: the dataset plus `import.json` (counts, the rows left out and
//! why). Resources: CPU only.

pub use crate::benchmarks::BenchImportParams;
use crate::benchmarks::{check, import};
use cocoflow_engine::kind::{Input, Kind, ParamError, TaskCtx, TaskError};

pub struct BenchImport;

impl Kind for BenchImport {
    type Params = BenchImportParams;
    const NAME: &'static str = "bench-import";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str = "GEdit-Bench (parquet) or ImgEdit-Bench (basic_edit.json) from local disk as a manifest dataset, with CoCoEdit's masks";
    const INPUTS: Option<&'static [Input]> = Some(&[]);
    const OUTPUTS: &'static [&'static str] = &["data"];

    fn validate(&self, p: &BenchImportParams) -> Result<(), ParamError> {
        check(p)
    }
}

impl BenchImport {
    /// Does the work (the kind's run function).
    pub fn run(&self, p: BenchImportParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let out = ctx.workdir()?.join("data");
        let s = import(&p, &out).map_err(|e| TaskError::Failed(format!("bench-import: {e}")))?;
        ctx.log(format!(
            "{}: {} of {} rows imported ({} in another language, {} errors), {} masks ({} unusable); types: {}",
            s.format,
            s.imported,
            s.rows,
            s.other_language,
            s.row_errors.len(),
            s.masks,
            s.mask_errors.len(),
            s.types
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for e in s.row_errors.iter().chain(&s.mask_errors).take(20) {
            ctx.log(format!("  {}: {}", e.row, e.reason));
        }
        if s.imported == 0 {
            let first = s
                .row_errors
                .first()
                .map(|e| format!("; first error: {}: {}", e.row, e.reason))
                .unwrap_or_default();
            return Err(TaskError::Failed(format!(
                "bench-import: no usable records in `{}` ({} rows){first}",
                p.path, s.rows
            )));
        }
        ctx.metric("imported", s.imported as u64);
        ctx.metric("row_errors", s.row_errors.len() as u64);
        ctx.metric("other_language", s.other_language as u64);
        ctx.metric("masks", s.masks as u64);
        ctx.metric("mask_errors", s.mask_errors.len() as u64);
        ctx.output_dir("data", &out)
    }
}
