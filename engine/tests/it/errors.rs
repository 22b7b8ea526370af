//! Every kind of bad input gives its exact message, location and exit code.

use super::common::Project;

const INVALID: i32 = 3;

/// Runs `plan` on a workflow text; returns (exit code, first two lines of stderr).
fn plan_err(text: &str, extra: &[&str]) -> (i32, String) {
    let p = Project::new();
    p.write("w.yaml", text);
    let mut args = vec!["plan", "w.yaml"];
    args.extend_from_slice(extra);
    let (code, _, err) = p.run(&args);
    (code, err.lines().take(2).collect::<Vec<_>>().join("\n"))
}

#[test]
fn yaml_syntax_error_points_at_line_and_column() {
    let (code, err) = plan_err("name: x\ntasks:\n  a:\n    kind: noop\n   bad: [\n", &[]);
    assert_eq!(code, INVALID);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.ends_with(" --> w.yaml:5:4") || err.contains(" --> w.yaml:5:"),
        "{err}"
    );
}

#[test]
fn unknown_key_names_key_and_position() {
    let (code, err) = plan_err(
        "name: x\ntasks:\n  a:\n    kind: noop\n    parms: {}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: tasks.a: unknown field `parms`, expected one of `kind`, `loop`, `description`, `needs`, `inputs`, `params`, `resources`, `retries`, `executor`, `slurm`, `timeout`, `every`, `scope`, `priority`\n --> w.yaml:5:5"
    );
}

#[test]
fn unknown_top_level_key() {
    let (code, err) = plan_err("name: x\ntask:\n  a: {kind: noop}\n", &[]);
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: unknown field `task`, expected one of `name`, `description`, `store`, `params`, `sweep`, `resources`, `slurm`, `tasks`\n --> w.yaml:2:1"
    );
}

#[test]
fn unknown_kind_lists_known_kinds() {
    let (code, err) = plan_err("name: x\ntasks:\n  a:\n    kind: shel\n", &[]);
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: unknown task kind `shel` in task `a`; known kinds: `noop`, `shell`\n --> w.yaml:4:11"
    );
}

#[test]
fn unknown_needs_names_task_and_missing_name() {
    let (code, err) = plan_err(
        "name: x\ntasks:\n  a: {kind: noop}\n  b:\n    kind: noop\n    needs: [a, prep]\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: task `b` needs `prep`, but there is no task `prep`\n --> w.yaml:6:16"
    );
}

#[test]
fn unknown_input_task_and_output() {
    let (code, err) = plan_err(
        "name: x\ntasks:\n  a: {kind: noop, params: {payload: hi}}\n  b:\n    kind: noop\n    inputs: {x: prep.out}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: task `b` refers to `prep.out`, but there is no task `prep`\n --> w.yaml:6:17"
    );
    let (code, err) = plan_err(
        "name: x\ntasks:\n  a: {kind: noop, params: {payload: hi}}\n  b:\n    kind: noop\n    inputs: {x: a.result}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: task `b` input `x` wants output `result` of `a`, which has outputs: `out`\n --> w.yaml:6:17"
    );
}

#[test]
fn cycle_prints_its_path() {
    let (code, err) = plan_err(
        "name: x\ntasks:\n  a: {kind: noop, needs: [c]}\n  b: {kind: noop, needs: [a]}\n  c: {kind: noop, needs: [b]}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: cycle in task dependencies: `a -> c -> b -> a`\n --> w.yaml:4:27"
    );
    let (code, err) = plan_err("name: x\ntasks:\n  a: {kind: noop, needs: [a]}\n", &[]);
    assert_eq!(code, INVALID);
    assert_eq!(err, "error: task `a` depends on itself\n --> w.yaml:3:27");
}

#[test]
fn param_of_wrong_type_names_path_and_type() {
    let (code, err) = plan_err(
        "name: x\ntasks:\n  a:\n    kind: noop\n    params: {sleep_ms: soon}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: task `a` (kind `noop`) param `sleep_ms`: invalid type: string \"soon\", expected u64\n --> w.yaml:5:24"
    );
    let (code, err) = plan_err(
        "name: x\nparams: {iterations: 2}\ntasks:\n  a: {kind: noop}\n",
        &["--set", "iterations=three"],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: `--set iterations=three`: param `iterations` expects an integer, got a string"
    );
    let (code, err) = plan_err(
        "name: x\nparams: {iterations: 2}\ntasks:\n  a: {kind: noop}\n",
        &["--set", "iteration=3"],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: `--set iteration`: the workflow has no param `iteration`\n --> w.yaml:2:1"
    );
}

