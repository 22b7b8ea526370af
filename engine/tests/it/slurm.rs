//! The `slurm` executor against a real Slurm (slurmctld + slurmd on this machine with 8 fake
//! GPUs: `scripts/slurm/up.sh`, which `.ci/run` starts). One test, its scenarios in sequence
//! (they share the cluster's GPUs and CPUs):
//!
//! 1. GPU tasks: each job sees `CUDA_VISIBLE_DEVICES` from its allocation, and no two jobs
//!    running at the same time share a GPU id;
//! 2. the same workflow's results equal a local (`subprocess`) run's, digest for digest;
//! 3. the engine SIGKILLed while 4 jobs run: the re-run re-attaches to them (`sbatch` is not
//!    called for them: counted through a wrapper on `PATH`) and finishes;
//! 4. `scancel` of one job from outside: that task fails (its error says so), the others
//!    finish;
//! 5. Ctrl-C: every job of the run is cancelled, pending ones included (`squeue` shows none
//!    of them afterwards);
//! 6. a failed attempt's retry is a new job, not the old one (still finishing) re-attached;
//! 7. a job past its Slurm time limit is reported as such;
//! 8. `slurm-steps`: refused outside an allocation; inside one (`salloc`) each task is a job
//!    step with its own devices, results equal to the local run's; a step past its task's
//!    timeout is ended.
//!
//! Finds the cluster through `SLURM_CONF` (or `${COCOFLOW_SLURM_DIR:-/tmp/cocoflow-slurm}/
//! slurm.conf`). Without a reachable cluster the test says so and passes, unless
//! `COCOFLOW_REQUIRE_SLURM=1` (set by `.ci/run`), where it fails.

use super::common::Project;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn slurm_conf() -> Option<PathBuf> {
    let conf = std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(
                std::env::var("COCOFLOW_SLURM_DIR")
                    .unwrap_or_else(|_| "/tmp/cocoflow-slurm".into()),
            )
            .join("slurm.conf")
        });
    if !conf.is_file() {
        return None;
    }
    let ok = Command::new("timeout")
        .args(["10", "sinfo", "-h"])
        .env("SLURM_CONF", &conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(conf)
}

struct Cluster {
    conf: PathBuf,
    /// A directory with an `sbatch` that logs its calls to `sbatch.log`, then runs the real one.
    wrap: PathBuf,
}

