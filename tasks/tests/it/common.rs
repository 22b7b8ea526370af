//! Shared by the integration tests of cocoflow-tasks and cocoflow-torch (`mod common;`; the
//! torch crate's test binary includes this file by path): run a workflow through the engine,
//! in-process, with a store and a journal in a directory of its own, and read what its
//! instances produced. Each test binary's root defines `register_kinds`, the kinds it runs.
#![allow(dead_code)] // each test file uses a part

use cocoflow_engine::kind::Registry;
use cocoflow_engine::plan::Plan;
use cocoflow_engine::runner::{self, RunOptions, RunReport};
use cocoflow_engine::spec;
use cocoflow_engine::state::RedbJournal;
use cocoflow_engine::store::{ResultManifest, Store};
use cocoflow_engine::ui::{Mode, Ui};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The engine's built-in kinds and those of the test binary's crate.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    super::register_kinds(&mut r);
    r
}

/// A finished run.
pub struct Run {
    pub store: Store,
    pub plan: Plan,
    pub report: RunReport,
    pub rt: Arc<tokio::runtime::Runtime>,
    pub state_dir: PathBuf,
}

impl Run {
    fn key(&self, name: &str) -> &str {
        &self
            .plan
            .instances
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no instance {name}"))
            .key
    }

    /// The instance's published result, if it succeeded (now or in an earlier run).
    pub fn try_result(&self, name: &str) -> Option<ResultManifest> {
        self.rt
            .block_on(self.store.get_result(self.key(name)))
            .unwrap()
    }

    pub fn result(&self, name: &str) -> ResultManifest {
        self.try_result(name)
            .unwrap_or_else(|| panic!("instance {name} has no result"))
    }

    /// The local path of output `output` of instance `name` (e.g. `rl[3].ema`).
    pub fn output(&self, name: &str, output: &str) -> PathBuf {
        let m = self.result(name);
        self.rt
            .block_on(self.store.artifact_file(&m.outputs[output]))
            .unwrap()
    }

    pub fn metrics(&self, name: &str) -> serde_json::Map<String, serde_json::Value> {
        self.result(name).metrics
    }

    /// The log kept with the instance's result.
    pub fn log(&self, name: &str) -> String {
        let a = self.result(name).log.expect("a log");
        String::from_utf8(
            self.rt
                .block_on(self.store.read_artifact(&a))
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    }

    /// The log of the instance's first attempt in this run (also when it failed).
    pub fn attempt_log(&self, name: &str) -> Option<String> {
        let dir = self.state_dir.join("logs").join(&self.report.run_id);
        std::fs::read_to_string(dir.join(format!("{name}.1.log"))).ok()
    }
}

/// Runs `yaml` (written to `dir/w.yaml`, with `--set` overrides) on `rt`; store `dir/store`,
/// journal `dir/j.redb`, state `dir/state`. Task failures are in `report`, not panics.
pub fn try_run(rt: Arc<tokio::runtime::Runtime>, dir: &Path, yaml: &str, sets: &[&str]) -> Run {
    std::fs::create_dir_all(dir).unwrap();
    let wf = dir.join("w.yaml");
    std::fs::write(&wf, yaml).unwrap();
    let registry = registry();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let w = spec::load(&wf, &sets).unwrap();
    let plan = cocoflow_engine::plan::build(&w, &registry, &[]).unwrap();
    let state_dir = dir.join("state");
    let store = Store::open("file://store", dir, &state_dir.join("cache")).unwrap();
    let mut journal = RedbJournal::open(&dir.join("j.redb")).unwrap();
    // a fresh run id per run (several runs may share a directory)
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let opts = RunOptions {
        run_id: format!("test-{n}"),
        workflow_path: wf.display().to_string(),
        overrides: sets,
        targets: vec![],
        state_dir: state_dir.clone(),
        base_dir: dir.to_path_buf(),
        gpus: Some(vec![]),
        cpus: Some(2),
        fail_fast: true,
        executor: "in-process".into(),
        grace: std::time::Duration::from_secs(1),
        self_exe: PathBuf::from("/nonexistent"),
        worker_exe: PathBuf::from("/nonexistent"),
        options_json: serde_json::Value::Null,
    };
    let mut ui = Ui::new(Mode::Quiet);
    let report = rt
        .block_on(runner::run(
            plan.clone(),
            registry,
            store.clone(),
            &mut journal,
            opts,
            &mut ui,
        ))
        .unwrap();
    Run {
        store,
        plan,
        report,
        rt,
        state_dir,
    }
}

/// Runs `yaml` in `dir` on a runtime of its own; a failed task panics, after printing the logs.
pub fn run(dir: &Path, yaml: &str) -> Run {
    let r = try_run(
        Arc::new(tokio::runtime::Runtime::new().unwrap()),
        dir,
        yaml,
        &[],
    );
    if r.report.failed > 0 {
        for (name, bytes) in files(&r.state_dir) {
            if name.ends_with(".log") {
                eprintln!("--- {name}\n{}", String::from_utf8_lossy(&bytes));
            }
        }
        panic!("a task failed: {:?}", r.report);
    }
    r
}

/// Every file under `dir`, by relative path.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
