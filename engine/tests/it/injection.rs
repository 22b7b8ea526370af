//! Injection corpus: values that try to run shell code (command substitution, backticks,
//! `;`, `&&`, newlines, quotes of both kinds, `$IFS`, globs, a value that closes a quote or
//! a here-document, ...) × the places a value can stand in a `shell` task (bare, single- and
//! double-quoted, mid-word, here-document, `$(...)`, `args`, `env`) × where the value comes
//! from (workflow defaults, `--set`, `--params`, an included sweep file, arm names).
//!
//! Invariant: nothing a value says is ever executed — no sentinel file appears anywhere —
//! and every command receives the value byte for byte.

use super::common::Project;
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Payloads; `{S}` is replaced by an absolute sentinel path (one per payload).
const PAYLOADS: &[&str] = &[
    "$(touch {S})",
    "`touch {S}`",
    "; touch {S}",
    "x && touch {S}",
    "\ntouch {S}\n",
    "'; touch {S}; '",
    "\"; touch {S}; \"",
    "a$IFS$(touch${IFS}{S})",
    "* ? [a-z]* /*",
    "| touch {S}",
    "EOF\ntouch {S}\nEOF",
    "x) ; touch {S} ; (",
    "\\'; touch {S} #",
    "$HOME ${COCOFLOW_P_p0} $0 $1 $$",
    "-n",
    "  two  spaces\tand a tab  ",
    "$((1+1)) a[$(touch {S})]",
    "} ; touch {S} ; {",
    "\"'\"'\"",
    "é ✓ 日本",
    "",
    "& touch {S} &",
    "> {S}",
    "x # y",
    "\\ a\\nb \\",
    "'",
    "\"",
    "$'\\x41' `",
    "line\n",
    "${p1}",
];

/// (name, cmd with `@` for the template, extra params with `@`, expected output from value).
type Expect = fn(&str) -> String;
fn contexts() -> Vec<(&'static str, &'static str, Value, Expect)> {
    vec![
        ("bare", "printf '%s' @ > o.txt", json!({}), |v| {
            v.to_string()
        }),
        ("single", "printf '%s' '@' > o.txt", json!({}), |v| {
            v.to_string()
        }),
        // (`"@"` alone renders exactly like bare `@`: one instance for both.)
        ("double", "printf '%s' \"=@\" > o.txt", json!({}), |v| {
            format!("={v}")
        }),
        ("mid", "printf '%s' x'-'@\"-\"y > o.txt", json!({}), |v| {
            format!("x-{v}-y")
        }),
        ("mixed", "printf '%s' \"'@'\" > o.txt", json!({}), |v| {
            format!("'{v}'")
        }),
        ("heredoc", "cat > o.txt <<EOF\n@\nEOF", json!({}), |v| {
            format!("{v}\n")
        }),
        (
            "subst",
            "printf '%s' \"$(printf '%s' @)\" > o.txt",
            json!({}),
            |v| v.trim_end_matches('\n').to_string(),
        ),
        (
            "args",
            "printf '%s' \"$1\" > o.txt",
            json!({"args": ["@"]}),
            |v| v.to_string(),
        ),
        (
            "env",
            "printf '%s' \"$V\" > o.txt",
            json!({"env": {"V": "@"}}),
            |v| v.to_string(),
        ),
    ]
}

fn subst(v: &Value, template: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('@', template)),
        Value::Array(a) => Value::Array(a.iter().map(|x| subst(x, template)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), subst(x, template)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn task(ctx_index: usize, template: &str) -> Value {
    let (_, cmd, extra, _) = &contexts()[ctx_index];
    let mut params = subst(extra, template);
    params["cmd"] = json!(cmd.replace('@', template));
    params["outputs"] = json!({"o": "o.txt"});
    json!({"kind": "shell", "params": params})
}

fn payloads(sentinels: &Path) -> Vec<String> {
    PAYLOADS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.replace(
                "{S}",
                &sentinels
                    .join(format!("SENTINEL_{i}"))
                    .display()
                    .to_string(),
            )
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                walk(&p, out);
            }
            out.push(p);
        }
    }
}

