//! The process model (issue 13): the torch-free `cocoflow` front end, long-lived workers
//! (`cocoflow-worker worker-serve`) and the executors.
//!
//! - the front end links no libtorch and runs without the worker program for everything
//!   that needs no tensors; a torch task then fails naming what is missing;
//! - a worker killed with SIGKILL mid-task fails only that attempt; the retry runs on a fresh
//!   worker and the output equals a clean run's;
//! - the engine killed with SIGKILL leaves no worker behind (checked by pid) and a re-run
//!   resumes;
//! - a task past its `timeout` has its worker killed;
//! - a worker speaking another protocol version is refused with a clear message;
//! - `in-process` (`cocoflow-worker run`), `workers` and `subprocess` give byte-identical
//!   exports of `workflows/cocoedit.yaml` at small settings, and a worker loads the base model
//!   once however many tasks use it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cocoflow");
pub(crate) const WORKER: &str = env!("CARGO_BIN_EXE_cocoflow-worker");

/// `cocoflow ARGS` in `dir`, with this build's worker.
pub(crate) fn cocoflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("COCOFLOW_WORKER", WORKER)
        .output()
        .unwrap()
}

/// stdout and stderr.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Processes whose parent is `parent` and whose command line contains `worker-serve`.
fn workers_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == parent && String::from_utf8_lossy(&cmd).contains("worker-serve") {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The attempt logs of the state directory whose file name starts with `prefix`.
fn attempt_logs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(runs) = std::fs::read_dir(dir.join(".cocoflow/logs")) {
        for r in runs.flatten() {
            if let Ok(ls) = std::fs::read_dir(r.path()) {
                for l in ls.flatten() {
                    if l.file_name().to_string_lossy().starts_with(prefix) {
                        out.push(l.path());
                    }
                }
            }
        }
    }
    out
}

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    std::fs::write(dir.join(name), yaml).unwrap();
    name.to_string()
}

/// A torch task (YAML at task level) that runs for minutes: 1024×1024 matmuls, many of them.
fn slow(seed: u32) -> String {
    format!("kind: torch-info\n    params: {{size: 1024, repeats: 100000, seed: {seed}}}")
}

#[test]
fn the_front_end_links_no_libtorch_and_works_without_the_worker() {
    let ldd = Command::new("ldd").arg(BIN).output().unwrap();
    let libs = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.status.success(), "{libs}");
    for lib in ["libtorch", "libc10"] {
        assert!(!libs.contains(lib), "`cocoflow` links {lib}:\n{libs}");
    }
    let wl = Command::new("ldd").arg(WORKER).output().unwrap();
    assert!(String::from_utf8_lossy(&wl.stdout).contains("libtorch_cpu"));

    // Without the worker program: plan, kinds and shell tasks work; the torch task fails with
    // a message naming the missing program, and only it.
    let d = tempfile::tempdir().unwrap();
    let wf = write(
        d.path(),
        "w.yaml",
        "name: w\ntasks:\n  sh:\n    kind: shell\n    params: {cmd: 'echo hi > out.txt', outputs: {out: out.txt}}\n  t:\n    kind: torch-info\n",
    );
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(d.path())
            .env("COCOFLOW_WORKER", "/nonexistent/cocoflow-worker")
            .output()
            .unwrap()
    };
    let kinds = run(&["kinds"]);
    assert!(
        kinds.status.success() && text(&kinds).contains("rollout"),
        "{}",
        text(&kinds)
    );
    let ablation = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/ablation.yaml");
    let plan = run(&["plan", ablation.to_str().unwrap()]);
    assert!(plan.status.success(), "{}", text(&plan));
    let out = run(&["run", &wf, "--gpus", "none"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("1 ran") && t.contains("1 failed"), "{t}");
    let status = run(&["status", "--json"]);
    let st = text(&status);
    assert!(
        st.contains("/nonexistent/cocoflow-worker") && st.contains("does not exist"),
        "{st}"
    );
}

