//! Workflow specification: YAML text → a typed, validated [`Workflow`]. The one place that
//! parses YAML is [`parse`]; everything after works on typed values.

pub mod error;
pub mod raw;
pub mod shell;
pub mod span;
pub mod template;

pub use error::{Location, SourceFile, SpecError};

use crate::util::parse_duration;
use indexmap::IndexMap;
use raw::{RawEntry, RawSweep, RawWorkflow};
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The default artifact store of a workflow that names none.
pub const DEFAULT_STORE: &str = "file://.cocoflow/store";

/// A parsed workflow with `--set` overrides applied and its sweep expanded into arms.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub file: SourceFile,
    pub store: String,
    /// Parameter defaults after `--set`.
    pub params: IndexMap<String, Value>,
    /// At least one arm; a workflow without a sweep has one arm named `default`.
    pub arms: Vec<Arm>,
    /// Whether a sweep was declared (arm names then appear in instance names).
    pub swept: bool,
    pub entries: IndexMap<String, Entry>,
    pub pools: PoolsSpec,
    /// The `slurm:` options (the `slurm` executor's defaults).
    pub slurm: crate::exec::slurm::SlurmOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub name: String,
    pub params: IndexMap<String, Value>,
}

#[derive(Debug, Clone)]
pub enum Entry {
    Task(TaskSpec),
    Loop(LoopSpec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskScope {
    /// One instance per arm (identical instances across arms merge).
    Arm,
    /// One instance for the whole sweep; its references collect every arm's outputs.
    Global,
}

#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub name: String,
    /// Key path in the file, e.g. `tasks.train` or `tasks.rl.loop.tasks.rollout`.
    pub path: String,
    pub kind: String,
    pub needs: Vec<String>,
    pub inputs: IndexMap<String, InputSpec>,
    /// Unrendered params (a JSON object that may hold `${...}`).
    pub params: Value,
    pub resources: ResourceSpec,
    pub retries: RetrySpec,
    /// The executor's name (checked against [`crate::exec::BUILTIN`]).
    pub executor: Option<String>,
    /// The task's `slurm:` options (checked), as JSON.
    pub slurm: Option<Value>,
    /// Attempts are stopped after this long.
    pub timeout: Option<std::time::Duration>,
    pub every: Option<Value>,
    pub scope: TaskScope,
    pub priority: i64,
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub refs: Vec<String>,
    /// Written as a list: the task receives a list even for one reference.
    pub list: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSpec {
    pub gpus: u32,
    pub cpus: u32,
    pub pools: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySpec {
    /// Extra attempts after the first.
    pub count: u32,
    pub backoff: Duration,
    pub factor: f64,
    pub max_backoff: Duration,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            count: 0,
            backoff: Duration::from_secs(1),
            factor: 2.0,
            max_backoff: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoopSpec {
    pub name: String,
    pub path: String,
    pub iterations: Value,
    pub carry: IndexMap<String, CarrySpec>,
    pub tasks: IndexMap<String, TaskSpec>,
}

#[derive(Debug, Clone)]
pub struct CarrySpec {
    pub init: String,
    pub next: String,
}

/// Declared pool capacities (the GPU list may also come from `--gpus` or discovery).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolsSpec {
    pub gpus: Option<Vec<u32>>,
    pub cpus: Option<u32>,
    pub named: BTreeMap<String, u32>,
}

/// What a string param's default may contain to name the workflow file's directory.
pub const WORKFLOW_DIR_VAR: &str = "${workflow_dir}";

/// Reads, parses and validates a workflow file, applying `--set key=value` overrides.
pub fn load(path: &Path, overrides: &[String]) -> Result<Workflow, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError::new(format!(
            "cannot read workflow `{}`: {}",
            path.display(),
            io_reason(&e)
        ))
    })?;
    let file = SourceFile {
        path: path.to_path_buf(),
        text: Arc::from(text),
    };
    let raw: RawWorkflow = parse(&file)?;
    build(raw, file, overrides)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The one YAML entry point: text → typed value, with `file:line:col` on any error
/// (syntax errors, unknown keys, wrong types).
pub fn parse<T: serde::de::DeserializeOwned>(file: &SourceFile) -> Result<T, SpecError> {
    serde_yaml::from_str(&file.text).map_err(|e| {
        let location = e.location().map(|l| Location {
            line: l.line(),
            col: l.column(),
        });
        let mut msg = e.to_string();
        // serde_yaml appends " at line L column C"; the location line says it instead.
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        SpecError::new(msg).in_file(file, location)
    })
}

/// Validation context: the file errors point into.
pub(crate) struct Ctx<'a> {
    pub file: &'a SourceFile,
    index: std::cell::OnceCell<span::SpanIndex>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a SourceFile) -> Self {
        Ctx {
            file,
            index: std::cell::OnceCell::new(),
        }
    }

    fn index(&self) -> &span::SpanIndex {
        self.index
            .get_or_init(|| span::SpanIndex::build(&self.file.text))
    }

    /// An error pointing at the key at `path`.
    pub fn err(&self, path: &str, msg: impl Into<String>) -> SpecError {
        SpecError::new(msg).in_file(self.file, self.index().locate(path))
    }

    /// An error pointing at the value at `path`.
    pub fn err_value(&self, path: &str, msg: impl Into<String>) -> SpecError {
        SpecError::new(msg).in_file(self.file, self.index().locate_value(path))
    }

    /// An error pointing at the `nth` (0-based) `${` inside the string value at `path`
    /// (at the value itself if the text cannot be found, e.g. behind YAML escapes).
    pub fn err_in_string(&self, path: &str, nth: usize, msg: impl Into<String>) -> SpecError {
        let start = self.index().locate_value(path);
        let text = &self.file.text;
        let found = start.as_ref().and_then(|l| {
            let from = error::byte_offset(text, l)?;
            let (i, _) = text[from..].match_indices("${").nth(nth)?;
            let at = from + i;
            let line_start = text[..at].rfind('\n').map_or(0, |p| p + 1);
            Some(Location {
                line: text[..at].matches('\n').count() + 1,
                col: text[line_start..at].chars().count() + 1,
            })
        });
        SpecError::new(msg).in_file(self.file, found.or(start))
    }
}