/// The bytes of output `o` of every instance, by (task, arm names).
fn outputs(p: &Project, plan_args: &[&str]) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let mut args = vec!["plan", "w.yaml", "--json"];
    args.extend_from_slice(plan_args);
    let (code, out, err) = p.run(&args);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let store = p.path().join(".cocoflow/store");
    let results = cocoflow_engine::store::pack::read_local(&store);
    plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|inst| {
            let key = inst["key"].as_str().unwrap();
            let m: Value = serde_json::from_slice(&results[key]).unwrap();
            let o = &m["outputs"]["o"];
            let bytes = match o["inline"].as_str() {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
                None => {
                    let d = o["digest"].as_str().unwrap();
                    std::fs::read(store.join("blobs").join(&d[..2]).join(d)).unwrap()
                }
            };
            let arms = inst["arms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            (inst["task"].as_str().unwrap().to_string(), arms, bytes)
        })
        .collect()
}

/// Runs the workflow (exit 0 expected) and returns the outputs.
fn run(p: &Project, args: &[&str]) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let mut all = vec!["run", "w.yaml", "-q"];
    all.extend_from_slice(args);
    let (code, _, err) = p.run(&all);
    assert_eq!(code, 0, "{err}");
    outputs(p, args)
}

#[test]
fn no_value_from_any_source_runs_in_any_context() {
    let root = tempfile::tempdir().unwrap();
    let sentinels = root.path().join("sentinels");
    std::fs::create_dir_all(&sentinels).unwrap();
    let values = payloads(&sentinels);
    let n_ctx = contexts().len();
    let mut checked = 0;

    // One task per (payload, context), reading param `p<i>`.
    let mut tasks = serde_json::Map::new();
    for i in 0..values.len() {
        for c in 0..n_ctx {
            tasks.insert(format!("c{c}_p{i}"), task(c, &format!("${{p{i}}}")));
        }
    }
    let check = |outs: Vec<(String, Vec<String>, Vec<u8>)>, source: &str| {
        assert_eq!(outs.len(), values.len() * n_ctx, "{source}");
        for (task, _, bytes) in outs {
            let (c, i) = task[1..].split_once("_p").unwrap();
            let (c, i): (usize, usize) = (c.parse().unwrap(), i.parse().unwrap());
            let (name, _, _, expect) = &contexts()[c];
            assert_eq!(
                String::from_utf8_lossy(&bytes),
                expect(&values[i]),
                "{source}: context `{name}`, payload {:?}",
                values[i]
            );
        }
    };
    let named = |prefix: &str| -> serde_json::Map<String, Value> {
        (0..values.len())
            .map(|i| (format!("p{i}"), json!(format!("{prefix}{i}"))))
            .collect()
    };
    let given: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("p{i}"), json!(v)))
        .collect();

    // 1. Workflow defaults.
    let p = Project {
        dir: tempfile::tempdir_in(root.path()).unwrap(),
    };
    p.write(
        "w.yaml",
        &json!({"name": "inj", "params": given, "tasks": tasks}).to_string(),
    );
    check(run(&p, &[]), "defaults");

    // 2. `--set`.
    let p = Project {
        dir: tempfile::tempdir_in(root.path()).unwrap(),
    };
    p.write(
        "w.yaml",
        &json!({"name": "inj", "params": named("d"), "tasks": tasks}).to_string(),
    );
    let sets: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("p{i}={v}"))
        .collect();
    let mut args = Vec::new();
    for s in &sets {
        args.push("--set");
        args.push(s.as_str());
    }
    check(run(&p, &args), "--set");

    // 3. `--params` (YAML; written here as JSON, which is YAML).
    let p = Project {
        dir: tempfile::tempdir_in(root.path()).unwrap(),
    };
    p.write(
        "w.yaml",
        &json!({"name": "inj", "params": named("d"), "tasks": tasks}).to_string(),
    );
    p.write("given.yaml", &Value::Object(given.clone()).to_string());
    check(run(&p, &["--params", "given.yaml"]), "--params");

    // 4. An arm of an included sweep file.
    let p = Project {
        dir: tempfile::tempdir_in(root.path()).unwrap(),
    };
    p.write(
        "w.yaml",
        &json!({"name": "inj", "params": named("d"), "sweep": {"include": "arms.yaml"}, "tasks": tasks})
            .to_string(),
    );
    p.write(
        "arms.yaml",
        &json!({"arms": [{"name": "a", "params": given}]}).to_string(),
    );
    check(run(&p, &[]), "included sweep");

    // 5. Arm names: one arm per payload, every context reads `${arm}`.
    let p = Project {
        dir: tempfile::tempdir_in(root.path()).unwrap(),
    };
    let arm_tasks: serde_json::Map<String, Value> = (0..n_ctx)
        .map(|c| (format!("c{c}"), task(c, "${arm}")))
        .collect();
    let arms: Vec<Value> = values.iter().map(|v| json!({"name": v})).collect();
    p.write(
        "w.yaml",
        &json!({"name": "inj", "sweep": {"arms": arms}, "tasks": arm_tasks}).to_string(),
    );
    let outs = run(&p, &[]);
    assert_eq!(outs.len(), values.len() * n_ctx);
    for (task, arms, bytes) in outs {
        let c: usize = task[1..].parse().unwrap();
        let (name, _, _, expect) = &contexts()[c];
        assert_eq!(arms.len(), 1);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            expect(&arms[0]),
            "arm names: context `{name}`"
        );
        checked += 1;
    }
    assert_eq!(checked, values.len() * n_ctx);

    let mut files = Vec::new();
    walk(root.path(), &mut files);
    let hit: Vec<_> = files
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("SENTINEL"))
        })
        .collect();
    assert!(hit.is_empty(), "a value ran as shell code: {hit:?}");
}

