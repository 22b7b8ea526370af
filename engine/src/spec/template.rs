//! `${name}` templating of parameter values. A string that is exactly one `${name}` takes
//! the parameter's typed value; otherwise values are spliced in as text. `$${` is a literal
//! `${`. In keys a task kind marks as shell text, values never enter the text: each
//! `${name}` becomes a quoted reference to an environment variable that carries the value
//! (or, where no quoting would pass it as data, an error).

use super::shell::{self, Context, Refusal, Tok};
use indexmap::IndexMap;
use serde_json::Value;

/// Layers of named values; later layers override earlier ones.
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    layers: Vec<&'a IndexMap<String, Value>>,
}

impl<'a> Scope<'a> {
    pub fn new() -> Self {
        Scope { layers: Vec::new() }
    }

    pub fn push(mut self, layer: &'a IndexMap<String, Value>) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.layers.iter().rev().find_map(|l| l.get(name))
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.layers.iter().flat_map(|l| l.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateError {
    /// A `${var}` with no value: which variable, and the key path of the value it was in.
    Unresolved { var: String, path: String },
    /// A `${var}` in shell text at a position where its value cannot pass as data. `nth`
    /// counts the `${` before it in the string (to find it in the file).
    Unsafe {
        var: String,
        path: String,
        nth: usize,
        refusal: Refusal,
    },
    /// A kind with shell text got a `vars` param, which templating fills itself.
    Reserved { path: String },
}

/// The top-level param that carries the values of templates in shell text: environment
/// variable name → value. A kind with [`crate::kind::TaskKind::quoted_params`] sets them
/// for its command.
pub const VARS_PARAM: &str = "vars";

/// Prefix of the environment variables that carry template values into shell text.
pub const VAR_PREFIX: &str = "COCOFLOW_P_";

/// Template names → environment variable names and their values, for one task.
#[derive(Default)]
struct ShellVars {
    names: IndexMap<String, String>,
    values: serde_json::Map<String, Value>,
}

impl ShellVars {
    /// The variable for template `name` (`COCOFLOW_P_lambda_sim`; another name that maps
    /// to the same text gets `_2`, `_3`, ...).
    fn name_for(&mut self, name: &str, value: &Value) -> String {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let base: String = VAR_PREFIX
            .chars()
            .chain(name.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            }))
            .collect();
        let mut var = base.clone();
        let mut k = 1;
        while self.values.contains_key(&var) {
            k += 1;
            var = format!("{base}_{k}");
        }
        self.names.insert(name.to_string(), var.clone());
        self.values
            .insert(var.clone(), Value::String(scalar_text(value)));
        var
    }
}

/// Renders every string in `value`. `path` is the key path of `value` (for errors);
/// `quoted_keys` are top-level keys holding shell text: each `${name}` in them becomes a
/// quoted reference to an environment variable whose value the result carries under
/// [`VARS_PARAM`], so the shell never parses a value (see [`super::shell`]).
pub fn render(
    value: &Value,
    scope: &Scope,
    path: &str,
    quoted_keys: &[&str],
) -> Result<Value, TemplateError> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    if !quoted_keys.is_empty()
        && let Value::Object(map) = value
        && map.contains_key(VARS_PARAM)
    {
        return Err(TemplateError::Reserved {
            path: join(VARS_PARAM),
        });
    }
    let mut vars = ShellVars::default();
    let mut out = render_inner(value, scope, path, quoted_keys, false, true, &mut vars)?;
    if !vars.values.is_empty()
        && let Value::Object(map) = &mut out
    {
        map.insert(VARS_PARAM.to_string(), Value::Object(vars.values));
    }
    Ok(out)
}