/// YAML value → JSON value (the engine's parameter type).
pub(crate) fn to_json(ctx: &Ctx, path: &str, y: &Yaml) -> Result<Value, SpecError> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| {
                        ctx.err_value(
                            path,
                            format!("`{path}` is `{f}`: only finite numbers are allowed"),
                        )
                    })?
            }
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_json(ctx, &format!("{path}[{i}]"), v))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => {
                        return Err(
                            ctx.err(path, format!("`{path}` has a key that is not a string"))
                        );
                    }
                };
                let p = format!("{path}.{key}");
                out.insert(key, to_json(ctx, &p, v)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => {
            return Err(ctx.err_value(
                path,
                format!(
                    "`{path}` uses YAML tag `{}`, which workflows do not support",
                    t.tag
                ),
            ));
        }
    })
}

/// Name of a JSON value's type, as used in error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

/// Coerces `got` to the type of the default `expected` (an integer is a valid number;
/// anything scalar is a valid string). `None` if the types do not fit.
pub fn coerce_like(expected: &Value, got: Value) -> Option<Value> {
    match (expected, got) {
        (Value::Null, g) => Some(g),
        (Value::Bool(_), g @ Value::Bool(_)) => Some(g),
        (Value::Number(e), Value::Number(g)) => {
            if e.is_f64() {
                Some(Value::from(g.as_f64()?))
            } else {
                (g.is_i64() || g.is_u64()).then_some(Value::Number(g))
            }
        }
        (Value::String(_), g @ Value::String(_)) => Some(g),
        (Value::String(_), g @ (Value::Number(_) | Value::Bool(_))) => {
            Some(Value::String(g.to_string()))
        }
        (Value::Array(_), g @ Value::Array(_)) => Some(g),
        (Value::Object(_), g @ Value::Object(_)) => Some(g),
        _ => None,
    }
}

/// The type a default expects, for messages (`number` for a float default).
fn expected_name(v: &Value) -> &'static str {
    type_name(v)
}

