//! The store on a real S3-compatible server (moto, started here on 127.0.0.1): a workflow
//! runs end to end on `s3://`, then again from a second, empty state directory, getting
//! every result from the cache.
//!
//! Needs `moto_server` (`scripts/setup.sh` installs it into `.venv`). Without it the test
//! says so and passes, unless `COCOFLOW_REQUIRE_S3=1` (set by `.ci/run`), where it fails.

use super::common::Project;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Creates a bucket (object_store cannot: a plain PUT does); returns the endpoint URL.
    pub fn bucket(&self, name: &str) -> String {
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        let resp = reqwest::blocking::Client::new()
            .put(format!("{endpoint}/{name}"))
            .send()
            .expect("create bucket");
        assert!(
            resp.status().is_success(),
            "bucket creation: {}",
            resp.status()
        );
        endpoint
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("COCOFLOW_MOTO_SERVER") {
        return Some(p.into());
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let venv = repo.join(".venv/bin/moto_server");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| "moto_server".into())
}

/// A moto server on a free port; `None` (the test then passes) when there is no
/// `moto_server` and `COCOFLOW_REQUIRE_S3` is not `1`.
pub fn start_moto() -> Option<Moto> {
    let Some(bin) = moto_binary() else {
        assert!(
            std::env::var("COCOFLOW_REQUIRE_S3").as_deref() != Ok("1"),
            "COCOFLOW_REQUIRE_S3=1 but no moto_server found (run scripts/setup.sh)"
        );
        eprintln!(
            "s3 test: no moto_server found; skipping (set COCOFLOW_REQUIRE_S3=1 to make this an error)"
        );
        return None;
    };
    // Pick a free port, then start moto on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start moto_server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("Running on") {
                let _ = tx.send(());
            }
        }
    });
    let moto = Moto { child, port };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if rx.try_recv().is_ok() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(moto);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("moto_server did not start within 60 s");
}

#[test]
fn workflow_on_s3_then_from_an_empty_state_dir_is_all_cached() {
    let Some(moto) = start_moto() else { return };
    let endpoint = moto.bucket("cocoflow-test");

    let p = Project::new();
    p.write(
        "w.yaml",
        &format!(
            r#"
name: s3
store: s3://cocoflow-test/runs/a
params: {{root: '{}'}}
sweep:
  matrix: {{n: [1, 2]}}
tasks:
  data: {{kind: shell, params: {{cmd: 'echo data >> "${{root}}/exec.log"; mkdir -p d; echo x > d/a.txt; echo y > d/b.txt', outputs: {{d: d/}}}}}}
  work:
    kind: shell
    inputs: {{d: data.d}}
    params: {{cmd: 'echo work >> "${{root}}/exec.log"; cat "$COCOFLOW_INPUT_D/a.txt" "$COCOFLOW_INPUT_D/b.txt" > o.txt; echo ${{n}} >> o.txt', outputs: {{o: o.txt}}}}
"#,
            p.path().display()
        )
        .replace("params: {root:", "params: {n: 0, root:"),
    );
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let run = |state: &str| {
        let out = p
            .cmd(&["--state-dir", state, "run", "w.yaml"])
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("state-a");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(p.lines("exec.log").len(), 3, "data once, work per arm");
    assert!(!p.path().join(".cocoflow").exists());
    let (code, err) = run("state-b");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("3 instances, 3 cached"), "{err}");
    assert_eq!(
        p.lines("exec.log").len(),
        3,
        "nothing re-ran from the empty state dir"
    );
    // The second state dir materialised the tree input from S3 when needed: force it by
    // changing only the downstream task.
    let text = p.read("w.yaml").replace("echo work", "echo work2");
    p.write("w.yaml", &text);
    let (code, err) = run("state-c");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        p.lines("exec.log").iter().filter(|l| *l == "work2").count(),
        2
    );
    assert_eq!(
        p.lines("exec.log").iter().filter(|l| *l == "data").count(),
        1
    );
}