#[test]
fn a_worker_killed_mid_task_fails_only_that_attempt() {
    let d = tempfile::tempdir().unwrap();
    let wf = write(
        d.path(),
        "w.yaml",
        "name: w\ntasks:\n  t:\n    kind: torch-info\n    params: {size: 256, repeats: 400}\n    retries: 1\n",
    );
    let clean = tempfile::tempdir().unwrap();
    std::fs::copy(d.path().join(&wf), clean.path().join(&wf)).unwrap();
    let o = cocoflow(clean.path(), &["run", &wf, "--gpus", "none", "-q"]);
    assert!(o.status.success(), "{}", text(&o));

    let engine = Command::new(BIN)
        .args(["run", &wf, "--gpus", "none", "--json"])
        .current_dir(d.path())
        .env("COCOFLOW_WORKER", WORKER)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once the task's first attempt is running in a worker, kill that worker.
    let mut victim = 0;
    wait_until("a worker runs the task", Duration::from_secs(120), || {
        let w = workers_of(engine.id());
        if !w.is_empty() && !attempt_logs(d.path(), "t.").is_empty() {
            victim = w[0];
            return true;
        }
        false
    });
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let out = engine.wait_with_output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{events}");
    assert!(!alive(victim));
    assert!(
        events.contains(&format!("the worker (pid {victim}) ended during the task")),
        "{events}"
    );
    assert!(events.contains("\"workers_started\":2"), "{events}");
    // The retried attempt's output equals the clean run's.
    let export = |dir: &Path| {
        let o = cocoflow(dir, &["export", "--to", "x"]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(dir.join("x/t/info")).unwrap()
    };
    assert_eq!(export(d.path()), export(clean.path()));
}

#[test]
fn the_engine_killed_leaves_no_worker_and_a_rerun_resumes() {
    let d = tempfile::tempdir().unwrap();
    let wf = write(
        d.path(),
        "w.yaml",
        &format!(
            "name: w\ntasks:\n  quick:\n    kind: torch-info\n    params: {{size: 64, repeats: 1}}\n  a:\n    {}\n  b:\n    {}\n",
            slow(0),
            slow(1)
        ),
    );
    let mut engine = Command::new(BIN)
        .args(["run", &wf, "--gpus", "none", "--cpus", "2", "-q"])
        .current_dir(d.path())
        .env("COCOFLOW_WORKER", WORKER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    wait_until("two workers run a and b", Duration::from_secs(120), || {
        pids = workers_of(engine.id());
        pids.len() == 2
            && !attempt_logs(d.path(), "a.").is_empty()
            && !attempt_logs(d.path(), "b.").is_empty()
    });
    engine.kill().unwrap();
    engine.wait().unwrap();
    wait_until(
        "the workers die with the engine",
        Duration::from_secs(10),
        || pids.iter().all(|&p| !alive(p)),
    );
    // Re-run without the slow tasks: `quick` comes from the cache of the killed run.
    let yaml = std::fs::read_to_string(d.path().join(&wf)).unwrap();
    let quick_only = yaml.split("\n  a:\n").next().unwrap().to_string() + "\n";
    std::fs::write(d.path().join(&wf), quick_only).unwrap();
    let o = cocoflow(d.path(), &["run", &wf, "--gpus", "none"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("0 ran, 1 cached"), "{t}");
}

#[test]
fn a_task_past_its_timeout_has_its_worker_killed() {
    let d = tempfile::tempdir().unwrap();
    let wf = write(
        d.path(),
        "w.yaml",
        &format!(
            "name: w\ntasks:\n  hang:\n    {}\n    timeout: 2s\n",
            slow(0)
        ),
    );
    let mut engine = Command::new(BIN)
        .args(["run", &wf, "--gpus", "none", "--json"])
        .current_dir(d.path())
        .env("COCOFLOW_WORKER", WORKER)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    wait_until("a worker runs the task", Duration::from_secs(120), || {
        pids = workers_of(engine.id());
        !pids.is_empty()
    });
    let t0 = Instant::now();
    let mut stdout = engine.stdout.take().unwrap();
    let mut events = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut events).unwrap();
    let status = engine.wait().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "the timeout did not stop it"
    );
    assert_eq!(status.code(), Some(4), "{events}");
    assert!(events.contains("timed out after 2"), "{events}");
    assert!(pids.iter().all(|&p| !alive(p)));
}

#[test]
fn a_worker_of_another_protocol_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let wf = write(
        d.path(),
        "w.yaml",
        "name: w\ntasks:\n  t:\n    kind: torch-info\n",
    );
    let o = Command::new(BIN)
        .args(["run", &wf, "--gpus", "none"])
        .current_dir(d.path())
        .env("COCOFLOW_WORKER", WORKER)
        .env("COCOFLOW_TEST_WORKER_PROTOCOL", "999")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let st = text(&cocoflow(d.path(), &["status", "--json"]));
    assert!(
        st.contains("it speaks worker protocol 999")
            && st.contains("rebuild both from one checkout"),
        "{st}"
    );
}