fn build(raw: RawWorkflow, file: SourceFile, overrides: &[String]) -> Result<Workflow, SpecError> {
    let ctx = Ctx::new(&file);
    if raw.name.trim().is_empty() {
        return Err(ctx.err_value("name", "`name` must not be empty"));
    }
    let mut params = IndexMap::new();
    for (k, v) in &raw.params {
        params.insert(k.clone(), to_json(&ctx, &format!("params.{k}"), v)?);
    }

    let dir = file
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // `${workflow_dir}` in a string param's default: the workflow file's directory, absolute
    // (Snakemake's `workflow.basedir`), so a default can name a file shipped beside the workflow
    // wherever cocoflow runs. `--set` values are taken as typed.
    let abs_dir = std::path::absolute(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    })
    .unwrap_or_else(|_| dir.clone());
    for v in params.values_mut() {
        if let Value::String(t) = v
            && t.contains(WORKFLOW_DIR_VAR)
        {
            *t = t.replace(WORKFLOW_DIR_VAR, &abs_dir.display().to_string());
        }
    }
    let arms_raw = match &raw.sweep {
        Some(sweep) => Some(expand_sweep(&ctx, "sweep", sweep, &dir, &params, 0)?),
        None => None,
    };
    let swept = arms_raw.is_some();

    // `--set` applies to the defaults; a key the sweep varies cannot also be set.
    for ov in overrides {
        let (key, text) = ov.split_once('=').ok_or_else(|| {
            SpecError::new(format!("`--set {ov}` is not of the form `key=value`"))
        })?;
        let key = key.trim();
        let Some(default) = params.get(key) else {
            let mut e = SpecError::new(format!("`--set {key}`: the workflow has no param `{key}`"));
            if let Some(h) = error::suggest(key, params.keys().map(String::as_str)) {
                e = e.with_help(h);
            }
            return Err(e.in_file(&file, ctx.index().locate("params")));
        };
        if let Some(arms) = &arms_raw
            && let Some(arm) = arms.iter().find(|a| a.params.contains_key(key))
        {
            return Err(SpecError::new(format!(
                "`--set {key}` conflicts with the sweep: arm `{}` sets `{key}` itself",
                arm.name
            ))
            .with_help(
                "remove the key from the sweep, or run one arm's value with `--set` and no sweep",
            ));
        }
        // A string param takes the text as it is (no YAML quoting or comments), so a value
        // reaches tasks byte for byte; other types parse as YAML.
        let parsed = if default.is_string() {
            Value::String(text.to_string())
        } else {
            let y: Yaml = serde_yaml::from_str(text).unwrap_or(Yaml::String(text.to_string()));
            to_json(&ctx, &format!("params.{key}"), &y)?
        };
        let got_type = type_name(&parsed);
        let value = coerce_like(default, parsed).ok_or_else(|| {
            SpecError::new(format!(
                "`--set {key}={text}`: param `{key}` expects {} {}, got {} {}",
                article(expected_name(default)),
                expected_name(default),
                article(got_type),
                got_type
            ))
        })?;
        params.insert(key.to_string(), value);
    }

    let arms = arms_raw.unwrap_or_else(|| {
        vec![Arm {
            name: "default".into(),
            params: IndexMap::new(),
        }]
    });

    let mut entries = IndexMap::new();
    for (name, entry) in &raw.tasks {
        let path = format!("tasks.{name}");
        check_name(&ctx, &path, name)?;
        entries.insert(name.clone(), build_entry(&ctx, &path, name, entry, false)?);
    }
    if entries.is_empty() {
        return Err(ctx.err("tasks", "the workflow has no tasks"));
    }

    let pools = build_pools(&ctx, &raw.resources)?;
    let slurm = match &raw.slurm {
        None => Default::default(),
        Some(y) => {
            let v = to_json(&ctx, "slurm", y)?;
            crate::exec::slurm::SlurmOptions::from_json(&v)
                .map_err(|m| ctx.err_value("slurm", m))?
        }
    };
    Ok(Workflow {
        name: raw.name,
        store: raw.store.unwrap_or_else(|| DEFAULT_STORE.to_string()),
        file: file.clone(),
        params,
        arms,
        swept,
        entries,
        pools,
        slurm,
    })
}

fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn check_name(ctx: &Ctx, path: &str, name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ctx.err(path, format!("task name `{name}` must start with a letter and use only letters, digits, `_` and `-`")))
    }
}

