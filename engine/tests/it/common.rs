//! A scratch project directory and a way to run the engine binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_cocoflow-engine");

pub struct Project {
    pub dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs to completion; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out: Output = self.cmd(args).output().expect("run engine");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    /// Lines of a log file that tasks append to (one line per execution).
    pub fn lines(&self, rel: &str) -> Vec<String> {
        self.read(rel).lines().map(String::from).collect()
    }

    /// `{"name": key}` for the instances of `cocoflow plan --json`.
    pub fn plan_json(&self, wf: &str) -> serde_json::Value {
        let (code, out, err) = self.run(&["plan", wf, "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Output digests of every instance's result in the local store, by instance name.
    pub fn result_digests(
        &self,
        wf: &str,
        store: &str,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let plan = self.plan_json(wf);
        let results = cocoflow_engine::store::pack::read_local(&self.path().join(store));
        let mut out = std::collections::BTreeMap::new();
        for inst in plan["instances"].as_array().unwrap() {
            let key = inst["key"].as_str().unwrap();
            let m: serde_json::Value =
                serde_json::from_slice(results.get(key).expect("result manifest")).unwrap();
            out.insert(
                inst["name"].as_str().unwrap().to_string(),
                m["outputs"].clone(),
            );
        }
        out
    }
}
