//! Whole runs: shared prefixes, retries, failing arms, caching, corruption, executors,
//! GPUs, interruption, loops, quoting, gc.

use super::common::Project;

const SWEEP: &str = r#"
name: sweep
params: {lr: 0.1, ratio: 0.5}
sweep:
  matrix:
    lr: [0.1, 0.2, 0.3]
    ratio: [0.5, 0.8]
  exclude:
    - {lr: 0.3, ratio: 0.8}
tasks:
  data:
    kind: shell
    params:
      cmd: 'echo data >> "$LOG"; echo rows > d.txt'
      env: {LOG: "${root}/exec.log"}
      outputs: {d: d.txt}
  base:
    kind: shell
    inputs: {d: data.d}
    params:
      cmd: 'echo base >> "$LOG"; cat "$COCOFLOW_INPUT_D" > b.txt'
      env: {LOG: "${root}/exec.log"}
      outputs: {b: b.txt}
  train:
    kind: shell
    inputs: {b: base.b}
    params:
      cmd: 'echo "train ${lr} ${ratio}" >> "$LOG"; if [ -f "${root}/fail-${lr}-${ratio}" ]; then exit 7; fi; echo "${lr} ${ratio}" > m.txt'
      env: {LOG: "${root}/exec.log"}
      outputs: {m: m.txt}
  eval:
    kind: shell
    inputs: {m: train.m}
    params:
      cmd: 'echo eval >> "$LOG"; cat "$COCOFLOW_INPUT_M" > e.txt'
      env: {LOG: "${root}/exec.log"}
      outputs: {e: e.txt}
"#;

fn sweep_project() -> Project {
    let p = Project::new();
    let text = SWEEP.replace(
        "params: {lr: 0.1,",
        &format!("params: {{root: '{}', lr: 0.1,", p.path().display()),
    );
    p.write("w.yaml", &text);
    p
}

#[test]
fn sweep_shares_its_prefix_and_reruns_are_cached() {
    let p = sweep_project();
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    let log = p.lines("exec.log");
    assert_eq!(log.iter().filter(|l| *l == "data").count(), 1, "{log:?}");
    assert_eq!(log.iter().filter(|l| *l == "base").count(), 1, "{log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("train")).count(), 5);
    assert_eq!(log.iter().filter(|l| *l == "eval").count(), 5);
    let plan = p.plan_json("w.yaml");
    assert_eq!(plan["instances"].as_array().unwrap().len(), 12);
    assert_eq!(plan["cached"], 12);
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        p.lines("exec.log").len(),
        log.len(),
        "second run executed something"
    );
    assert!(err.contains("12 cached"), "{err}");
}

/// `sweep.seeds` crosses every arm with each seed (names `<arm>,seed=<v>`); a task whose
/// params do not use the seed stays shared, one that does runs per seed; errors name the key.
#[test]
fn seeds_repeat_every_arm() {
    let p = Project::new();
    let wf = format!(
        r#"
name: seeds
params: {{root: '{root}', seed: 0, lr: 0.1}}
sweep:
  arms:
    - {{name: a, params: {{lr: 0.1}}}}
    - {{name: b, params: {{lr: 0.2}}}}
  seeds: [0, 1, 2]
tasks:
  data:
    kind: shell
    params:
      cmd: 'echo data >> "$LOG"; echo rows > d.txt'
      env: {{LOG: "${{root}}/exec.log"}}
      outputs: {{d: d.txt}}
  train:
    kind: shell
    inputs: {{d: data.d}}
    params:
      cmd: 'echo "train ${{lr}} ${{seed}} ${{arm}}" >> "$LOG"; echo x > m.txt'
      env: {{LOG: "${{root}}/exec.log"}}
      outputs: {{m: m.txt}}
"#,
        root = p.path().display()
    );
    p.write("w.yaml", &wf);
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    let mut log = p.lines("exec.log");
    log.sort();
    assert_eq!(
        log,
        vec![
            "data",
            "train 0.1 0 a,seed=0",
            "train 0.1 1 a,seed=1",
            "train 0.1 2 a,seed=2",
            "train 0.2 0 b,seed=0",
            "train 0.2 1 b,seed=1",
            "train 0.2 2 b,seed=2",
        ]
    );
    // A named param; an arm that sets it; a value of the wrong type; seeds alone.
    for (sweep, want) in [
        (
            "  arms: [{name: a, params: {seed: 1}}]\n  seeds: [0, 1]\n",
            "arm `a` sets `seed` itself",
        ),
        (
            "  seeds: {param: lr, values: [0.1, fast]}\n",
            "sets param `lr` to a string",
        ),
        (
            "  seeds: {param: nope, values: [1]}\n",
            "`nope`, which is not a param",
        ),
        ("  seeds: []\n", "`seeds` has no values"),
    ] {
        p.write(
            "bad.yaml",
            &format!("name: x\nparams: {{seed: 0, lr: 0.1}}\nsweep:\n{sweep}tasks:\n  t: {{kind: noop}}\n"),
        );
        let (code, _, err) = p.run(&["plan", "bad.yaml"]);
        assert_ne!(code, 0, "{sweep}");
        assert!(err.contains(want), "{sweep}: {err}");
    }
    p.write(
        "only.yaml",
        "name: x\nparams: {seed: 0}\nsweep:\n  seeds: {param: seed, values: [4, 5]}\ntasks:\n  t: {kind: shell, params: {cmd: 'echo ${seed} > o.txt', outputs: {o: o.txt}}}\n",
    );
    let plan = p.plan_json("only.yaml");
    let names: Vec<&str> = plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["t[seed=4]", "t[seed=5]"], "{plan}");
}