fn render_inner(
    value: &Value,
    scope: &Scope,
    path: &str,
    quoted_keys: &[&str],
    shell: bool,
    top: bool,
    vars: &mut ShellVars,
) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => render_str(s, scope, path, shell.then_some(&mut *vars))?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    render_inner(
                        v,
                        scope,
                        &format!("{path}[{i}]"),
                        quoted_keys,
                        shell,
                        false,
                        vars,
                    )
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let sh = shell || (top && quoted_keys.contains(&k.as_str()));
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(
                    k.clone(),
                    render_inner(v, scope, &p, quoted_keys, sh, false, vars)?,
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Splits a template string into literal text and variable names.
fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        if after.starts_with("$${") {
            out.push(Piece::Text(&rest[..i]));
            out.push(Piece::Text("${"));
            rest = &rest[i + 3..];
            offset += i + 3;
        } else if after.starts_with("${") {
            match after.find('}') {
                Some(end) => {
                    out.push(Piece::Text(&rest[..i]));
                    out.push(Piece::Var {
                        name: after[2..end].trim(),
                        start: offset + i,
                    });
                    rest = &after[end + 1..];
                    offset += i + end + 1;
                }
                None => break,
            }
        } else {
            out.push(Piece::Text(&rest[..=i]));
            rest = &rest[i + 1..];
            offset += i + 1;
        }
    }
    out.push(Piece::Text(rest));
    out.retain(|p| !matches!(p, Piece::Text("")));
    out
}

enum Piece<'a> {
    Text(&'a str),
    /// A template; `start` is the byte offset of its `$` in the string.
    Var {
        name: &'a str,
        start: usize,
    },
}

fn render_str(
    s: &str,
    scope: &Scope,
    path: &str,
    shell: Option<&mut ShellVars>,
) -> Result<Value, TemplateError> {
    if !s.contains('$') {
        return Ok(Value::String(s.to_string()));
    }
    let parts = pieces(s);
    let lookup = |var: &str| {
        scope.get(var).ok_or_else(|| TemplateError::Unresolved {
            var: var.to_string(),
            path: path.to_string(),
        })
    };
    if let [Piece::Var { name, .. }] = parts.as_slice()
        && shell.is_none()
    {
        return Ok(lookup(name)?.clone());
    }
    let Some(vars) = shell else {
        let mut out = String::new();
        for p in parts {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var { name, .. } => out.push_str(&scalar_text(lookup(name)?)),
            }
        }
        return Ok(Value::String(out));
    };
    // Shell text: every template becomes a quoted variable reference fit for its context.
    let mut toks = Vec::new();
    let mut names = Vec::new();
    for p in &parts {
        match p {
            Piece::Text(t) => toks.extend(t.chars().map(Tok::Ch)),
            Piece::Var { name, start } => {
                lookup(name)?;
                toks.push(Tok::Var(names.len()));
                names.push((*name, *start));
            }
        }
    }
    let contexts = shell::classify(&toks);
    for ((name, start), ctx) in names.iter().zip(&contexts) {
        if let Context::Refused(r) = ctx {
            return Err(TemplateError::Unsafe {
                var: name.to_string(),
                path: path.to_string(),
                nth: s[..*start].matches("${").count(),
                refusal: r.clone(),
            });
        }
    }
    let mut out = String::new();
    let mut k = 0;
    for p in parts {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var { name, .. } => {
                let var = vars.name_for(name, lookup(name)?);
                match &contexts[k] {
                    Context::Bare => out.push_str(&format!("\"${{{var}}}\"")),
                    Context::Single => out.push_str(&format!("'\"${{{var}}}\"'")),
                    Context::Double | Context::HereDoc | Context::Comment => {
                        out.push_str(&format!("${{{var}}}"))
                    }
                    Context::Refused(_) => unreachable!("refusals returned above"),
                }
                k += 1;
            }
        }
    }
    Ok(Value::String(out))
}