/// `workflows/cocoedit.yaml` / `ablation.yaml` settings small enough for a test.
pub(crate) const SMALL: &[&str] = &[
    // pretrain a base in the run (ablation.yaml's default is the shipped one)
    "model=",
    "n_train=48",
    "n_bench=16",
    "pretrain_steps=60",
    "iterations=2",
    "eval_every=1",
    "groups=4",
    "k=4",
    "steps=4",
    "eval_steps=4",
];

/// Runs `workflows/cocoedit.yaml` with `sets` through `program` (+ `extra` args) in `dir`;
/// returns the JSON summary line and the exported files.
fn cocoedit(
    program: &str,
    dir: &Path,
    sets: &[&str],
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<String, Vec<u8>>) {
    cocoedit_env(program, dir, sets, extra, &[])
}

/// [`cocoedit`] with extra environment variables.
fn cocoedit_env(
    program: &str,
    dir: &Path,
    sets: &[&str],
    extra: &[&str],
    envs: &[(&str, &Path)],
) -> (serde_json::Value, BTreeMap<String, Vec<u8>>) {
    let wf = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/cocoedit.yaml");
    let mut args = vec!["run".to_string(), wf.display().to_string()];
    for s in sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args.extend(["--gpus", "none", "--json"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(program)
        .args(&args)
        .current_dir(dir)
        .env("COCOFLOW_WORKER", WORKER)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout)
        .lines()
        .rev()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["event"] == "end").then(|| v["summary"].clone())
        })
        .unwrap_or_else(|| panic!("no summary in {}", text(&o)));
    let x = Command::new(BIN)
        .args(["export", "--to", "exported"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", text(&x));
    (summary, files(&dir.join("exported")))
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
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

#[test]
fn in_process_workers_and_subprocess_give_identical_outputs() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // The worker program is a whole single-process cocoflow: every kind in-process.
    let (sa, fa) = cocoedit(WORKER, a.path(), SMALL, &[]);
    let (sb, fb) = cocoedit(BIN, b.path(), SMALL, &[]);
    let (sc, fc) = cocoedit(BIN, c.path(), SMALL, &["--executor", "subprocess"]);
    assert_eq!(sa["workers_started"], 0);
    assert!(sb["workers_started"].as_u64().unwrap() >= 1, "{sb}");
    assert_eq!(sc["workers_started"], 0);
    // A fresh process per attempt loads the base for every attempt that uses it; a worker
    // loads it once.
    assert!(
        sc["model_loads"].as_u64() > sb["model_loads"].as_u64(),
        "{sb} {sc}"
    );
    assert!(
        fa.keys().any(|k| k.ends_with("table.json")),
        "{:?}",
        fa.keys()
    );
    for (name, other) in [("workers", &fb), ("subprocess", &fc)] {
        assert_eq!(
            other.keys().collect::<Vec<_>>(),
            fa.keys().collect::<Vec<_>>(),
            "{name}: different files"
        );
        for (k, v) in &fa {
            assert!(other[k] == *v, "{name}: `{k}` differs from in-process");
        }
    }
}

/// 16 RL iterations (rollout, nft-train, eval use the base model): each worker loads it at
/// most once, in-process loads it once, and every task used it.
#[test]
fn a_worker_loads_the_base_model_once_for_every_task() {
    let sets = [
        "n_train=24",
        "n_bench=4",
        "pretrain_steps=10",
        "iterations=16",
        "eval_every=8",
        "groups=2",
        "k=2",
        "steps=2",
        "eval_steps=2",
    ];
    let d = tempfile::tempdir().unwrap();
    let (s, _) = cocoedit(BIN, d.path(), &sets, &[]);
    let (loads, workers) = (
        s["model_loads"].as_u64().unwrap(),
        s["workers_started"].as_u64().unwrap(),
    );
    // 16 rollouts + 16 nft-train + 2 evals use the base; at most one load per worker.
    assert!(loads >= 1 && loads <= workers, "{s}");
    assert!(workers < 34, "{s}");
    let e = tempfile::tempdir().unwrap();
    let (s, _) = cocoedit(WORKER, e.path(), &sets, &[]);
    assert_eq!(s["model_loads"], 1, "{s}");
}

/// A reachable Slurm cluster's config (`SLURM_CONF`, or the one `scripts/slurm/up.sh` writes).
fn slurm_conf() -> Option<std::path::PathBuf> {
    let conf = std::env::var_os("SLURM_CONF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(
                &std::env::var("COCOFLOW_SLURM_DIR")
                    .unwrap_or_else(|_| "/tmp/cocoflow-slurm".into()),
            )
            .join("slurm.conf")
        });
    let ok = conf.is_file()
        && Command::new("timeout")
            .args(["10", "sinfo", "-h"])
            .env("SLURM_CONF", &conf)
            .output()
            .is_ok_and(|o| o.status.success());
    ok.then_some(conf)
}

