//! The integration tests of `cocoflow-tasks` (no libtorch), one test binary, one module per
//! area. Goldens and their generator scripts live in `tasks/tests/golden/`; the tests of the
//! torch kinds and models are `cocoflow-torch`'s.

mod common;

/// The kinds the shared workflow runner (`common`) registers: the torch-free ones, run here.
fn register_kinds(r: &mut cocoflow_engine::kind::Registry) {
    cocoflow_tasks::register_torch_free(r);
}

mod curate;
mod judge_curation;
mod judge_http;
mod published_prompts;
mod report;
mod sam2_server;
mod segment_http;