#[test]
fn unresolved_variable_is_named() {
    let (code, err) = plan_err(
        "name: x\nparams: {lr: 0.1}\ntasks:\n  a:\n    kind: shell\n    params: {cmd: \"echo ${lrr}\"}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: unresolved `${lrr}` in task `a`; known params: `arm`, `lr`\n --> w.yaml:6:19"
    );
}

#[test]
fn missing_included_file_names_the_path() {
    let (code, err) = plan_err(
        "name: x\nparams: {lr: 0.1}\nsweep:\n  include: ../configs/nope.yaml\ntasks:\n  a: {kind: noop}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert!(err.starts_with("error: included sweep file `"), "{err}");
    assert!(
        err.contains("configs/nope.yaml` cannot be read: no such file"),
        "{err}"
    );
    assert!(err.ends_with(" --> w.yaml:4:12"), "{err}");
}

#[test]
fn arm_with_unknown_param_points_into_the_included_file() {
    let p = Project::new();
    p.write(
        "configs/arms.yaml",
        "arms:\n  - name: a\n    params: {lrr: 1}\n",
    );
    p.write("wf/w.yaml", "name: x\nparams: {lr: 0.1}\nsweep:\n  include: ../configs/arms.yaml\ntasks:\n  a: {kind: noop}\n");
    let (code, _, err) = p.run(&["plan", "wf/w.yaml"]);
    assert_eq!(code, INVALID);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        "error: arm `a` sets `lrr`, which is not a param of the workflow"
    );
    assert!(lines[1].ends_with("configs/arms.yaml:3:14"), "{err}");
    assert!(err.contains("help: did you mean `lr`?"), "{err}");
}

#[test]
fn missing_workflow_file() {
    let p = Project::new();
    let (code, _, err) = p.run(&["run", "nope.yaml"]);
    assert_eq!(code, INVALID);
    assert_eq!(
        err.trim(),
        "error: cannot read workflow `nope.yaml`: no such file"
    );
}