/// A value as text: strings as they are, everything else as JSON.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Variables referenced anywhere in `value` (for validation without rendering).
pub fn variables(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            for p in pieces(s) {
                if let Piece::Var { name, .. } = p {
                    out.push(name.to_string());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| variables(v, out)),
        Value::Object(map) => map.values().for_each(|v| variables(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope_of(pairs: &[(&str, Value)]) -> IndexMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn whole_string_keeps_type_and_splices_as_text() {
        let layer = scope_of(&[("n", json!(3)), ("name", json!("a b"))]);
        let scope = Scope::new().push(&layer);
        let v = json!({"k": "${n}", "s": "x-${n}-${name}", "lit": "$${n}", "d": "cost $5"});
        let r = render(&v, &scope, "", &[]).unwrap();
        assert_eq!(
            r,
            json!({"k": 3, "s": "x-3-a b", "lit": "${n}", "d": "cost $5"})
        );
    }

    /// Values never enter shell text: each template becomes a quoted variable reference
    /// fit for its context, and the values travel under `vars`.
    #[test]
    fn shell_text_references_variables() {
        let layer = scope_of(&[
            ("msg", json!("hi; rm -rf /")),
            ("n", json!(3)),
            ("a-b", json!("x")),
            ("a_b", json!("y")),
        ]);
        let scope = Scope::new().push(&layer);
        let v = json!({
            "cmd": "echo ${msg} '${msg}' \"m=${msg}\" > ${n}.txt; echo ${a-b}${a_b} $${HOME}",
            "other": "${msg}"
        });
        let r = render(&v, &scope, "", &["cmd"]).unwrap();
        assert_eq!(
            r["cmd"],
            json!(concat!(
                r#"echo "${COCOFLOW_P_msg}" ''"${COCOFLOW_P_msg}"'' "m=${COCOFLOW_P_msg}" > "#,
                r#""${COCOFLOW_P_n}".txt; echo "${COCOFLOW_P_a_b}""${COCOFLOW_P_a_b_2}" ${HOME}"#
            ))
        );
        assert_eq!(
            r["vars"],
            json!({"COCOFLOW_P_msg": "hi; rm -rf /", "COCOFLOW_P_n": "3",
                   "COCOFLOW_P_a_b": "x", "COCOFLOW_P_a_b_2": "y"})
        );
        assert_eq!(r["other"], json!("hi; rm -rf /"));
        // Without templates, shell text is left as it is and no `vars` appear.
        let plain = json!({"cmd": "echo $${X} $HOME"});
        assert_eq!(
            render(&plain, &scope, "", &["cmd"]).unwrap(),
            json!({"cmd": "echo ${X} $HOME"})
        );
    }

    #[test]
    fn unsafe_positions_and_reserved_vars_are_errors() {
        let layer = scope_of(&[("msg", json!("x"))]);
        let scope = Scope::new().push(&layer);
        let v = json!({"cmd": "echo $${A} ${msg} `cat ${msg}`"});
        assert_eq!(
            render(&v, &scope, "p", &["cmd"]).unwrap_err(),
            TemplateError::Unsafe {
                var: "msg".into(),
                path: "p.cmd".into(),
                nth: 2,
                refusal: Refusal::Backticks
            }
        );
        let v = json!({"cmd": "true", "vars": {}});
        assert_eq!(
            render(&v, &scope, "p", &["cmd"]).unwrap_err(),
            TemplateError::Reserved {
                path: "p.vars".into()
            }
        );
    }

    #[test]
    fn unresolved_names_var_and_path() {
        let layer = IndexMap::new();
        let scope = Scope::new().push(&layer);
        let err = render(
            &json!({"a": {"b": ["x", "${nope}"]}}),
            &scope,
            "params",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            TemplateError::Unresolved {
                var: "nope".into(),
                path: "params.a.b[1]".into()
            }
        );
    }

    #[test]
    fn later_layers_override() {
        let a = scope_of(&[("x", json!(1))]);
        let b = scope_of(&[("x", json!(2))]);
        assert_eq!(Scope::new().push(&a).push(&b).get("x"), Some(&json!(2)));
    }
}