#[test]
fn a_failing_arm_does_not_stop_other_arms() {
    let p = sweep_project();
    p.write("fail-0.2-0.8", "");
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("1 failed, 1 blocked"), "{err}");
    assert!(err.contains("exited with status 7"), "{err}");
    let log = p.lines("exec.log");
    assert_eq!(
        log.iter().filter(|l| *l == "eval").count(),
        4,
        "the other four arms finish: {log:?}"
    );
    let (code, out, _) = p.run(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "failed");
    let states: Vec<(&str, &str)> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["state"].as_str().unwrap()))
        .collect();
    assert!(
        states.contains(&("train[lr=0.2,ratio=0.8]", "failed")),
        "{states:?}"
    );
    assert!(
        states.contains(&("eval[lr=0.2,ratio=0.8]", "blocked")),
        "{states:?}"
    );
    // After fixing the cause, only the failed arm runs.
    std::fs::remove_file(p.path().join("fail-0.2-0.8")).unwrap();
    let before = p.lines("exec.log").len();
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    let new: Vec<String> = p.lines("exec.log")[before..].to_vec();
    assert_eq!(new, vec!["train 0.2 0.8".to_string(), "eval".to_string()]);
}

#[test]
fn fail_fast_stops_launching() {
    let p = sweep_project();
    p.write("fail-0.2-0.8", "");
    let (code, _, err) = p.run(&["run", "w.yaml", "--fail-fast", "--cpus", "1"]);
    assert_eq!(code, 4, "{err}");
    let (_, out, _) = p.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let evals = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"].as_str().unwrap().starts_with("eval") && i["state"] == "succeeded")
        .count();
    assert!(evals < 5, "fail-fast must leave some work undone");
}

#[test]
fn a_task_that_fails_twice_then_succeeds_is_retried() {
    let p = Project::new();
    p.write(
        "w.yaml",
        &format!(
            r#"
name: flaky-wf
tasks:
  flaky:
    kind: shell
    retries: {{count: 2, backoff: 50ms}}
    params:
      cmd: 'n=$(cat "$C" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$C"; [ $n -ge 3 ] && echo ok > o.txt'
      env: {{C: "{}/counter"}}
      outputs: {{o: o.txt}}
"#,
            p.path().display()
        ),
    );
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p.read("counter").trim(), "3");
    assert_eq!(err.matches("retry").count(), 2, "{err}");
    let (_, out, _) = p.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["instances"][0]["attempts"], 3);
    assert_eq!(v["instances"][0]["state"], "succeeded");
    // Without enough retries it fails for good.
    let text = p
        .read("w.yaml")
        .replace("count: 2", "count: 1")
        .replace("/counter", "/counter2");
    p.write("w.yaml", &text);
    let (code, _, _) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 4);
}

