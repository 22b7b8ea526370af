//! Typed task kinds: a [`Kind`] declares its params as one serde struct (defaults in one
//! place, `deny_unknown_fields`, a JSON Schema for `cocoflow kinds --json`), its inputs and
//! outputs; a [`RunFn`] does the work with the params already parsed. The two are apart so a
//! torch-free crate can declare a kind (the front end plans and checks it) that another crate,
//! the one linking libtorch, runs. [`Typed`] bridges a kind and its run function to the
//! engine's object-safe [`TaskKind`]: register with [`Registry::register_kind`], or
//! [`Registry::declare_kind`] where only the worker binary runs it.
//!
//! ```ignore
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields, default)]
//! struct MyParams { steps: u32, lr: f64 }
//! impl Default for MyParams { fn default() -> Self { MyParams { steps: 100, lr: 1e-3 } } }
//!
//! struct MyKind;
//! impl Kind for MyKind {
//!     type Params = MyParams;
//!     const NAME: &'static str = "my-kind";
//!     const VERSION: u32 = 1;
//!     const DESCRIBE: &'static str = "one line for `cocoflow kinds`";
//!     const INPUTS: Option<&'static [Input]> = Some(&[Input::required("data", "a dataset")]);
//!     const OUTPUTS: &'static [&'static str] = &["model"];
//! }
//! impl MyKind {
//!     fn run(&self, p: MyParams, ctx: &mut TaskCtx) -> Result<(), TaskError> { ... }
//! }
//! registry.register_kind(MyKind, MyKind::run);
//! ```

use super::{ParamError, Registry, TaskCtx, TaskError, TaskKind, parse_params, typed_params};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An input a kind takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Input {
    pub name: &'static str,
    /// A task of this kind must give it.
    pub required: bool,
    /// What it is, for `cocoflow kinds --json` and the docs.
    pub doc: &'static str,
}

impl Input {
    pub const fn required(name: &'static str, doc: &'static str) -> Input {
        Input {
            name,
            required: true,
            doc,
        }
    }

    pub const fn optional(name: &'static str, doc: &'static str) -> Input {
        Input {
            name,
            required: false,
            doc,
        }
    }
}

/// A task kind with typed params (module docs).
pub trait Kind: Send + Sync + 'static {
    /// The params: a `#[serde(deny_unknown_fields)]` struct whose serialisation is the
    /// canonical form the cache key hashes.
    type Params: Serialize + DeserializeOwned + JsonSchema;
    /// The name used in workflow files.
    const NAME: &'static str;
    /// Bump when results change for the same params: old cache entries then miss.
    const VERSION: u32;
    /// One line for `cocoflow kinds`.
    const DESCRIBE: &'static str;
    /// The inputs a task may give; `None` accepts any names.
    const INPUTS: Option<&'static [Input]> = None;
    /// The outputs every instance produces (see [`Kind::outputs`]).
    const OUTPUTS: &'static [&'static str] = &[];

    /// Checks what the types cannot (ranges, combinations), naming the key path.
    fn validate(&self, _params: &Self::Params) -> Result<(), ParamError> {
        Ok(())
    }
    /// The outputs of an instance with these params (default: [`Kind::OUTPUTS`]).
    fn outputs(&self, _params: &Self::Params) -> Vec<String> {
        Self::OUTPUTS.iter().map(|s| s.to_string()).collect()
    }
    /// Rules on inputs beyond [`Kind::INPUTS`] (e.g. an input or a param, not both).
    fn check_inputs(&self, _params: &Self::Params, _given: &[&str]) -> Result<(), String> {
        Ok(())
    }
    /// Top-level param keys holding shell text (see [`TaskKind::quoted_params`]).
    fn quoted_params(&self) -> &'static [&'static str] {
        &[]
    }
    /// An instance with these params finishes in microseconds and never waits (see
    /// [`TaskKind::inline`]).
    fn inline(&self, _params: &Self::Params) -> bool {
        false
    }
}

