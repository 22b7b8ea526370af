//! `kill -9` of the engine at random moments, then `cocoflow run` again, until the run
//! completes: no task whose result was published before a kill runs again, the journal
//! stays readable, and the final results equal those of an uninterrupted run.

use super::common::Project;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

fn workflow(root: &std::path::Path) -> String {
    let mut y = format!(
        "name: crash\nparams: {{root: '{}'}}\ntasks:\n",
        root.display()
    );
    y.push_str("  src: {kind: shell, params: {cmd: 'sleep 0.05; echo \"$COCOFLOW_KEY $LAUNCH\" >> \"${root}/exec.log\"; echo src > o.txt', outputs: {o: o.txt}}}\n");
    for i in 0..24 {
        let dep = if i % 3 == 0 {
            "src".to_string()
        } else {
            format!("t{}", i - 1)
        };
        y.push_str(&format!(
            "  t{i}: {{kind: shell, inputs: {{x: {dep}.o}}, params: {{cmd: 'sleep 0.0{}; cat \"$COCOFLOW_INPUT_X\" > o.txt; echo {i} >> o.txt; echo \"$COCOFLOW_KEY $LAUNCH\" >> \"${{root}}/exec.log\"', outputs: {{o: o.txt}}}}}}\n",
            3 + i % 5
        ));
    }
    y.push_str("  sink: {kind: shell, inputs: {a: t23.o, b: t11.o}, params: {cmd: 'cat \"$COCOFLOW_INPUT_A\" \"$COCOFLOW_INPUT_B\" > o.txt; echo \"$COCOFLOW_KEY $LAUNCH\" >> \"${root}/exec.log\"', outputs: {o: o.txt}}}\n");
    y
}

/// Keys of the results published in the project's store (its result packs).
fn finished_keys(p: &Project) -> HashSet<String> {
    cocoflow_engine::store::pack::read_local(&p.path().join(".cocoflow/store"))
        .into_keys()
        .collect()
}

#[test]
fn kill_9_at_random_moments_then_rerun_completes_without_rerunning_finished_tasks() {
    // Reference: an uninterrupted run in its own directory.
    let reference = Project::new();
    reference.write("w.yaml", &workflow(reference.path()));
    let (code, _, err) = reference.run(&["run", "w.yaml", "--cpus", "2"]);
    assert_eq!(code, 0, "{err}");
    let expected = reference.result_digests("w.yaml", ".cocoflow/store");

    let p = Project::new();
    p.write("w.yaml", &workflow(p.path()));
    let mut rng: u64 = 0x9e3779b97f4a7c15 ^ std::process::id() as u64;
    let mut finished_before: BTreeMap<u32, HashSet<String>> = BTreeMap::new();
    let mut kills = 0;
    let mut completed = false;
    for launch in 0..40u32 {
        finished_before.insert(launch, finished_keys(&p));
        let mut child = p
            .cmd(&["run", "w.yaml", "--cpus", "2", "--quiet"])
            .env("LAUNCH", launch.to_string())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(20 + rng % 250);
        let t = Instant::now();
        let mut exited = None;
        while t.elapsed() < delay {
            if let Some(st) = child.try_wait().unwrap() {
                exited = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match exited {
            Some(st) => {
                assert_eq!(st.code(), Some(0), "launch {launch} failed");
                completed = true;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                // The journal survives: status reads it.
                let (code, _, err) = p.run(&["status"]);
                assert_eq!(code, 0, "journal unreadable after kill -9: {err}");
            }
        }
    }
    if !completed {
        finished_before.insert(999, finished_keys(&p));
        let out = p
            .cmd(&["run", "w.yaml", "--cpus", "2", "--quiet"])
            .env("LAUNCH", "999")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        kills >= 3,
        "the test should kill the engine several times (killed {kills})"
    );
    assert!(
        finished_before.values().any(|f| !f.is_empty()),
        "no launch started with published results: the check below would be vacuous"
    );
    // No execution of a task whose result existed when that launch started.
    for line in p.lines("exec.log") {
        let (key, launch) = line.split_once(' ').unwrap();
        let launch: u32 = launch.parse().unwrap();
        assert!(
            !finished_before[&launch].contains(key),
            "task {key} ran again in launch {launch} although it had finished"
        );
    }
    assert_eq!(
        p.result_digests("w.yaml", ".cocoflow/store"),
        expected,
        "results differ from an uninterrupted run"
    );
    // And a final re-run is a no-op.
    let before = p.lines("exec.log").len();
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(p.lines("exec.log").len(), before);
}

/// kill -9 right after a result is published and before the state change it causes is
/// journaled (or its dependent launched): the result is not lost — the next run takes it
/// from the store and runs only what follows.
#[test]
fn a_result_published_before_a_kill_is_never_lost() {
    let wf = |root: &std::path::Path| {
        format!(
            "name: pub\nparams: {{root: '{}'}}\ntasks:\n  a: {{kind: shell, params: {{cmd: 'echo a >> \"${{root}}/exec.log\"; echo a > o.txt', outputs: {{o: o.txt}}}}}}\n  b: {{kind: shell, inputs: {{x: a.o}}, params: {{cmd: 'echo b >> \"${{root}}/exec.log\"; cat \"$COCOFLOW_INPUT_X\" > o.txt; echo b >> o.txt', outputs: {{o: o.txt}}}}}}\n",
            root.display()
        )
    };
    let reference = Project::new();
    reference.write("w.yaml", &wf(reference.path()));
    assert_eq!(reference.run(&["run", "w.yaml"]).0, 0);
    let expected = reference.result_digests("w.yaml", ".cocoflow/store");

    let p = Project::new();
    p.write("w.yaml", &wf(p.path()));
    let st = p
        .cmd(&["run", "w.yaml", "--quiet"])
        .env("COCOFLOW_CRASH_AFTER_PUBLISH", "1")
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        st.signal(),
        Some(9),
        "the engine should have killed itself: {st:?}"
    );
    assert_eq!(p.lines("exec.log"), ["a"]);
    // Published: in the store, although the journal never heard of it.
    let key_a = p.plan_json("w.yaml")["instances"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cocoflow_engine::store::pack::read_local(&p.path().join(".cocoflow/store"))
            .contains_key(&key_a)
    );
    let (code, out, err) = p.run(&["status", "--json"]);
    assert_eq!(code, 0, "journal unreadable after kill -9: {err}");
    assert!(
        out.contains("\"running\""),
        "a is still `running` in the journal: {out}"
    );

    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 cached"), "{err}");
    assert_eq!(p.lines("exec.log"), ["a", "b"], "a ran once");
    assert_eq!(p.result_digests("w.yaml", ".cocoflow/store"), expected);
}