fn build_entry(
    ctx: &Ctx,
    path: &str,
    name: &str,
    e: &RawEntry,
    in_loop: bool,
) -> Result<Entry, SpecError> {
    match (&e.kind, &e.loop_) {
        (Some(_), Some(_)) => Err(ctx.err(
            path,
            format!(
                "task `{name}` has both `kind` and `loop`: a loop's tasks go under `loop.tasks`"
            ),
        )),
        (None, None) => Err(ctx.err(path, format!("task `{name}` needs a `kind` (or a `loop`)"))),
        (None, Some(lp)) => {
            if in_loop {
                return Err(ctx.err(
                    &format!("{path}.loop"),
                    format!("loop `{name}` is inside another loop; loops do not nest"),
                ));
            }
            let lpath = format!("{path}.loop");
            let iterations = to_json(ctx, &format!("{lpath}.iterations"), &lp.iterations)?;
            let mut carry = IndexMap::new();
            for (cname, c) in &lp.carry {
                carry.insert(
                    cname.clone(),
                    CarrySpec {
                        init: c.init.clone(),
                        next: c.next.clone(),
                    },
                );
            }
            let mut tasks = IndexMap::new();
            for (tname, t) in &lp.tasks {
                let tpath = format!("{lpath}.tasks.{tname}");
                check_name(ctx, &tpath, tname)?;
                match build_entry(ctx, &tpath, tname, t, true)? {
                    Entry::Task(spec) => {
                        tasks.insert(tname.clone(), spec);
                    }
                    Entry::Loop(_) => unreachable!("nested loops are rejected above"),
                }
            }
            if tasks.is_empty() {
                return Err(ctx.err(&lpath, format!("loop `{name}` has no tasks")));
            }
            for field in [
                "needs",
                "inputs",
                "params",
                "resources",
                "retries",
                "executor",
                "slurm",
                "timeout",
                "every",
                "scope",
                "priority",
            ] {
                let set = match field {
                    "needs" => !e.needs.is_empty(),
                    "inputs" => !e.inputs.is_empty(),
                    "params" => e.params.is_some(),
                    "resources" => !e.resources.is_empty(),
                    "retries" => e.retries.is_some(),
                    "executor" => e.executor.is_some(),
                    "slurm" => e.slurm.is_some(),
                    "timeout" => e.timeout.is_some(),
                    "every" => e.every.is_some(),
                    "scope" => e.scope.is_some(),
                    _ => e.priority.is_some(),
                };
                if set {
                    return Err(ctx.err(
                        &format!("{path}.{field}"),
                        format!(
                            "`{field}` is not allowed on loop `{name}`: set it on the loop's tasks"
                        ),
                    ));
                }
            }
            Ok(Entry::Loop(LoopSpec {
                name: name.to_string(),
                path: path.to_string(),
                iterations,
                carry,
                tasks,
            }))
        }
        (Some(kind), None) => {
            let mut inputs = IndexMap::new();
            for (iname, v) in &e.inputs {
                let ipath = format!("{path}.inputs.{iname}");
                let spec = match v {
                    Yaml::String(s) => InputSpec { refs: vec![s.clone()], list: false },
                    Yaml::Sequence(items) => {
                        let mut refs = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            match item {
                                Yaml::String(s) => refs.push(s.clone()),
                                _ => return Err(ctx.err_value(&format!("{ipath}[{i}]"), format!("input `{iname}` of task `{name}`: a reference is a string like `task.output`"))),
                            }
                        }
                        InputSpec { refs, list: true }
                    }
                    _ => return Err(ctx.err_value(&ipath, format!("input `{iname}` of task `{name}`: expected a reference like `task.output` or a list of them"))),
                };
                inputs.insert(iname.clone(), spec);
            }
            let params = match &e.params {
                None => Value::Object(Default::default()),
                Some(y) => match to_json(ctx, &format!("{path}.params"), y)? {
                    v @ Value::Object(_) => v,
                    Value::Null => Value::Object(Default::default()),
                    other => {
                        return Err(ctx.err_value(
                            &format!("{path}.params"),
                            format!(
                                "`params` of task `{name}` must be a mapping, got {} {}",
                                article(type_name(&other)),
                                type_name(&other)
                            ),
                        ));
                    }
                },
            };
            let resources = build_resources(ctx, path, name, &e.resources)?;
            let retries = match &e.retries {
                None => RetrySpec::default(),
                Some(y) => build_retries(ctx, &format!("{path}.retries"), name, y)?,
            };
            let executor = match &e.executor {
                None => None,
                Some(x) => {
                    crate::exec::check_name(x, &[]).map_err(|m| {
                        ctx.err_value(&format!("{path}.executor"), format!("{m} (task `{name}`)"))
                    })?;
                    Some(x.clone())
                }
            };
            let slurm = match &e.slurm {
                None => None,
                Some(y) => {
                    let v = to_json(ctx, &format!("{path}.slurm"), y)?;
                    crate::exec::slurm::SlurmOptions::from_json(&v).map_err(|m| {
                        ctx.err_value(&format!("{path}.slurm"), format!("{m} (task `{name}`)"))
                    })?;
                    Some(v)
                }
            };
            let timeout = match &e.timeout {
                None => None,
                Some(t) => Some(crate::util::parse_duration(t).ok_or_else(|| {
                    ctx.err_value(
                        &format!("{path}.timeout"),
                        format!("`{t}` is not a duration like `30s` or `2h` (task `{name}`)"),
                    )
                })?),
            };
            let scope =
                match e.scope.as_deref() {
                    None | Some("arm") => TaskScope::Arm,
                    Some("global") => TaskScope::Global,
                    Some(other) => return Err(ctx.err_value(
                        &format!("{path}.scope"),
                        format!(
                            "unknown scope `{other}` for task `{name}`; expected `arm` or `global`"
                        ),
                    )),
                };
            if scope == TaskScope::Global && in_loop {
                return Err(ctx.err(
                    &format!("{path}.scope"),
                    format!("task `{name}` is inside a loop and cannot be `global`"),
                ));
            }
            let every = match &e.every {
                None => None,
                Some(_) if !in_loop => {
                    return Err(ctx.err(
                        &format!("{path}.every"),
                        format!("`every` on task `{name}` only makes sense inside a loop"),
                    ));
                }
                Some(y) => Some(to_json(ctx, &format!("{path}.every"), y)?),
            };
            Ok(Entry::Task(TaskSpec {
                name: name.to_string(),
                path: path.to_string(),
                kind: kind.clone(),
                needs: e.needs.clone(),
                inputs,
                params,
                resources,
                retries,
                executor,
                slurm,
                timeout,
                every,
                scope,
                priority: e.priority.unwrap_or(0),
            }))
        }
    }
}