#[test]
fn bad_command_line_is_exit_2() {
    let p = Project::new();
    let (code, _, _) = p.run(&["run"]);
    assert_eq!(code, 2);
    let (code, _, err) = p.run(&["status", "no-such-run"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn unsatisfiable_gpu_request_is_invalid_before_anything_runs() {
    let p = Project::new();
    p.write(
        "w.yaml",
        "name: x\ntasks:\n  a: {kind: noop, resources: {gpus: 4}}\n",
    );
    let (code, _, err) = p.run(&["run", "w.yaml", "--gpus", "0,1"]);
    assert_eq!(code, INVALID);
    assert_eq!(
        err.trim(),
        "error: task `a` asks for 4 GPU(s); this run has 2 (ids: 0,1)"
    );
    p.write(
        "w2.yaml",
        "name: x\ntasks:\n  a: {kind: noop, resources: {judge: 1}}\n",
    );
    let (code, _, err) = p.run(&["run", "w2.yaml"]);
    assert_eq!(code, INVALID);
    assert_eq!(
        err.trim(),
        "error: task `a` asks for resource `judge`, which the workflow does not declare under `resources:`"
    );
}

#[test]
fn params_file_overrides_and_names_itself_on_bad_keys() {
    let p = Project::new();
    p.write(
        "w.yaml",
        &format!(
            "name: x\nparams: {{iterations: 2, lr: 0.1, tag: a}}\ntasks:\n  a: {{kind: shell, params: {{cmd: 'echo ${{iterations}} ${{lr}} ${{tag}} > {}/seen.txt'}}}}\n",
            p.path().display()
        ),
    );
    p.write("preset.yaml", "# a preset\niterations: 5\nlr: 0.5\n");
    let (code, _, err) = p.run(&[
        "run",
        "w.yaml",
        "--params",
        "preset.yaml",
        "--set",
        "lr=0.25",
    ]);
    assert_eq!(code, 0, "{err}");
    // The file's values apply, and `--set` wins over the file.
    assert_eq!(p.read("seen.txt").trim(), "5 0.25 a");
    p.write("bad.yaml", "iterations: 3\nlearning_rate: 0.1\n");
    let (code, _, err) = p.run(&["plan", "w.yaml", "--params", "bad.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`--params bad.yaml`: `learning_rate` is not a param of `w.yaml`"),
        "{err}"
    );
    // A mapping value (a service's settings) replaces a mapping default as a whole.
    p.write(
        "m.yaml",
        &format!(
            "name: m\nparams: {{svc: {{kind: rule}}}}\ntasks:\n  a: {{kind: shell, params: {{cmd: 'echo ${{svc}} > {}/svc.txt'}}}}\n",
            p.path().display()
        ),
    );
    p.write(
        "svc.yaml",
        "svc: {kind: openai, base_url: 'http://x:1/v1', tries: [1, 2]}\n",
    );
    let (code, _, err) = p.run(&["run", "m.yaml", "--params", "svc.yaml"]);
    assert_eq!(code, 0, "{err}");
    let seen = p.read("svc.txt");
    assert!(
        seen.contains("openai") && seen.contains("http://x:1/v1"),
        "{seen}"
    );
    p.write("typed.yaml", "iterations: three\n");
    let (code, _, err) = p.run(&["plan", "w.yaml", "--params", "typed.yaml"]);
    assert_eq!(code, INVALID, "{err}");
    assert!(
        err.contains("param `iterations` expects an integer"),
        "{err}"
    );
}

/// Runs `plan`; returns (exit code, the whole of stderr).
fn plan_err_full(text: &str) -> (i32, String) {
    let p = Project::new();
    p.write("w.yaml", text);
    let (code, _, err) = p.run(&["plan", "w.yaml"]);
    (code, err)
}

#[test]
fn template_where_no_quoting_is_safe_is_refused_at_its_position() {
    let (code, err) = plan_err_full(
        "name: x\nparams: {msg: hi}\ntasks:\n  a:\n    kind: shell\n    params: {cmd: 'echo \"$${HOME}\" `echo ${msg}`'}\n",
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        concat!(
            "error: `${msg}` in `cmd` of task `a` is inside backticks, where cocoflow cannot pass a value as data\n",
            " --> w.yaml:6:42\n",
            "  |\n",
            "6 |     params: {cmd: 'echo \"$${HOME}\" `echo ${msg}`'}\n",
            "  |                                          ^\n",
            "help: pass the value with `env: {MSG: \"${msg}\"}` and use \"$MSG\", or with `args: [\"${msg}\"]` and use \"$1\"\n",
        )
    );
    // `cmd` is the text between the double quotes of the YAML line, which starts at col 20.
    for (cmd, what) in [
        (
            "cat <<'EOF'\\n${msg}\\nEOF",
            "inside a here-document with a quoted delimiter (`<<'EOF'`), which expands nothing",
        ),
        (
            "sh <<EOF\\necho ${msg}\\nEOF",
            "inside a here-document that `sh` reads as a script",
        ),
        (
            "eval \\\"x=${msg}\\\"",
            "in a command with `eval`, which evaluates its arguments as code",
        ),
        (
            "bash -c \\\"echo ${msg}\\\"",
            "in the script of `bash -c`, which runs it as code",
        ),
        (
            "echo $((${msg} + 1))",
            "inside an arithmetic expression (`$((...))` or `((...))`)",
        ),
        (
            "echo $${X:-${msg}}",
            "inside a shell parameter expansion (`$${...}`)",
        ),
        ("echo \\\"${msg}", "in a command with an unterminated `\"`"),
    ] {
        let col = 20 + cmd.find("${msg}").unwrap();
        let (code, err) = plan_err(
            &format!(
                "name: x\nparams: {{msg: hi}}\ntasks:\n  a:\n    kind: shell\n    params: {{cmd: \"{cmd}\"}}\n"
            ),
            &[],
        );
        assert_eq!(code, INVALID, "{cmd}");
        assert_eq!(
            err,
            format!(
                "error: `${{msg}}` in `cmd` of task `a` is {what}, where cocoflow cannot pass a value as data\n --> w.yaml:6:{col}"
            ),
            "{cmd}"
        );
    }
}

#[test]
fn vars_of_a_shell_task_are_reserved() {
    let (code, err) = plan_err(
        "name: x\ntasks:\n  a:\n    kind: shell\n    params: {cmd: 'true', vars: {COCOFLOW_P_x: 1}}\n",
        &[],
    );
    assert_eq!(code, INVALID);
    assert_eq!(
        err,
        "error: task `a` sets `vars`, which cocoflow fills itself from the `${...}` templates in its shell text\n --> w.yaml:5:27"
    );
}
