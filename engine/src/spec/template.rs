//! `${name}` templating of parameter values. A string that is exactly one `${name}` takes
//! the parameter's typed value; otherwise values are spliced in as text. `$${` is a literal
//! `${`. Keys a task kind marks as shell text get each substitution shell-quoted, so a
//! parameter can never inject shell syntax.

use crate::util::shell_quote;
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

/// A `${var}` with no value: which variable, and the key path of the value it was in.
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    pub var: String,
    pub path: String,
}

/// Renders every string in `value`. `path` is the key path of `value` (for errors);
/// `quoted_keys` are top-level keys whose substitutions are shell-quoted.
pub fn render(
    value: &Value,
    scope: &Scope,
    path: &str,
    quoted_keys: &[&str],
) -> Result<Value, Unresolved> {
    render_inner(value, scope, path, quoted_keys, false, true)
}

fn render_inner(
    value: &Value,
    scope: &Scope,
    path: &str,
    quoted_keys: &[&str],
    quote: bool,
    top: bool,
) -> Result<Value, Unresolved> {
    Ok(match value {
        Value::String(s) => render_str(s, scope, path, quote)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    render_inner(v, scope, &format!("{path}[{i}]"), quoted_keys, quote, false)
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let q = quote || (top && quoted_keys.contains(&k.as_str()));
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(
                    k.clone(),
                    render_inner(v, scope, &p, quoted_keys, q, false)?,
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
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        if after.starts_with("$${") {
            out.push(Piece::Text(&rest[..i]));
            out.push(Piece::Text("${"));
            rest = &rest[i + 3..];
        } else if after.starts_with("${") {
            match after.find('}') {
                Some(end) => {
                    out.push(Piece::Text(&rest[..i]));
                    out.push(Piece::Var(after[2..end].trim()));
                    rest = &after[end + 1..];
                }
                None => break,
            }
        } else {
            out.push(Piece::Text(&rest[..=i]));
            rest = &rest[i + 1..];
        }
    }
    out.push(Piece::Text(rest));
    out.retain(|p| !matches!(p, Piece::Text("")));
    out
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn render_str(s: &str, scope: &Scope, path: &str, quote: bool) -> Result<Value, Unresolved> {
    if !s.contains('$') {
        return Ok(Value::String(s.to_string()));
    }
    let parts = pieces(s);
    let lookup = |var: &str| {
        scope.get(var).ok_or_else(|| Unresolved {
            var: var.to_string(),
            path: path.to_string(),
        })
    };
    if let [Piece::Var(var)] = parts.as_slice()
        && !quote
    {
        return Ok(lookup(var)?.clone());
    }
    let mut out = String::new();
    for p in parts {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(var) => {
                let text = scalar_text(lookup(var)?);
                out.push_str(&if quote { shell_quote(&text) } else { text });
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
                if let Piece::Var(v) = p {
                    out.push(v.to_string());
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

    #[test]
    fn quoted_keys_are_shell_quoted() {
        let layer = scope_of(&[("msg", json!("hi; rm -rf /")), ("n", json!(3))]);
        let scope = Scope::new().push(&layer);
        let v = json!({"cmd": "echo ${msg} > ${n}.txt", "other": "${msg}"});
        let r = render(&v, &scope, "", &["cmd"]).unwrap();
        assert_eq!(r["cmd"], json!("echo 'hi; rm -rf /' > 3.txt"));
        assert_eq!(r["other"], json!("hi; rm -rf /"));
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
            Unresolved {
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
