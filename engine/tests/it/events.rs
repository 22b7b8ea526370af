//! The run's events file (`.cocoflow/runs/<run id>.events.jsonl`): the same lines as `--json`,
//! from `start` to `end`, with each instance's cache key; kept after the run, appended to by
//! `resume`.

use super::common::Project;
use serde_json::Value;
use std::collections::BTreeMap;

const WF: &str = r#"
name: ev
tasks:
  a:
    kind: shell
    params:
      cmd: 'echo a > a.txt'
      outputs: {a: a.txt}
  b:
    kind: shell
    inputs: {a: a.a}
    params:
      cmd: 'if [ -f "${root}/fail-b" ]; then exit 3; fi; cat "$COCOFLOW_INPUT_A" > b.txt'
      outputs: {b: b.txt}
  c:
    kind: shell
    inputs: {a: a.a}
    params:
      cmd: 'echo c > c.txt'
      outputs: {c: c.txt}
"#;

fn project() -> Project {
    let p = Project::new();
    p.write(
        "w.yaml",
        &WF.replace(
            "name: ev\n",
            &format!("name: ev\nparams: {{root: '{}'}}\n", p.path().display()),
        ),
    );
    p
}

fn parse(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn kind(e: &Value) -> &str {
    e["event"].as_str().unwrap()
}

/// `{name: key}` of the run's instances as the journal has them (`status --json`).
fn journal_keys(p: &Project, run: &str) -> BTreeMap<String, String> {
    let (code, out, err) = p.run(&["status", run, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_run_writes_its_events_file_with_the_json_lines() {
    let p = project();
    let (code, out, err) = p.run(&["run", "w.yaml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let events = parse(&out);
    assert_eq!(kind(&events[0]), "start");
    assert_eq!(kind(events.last().unwrap()), "end");
    let run = events[0]["run"].as_str().unwrap().to_string();
    let path = p.path().join(format!(".cocoflow/runs/{run}.events.jsonl"));
    let file = std::fs::read_to_string(&path).expect("the events file");
    // The same events in the same order, line for line.
    assert_eq!(
        file.lines().collect::<Vec<_>>(),
        out.lines().collect::<Vec<_>>()
    );
    assert!(file.ends_with('\n'));

    let keys = journal_keys(&p, &run);
    assert_eq!(keys.len(), 3);
    for (name, key) in &keys {
        for k in ["launch", "finish"] {
            let of: Vec<&Value> = events
                .iter()
                .filter(|e| kind(e) == k && e["name"] == name.as_str())
                .collect();
            assert_eq!(of.len(), 1, "one {k} of {name}: {out}");
            assert_eq!(of[0]["key"], key.as_str(), "{k} of {name}");
        }
    }
    let mut last = 0;
    for e in &events {
        let t = e["t_ms"].as_u64().expect("t_ms");
        assert!(t >= last, "t_ms never goes back: {out}");
        last = t;
    }
    let finish = events.iter().find(|e| kind(e) == "finish").unwrap();
    assert_eq!(finish["state"], "succeeded");
    assert!(finish["seconds"].as_f64().is_some());
    assert!(finish["error"].is_null() && finish["log"].is_null());
    let launch = events.iter().find(|e| kind(e) == "launch").unwrap();
    assert_eq!(launch["attempt"], 1);
    assert!(launch["gpus"].is_array());
    let end = events.last().unwrap();
    assert_eq!(end["summary"]["succeeded"], 3);
    assert_eq!(end["summary"]["run"], run.as_str());

    // Without `--json` the file is written all the same; a cached rerun launches nothing.
    let (code, _, err) = p.run(&["run", "w.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 cached"), "{err}");
    let files: Vec<_> = std::fs::read_dir(p.path().join(".cocoflow/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        2,
        "one events file per run, no snapshot left: {files:?}"
    );
    let other = files.iter().find(|f| !f.starts_with(&run)).unwrap();
    let second =
        parse(&std::fs::read_to_string(p.path().join(".cocoflow/runs").join(other)).unwrap());
    let kinds: Vec<&str> = second.iter().map(kind).collect();
    assert_eq!(kinds, ["start", "end"]);
    assert_eq!(second[0]["cached"], 3);
    // The first run's file is kept as it was.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), file);
}

#[test]
fn a_resume_appends_to_the_runs_events_file() {
    let p = project();
    p.write("fail-b", "");
    let (code, out, _) = p.run(&["run", "w.yaml", "--json"]);
    assert_eq!(code, 4, "{out}");
    let first = parse(&out);
    let run = first[0]["run"].as_str().unwrap().to_string();
    let failed: Vec<&Value> = first
        .iter()
        .filter(|e| kind(e) == "finish" && e["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["name"], "b");
    assert!(failed[0]["error"].is_string() && failed[0]["log"].is_string());
    std::fs::remove_file(p.path().join("fail-b")).unwrap();
    let (code, _, err) = p.run(&["resume", &run, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    let path = p.path().join(format!(".cocoflow/runs/{run}.events.jsonl"));
    let all = parse(&std::fs::read_to_string(path).unwrap());
    assert_eq!(
        &all[..first.len()],
        &first[..],
        "the first run's lines stay"
    );
    let again = &all[first.len()..];
    assert_eq!(kind(&again[0]), "start");
    assert_eq!(again[0]["run"], run.as_str());
    assert_eq!(kind(again.last().unwrap()), "end");
    let keys = journal_keys(&p, &run);
    let launched: Vec<(&str, &str)> = again
        .iter()
        .filter(|e| kind(e) == "launch")
        .map(|e| (e["name"].as_str().unwrap(), e["key"].as_str().unwrap()))
        .collect();
    assert_eq!(launched, [("b", keys["b"].as_str())], "only b ran again");
}