/// Does the work of a [`Kind`] with the checked params.
pub type RunFn<K> = fn(&K, <K as Kind>::Params, &mut TaskCtx) -> Result<(), TaskError>;

/// A [`Kind`] and its run function as a [`TaskKind`].
pub struct Typed<K: Kind> {
    pub kind: K,
    pub run: RunFn<K>,
}

/// The checked params and their canonical form.
fn parse<K: Kind>(k: &K, params: &Value) -> Result<(K::Params, Value), ParamError> {
    let (p, canonical) = typed_params::<K::Params>(params)?;
    k.validate(&p)?;
    Ok((p, canonical))
}

/// The checked params without their canonical form (for what needs only the struct).
fn typed<K: Kind>(k: &K, params: &Value) -> Result<K::Params, ParamError> {
    let p = parse_params::<K::Params>(params)?;
    k.validate(&p)?;
    Ok(p)
}

fn outputs_of<K: Kind>(k: &K, params: &Value) -> Vec<String> {
    match typed(k, params) {
        Ok(p) => k.outputs(&p),
        Err(_) => K::OUTPUTS.iter().map(|s| s.to_string()).collect(),
    }
}

fn check_inputs_of<K: Kind>(k: &K, params: &Value, inputs: &[&str]) -> Result<(), String> {
    if let Some(declared) = K::INPUTS
        && let Some(e) = input_error(K::NAME, inputs, declared)
    {
        return Err(e);
    }
    let p = typed(k, params).map_err(|e| e.message)?;
    k.check_inputs(&p, inputs)
}

fn declaration_of<K: Kind>() -> Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<K::Params>();
    json!({
        "params": schema,
        "inputs": K::INPUTS,
        "outputs": K::OUTPUTS,
    })
}

/// The message for inputs that do not match the declared ones.
fn input_error(kind: &str, given: &[&str], declared: &[Input]) -> Option<String> {
    let missing: Vec<&str> = declared
        .iter()
        .filter(|d| d.required && !given.contains(&d.name))
        .map(|d| d.name)
        .collect();
    let unknown: Vec<&str> = given
        .iter()
        .copied()
        .filter(|g| !declared.iter().any(|d| d.name == *g))
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return None;
    }
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing input(s) {}", list(&missing)));
    }
    if !unknown.is_empty() {
        parts.push(format!("unknown input(s) {}", list(&unknown)));
    }
    let names: Vec<&str> = declared.iter().map(|d| d.name).collect();
    Some(format!(
        "`{kind}` takes inputs {}: {}",
        list(&names),
        parts.join("; ")
    ))
}

impl<K: Kind> TaskKind for Typed<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn version(&self) -> u32 {
        K::VERSION
    }
    fn describe(&self) -> &'static str {
        K::DESCRIBE
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        parse(&self.kind, params).map(|(_, v)| v)
    }
    fn outputs(&self, params: &Value) -> Vec<String> {
        outputs_of(&self.kind, params)
    }
    fn check_inputs(&self, params: &Value, inputs: &[&str]) -> Result<(), String> {
        check_inputs_of(&self.kind, params, inputs)
    }
    fn quoted_params(&self) -> &'static [&'static str] {
        self.kind.quoted_params()
    }
    fn inline(&self, params: &Value) -> bool {
        typed(&self.kind, params).is_ok_and(|p| self.kind.inline(&p))
    }
    fn declaration(&self) -> Value {
        declaration_of::<K>()
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: K::Params = ctx.params()?;
        (self.run)(&self.kind, p, ctx)
    }
}

/// A [`Kind`] that this binary declares but does not run (a torch kind in the torch-free
/// front end): params, inputs and outputs are checked and planned as usual; attempts run in
/// the worker binary, which registers the same kind with [`Registry::register_kind`].
pub struct Declared<K>(pub K);