#[test]
fn corrupt_blob_makes_its_producer_run_again() {
    let p = Project::new();
    let wf = format!(
        r#"
name: corrupt
params: {{suffix: a}}
tasks:
  make:
    kind: shell
    params: {{cmd: 'echo made >> "{root}/exec.log"; head -c 2000 /dev/zero | tr "\\0" x > p.txt', outputs: {{p: p.txt}}}}
  use:
    kind: shell
    inputs: {{p: make.p}}
    params: {{cmd: 'cat "$COCOFLOW_INPUT_P" > u.txt; echo ${{suffix}} >> u.txt', outputs: {{u: u.txt}}}}
"#,
        root = p.path().display()
    );
    p.write("w.yaml", &wf);
    assert_eq!(p.run(&["run", "w.yaml"]).0, 0);
    // Corrupt every blob of the store in place (the producer's output among them).
    let payload = vec![b'x'; 2000]; // larger than the inline limit, so it is a blob file
    let digest = blake3::hash(&payload).to_hex().to_string();
    let blob = p
        .path()
        .join(".cocoflow/store/blobs")
        .join(&digest[..2])
        .join(&digest);
    // Same size, other bytes: only reading (and hashing) it finds out.
    std::fs::write(&blob, vec![b'y'; 2000]).unwrap();
    let (code, _, err) = p.run(&["run", "w.yaml", "--set", "suffix=b"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is corrupt"), "{err}");
    assert_eq!(p.lines("exec.log").len(), 2, "producer ran again");
    assert_eq!(std::fs::read(&blob).unwrap(), payload, "blob restored");
    // Truncated: the size check before launching finds it, and the blob is replaced.
    std::fs::write(&blob, b"garbage").unwrap();
    let (code, _, err) = p.run(&["run", "w.yaml", "--set", "suffix=c"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 ran, 0 cached"), "{err}");
    assert_eq!(p.lines("exec.log").len(), 3, "producer ran again");
    assert_eq!(std::fs::read(&blob).unwrap(), payload, "blob restored");
    // A fully cached run checks the sizes of the outputs it ends with.
    let mut out = payload.clone();
    out.extend_from_slice(b"c\n");
    let digest = blake3::hash(&out).to_hex().to_string();
    let final_blob = p
        .path()
        .join(".cocoflow/store/blobs")
        .join(&digest[..2])
        .join(&digest);
    std::fs::write(&final_blob, &out[..100]).unwrap();
    let (code, _, err) = p.run(&["run", "w.yaml", "--set", "suffix=c"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 ran, 1 cached"), "{err}");
    assert_eq!(
        std::fs::read(&final_blob).unwrap(),
        out,
        "final output restored"
    );
}

#[test]
fn subprocess_executor_isolates_a_crashing_task() {
    let p = Project::new();
    p.write(
        "w.yaml",
        r#"
name: crashy
tasks:
  ok1: {kind: shell, params: {cmd: 'echo 1 > o.txt', outputs: {o: o.txt}}}
  boom: {kind: shell, params: {cmd: 'kill -9 $PPID; sleep 5'}}
  ok2: {kind: shell, inputs: {x: ok1.o}, params: {cmd: 'cp "$COCOFLOW_INPUT_X" o.txt', outputs: {o: o.txt}}}
"#,
    );
    let (code, _, err) = p.run(&["run", "w.yaml", "--executor", "subprocess"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("worker was killed by signal 9"), "{err}");
    assert!(err.contains("2 ran"), "{err}");
}

/// A subprocess attempt past its `timeout` has its process group killed (the worker and the
/// `sh` under it), and the next task still gets its input through the worker's stdin.
#[test]
fn subprocess_executor_kills_an_attempt_past_its_timeout() {
    let p = Project::new();
    let pid_file = p.path().join("sh.pid");
    p.write(
        "w.yaml",
        &format!(
            r#"
name: slow
tasks:
  first: {{kind: shell, params: {{cmd: 'echo 1 > o.txt', outputs: {{o: o.txt}}}}}}
  hang:
    kind: shell
    inputs: {{x: first.o}}
    params: {{cmd: 'cat "$COCOFLOW_INPUT_X"; echo $$ > {}; sleep 30'}}
    timeout: 1s
    retries: 0
"#,
            pid_file.display()
        ),
    );
    let t = std::time::Instant::now();
    let (code, _, err) = p.run(&["run", "w.yaml", "--executor", "subprocess"]);
    assert_eq!(code, 4, "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(15), "{err}");
    assert!(err.contains("timed out after 1"), "{err}");
    assert!(err.contains("1 ran"), "{err}");
    // The shell under the killed worker is gone too.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the shell started")
        .trim()
        .parse()
        .unwrap();
    // (gone, or a zombie waiting for whoever adopted it to reap it)
    let gone = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    });
    assert!(gone, "sh {pid} survived its worker");
}

#[test]
fn gpu_tasks_get_distinct_device_ids() {
    let p = Project::new();
    let root = p.path().display().to_string();
    p.write(
        "w.yaml",
        &format!(
            r#"
name: gpus
tasks:
  a: {{kind: shell, resources: {{gpus: 2}}, params: {{cmd: 'echo "a=$CUDA_VISIBLE_DEVICES" >> {root}/g.log; sleep 0.3'}}}}
  b: {{kind: shell, resources: {{gpus: 1}}, params: {{cmd: 'echo "b=$CUDA_VISIBLE_DEVICES" >> {root}/g.log; sleep 0.3'}}}}
  c: {{kind: shell, resources: {{gpus: 1}}, params: {{cmd: 'echo "c=$CUDA_VISIBLE_DEVICES" >> {root}/g.log; sleep 0.3'}}}}
  cpu: {{kind: shell, params: {{cmd: 'echo "cpu=$CUDA_VISIBLE_DEVICES" >> {root}/g.log'}}}}
"#
        ),
    );
    let (code, _, err) = p.run(&["run", "w.yaml", "--gpus", "4,5,6", "--cpus", "4"]);
    assert_eq!(code, 0, "{err}");
    let mut log = p.lines("g.log");
    log.sort();
    assert!(log.contains(&"cpu=".to_string()), "{log:?}");
    let a = log.iter().find(|l| l.starts_with("a=")).unwrap();
    assert_eq!(a.len(), "a=4,5".len(), "{log:?}");
    // While `a` holds two GPUs, at most one of `b`, `c` can run; they never share an id
    // with a concurrently running task (checked by the core's property tests); here every
    // id is from the pool.
    for l in &log {
        for id in l
            .split('=')
            .nth(1)
            .unwrap()
            .split(',')
            .filter(|s| !s.is_empty())
        {
            assert!(["4", "5", "6"].contains(&id), "{log:?}");
        }
    }
    // No GPU on this machine and no --gpus: the same workflow runs on the CPU with a notice.
    let (code, _, err) = p.run(&["run", "w.yaml", "--gpus", "none"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("note: no GPU found: 3 GPU task(s) will run on the CPU"),
        "{err}"
    );
}

#[test]
fn ctrl_c_interrupts_and_records_it() {
    let p = Project::new();
    p.write("w.yaml", "name: slow\ntasks:\n  a: {kind: shell, params: {cmd: 'sleep 30'}}\n  b: {kind: noop, needs: [a]}\n");
    let mut child = p
        .cmd(&["run", "w.yaml", "--grace", "200ms"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        t.elapsed().as_secs() < 10,
        "cancelled well before the task would end"
    );
    let (_, out, _) = p.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "interrupted");
    assert_eq!(v["instances"][0]["state"], "interrupted");
    assert_eq!(v["instances"][1]["state"], "interrupted");
}

#[test]
fn loops_unroll_with_carry_and_every() {
    let p = Project::new();
    p.write(
        "w.yaml",
        r#"
name: loop
params: {iterations: 4, k: 2}
tasks:
  init: {kind: shell, params: {cmd: 'echo 0 > s.txt', outputs: {s: s.txt}}}
  rl:
    loop:
      iterations: ${iterations}
      carry:
        state: {init: init.s, next: step.s}
      tasks:
        step:
          kind: shell
          inputs: {prev: carry.state}
          params: {cmd: 'cat "$COCOFLOW_INPUT_PREV" > s.txt; echo ${iter} >> s.txt', outputs: {s: s.txt}}
        eval:
          kind: shell
          every: ${k}
          inputs: {s: step.s}
          params: {cmd: 'wc -l < "$COCOFLOW_INPUT_S" > e.txt', outputs: {e: e.txt}}
  report:
    kind: shell
    inputs: {final: rl.state, evals: "rl[*].eval.e"}
    params: {cmd: 'cat "$COCOFLOW_INPUT_FINAL" > r.txt; echo "evals=$COCOFLOW_INPUT_EVALS_COUNT" >> r.txt', outputs: {r: r.txt}}
"#,
    );
    let plan = p.plan_json("w.yaml");
    let names: Vec<&str> = plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "init",
            "rl[1].step",
            "rl[2].step",
            "rl[2].eval",
            "rl[3].step",
            "rl[4].step",
            "rl[4].eval",
            "report"
        ]
    );
    let (code, _, err) = p.run(&["run", "w.yaml", "--set", "iterations=3"]);
    assert_eq!(code, 0, "{err}");
    // iterations=3, k=2: eval on 2 and on the last (3).
    let (_, out, _) = p.run(&["graph", "w.yaml", "--set", "iterations=3"]);
    assert!(out.contains("rl[3].eval (shell) <- rl[3].step"), "{out}");
    assert!(
        out.contains("report (shell) <- rl[2].eval, rl[3].step, rl[3].eval"),
        "{out}"
    );
    let (_, dot, _) = p.run(&["graph", "w.yaml", "--format", "dot"]);
    assert!(dot.starts_with("digraph \"loop\" {"), "{dot}");
}

#[test]
fn params_never_splice_into_shell_syntax() {
    let p = Project::new();
    p.write(
        "w.yaml",
        "name: q\nparams: {msg: \"x; touch pwned; echo 'q'\"}\ntasks:\n  a: {kind: shell, params: {cmd: 'echo ${msg} > o.txt', args: ['${msg}'], outputs: {o: o.txt}}}\n  b: {kind: shell, params: {cmd: 'printf %s \"$1|$M\" > o.txt', args: ['${msg}'], env: {M: '${msg}'}, outputs: {o: o.txt}}}\n",
    );
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    let work = p.path().join(".cocoflow");
    let pwned = walk(&work)
        .into_iter()
        .chain(walk(p.path()))
        .any(|f| f.ends_with("pwned"));
    assert!(!pwned, "a param was executed as shell code");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn targets_limit_the_run() {
    let p = sweep_project();
    let (code, _, err) = p.run(&["run", "w.yaml", "--target", "base"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p.lines("exec.log"), vec!["data", "base"]);
}

#[test]
fn gc_keeps_what_runs_reference_and_removes_the_rest() {
    let p = Project::new();
    // Payloads above the inline limit, so each result has a blob.
    p.write("w.yaml", &format!("name: g\nparams: {{v: a}}\ntasks:\n  a: {{kind: noop, params: {{payload: '${{v}}-payload{}'}}}}\n", "p".repeat(1100)));
    assert_eq!(p.run(&["run", "w.yaml"]).0, 0);
    assert_eq!(p.run(&["run", "w.yaml", "--set", "v=b"]).0, 0);
    // Forget the second run's summary: its result and blob become garbage.
    let runs: Vec<_> = std::fs::read_dir(p.path().join(".cocoflow/store/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 2);
    let second = runs
        .iter()
        .find(|r| {
            std::fs::read_to_string(r).unwrap().contains("succeeded") && {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(r).unwrap()).unwrap();
                let key = v["results"][0].as_str().unwrap().to_string();
                let results =
                    cocoflow_engine::store::pack::read_local(&p.path().join(".cocoflow/store"));
                String::from_utf8_lossy(&results[&key]).contains("b-payload")
            }
        })
        .unwrap();
    std::fs::remove_file(second).unwrap();
    let (code, out, err) = p.run(&["gc", "--grace", "0s", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would remove 1 result(s), 1 blob(s)"), "{out}");
    let (code, out, _) = p.run(&["gc", "--grace", "0s"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed 1 result(s), 1 blob(s)"), "{out}");
    // What a run references survives: the first workflow is still fully cached.
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0);
    assert!(err.contains("1 cached"), "{err}");
    // A pinned run survives even without its summary.
    let (code, out, _) = p.run(&["runs", "--json"]);
    assert_eq!(code, 0);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let last = runs.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(p.run(&["pin", &last, "--name", "keep"]).0, 0);
    std::fs::remove_dir_all(p.path().join(".cocoflow/store/runs")).unwrap();
    let (_, out, _) = p.run(&["gc", "--grace", "0s"]);
    assert!(out.contains("removed 0 result(s)"), "{out}");
}

#[test]
fn json_event_stream_is_one_object_per_line() {
    let p = Project::new();
    p.write("w.yaml", "name: j\ntasks:\n  a: {kind: noop, params: {payload: x}}\n  b: {kind: noop, inputs: {x: a.out}}\n");
    let (code, out, _) = p.run(&["run", "w.yaml", "--json"]);
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"end"));
    assert_eq!(kinds.iter().filter(|k| **k == "launch").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "finish").count(), 2);
    assert_eq!(events.last().unwrap()["summary"]["succeeded"], 2);
}

#[test]
fn resume_continues_a_named_run_with_its_targets() {
    let p = sweep_project();
    p.write("fail-0.1-0.5", "");
    let (code, _, _) = p.run(&["run", "w.yaml", "--target", "train"]);
    assert_eq!(code, 4);
    let (_, out, _) = p.run(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    std::fs::remove_file(p.path().join("fail-0.1-0.5")).unwrap();
    let before = p.lines("exec.log").len();
    let (code, _, err) = p.run(&["resume", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("run {id} succeeded")), "{err}");
    assert_eq!(
        p.lines("exec.log")[before..],
        ["train 0.1 0.5".to_string()],
        "only the failed instance ran"
    );
    let (_, out, _) = p.run(&["runs", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1,
        "same run id"
    );
}

#[test]
fn status_and_gc_while_a_run_is_live() {
    let p = Project::new();
    p.write(
        "w.yaml",
        "name: live\ntasks:\n  a: {kind: shell, params: {cmd: 'sleep 3'}}\n",
    );
    let mut child = p.cmd(&["run", "w.yaml", "--quiet"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, out, err) = p.run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running (live)"), "{out}");
    let (code, _, err) = p.run(&["gc", "--store", "file://.cocoflow/store"]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("a run is in progress in this state directory"),
        "{err}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn export_copies_outputs_of_a_run_out_of_the_store() {
    let p = Project::new();
    p.write(
        "w.yaml",
        "name: x\ntasks:\n  a: {kind: shell, params: {cmd: 'mkdir -p d/sub && echo one > d/sub/f.txt && echo two > g.txt', outputs: {dir: d/, file: g.txt}}}\n  b: {kind: shell, inputs: {x: a.file}, params: {cmd: 'cat \"$COCOFLOW_INPUT_X\" > h.txt', outputs: {h: h.txt}}}\n",
    );
    assert_eq!(p.run(&["run", "w.yaml"]).0, 0);
    let (code, out, err) = p.run(&["export", "--task", "a", "--to", "out"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a dir → out/a/dir"), "{out}");
    assert_eq!(p.read("out/a/dir/sub/f.txt"), "one\n");
    assert_eq!(p.read("out/a/file"), "two\n");
    assert!(!p.path().join("out/b").exists(), "only task `a`");
    // The export is a copy: editing it leaves the store's blob intact.
    std::fs::write(p.path().join("out/a/file"), "changed").unwrap();
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 ran, 2 cached"), "{err}");
    let (code, _, err) = p.run(&["export", "--task", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("has no finished outputs of task `nope`"),
        "{err}"
    );
    let (code, _, err) = p.run(&["report"]);
    assert_eq!(code, 2);
    assert!(err.contains("kind `report`"), "{err}");
}

/// A `noop` without a sleep runs on the scheduler's thread (`inline` in the debug log); the
/// results are the same as through the thread pool (`COCOFLOW_INPROCESS_INLINE=0`), including
/// what a shell task downstream reads from it, a noop that sleeps, and a payload too large
/// for the manifest.
#[test]
fn inline_noop_tasks_give_the_results_of_the_pool() {
    let big = "x".repeat(5000);
    let wf = format!(
        r#"
name: inline
tasks:
  a:
    kind: noop
    params: {{payload: first}}
  b:
    kind: noop
    inputs: {{prev: a.out}}
    params: {{payload: second}}
  slow:
    kind: noop
    inputs: {{prev: b.out}}
    params: {{payload: third, sleep_ms: 30}}
  big:
    kind: noop
    params: {{payload: '{big}'}}
  read:
    kind: shell
    inputs: {{b: b.out, big: big.out}}
    params:
      cmd: 'cat "$COCOFLOW_INPUT_B" > r.txt; wc -c < "$COCOFLOW_INPUT_BIG" >> r.txt'
      outputs: {{r: r.txt}}
"#
    );
    let mut digests = Vec::new();
    for inline in ["1", "0"] {
        let p = Project::new();
        p.write("w.yaml", &wf);
        let out = p
            .cmd(&["-vv", "run", "w.yaml"])
            .env("COCOFLOW_INPROCESS_INLINE", inline)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let launch = |name: &str| {
            err.lines()
                .find(|l| l.contains("launch") && l.contains(&format!("instance={name} ")))
                .unwrap_or_else(|| panic!("no launch line for {name}: {err}"))
                .to_string()
        };
        assert!(launch("a").contains("inline=true"), "{}", launch("a"));
        assert!(launch("b").contains("inline=true"), "{}", launch("b"));
        assert!(
            launch("slow").contains("inline=false"),
            "{}",
            launch("slow")
        );
        assert!(launch("big").contains("inline=false"), "{}", launch("big"));
        assert!(
            launch("read").contains("inline=false"),
            "{}",
            launch("read")
        );
        let d = p.result_digests("w.yaml", ".cocoflow/store");
        digests.push(d);
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0].len(), 5);
}