fn yaml_u32(ctx: &Ctx, path: &str, what: &str, y: &Yaml) -> Result<u32, SpecError> {
    y.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ctx.err_value(path, format!("{what} must be a non-negative integer")))
}

fn build_resources(
    ctx: &Ctx,
    path: &str,
    name: &str,
    map: &IndexMap<String, Yaml>,
) -> Result<ResourceSpec, SpecError> {
    let mut r = ResourceSpec {
        gpus: 0,
        cpus: 1,
        pools: BTreeMap::new(),
    };
    for (k, v) in map {
        let p = format!("{path}.resources.{k}");
        let n = yaml_u32(ctx, &p, &format!("`resources.{k}` of task `{name}`"), v)?;
        match k.as_str() {
            "gpus" => r.gpus = n,
            "cpus" => r.cpus = n,
            _ => {
                r.pools.insert(k.clone(), n);
            }
        }
    }
    Ok(r)
}

fn build_retries(ctx: &Ctx, path: &str, name: &str, y: &Yaml) -> Result<RetrySpec, SpecError> {
    let mut spec = RetrySpec::default();
    match y {
        Yaml::Number(_) => spec.count = yaml_u32(ctx, path, &format!("`retries` of task `{name}`"), y)?,
        Yaml::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                let p = format!("{path}.{key}");
                let dur = |v: &Yaml| -> Result<Duration, SpecError> {
                    let text = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Number(n) => n.to_string(),
                        _ => String::new(),
                    };
                    parse_duration(&text).ok_or_else(|| ctx.err_value(&p, format!("`retries.{key}` of task `{name}` must be a duration like `500ms`, `2s` or `1m`")))
                };
                match key {
                    "count" => spec.count = yaml_u32(ctx, &p, &format!("`retries.count` of task `{name}`"), v)?,
                    "backoff" => spec.backoff = dur(v)?,
                    "max_backoff" => spec.max_backoff = dur(v)?,
                    "factor" => {
                        spec.factor = v
                            .as_f64()
                            .filter(|f| *f >= 1.0 && f.is_finite())
                            .ok_or_else(|| ctx.err_value(&p, format!("`retries.factor` of task `{name}` must be a number ≥ 1")))?
                    }
                    other => {
                        return Err(ctx.err(&p, format!("unknown key `{other}` in `retries` of task `{name}`; expected `count`, `backoff`, `factor`, `max_backoff`")));
                    }
                }
            }
        }
        _ => return Err(ctx.err_value(path, format!("`retries` of task `{name}` must be a count or a mapping with `count`, `backoff`, `factor`, `max_backoff`"))),
    }
    Ok(spec)
}