impl<K: Kind> TaskKind for Declared<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn version(&self) -> u32 {
        K::VERSION
    }
    fn describe(&self) -> &'static str {
        K::DESCRIBE
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        parse(&self.0, params).map(|(_, v)| v)
    }
    fn outputs(&self, params: &Value) -> Vec<String> {
        outputs_of(&self.0, params)
    }
    fn check_inputs(&self, params: &Value, inputs: &[&str]) -> Result<(), String> {
        check_inputs_of(&self.0, params, inputs)
    }
    fn quoted_params(&self) -> &'static [&'static str] {
        self.0.quoted_params()
    }
    fn placement(&self) -> super::Placement {
        super::Placement::Worker
    }
    fn declaration(&self) -> Value {
        declaration_of::<K>()
    }
    fn run(&self, _ctx: &mut TaskCtx) -> Result<(), TaskError> {
        Err(TaskError::Params(format!(
            "task kind `{}` runs on libtorch, which this program does not load: run it with \
             `executor: workers` (the default for it) or `subprocess`, or run the whole \
             workflow with `cocoflow-worker run`",
            K::NAME
        )))
    }
}

impl Registry {
    /// Registers a typed kind that this binary runs with `run`.
    pub fn register_kind<K: Kind>(&mut self, kind: K, run: RunFn<K>) {
        self.register(Typed { kind, run });
    }

    /// Declares a typed kind that runs only in the worker binary (module docs).
    pub fn declare_kind(&mut self, kind: impl Kind) {
        self.register(Declared(kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields, default)]
    struct P {
        /// Steps to take.
        steps: u32,
        lr: f64,
    }

    impl Default for P {
        fn default() -> Self {
            P {
                steps: 100,
                lr: 1e-3,
            }
        }
    }

    struct K;
    impl Kind for K {
        type Params = P;
        const NAME: &'static str = "k";
        const VERSION: u32 = 2;
        const DESCRIBE: &'static str = "test kind";
        const INPUTS: Option<&'static [Input]> = Some(&[
            Input::required("data", "a dataset"),
            Input::optional("base", "a model"),
        ]);
        const OUTPUTS: &'static [&'static str] = &["model"];
        fn validate(&self, p: &P) -> Result<(), ParamError> {
            if p.steps == 0 {
                return Err(ParamError {
                    path: "steps".into(),
                    message: "must be at least 1".into(),
                });
            }
            Ok(())
        }
    }

    fn ok(_: &K, _: P, _: &mut TaskCtx) -> Result<(), TaskError> {
        Ok(())
    }

    fn typed() -> Typed<K> {
        Typed { kind: K, run: ok }
    }

    #[test]
    fn params_get_defaults_and_errors_name_the_key() {
        let k = typed();
        assert_eq!(
            k.check_params(&json!({"lr": 0.5})).unwrap(),
            json!({"steps": 100, "lr": 0.5})
        );
        let e = k.check_params(&json!({"stepz": 3})).unwrap_err();
        assert!(e.message.contains("unknown field `stepz`"), "{e:?}");
        let e = k.check_params(&json!({"steps": 0})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("steps", "must be at least 1")
        );
    }

    #[test]
    fn inputs_are_checked_against_the_declaration() {
        let k = typed();
        assert_eq!(k.check_inputs(&json!({}), &["data", "base"]), Ok(()));
        assert_eq!(k.check_inputs(&json!({}), &["data"]), Ok(()));
        assert_eq!(
            k.check_inputs(&json!({}), &["base", "x"]).unwrap_err(),
            "`k` takes inputs `data`, `base`: missing input(s) `data`; unknown input(s) `x`"
        );
    }

    #[test]
    fn the_declaration_has_types_defaults_inputs_and_outputs() {
        let d = typed().declaration();
        let props = &d["params"]["properties"];
        assert_eq!(props["steps"]["type"], "integer");
        assert_eq!(props["steps"]["default"], 100);
        assert_eq!(props["steps"]["description"], "Steps to take.");
        assert_eq!(props["lr"]["default"], 0.001);
        assert_eq!(d["inputs"][0]["name"], "data");
        assert_eq!(d["inputs"][0]["required"], true);
        assert_eq!(d["outputs"], json!(["model"]));
    }
}