/// `workflows/cocoedit.yaml` at small settings with every task a Slurm job (`--executor
/// slurm` against the real cluster of `scripts/slurm/up.sh`: the torch kinds run as
/// `cocoflow-worker worker --job` inside their jobs) exports the same files as the `workers`
/// executor. Skipped without a cluster unless `COCOFLOW_REQUIRE_SLURM=1`.
#[test]
fn cocoedit_through_slurm_gives_the_workers_outputs() {
    let Some(conf) = slurm_conf() else {
        assert!(
            std::env::var("COCOFLOW_REQUIRE_SLURM").as_deref() != Ok("1"),
            "no Slurm cluster answers and COCOFLOW_REQUIRE_SLURM=1 (bash scripts/slurm/up.sh)"
        );
        eprintln!("skipped: no Slurm cluster (bash scripts/slurm/up.sh starts one)");
        return;
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, fa) = cocoedit(BIN, a.path(), SMALL, &[]);
    let (sb, fb) = cocoedit_env(
        BIN,
        b.path(),
        SMALL,
        &["--executor", "slurm"],
        &[("SLURM_CONF", &conf)],
    );
    let notes = sb["executor_notes"].to_string();
    assert!(
        notes.contains("slurm: 15 jobs submitted, 0 re-attached"),
        "{sb}"
    );
    assert_eq!(fb.keys().collect::<Vec<_>>(), fa.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(
            v == &fb[k],
            "`{k}` differs between the slurm and workers executors"
        );
    }
}