impl Cluster {
    fn client(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .arg("20")
            .arg(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Job ids of the queued or running jobs whose name starts with `cocoflow-`.
    fn our_jobs(&self) -> Vec<String> {
        self.client("squeue", &["-h", "-o", "%i %j"])
            .lines()
            .filter_map(|l| {
                let (id, name) = l.trim().split_once(' ')?;
                name.starts_with("cocoflow-").then(|| id.to_string())
            })
            .collect()
    }

    fn sbatch_calls(&self) -> usize {
        std::fs::read_to_string(self.wrap.join("sbatch.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn cmd(&self, p: &Project, args: &[&str]) -> Command {
        let mut c = p.cmd(args);
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("SLURM_CONF", &self.conf)
            .env("PATH", format!("{}:{path}", self.wrap.display()));
        c
    }

    fn run(&self, p: &Project, args: &[&str]) -> (i32, String) {
        let out = self.cmd(p, args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Job records (`<state>/slurm/<key>.job`) of the project's running attempts.
fn records(p: &Project) -> Vec<PathBuf> {
    std::fs::read_dir(p.path().join(".cocoflow/slurm"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "job"))
                .collect()
        })
        .unwrap_or_default()
}

fn sleepers(n: usize, secs: u32, retries: u32) -> String {
    let mut wf = String::from("name: sleepers\nslurm: {poll: 200ms}\ntasks:\n");
    for i in 0..n {
        wf.push_str(&format!(
            "  s{i}:\n    kind: shell\n    retries: {retries}\n    params: {{cmd: 'sleep {secs}; echo {i} > out.txt', outputs: {{out: out.txt}}}}\n"
        ));
    }
    wf
}

fn gpu_workflow(log: &Path) -> String {
    let mut wf = String::from("name: gpus\nslurm: {poll: 200ms}\ntasks:\n");
    for i in 0..6 {
        wf.push_str(&format!(
            "  g{i}:\n    kind: shell\n    resources: {{gpus: 2}}\n    params: {{cmd: 'a=$(date +%s.%N); sleep 1.5; echo \"g{i} $CUDA_VISIBLE_DEVICES $a $(date +%s.%N)\" >> {}; echo {i} > out.txt', outputs: {{out: out.txt}}}}\n",
            log.display()
        ));
    }
    wf.push_str(
        "  join:\n    kind: shell\n    inputs: {a: g0.out, b: g5.out}\n    params: {cmd: 'cat $COCOFLOW_INPUT_A $COCOFLOW_INPUT_B > out.txt', outputs: {out: out.txt}}\n",
    );
    wf
}

/// Checks the 6 rows of `gpu_workflow`'s log (task, ids, start, end): two ids below 8 each, and
/// no id on two tasks that ran at the same time. Returns how many pairs overlapped in time.
fn check_gpu_rows(p: &Project) -> usize {
    let rows: Vec<(String, Vec<u32>, f64, f64)> = p
        .lines("gpus.log")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "{l}");
            let ids: Vec<u32> = f[1].split(',').map(|s| s.parse().unwrap()).collect();
            (
                f[0].to_string(),
                ids,
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 6, "{rows:?}");
    let mut overlapping = 0;
    for (i, a) in rows.iter().enumerate() {
        assert_eq!(a.1.len(), 2, "{rows:?}");
        assert!(a.1.iter().all(|&g| g < 8), "{rows:?}");
        for b in &rows[i + 1..] {
            if a.2 < b.3 && b.2 < a.3 {
                overlapping += 1;
                assert!(
                    a.1.iter().all(|g| !b.1.contains(g)),
                    "{} and {} ran at the same time on {:?} and {:?}",
                    a.0,
                    b.0,
                    a.1,
                    b.1
                );
            }
        }
    }
    overlapping
}

#[test]
fn slurm_executor_on_a_real_cluster() {
    let Some(conf) = slurm_conf() else {
        if std::env::var("COCOFLOW_REQUIRE_SLURM").as_deref() == Ok("1") {
            panic!(
                "no Slurm cluster answers (SLURM_CONF or /tmp/cocoflow-slurm/slurm.conf), and \
                 COCOFLOW_REQUIRE_SLURM=1: run `bash scripts/slurm/up.sh` first"
            );
        }
        eprintln!("skipped: no Slurm cluster (bash scripts/slurm/up.sh starts one)");
        return;
    };
    let wrap = tempfile::tempdir().unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v sbatch"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = wrap.path().join("sbatch");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            wrap.path().join("sbatch.log").display(),
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = Cluster {
        conf,
        wrap: wrap.path().to_path_buf(),
    };

    // 1. GPU tasks see their allocation's devices; no id is held by two running jobs at once
    let p = Project::new();
    let log = p.path().join("gpus.log");
    p.write("wf.yaml", &gpu_workflow(&log));
    let (code, err) = c.run(
        &p,
        &[
            "run",
            "wf.yaml",
            "--executor",
            "slurm",
            "--gpus",
            "0,1,2,3,4,5,6,7",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("slurm: 7 jobs submitted, 0 re-attached"),
        "{err}"
    );
    let overlapping = check_gpu_rows(&p);
    eprintln!("gpu jobs: {overlapping} overlapping pairs");

    // 2. the same results as a local run (digests of every output)
    let local = Project::new();
    local.write("wf.yaml", &gpu_workflow(&local.path().join("gpus.log")));
    let (code, err) = c.run(&local, &["run", "wf.yaml", "--executor", "subprocess"]);
    assert_eq!(code, 0, "{err}");
    let store = ".cocoflow/store";
    // the workflows differ in the log path inside the commands: compare the join's inputs
    // and output by content instead of by key
    let a = p.result_digests("wf.yaml", store);
    let b = local.result_digests("wf.yaml", store);
    for name in ["g0", "g5", "join"] {
        assert_eq!(
            a[name]["out"]["digest"], b[name]["out"]["digest"],
            "{name}: {} vs {}",
            a[name], b[name]
        );
    }

    // 3. engine SIGKILLed while 4 jobs run; the re-run re-attaches to them
    let p = Project::new();
    let mut wf = sleepers(4, 4, 0);
    wf.push_str("  join:\n    kind: shell\n    inputs: {a: s0.out, b: s3.out}\n    params: {cmd: 'cat $COCOFLOW_INPUT_A $COCOFLOW_INPUT_B > out.txt', outputs: {out: out.txt}}\n");
    p.write("wf.yaml", &wf);
    let before = c.sbatch_calls();
    let mut child = c
        .cmd(&p, &["run", "wf.yaml", "--executor", "slurm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("4 job records", Duration::from_secs(60), || {
        records(&p).len() == 4
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(c.sbatch_calls() - before, 4);
    let running = c.our_jobs();
    assert!(
        running.len() >= 4,
        "the jobs outlive the engine: {running:?}"
    );
    let (code, err) = c.run(&p, &["run", "wf.yaml", "--executor", "slurm"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("slurm: 1 jobs submitted, 4 re-attached"),
        "{err}"
    );
    assert_eq!(
        c.sbatch_calls() - before,
        5,
        "only the join was submitted again"
    );
    assert!(records(&p).is_empty());

    // 4. one job cancelled from outside: that task fails, the others finish
    let p = Project::new();
    p.write("wf.yaml", &sleepers(3, 4, 0));
    let child = c
        .cmd(&p, &["run", "wf.yaml", "--executor", "slurm"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("3 job records", Duration::from_secs(60), || {
        records(&p).len() == 3
    });
    let victim = std::fs::read_to_string(&records(&p)[0]).unwrap();
    c.client("scancel", &[victim.trim()]);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("2 ran, 0 cached, 1 failed"), "{err}");
    assert!(err.contains("was cancelled"), "{err}");

    // 5. Ctrl-C cancels every job of the run, the pending one too (3 jobs × 4 GPUs on a
    // cluster of 8: the third waits for resources)
    let p = Project::new();
    p.write(
        "wf.yaml",
        &sleepers(3, 60, 0).replace(
            "    retries: 0\n",
            "    retries: 0\n    resources: {gpus: 4}\n",
        ),
    );
    assert!(p.read("wf.yaml").contains("gpus: 4"));
    let child = c
        .cmd(
            &p,
            &[
                "run",
                "wf.yaml",
                "--executor",
                "slurm",
                "--grace",
                "1s",
                "--gpus",
                "0,1,2,3,4,5,6,7,8,9,10,11",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("3 job records", Duration::from_secs(60), || {
        records(&p).len() == 3
    });
    let ids: Vec<String> = records(&p)
        .iter()
        .map(|r| std::fs::read_to_string(r).unwrap().trim().to_string())
        .collect();
    wait_for("one job pending", Duration::from_secs(30), || {
        c.client("squeue", &["-h", "-t", "PENDING", "-o", "%j"])
            .lines()
            .any(|l| l.starts_with("cocoflow-"))
    });
    // SAFETY: signals the engine child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(t0.elapsed() < Duration::from_secs(40), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    wait_for(
        "the cancelled jobs to leave the queue",
        Duration::from_secs(30),
        || {
            let q = c.our_jobs();
            ids.iter().all(|i| !q.contains(i))
        },
    );

    // 6. a retry is a new job (never the failed attempt's, still finishing)
    let p = Project::new();
    let marker = p.path().join("failed-once");
    p.write(
        "wf.yaml",
        &format!(
            "name: retry\nslurm: {{poll: 200ms}}\ntasks:\n  flaky:\n    kind: shell\n    retries: {{count: 2, backoff: 0s}}\n    params: {{cmd: 'if [ -e {m} ]; then echo ok > out.txt; else touch {m}; exit 3; fi', outputs: {{out: out.txt}}}}\n",
            m = marker.display()
        ),
    );
    let (code, err) = c.run(&p, &["run", "wf.yaml", "--executor", "slurm"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("slurm: 2 jobs submitted, 0 re-attached"),
        "{err}"
    );

    // 7. a job past its time limit (`time: 1`, a number: one minute)
    let p = Project::new();
    p.write(
        "wf.yaml",
        "name: late\nslurm: {poll: 200ms}\ntasks:\n  late:\n    kind: shell\n    slurm: {time: 1}\n    params: {cmd: 'sleep 120; echo > out.txt', outputs: {out: out.txt}}\n",
    );
    let (code, err) = c.run(&p, &["run", "wf.yaml", "--executor", "slurm"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("reached its time limit"), "{err}");

    // 8. `slurm-steps`: refused outside an allocation, with what to do instead ...
    let p = Project::new();
    p.write("wf.yaml", &gpu_workflow(&p.path().join("gpus.log")));
    let (code, err) = c.run(
        &p,
        &[
            "run",
            "wf.yaml",
            "--executor",
            "slurm-steps",
            "--gpus",
            "0,1",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("SLURM_JOB_ID is not set"), "{err}");
    assert!(err.contains("salloc"), "{err}");
    // ... and inside one (`salloc` of the whole node) every task is a step with its own
    // devices, no id held by two steps at once, the results those of the local run
    let in_allocation = |p: &Project, args: &[&str]| {
        let out = Command::new("salloc")
            .args(["--quiet", "-N1", "--gres=gpu:8", "--cpus-per-task=8"])
            .arg(super::common::BIN)
            .args(args)
            .current_dir(p.path())
            .env("SLURM_CONF", &c.conf)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let p = Project::new();
    p.write("wf.yaml", &gpu_workflow(&p.path().join("gpus.log")));
    let t0 = Instant::now();
    let (code, err) = in_allocation(
        &p,
        &[
            "run",
            "wf.yaml",
            "--executor",
            "slurm-steps",
            "--gpus",
            "0,1,2,3,4,5,6,7",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("7 Slurm job step(s) started in allocation"),
        "{err}"
    );
    // 6 × 1.5 s on 4 pairs of GPUs: two waves, each step starting at once
    assert!(t0.elapsed() < Duration::from_secs(20), "{err}");
    check_gpu_rows(&p);
    let a = p.result_digests("wf.yaml", store);
    let b = local.result_digests("wf.yaml", store);
    for name in ["g0", "g5", "join"] {
        assert_eq!(a[name]["out"]["digest"], b[name]["out"]["digest"], "{name}");
    }
    // a step past its task's timeout is ended while the run goes on (a step left behind
    // would keep its GPU until the allocation ends)
    let p = Project::new();
    p.write(
        "wf.yaml",
        "name: late\ntasks:\n  late:\n    kind: shell\n    timeout: 2s\n    resources: {gpus: 1}\n    params: {cmd: 'sleep 60; echo > out.txt', outputs: {out: out.txt}}\n  keep:\n    kind: shell\n    resources: {gpus: 1}\n    params: {cmd: 'sleep 12; echo > out.txt', outputs: {out: out.txt}}\n",
    );
    let plan = p.plan_json("wf.yaml");
    let key = plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "late")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let step_name = format!("cocoflow-{}", &key[..16]);
    let step_listed = || {
        c.client("squeue", &["-h", "-s", "-o", "%j"])
            .lines()
            .any(|l| l.trim() == step_name)
    };
    let mut child = Command::new("salloc")
        .args(["--quiet", "-N1", "--gres=gpu:8", "--cpus-per-task=8"])
        .arg(super::common::BIN)
        .args([
            "run",
            "wf.yaml",
            "--executor",
            "slurm-steps",
            "--gpus",
            "0,1",
        ])
        .current_dir(p.path())
        .env("SLURM_CONF", &c.conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the late task's step", Duration::from_secs(30), step_listed);
    let seen = Instant::now();
    wait_for("the late step to end", Duration::from_secs(15), || {
        !step_listed()
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the step ended with the run, not before it"
    );
    assert!(seen.elapsed() < Duration::from_secs(12));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("timed out after 2"), "{err}");
    assert!(err.contains("1 ran, 0 cached, 1 failed"), "{err}");
}
