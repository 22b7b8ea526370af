//! The engine used as a library with a custom task kind: the checkpoint API lets a
//! re-run attempt continue from its last checkpoint; the in-process model cache is shared.

use cocoflow_engine::kind::{ParamError, Registry, TaskCtx, TaskError, TaskKind, typed_params};
use cocoflow_engine::runner::{self, RunOptions};
use cocoflow_engine::spec;
use cocoflow_engine::state::RedbJournal;
use cocoflow_engine::store::Store;
use cocoflow_engine::ui::{Mode, Ui};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

static STEPS_RUN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static MODEL_BUILDS: AtomicU32 = AtomicU32::new(0);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountParams {
    steps: u32,
    crash_at: u32,
}

/// Counts to `steps`, checkpointing after each step; the first attempt fails at `crash_at`.
struct Counter;

impl TaskKind for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "test kind"
    }
    fn check_params(&self, p: &serde_json::Value) -> Result<serde_json::Value, ParamError> {
        typed_params::<CountParams>(p).map(|(_, v)| v)
    }
    fn outputs(&self, _: &serde_json::Value) -> Vec<String> {
        vec!["total".into()]
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: CountParams = ctx.params()?;
        let _model = ctx
            .models()
            .get_or_try_insert::<Vec<f32>, TaskError>("weights", || {
                MODEL_BUILDS.fetch_add(1, Ordering::SeqCst);
                Ok(vec![0.0; 16])
            })?;
        let mut step = match ctx.checkpoint_load("step")? {
            Some(b) => u32::from_le_bytes(b[..4].try_into().unwrap()),
            None => 0,
        };
        while step < p.steps {
            step += 1;
            STEPS_RUN.lock().unwrap().push(step);
            ctx.progress(step as u64, p.steps as u64, "counting");
            if ctx.attempt == 1 && step == p.crash_at {
                return Err(TaskError::Failed("simulated crash".into()));
            }
            ctx.checkpoint_save("step", step.to_le_bytes().to_vec())?;
        }
        ctx.output_bytes("total", step.to_string().into_bytes())?;
        Ok(())
    }
}

#[test]
fn checkpoint_api_resumes_a_retried_attempt_and_models_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("w.yaml");
    std::fs::write(
        &wf,
        "name: ckpt\nstore: memory://\ntasks:\n  count: {kind: counter, retries: {count: 1, backoff: 10ms}, params: {steps: 5, crash_at: 3}}\n  again: {kind: counter, needs: [count], params: {steps: 2, crash_at: 0}}\n",
    )
    .unwrap();
    let mut registry = Registry::with_builtins();
    registry.register(Counter);
    let w = spec::load(&wf, &[]).unwrap();
    let plan = cocoflow_engine::plan::build(&w, &registry, &[]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open("memory://", dir.path(), &dir.path().join("cache")).unwrap();
    let mut journal = RedbJournal::open(&dir.path().join("j.redb")).unwrap();
    let opts = RunOptions {
        run_id: "test-run".into(),
        workflow_path: wf.display().to_string(),
        overrides: vec![],
        targets: vec![],
        state_dir: dir.path().join("state"),
        base_dir: dir.path().to_path_buf(),
        gpus: Some(vec![]),
        cpus: Some(1),
        fail_fast: false,
        executor: "in-process".into(),
        grace: std::time::Duration::from_secs(1),
        self_exe: std::path::PathBuf::from("/nonexistent"),
        worker_exe: std::path::PathBuf::from("/nonexistent"),
        options_json: serde_json::Value::Null,
    };
    let mut ui = Ui::new(Mode::Quiet);
    let report = rt
        .block_on(runner::run(
            plan,
            registry,
            store.clone(),
            &mut journal,
            opts,
            &mut ui,
        ))
        .unwrap();
    assert_eq!(report.succeeded, 2);
    // Attempt 1 ran steps 1..=3 and failed at 3 (checkpoint at 2); attempt 2 resumed at 3.
    assert_eq!(*STEPS_RUN.lock().unwrap(), vec![1, 2, 3, 3, 4, 5, 1, 2]);
    assert_eq!(
        MODEL_BUILDS.load(Ordering::SeqCst),
        1,
        "the second task reuses the loaded model"
    );
}

/// `${workflow_dir}` in a string param's default is the workflow file's directory, made absolute
/// (so a default can name a file shipped beside the workflow wherever cocoflow runs); a `--set`
/// value is taken as typed, and other params are untouched.
#[test]
fn workflow_dir_in_param_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("wf")).unwrap();
    let wf = dir.path().join("wf/w.yaml");
    std::fs::write(
        &wf,
        "name: d\nparams:\n  model: \"${workflow_dir}/../models/base\"\n  other: \"x\"\n  n: 3\ntasks:\n  a: {kind: noop, params: {payload: \"${model}\"}}\n",
    )
    .unwrap();
    let w = spec::load(&wf, &[]).unwrap();
    let want = format!("{}/../models/base", dir.path().join("wf").display());
    assert_eq!(w.params["model"], serde_json::json!(want));
    assert_eq!(w.params["other"], serde_json::json!("x"));
    assert_eq!(w.params["n"], serde_json::json!(3));
    let set = spec::load(&wf, &["model=m/${workflow_dir}".into()]).unwrap();
    assert_eq!(set.params["model"], serde_json::json!("m/${workflow_dir}"));
}