/// The example: a template inside double quotes, a value from `--set`.
#[test]
fn template_in_double_quotes_from_set_runs_nothing() {
    let p = Project::new();
    p.write(
        "w.yaml",
        "name: inj\nparams: {msg: \"hello\"}\ntasks:\n  t:\n    kind: shell\n    params: {cmd: 'echo \"said: ${msg}\" > o.txt', outputs: {o: o.txt}}\n",
    );
    let sentinel = p.path().join("pwned");
    let value = format!("$(touch {})", sentinel.display());
    let (code, _, err) = p.run(&["run", "w.yaml", "--set", &format!("msg={value}")]);
    assert_eq!(code, 0, "{err}");
    assert!(!sentinel.exists(), "the value ran as shell code");
    let outs = outputs(&p, &["--set", &format!("msg={value}")]);
    assert_eq!(
        String::from_utf8_lossy(&outs[0].2),
        format!("said: {value}\n")
    );
}

/// Arm names end up in instance names, which `export` uses as folder names: one that looks
/// like a path stays one folder inside the destination.
#[test]
fn an_arm_name_never_leads_export_out_of_its_folder() {
    let p = Project::new();
    p.write(
        "w.yaml",
        "name: x\nsweep: {arms: [{name: ../../../../escaped}, {name: ..}]}\ntasks:\n  a: {kind: noop, params: {payload: '${arm}'}}\n",
    );
    assert_eq!(p.run(&["run", "w.yaml", "-q"]).0, 0);
    let (code, _, err) = p.run(&["export", "--to", "out/x"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        p.read("out/x/a[.._.._.._.._escaped]/out"),
        "../../../../escaped"
    );
    assert_eq!(p.read("out/x/a[..]/out"), "..");
    let mut files = Vec::new();
    walk(p.path(), &mut files);
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with("escaped]") && !f.starts_with(p.path().join("out/x"))),
        "{files:?}"
    );
}