/// `workflows/demo.yaml` with every task a Slurm job exports the same files as a local run;
/// and an engine SIGKILLed while its jobs run, started again, re-attaches to them and still
/// exports the same files. Skipped without a cluster unless `COCOFLOW_REQUIRE_SLURM=1`.
#[test]
fn demo_through_slurm_gives_the_local_outputs_also_after_a_kill() {
    let Some(conf) = slurm_conf() else {
        assert!(
            std::env::var("COCOFLOW_REQUIRE_SLURM").as_deref() != Ok("1"),
            "no Slurm cluster answers and COCOFLOW_REQUIRE_SLURM=1 (bash scripts/slurm/up.sh)"
        );
        eprintln!("skipped: no Slurm cluster (bash scripts/slurm/up.sh starts one)");
        return;
    };
    let wf = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/demo.yaml");
    let wf = wf.to_str().unwrap();
    // demo's train tasks write the GPU ids they ran on (`gpu=[…]`): none locally here, the
    // allocation's through Slurm; the files are compared with that field blanked, after
    // checking that the Slurm run's ids are allocation ids.
    let export = |dir: &Path, slurm: bool| {
        let x = Command::new(BIN)
            .args(["export", "--to", "exported"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(x.status.success(), "{}", text(&x));
        files(&dir.join("exported"))
            .into_iter()
            .map(|(k, v)| {
                let t = String::from_utf8_lossy(&v).into_owned();
                if !t.contains("gpu=[") {
                    return (k, v);
                }
                let mut out = String::new();
                for line in t.lines() {
                    let (head, rest) = line.split_once("gpu=[").unwrap_or((line, ""));
                    let (ids, tail) = rest.split_once(']').unwrap_or(("", ""));
                    if slurm && line.contains("gpu=[") {
                        let id: u32 = ids.parse().unwrap_or_else(|_| panic!("{k}: {line}"));
                        assert!(id < 8, "{k}: {line}");
                    }
                    out.push_str(&format!("{head}gpu=[]{tail}\n"));
                }
                (k, out.into_bytes())
            })
            .collect::<BTreeMap<String, Vec<u8>>>()
    };
    let (local, slurm, killed) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let o = cocoflow(local.path(), &["run", wf, "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let run_slurm = |dir: &Path| {
        Command::new(BIN)
            .args([
                "run",
                wf,
                "--executor",
                "slurm",
                "--gpus",
                "0,1,2,3,4,5,6,7",
            ])
            .current_dir(dir)
            .env("SLURM_CONF", &conf)
            .env("COCOFLOW_WORKER", WORKER)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let o = run_slurm(slurm.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 re-attached"), "{}", text(&o));
    let fl = export(local.path(), false);
    assert!(!fl.is_empty());
    let fs = export(slurm.path(), true);
    assert_eq!(fs.keys().collect::<Vec<_>>(), fl.keys().collect::<Vec<_>>());
    for (k, v) in &fl {
        assert!(
            v == &fs[k],
            "`{k}` differs between the local and the Slurm run"
        );
    }
    // killed while jobs run, run again: re-attached, the same files
    let mut child = Command::new(BIN)
        .args([
            "run",
            wf,
            "--executor",
            "slurm",
            "--gpus",
            "0,1,2,3,4,5,6,7",
            "-q",
        ])
        .current_dir(killed.path())
        .env("SLURM_CONF", &conf)
        .env("COCOFLOW_WORKER", WORKER)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let records = killed.path().join(".cocoflow/slurm");
    let t0 = std::time::Instant::now();
    loop {
        let n = std::fs::read_dir(&records)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "job"))
                    .count()
            })
            .unwrap_or(0);
        if n >= 2 {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "no jobs");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = run_slurm(killed.path());
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(!t.contains(" 0 re-attached"), "nothing re-attached: {t}");
    let fk = export(killed.path(), true);
    assert_eq!(fk.keys().collect::<Vec<_>>(), fl.keys().collect::<Vec<_>>());
    for (k, v) in &fl {
        assert!(v == &fk[k], "`{k}` differs after kill -9 and re-run");
    }
}