fn build_pools(ctx: &Ctx, map: &IndexMap<String, Yaml>) -> Result<PoolsSpec, SpecError> {
    let mut pools = PoolsSpec::default();
    for (k, v) in map {
        let p = format!("resources.{k}");
        match k.as_str() {
            "gpus" => {
                pools.gpus = Some(match v {
                    Yaml::Sequence(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, it)| yaml_u32(ctx, &format!("{p}[{i}]"), "a GPU id", it))
                        .collect::<Result<_, _>>()?,
                    _ => (0..yaml_u32(ctx, &p, "`resources.gpus` (a count or a list of ids)", v)?)
                        .collect(),
                })
            }
            "cpus" => pools.cpus = Some(yaml_u32(ctx, &p, "`resources.cpus`", v)?),
            _ => {
                pools.named.insert(
                    k.clone(),
                    yaml_u32(ctx, &p, &format!("`resources.{k}`"), v)?,
                );
            }
        }
    }
    Ok(pools)
}

/// Expands a sweep (matrix with excludes, explicit arms, included files) into arms whose
/// params are checked against the workflow's defaults.
fn expand_sweep(
    ctx: &Ctx,
    path: &str,
    sweep: &RawSweep,
    dir: &Path,
    defaults: &IndexMap<String, Value>,
    depth: usize,
) -> Result<Vec<Arm>, SpecError> {
    let mut arms: Vec<Arm> = Vec::new();
    let check_param =
        |ppath: &str, key: &str, y: &Yaml, arm: &str| -> Result<(Value, String), SpecError> {
            let Some(default) = defaults.get(key) else {
                let mut e = ctx.err(
                    ppath,
                    format!("arm `{arm}` sets `{key}`, which is not a param of the workflow"),
                );
                if let Some(h) = error::suggest(key, defaults.keys().map(String::as_str)) {
                    e = e.with_help(h);
                }
                return Err(e);
            };
            let v = to_json(ctx, ppath, y)?;
            let got = type_name(&v);
            let text = template::scalar_text(&v);
            let v = coerce_like(default, v).ok_or_else(|| {
                ctx.err_value(
                    ppath,
                    format!(
                        "arm `{arm}` sets param `{key}` to {} {got}; the param expects {} {}",
                        article(got),
                        article(expected_name(default)),
                        expected_name(default)
                    ),
                )
            })?;
            Ok((v, text))
        };

    if let Some(inc) = &sweep.include {
        if depth > 8 {
            return Err(ctx.err(
                &format!("{path}.include"),
                "sweep includes nest more than 8 deep (an include cycle?)",
            ));
        }
        for (i, rel) in inc.items().iter().enumerate() {
            let ipath = match inc {
                raw::OneOrMany::One(_) => format!("{path}.include"),
                raw::OneOrMany::Many(_) => format!("{path}.include[{i}]"),
            };
            let full = dir.join(rel);
            let text = std::fs::read_to_string(&full).map_err(|e| {
                ctx.err_value(
                    &ipath,
                    format!(
                        "included sweep file `{}` cannot be read: {}",
                        full.display(),
                        io_reason(&e)
                    ),
                )
            })?;
            let ifile = SourceFile {
                path: full.clone(),
                text: Arc::from(text),
            };
            let isweep: RawSweep = parse(&ifile)?;
            let ictx = Ctx::new(&ifile);
            let idir = full.parent().map(Path::to_path_buf).unwrap_or_default();
            arms.extend(expand_sweep(
                &ictx,
                "",
                &isweep,
                &idir,
                defaults,
                depth + 1,
            )?);
        }
    }

    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            format!("{a}.{b}")
        }
    };

    if let Some(matrix) = &sweep.matrix {
        let mpath = join(path, "matrix");
        let mut combos: Vec<Vec<(String, Value, String, Yaml)>> = vec![Vec::new()];
        for (key, values) in matrix {
            if values.is_empty() {
                return Err(ctx.err(
                    &format!("{mpath}.{key}"),
                    format!("matrix key `{key}` has no values"),
                ));
            }
            let mut next = Vec::new();
            for combo in &combos {
                for (i, y) in values.iter().enumerate() {
                    let (v, text) = check_param(
                        &format!("{mpath}.{key}[{i}]"),
                        key,
                        y,
                        &format!("{key}={}", yaml_text(y)),
                    )?;
                    let mut c = combo.clone();
                    c.push((key.clone(), v, text, y.clone()));
                    next.push(c);
                }
            }
            combos = next;
        }
        for (ei, ex) in sweep.exclude.iter().enumerate() {
            for k in ex.keys() {
                if !matrix.contains_key(k) {
                    return Err(ctx.err(
                        &format!("{}[{ei}].{k}", join(path, "exclude")),
                        format!("`exclude` names `{k}`, which is not a matrix key"),
                    ));
                }
            }
        }
        for combo in combos {
            let excluded = sweep.exclude.iter().any(|ex| {
                ex.iter()
                    .all(|(k, y)| combo.iter().any(|(ck, _, _, cy)| ck == k && yaml_eq(cy, y)))
            });
            if excluded {
                continue;
            }
            let name = combo
                .iter()
                .map(|(k, _, t, _)| format!("{k}={t}"))
                .collect::<Vec<_>>()
                .join(",");
            arms.push(Arm {
                name,
                params: combo.into_iter().map(|(k, v, _, _)| (k, v)).collect(),
            });
        }
    } else if !sweep.exclude.is_empty() {
        return Err(ctx.err(&join(path, "exclude"), "`exclude` needs a `matrix`"));
    }

    for (i, arm) in sweep.arms.iter().enumerate() {
        let apath = format!("{}[{i}]", join(path, "arms"));
        let mut params = IndexMap::new();
        for (k, y) in &arm.params {
            let (v, _) = check_param(&format!("{apath}.params.{k}"), k, y, &arm.name)?;
            params.insert(k.clone(), v);
        }
        arms.push(Arm {
            name: arm.name.clone(),
            params,
        });
    }

    if let Some(seeds) = &sweep.seeds {
        let spath = join(path, "seeds");
        if depth > 0 {
            return Err(ctx.err(
                &spath,
                "`seeds` belongs in the workflow's own `sweep`, not in an included sweep file",
            ));
        }
        let (param, values) = match seeds {
            raw::RawSeeds::Values(v) => ("seed", v),
            raw::RawSeeds::Param { param, values } => (param.as_str(), values),
        };
        if values.is_empty() {
            return Err(ctx.err(&spath, "`seeds` has no values"));
        }
        let mut checked = Vec::new();
        for (i, y) in values.iter().enumerate() {
            let (v, text) = check_param(
                &format!("{spath}[{i}]"),
                param,
                y,
                &format!("{param}={}", yaml_text(y)),
            )?;
            checked.push((v, text));
        }
        let base = if arms.is_empty() {
            vec![Arm {
                name: String::new(),
                params: IndexMap::new(),
            }]
        } else {
            std::mem::take(&mut arms)
        };
        for arm in base {
            if arm.params.contains_key(param) {
                return Err(ctx.err(
                    &spath,
                    format!(
                        "arm `{}` sets `{param}` itself, which `seeds` varies: remove it from the arm",
                        arm.name
                    ),
                ));
            }
            for (v, text) in &checked {
                let mut params = arm.params.clone();
                params.insert(param.to_string(), v.clone());
                let name = if arm.name.is_empty() {
                    format!("{param}={text}")
                } else {
                    format!("{},{param}={text}", arm.name)
                };
                arms.push(Arm { name, params });
            }
        }
    }

    let mut seen = std::collections::HashSet::new();
    for (i, arm) in arms.iter().enumerate() {
        if !seen.insert(arm.name.clone()) {
            return Err(ctx.err(
                &if path.is_empty() {
                    String::new()
                } else {
                    path.to_string()
                },
                format!(
                    "two sweep arms are named `{}` (arm {} repeats an earlier one)",
                    arm.name,
                    i + 1
                ),
            ));
        }
    }
    if depth == 0 && arms.is_empty() {
        return Err(ctx.err(
            path,
            "the sweep has no arms (every matrix combination is excluded?)",
        ));
    }
    Ok(arms)
}

fn yaml_text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn yaml_eq(a: &Yaml, b: &Yaml) -> bool {
    match (a, b) {
        (Yaml::Number(x), Yaml::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The directory a workflow's relative paths resolve against.
pub fn workflow_dir(w: &Workflow) -> PathBuf {
    w.file
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
