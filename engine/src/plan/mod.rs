//! Planning: a [`Workflow`] → one DAG of concrete task instances for all sweep arms.
//! Loops are unrolled, `${...}` rendered, params checked by their kind, and every instance
//! gets its cache key = BLAKE3(kind, kind version, canonical params, input keys).
//! Instances with equal keys are one node, so a prefix shared by arms runs once.

pub mod refs;
pub mod render;

use crate::kind::Registry;
use crate::spec::template::{self, Scope};
use crate::spec::{
    Ctx, Entry, LoopSpec, ResourceSpec, RetrySpec, SpecError, TaskScope, TaskSpec, Workflow,
    error::suggest,
};
use indexmap::IndexMap;
use refs::{IterSel, Ref};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

pub type InstanceId = usize;

/// One item of an instance's input.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    pub label: String,
    pub producer: InstanceId,
    pub output: String,
}

/// A concrete unit of work with its cache key.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: InstanceId,
    /// Hex BLAKE3 cache key.
    pub key: String,
    /// Display name: `train`, `rl[2].rollout`, `train[ratio=0.8]`.
    pub name: String,
    /// The task's name in the file (`train`, `rl.rollout`): what `--target` matches.
    pub task: String,
    /// Indices of the arms this instance belongs to.
    pub arms: Vec<usize>,
    pub kind: String,
    pub kind_version: u32,
    pub params: Value,
    pub inputs: BTreeMap<String, Vec<PlanInput>>,
    /// Producers of inputs plus `needs`, each once.
    pub deps: Vec<InstanceId>,
    pub outputs: Vec<String>,
    pub resources: ResourceSpec,
    pub retries: RetrySpec,
    pub executor: Option<String>,
    /// The task's `slurm:` options (JSON), over the workflow's.
    pub slurm: Option<Value>,
    /// Attempts are stopped after this long.
    pub timeout: Option<std::time::Duration>,
    pub priority: i64,
}

/// The whole DAG of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub workflow: Workflow,
    pub instances: Vec<Instance>,
    pub arm_names: Vec<String>,
}

impl Plan {
    /// Instances that depend on each instance.
    pub fn dependents(&self) -> Vec<Vec<InstanceId>> {
        let mut out = vec![Vec::new(); self.instances.len()];
        for inst in &self.instances {
            for &d in &inst.deps {
                out[d].push(inst.id);
            }
        }
        out
    }
}

/// A node of one arm's unrolled graph.
struct Node<'w> {
    name: String,
    spec: &'w TaskSpec,
    /// (loop, iteration 1-based, iteration count)
    lp: Option<(&'w LoopSpec, u32, u32)>,
}

/// Builds the plan. `targets` (task names) restrict it to those tasks and their ancestors.
pub fn build(w: &Workflow, registry: &Registry, targets: &[String]) -> Result<Plan, SpecError> {
    let ctx = Ctx::new(&w.file);
    let loops: Vec<&str> = w
        .entries
        .iter()
        .filter(|(_, e)| matches!(e, Entry::Loop(_)))
        .map(|(n, _)| n.as_str())
        .collect();
    check_kinds(w, registry, &ctx)?;
    check_cycles(w, &ctx, &loops)?;

    let mut b = Builder {
        w,
        registry,
        ctx: &ctx,
        loops: &loops,
        instances: Vec::new(),
        by_key: HashMap::new(),
        node_names: Vec::new(),
    };
    let mut arm_maps: Vec<HashMap<String, InstanceId>> = Vec::new();
    for (ai, arm) in w.arms.iter().enumerate() {
        let mut base: IndexMap<String, Value> = IndexMap::new();
        base.insert("arm".into(), Value::String(arm.name.clone()));
        let scope = Scope::new().push(&w.params).push(&arm.params).push(&base);
        arm_maps.push(b.plan_arm(ai, &scope)?);
    }
    b.plan_globals(&arm_maps)?;

    let mut plan = Plan {
        workflow: w.clone(),
        instances: b.instances,
        arm_names: w.arms.iter().map(|a| a.name.clone()).collect(),
    };
    name_instances(&mut plan, &b.node_names);
    if !targets.is_empty() {
        plan = restrict(plan, targets, &ctx)?;
    }
    Ok(plan)
}

fn all_tasks(w: &Workflow) -> Vec<(String, &TaskSpec)> {
    let mut out = Vec::new();
    for (name, e) in &w.entries {
        match e {
            Entry::Task(t) => out.push((name.clone(), t)),
            Entry::Loop(lp) => {
                out.extend(lp.tasks.iter().map(|(tn, t)| (format!("{name}.{tn}"), t)))
            }
        }
    }
    out
}

fn check_kinds(w: &Workflow, registry: &Registry, ctx: &Ctx) -> Result<(), SpecError> {
    for (_, t) in all_tasks(w) {
        if registry.get(&t.kind).is_none() {
            let known = registry
                .names()
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut e = ctx.err_value(
                &format!("{}.kind", t.path),
                format!(
                    "unknown task kind `{}` in task `{}`; known kinds: {known}",
                    t.kind, t.name
                ),
            );
            if let Some(h) = suggest(&t.kind, registry.names()) {
                e = e.with_help(h);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Spec-level dependency graph (`task` or `loop.task` names); reports a cycle with its path.
fn check_cycles(w: &Workflow, ctx: &Ctx, loops: &[&str]) -> Result<(), SpecError> {
    let tasks = all_tasks(w);
    let names: HashSet<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
    let mut edges: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new(); // node → (dep, path of the reference)
    for (full, t) in &tasks {
        let in_loop = full.split_once('.').map(|(l, _)| l.to_string());
        let mut deps: Vec<(String, String)> = Vec::new();
        let mut add = |text: &str, path: String| {
            let Ok(r) = refs::parse(text, loops) else {
                return;
            };
            let target = match r {
                Ref::Task { task, .. } => match &in_loop {
                    Some(l) if names.contains(format!("{l}.{task}").as_str()) => {
                        format!("{l}.{task}")
                    }
                    _ => task,
                },
                Ref::LoopTask { lp, task, .. } => format!("{lp}.{task}"),
                Ref::LoopCarry { lp, carry } => match w.entries.get(&lp) {
                    Some(Entry::Loop(l)) => match l
                        .carry
                        .get(&carry)
                        .and_then(|c| refs::parse(&c.next, loops).ok())
                    {
                        Some(Ref::Task { task, .. }) => format!("{lp}.{task}"),
                        _ => return,
                    },
                    _ => return,
                },
                Ref::Carry { name } => match in_loop.as_ref().and_then(|l| w.entries.get(l)) {
                    Some(Entry::Loop(l)) => match l
                        .carry
                        .get(&name)
                        .and_then(|c| refs::parse(&c.init, loops).ok())
                    {
                        Some(Ref::Task { task, .. }) => task,
                        Some(Ref::LoopTask { lp, task, .. }) => format!("{lp}.{task}"),
                        _ => return,
                    },
                    _ => return,
                },
            };
            deps.push((target, path));
        };
        for (i, n) in t.needs.iter().enumerate() {
            add(&format!("{n}.x"), format!("{}.needs[{i}]", t.path));
        }
        for (iname, spec) in &t.inputs {
            for (i, r) in spec.refs.iter().enumerate() {
                let p = if spec.list {
                    format!("{}.inputs.{iname}[{i}]", t.path)
                } else {
                    format!("{}.inputs.{iname}", t.path)
                };
                add(r, p);
            }
        }
        edges.insert(full.clone(), deps);
    }
    // Iterative DFS with colours; the stack is the current path.
    let mut colour: HashMap<&str, u8> = HashMap::new();
    for start in edges.keys() {
        if colour.get(start.as_str()).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        colour.insert(start.as_str(), 1);
        while let Some((node, i)) = stack.pop() {
            let deps = edges.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if i < deps.len() {
                stack.push((node, i + 1));
                let (dep, path) = (&deps[i].0, &deps[i].1);
                match colour.get(dep.as_str()).copied().unwrap_or(0) {
                    0 if edges.contains_key(dep) => {
                        colour.insert(dep.as_str(), 1);
                        stack.push((dep.as_str(), 0));
                    }
                    1 => {
                        let pos = stack
                            .iter()
                            .position(|(n, _)| *n == dep.as_str())
                            .unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[pos..].iter().map(|(n, _)| *n).collect();
                        cycle.push(dep.as_str());
                        let msg = if cycle.len() == 2 {
                            format!("task `{dep}` depends on itself")
                        } else {
                            format!("cycle in task dependencies: `{}`", cycle.join(" -> "))
                        };
                        return Err(ctx.err_value(path, msg));
                    }
                    _ => {}
                }
            } else {
                colour.insert(node, 2);
            }
        }
    }
    Ok(())
}

struct Builder<'w, 'c> {
    w: &'w Workflow,
    registry: &'w Registry,
    ctx: &'c Ctx<'c>,
    loops: &'c [&'c str],
    instances: Vec<Instance>,
    by_key: HashMap<String, InstanceId>,
    /// Concrete node name of each instance (before arm suffixes).
    node_names: Vec<String>,
}

/// A reference resolved to concrete node names of one arm: (label, node, output).
type Resolved = Vec<(String, String, String)>;

impl<'w, 'c> Builder<'w, 'c> {
    fn iterations(&self, lp: &LoopSpec, scope: &Scope) -> Result<u32, SpecError> {
        let p = format!("{}.loop.iterations", lp.path);
        let v = template::render(&lp.iterations, scope, &p, &[])
            .map_err(|u| self.unresolved(&lp.name, &u, scope))?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                self.ctx.err_value(
                    &p,
                    format!(
                        "`iterations` of loop `{}` must be an integer ≥ 1, got `{v}`",
                        lp.name
                    ),
                )
            })
    }

    fn unresolved(&self, task: &str, e: &template::TemplateError, scope: &Scope) -> SpecError {
        let (var, path) = match e {
            template::TemplateError::Unresolved { var, path } => (var, path),
            template::TemplateError::Unsafe {
                var,
                path,
                nth,
                refusal,
            } => {
                let key = path.rsplit('.').next().unwrap_or(path);
                let env = crate::kinds::shell::env_name(var);
                return self
                    .ctx
                    .err_in_string(
                        path,
                        *nth,
                        format!(
                            "`${{{var}}}` in `{key}` of task `{task}` is {}, where cocoflow cannot pass a value as data",
                            refusal.describe()
                        ),
                    )
                    .with_help(format!(
                        "pass the value with `env: {{{env}: \"${{{var}}}\"}}` and use \"${env}\", or with `args: [\"${{{var}}}\"]` and use \"$1\""
                    ));
            }
            template::TemplateError::Reserved { path } => {
                return self
                    .ctx
                    .err(
                        path,
                        format!(
                            "task `{task}` sets `vars`, which cocoflow fills itself from the `${{...}}` templates in its shell text"
                        ),
                    )
                    .with_help("pass values to the command with `env` or `args`");
            }
        };
        let known = scope
            .names()
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut e = self.ctx.err_value(
            path,
            format!("unresolved `${{{var}}}` in task `{task}`; known params: {known}"),
        );
        let names = scope.names();
        if let Some(h) = suggest(var, names.iter().map(String::as_str)) {
            e = e.with_help(h);
        }
        e
    }

    /// Unrolls loops for one arm.
    fn unroll(&self, scope: &Scope) -> Result<Vec<Node<'w>>, SpecError> {
        let mut nodes = Vec::new();
        for (name, e) in &self.w.entries {
            match e {
                Entry::Task(t) => {
                    if t.scope == TaskScope::Arm {
                        nodes.push(Node {
                            name: name.clone(),
                            spec: t,
                            lp: None,
                        });
                    }
                }
                Entry::Loop(lp) => {
                    let n = self.iterations(lp, scope)?;
                    for i in 1..=n {
                        let mut iter_vars = IndexMap::new();
                        iter_vars.insert("iter".to_string(), Value::from(i));
                        let iscope = scope.clone().push(&iter_vars);
                        for (tn, t) in &lp.tasks {
                            if let Some(every) = &t.every {
                                let p = format!("{}.every", t.path);
                                let v = template::render(every, &iscope, &p, &[])
                                    .map_err(|u| self.unresolved(tn, &u, &iscope))?;
                                let k = v.as_u64().filter(|k| *k >= 1).ok_or_else(|| {
                                    self.ctx.err_value(&p, format!("`every` of task `{tn}` must be an integer ≥ 1, got `{v}`"))
                                })?;
                                if i as u64 % k != 0 && i != n {
                                    continue;
                                }
                            }
                            nodes.push(Node {
                                name: format!("{name}[{i}].{tn}"),
                                spec: t,
                                lp: Some((lp, i, n)),
                            });
                        }
                    }
                }
            }
        }
        Ok(nodes)
    }

    /// Resolves one reference of `node` to concrete node names.
    fn resolve(
        &self,
        node: &Node,
        text: &str,
        path: &str,
        nodes: &HashMap<String, usize>,
        scope: &Scope,
    ) -> Result<Resolved, SpecError> {
        let r = refs::parse(text, self.loops).map_err(|m| {
            self.ctx
                .err_value(path, format!("task `{}`: {m}", node.spec.name))
        })?;
        self.resolve_ref(node, &r, text, path, nodes, scope, 0)
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve_ref(
        &self,
        node: &Node,
        r: &Ref,
        text: &str,
        path: &str,
        nodes: &HashMap<String, usize>,
        scope: &Scope,
        depth: u32,
    ) -> Result<Resolved, SpecError> {
        let missing_task = |task: &str| {
            let mut known: Vec<String> = self.w.entries.keys().cloned().collect();
            if let Some((lp, _, _)) = node.lp {
                known.extend(lp.tasks.keys().cloned());
            }
            let mut e = self.ctx.err_value(
                path,
                format!(
                    "task `{}` refers to `{text}`, but there is no task `{task}`",
                    node.spec.name
                ),
            );
            if let Some(h) = suggest(task, known.iter().map(String::as_str)) {
                e = e.with_help(h);
            }
            e
        };
        let loop_spec = |lp: &str| match self.w.entries.get(lp) {
            Some(Entry::Loop(l)) => Some(l),
            _ => None,
        };
        match r {
            Ref::Task { task, output } => {
                if let Some((lp, i, _)) = node.lp
                    && lp.tasks.contains_key(task)
                {
                    let name = format!("{}[{i}].{task}", lp.name);
                    if !nodes.contains_key(&name) {
                        return Err(self.ctx.err_value(path, format!("task `{}` in iteration {i} refers to `{text}`, but `{task}` does not run in iteration {i} (see its `every`)", node.spec.name)));
                    }
                    return Ok(vec![(String::new(), name, output.clone())]);
                }
                match self.w.entries.get(task) {
                    Some(Entry::Task(t)) if t.scope == TaskScope::Global => {
                        Err(self.ctx.err_value(path, format!("task `{}` refers to `{text}`, but `{task}` is `global`: only global tasks can use global tasks", node.spec.name)))
                    }
                    Some(Entry::Task(_)) => Ok(vec![(String::new(), task.clone(), output.clone())]),
                    Some(Entry::Loop(_)) => Err(self.ctx.err_value(path, format!("task `{}` refers to `{text}`, but `{task}` is a loop: use `{task}.TASK.OUTPUT` or `{task}.CARRY`", node.spec.name))),
                    None => Err(missing_task(task)),
                }
            }
            Ref::LoopTask {
                lp,
                sel,
                task,
                output,
            } => {
                let l = loop_spec(lp).ok_or_else(|| missing_task(lp))?;
                if !l.tasks.contains_key(task) {
                    return Err(self.ctx.err_value(
                        path,
                        format!(
                            "task `{}` refers to `{text}`, but loop `{lp}` has no task `{task}`",
                            node.spec.name
                        ),
                    ));
                }
                let n = self.iterations(l, scope)?;
                let iters: Vec<u32> = match sel {
                    IterSel::Last => vec![n],
                    IterSel::Index(i) => {
                        if *i < 1 || *i > n {
                            return Err(self.ctx.err_value(path, format!("task `{}` refers to `{text}`, but loop `{lp}` has iterations 1..={n}", node.spec.name)));
                        }
                        vec![*i]
                    }
                    IterSel::All => (1..=n).collect(),
                };
                let mut out = Vec::new();
                for i in iters {
                    let name = format!("{lp}[{i}].{task}");
                    if nodes.contains_key(&name) {
                        let label = if matches!(sel, IterSel::All) {
                            format!("iter={i}")
                        } else {
                            String::new()
                        };
                        out.push((label, name, output.clone()));
                    } else if !matches!(sel, IterSel::All) {
                        return Err(self.ctx.err_value(path, format!("task `{}` refers to `{text}`, but `{lp}.{task}` does not run in iteration {i} (see its `every`)", node.spec.name)));
                    }
                }
                Ok(out)
            }
            Ref::LoopCarry { lp, carry } => {
                let l = loop_spec(lp).ok_or_else(|| missing_task(lp))?;
                let c = l.carry.get(carry).ok_or_else(|| {
                    self.ctx.err_value(path, format!("task `{}` refers to `{text}`, but loop `{lp}` has neither a task nor a carried value `{carry}`", node.spec.name))
                })?;
                let n = self.iterations(l, scope)?;
                let inner = Node {
                    name: format!("{lp}[{n}]"),
                    spec: node.spec,
                    lp: Some((l, n, n)),
                };
                let r = refs::parse(&c.next, self.loops).map_err(|m| {
                    self.ctx
                        .err_value(&format!("{}.loop.carry.{carry}.next", l.path), m)
                })?;
                self.resolve_ref(
                    &inner,
                    &r,
                    &c.next,
                    &format!("{}.loop.carry.{carry}.next", l.path),
                    nodes,
                    scope,
                    depth + 1,
                )
            }
            Ref::Carry { name } => {
                let Some((l, i, n)) = node.lp else {
                    return Err(self.ctx.err_value(
                        path,
                        format!(
                            "task `{}` uses `{text}`, but `carry.` only exists inside a loop",
                            node.spec.name
                        ),
                    ));
                };
                let c = l.carry.get(name).ok_or_else(|| {
                    let known = l.carry.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
                    self.ctx.err_value(path, format!("task `{}` uses `{text}`, but loop `{}` carries no `{name}`; it carries: {known}", node.spec.name, l.name))
                })?;
                if depth > 2 {
                    return Err(self.ctx.err_value(
                        path,
                        format!(
                            "carried value `{name}` of loop `{}` refers to itself",
                            l.name
                        ),
                    ));
                }
                if i == 1 {
                    let outer = Node {
                        name: node.name.clone(),
                        spec: node.spec,
                        lp: None,
                    };
                    let p = format!("{}.loop.carry.{name}.init", l.path);
                    let r =
                        refs::parse(&c.init, self.loops).map_err(|m| self.ctx.err_value(&p, m))?;
                    if matches!(r, Ref::Carry { .. }) {
                        return Err(self.ctx.err_value(&p, format!("`init` of carried value `{name}` must refer to a task outside the loop")));
                    }
                    self.resolve_ref(&outer, &r, &c.init, &p, nodes, scope, depth + 1)
                } else {
                    let prev = Node {
                        name: format!("{}[{}]", l.name, i - 1),
                        spec: node.spec,
                        lp: Some((l, i - 1, n)),
                    };
                    let p = format!("{}.loop.carry.{name}.next", l.path);
                    let r =
                        refs::parse(&c.next, self.loops).map_err(|m| self.ctx.err_value(&p, m))?;
                    self.resolve_ref(&prev, &r, &c.next, &p, nodes, scope, depth + 1)
                }
            }
        }
    }

    /// Renders, checks and keys one task; merges it with an equal existing instance.
    #[allow(clippy::too_many_arguments)]
    fn instantiate(
        &mut self,
        node_name: &str,
        spec: &TaskSpec,
        scope: &Scope,
        inputs: BTreeMap<String, Vec<PlanInput>>,
        input_paths: &BTreeMap<String, String>,
        needs: Vec<InstanceId>,
        arm: Option<usize>,
        task_name: String,
    ) -> Result<InstanceId, SpecError> {
        let kind = self.registry.get(&spec.kind).expect("kinds checked");
        let ppath = format!("{}.params", spec.path);
        let rendered = template::render(&spec.params, scope, &ppath, kind.quoted_params())
            .map_err(|u| self.unresolved(&spec.name, &u, scope))?;
        let params = kind.check_params(&rendered).map_err(|e| {
            let p = if e.path.is_empty() {
                ppath.clone()
            } else {
                format!("{ppath}.{}", e.path)
            };
            let shown = if e.path.is_empty() {
                String::new()
            } else {
                format!(" `{}`", e.path)
            };
            self.ctx.err_value(
                &p,
                format!(
                    "task `{}` (kind `{}`) param{shown}: {}",
                    spec.name, spec.kind, e.message
                ),
            )
        })?;
        let outputs = kind.outputs(&params);
        let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
        kind.check_inputs(&params, &names).map_err(|m| {
            self.ctx.err(
                &format!("{}.inputs", spec.path),
                format!("task `{}` (kind `{}`): {m}", spec.name, spec.kind),
            )
        })?;
        for (iname, items) in &inputs {
            for it in items {
                let producer = &self.instances[it.producer];
                if !producer.outputs.contains(&it.output) {
                    let known = producer
                        .outputs
                        .iter()
                        .map(|o| format!("`{o}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut e = self.ctx.err_value(
                        input_paths.get(iname).map(String::as_str).unwrap_or(&spec.path),
                        format!("task `{}` input `{iname}` wants output `{}` of `{}`, which has outputs: {}", spec.name, it.output, producer.task, if known.is_empty() { "none".into() } else { known }),
                    );
                    if let Some(h) =
                        suggest(&it.output, producer.outputs.iter().map(String::as_str))
                    {
                        e = e.with_help(h);
                    }
                    return Err(e);
                }
            }
        }

        let mut h = blake3::Hasher::new();
        h.update(b"cocoflow-instance-v1\0");
        h.update(spec.kind.as_bytes());
        h.update(&[0]);
        h.update(&kind.version().to_le_bytes());
        h.update(crate::util::canonical_json(&params).as_bytes());
        h.update(&[0]);
        for (iname, items) in &inputs {
            h.update(iname.as_bytes());
            h.update(&[1]);
            for it in items {
                h.update(it.label.as_bytes());
                h.update(&[2]);
                h.update(self.instances[it.producer].key.as_bytes());
                h.update(it.output.as_bytes());
                h.update(&[3]);
            }
        }
        let key = h.finalize().to_hex().to_string();
        if let Some(&id) = self.by_key.get(&key) {
            let inst = &mut self.instances[id];
            if let Some(a) = arm
                && !inst.arms.contains(&a)
            {
                inst.arms.push(a);
            }
            for n in needs {
                if !inst.deps.contains(&n) {
                    inst.deps.push(n);
                }
            }
            return Ok(id);
        }
        let mut deps: Vec<InstanceId> = inputs
            .values()
            .flatten()
            .map(|i| i.producer)
            .chain(needs)
            .collect();
        deps.sort_unstable();
        deps.dedup();
        let id = self.instances.len();
        self.instances.push(Instance {
            id,
            key: key.clone(),
            name: node_name.to_string(),
            task: task_name,
            arms: arm.into_iter().collect(),
            kind: spec.kind.clone(),
            kind_version: kind.version(),
            params,
            inputs,
            deps,
            outputs,
            resources: spec.resources.clone(),
            retries: spec.retries.clone(),
            executor: spec.executor.clone(),
            slurm: spec.slurm.clone(),
            timeout: spec.timeout,
            priority: spec.priority,
        });
        self.node_names.push(node_name.to_string());
        self.by_key.insert(key, id);
        Ok(id)
    }

    fn plan_arm(
        &mut self,
        ai: usize,
        scope: &Scope,
    ) -> Result<HashMap<String, InstanceId>, SpecError> {
        let nodes = self.unroll(scope)?;
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        // Resolve references to node indices.
        let mut resolved: Vec<(BTreeMap<String, (Resolved, String)>, Vec<usize>)> =
            Vec::with_capacity(nodes.len());
        for node in &nodes {
            let mut ins = BTreeMap::new();
            for (iname, spec) in &node.spec.inputs {
                let mut items = Vec::new();
                for (i, r) in spec.refs.iter().enumerate() {
                    let p = if spec.list {
                        format!("{}.inputs.{iname}[{i}]", node.spec.path)
                    } else {
                        format!("{}.inputs.{iname}", node.spec.path)
                    };
                    items.extend(self.resolve(node, r, &p, &index, scope)?);
                }
                let p = format!("{}.inputs.{iname}", node.spec.path);
                ins.insert(iname.clone(), (items, p));
            }
            let mut needs = Vec::new();
            for (i, n) in node.spec.needs.iter().enumerate() {
                let p = format!("{}.needs[{i}]", node.spec.path);
                let target = if let Some((lp, it, _)) = node.lp
                    && lp.tasks.contains_key(n)
                {
                    format!("{}[{it}].{n}", lp.name)
                } else {
                    match self.w.entries.get(n) {
                        Some(Entry::Task(_)) => n.clone(),
                        Some(Entry::Loop(l)) => {
                            let last = self.iterations(l, scope)?;
                            // Needing a loop means needing all of its last iteration.
                            for t in l.tasks.keys() {
                                if let Some(&j) = index.get(&format!("{n}[{last}].{t}")) {
                                    needs.push(j);
                                }
                            }
                            continue;
                        }
                        None => {
                            let mut known: Vec<String> = self.w.entries.keys().cloned().collect();
                            if let Some((lp, _, _)) = node.lp {
                                known.extend(lp.tasks.keys().cloned());
                            }
                            let mut e = self.ctx.err_value(
                                &p,
                                format!(
                                    "task `{}` needs `{n}`, but there is no task `{n}`",
                                    node.spec.name
                                ),
                            );
                            if let Some(h) = suggest(n, known.iter().map(String::as_str)) {
                                e = e.with_help(h);
                            }
                            return Err(e);
                        }
                    }
                };
                let j = *index.get(&target).ok_or_else(|| {
                    self.ctx.err_value(
                        &p,
                        format!(
                            "task `{}` needs `{n}`, which does not run in this iteration",
                            node.spec.name
                        ),
                    )
                })?;
                needs.push(j);
            }
            resolved.push((ins, needs));
        }
        // Topological order of this arm's nodes (the spec-level cycle check makes it total).
        let n = nodes.len();
        let mut g: petgraph::graph::DiGraph<(), ()> = petgraph::graph::DiGraph::with_capacity(n, n);
        for _ in 0..n {
            g.add_node(());
        }
        for (i, (ins, needs)) in resolved.iter().enumerate() {
            let mut deps: Vec<usize> = ins
                .values()
                .flat_map(|(items, _)| items.iter().map(|(_, nm, _)| index[nm]))
                .chain(needs.iter().copied())
                .collect();
            deps.sort_unstable();
            deps.dedup();
            for d in deps {
                g.add_edge(
                    petgraph::graph::NodeIndex::new(d),
                    petgraph::graph::NodeIndex::new(i),
                    (),
                );
            }
        }
        // Kahn's algorithm taking the lowest ready index first: declaration order wherever
        // the dependencies allow, so plans and ids read in the order the file is written.
        let mut indeg: Vec<usize> = (0..n)
            .map(|i| {
                g.neighbors_directed(
                    petgraph::graph::NodeIndex::new(i),
                    petgraph::Direction::Incoming,
                )
                .count()
            })
            .collect();
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&i| indeg[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            order.push(i);
            for j in g.neighbors_directed(
                petgraph::graph::NodeIndex::new(i),
                petgraph::Direction::Outgoing,
            ) {
                indeg[j.index()] -= 1;
                if indeg[j.index()] == 0 {
                    ready.push(std::cmp::Reverse(j.index()));
                }
            }
        }
        if order.len() != n {
            let at = &nodes[(0..n).find(|&i| indeg[i] > 0).unwrap_or(0)];
            return Err(self.ctx.err(
                &at.spec.path,
                format!("cycle in task dependencies through `{}`", at.name),
            ));
        }
        let mut ids: Vec<Option<InstanceId>> = vec![None; n];
        let mut map = HashMap::new();
        for i in order {
            let node = &nodes[i];
            let (ins, needs) = &resolved[i];
            let mut inputs = BTreeMap::new();
            let mut paths = BTreeMap::new();
            for (iname, (items, p)) in ins {
                inputs.insert(
                    iname.clone(),
                    items
                        .iter()
                        .map(|(label, nm, output)| PlanInput {
                            label: label.clone(),
                            producer: ids[index[nm]].expect("topological order"),
                            output: output.clone(),
                        })
                        .collect(),
                );
                paths.insert(iname.clone(), p.clone());
            }
            let need_ids = needs
                .iter()
                .map(|&j| ids[j].expect("topological order"))
                .collect();
            let mut iter_vars = IndexMap::new();
            let task_name = match node.lp {
                Some((lp, it, _)) => {
                    iter_vars.insert("iter".to_string(), Value::from(it));
                    format!("{}.{}", lp.name, node.spec.name)
                }
                None => node.spec.name.clone(),
            };
            let nscope = scope.clone().push(&iter_vars);
            let id = self.instantiate(
                &node.name,
                node.spec,
                &nscope,
                inputs,
                &paths,
                need_ids,
                Some(ai),
                task_name,
            )?;
            ids[i] = Some(id);
            map.insert(node.name.clone(), id);
        }
        Ok(map)
    }

    /// Global tasks: one instance each; a reference collects that output from every arm.
    fn plan_globals(&mut self, arm_maps: &[HashMap<String, InstanceId>]) -> Result<(), SpecError> {
        let globals: Vec<&TaskSpec> = self
            .w
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Task(t) if t.scope == TaskScope::Global => Some(t),
                _ => None,
            })
            .collect();
        let mut done: HashMap<String, InstanceId> = HashMap::new();
        let mut progress = true;
        while done.len() < globals.len() && progress {
            progress = false;
            'task: for spec in &globals {
                if done.contains_key(&spec.name) {
                    continue;
                }
                let mut inputs: BTreeMap<String, Vec<PlanInput>> = BTreeMap::new();
                let mut paths = BTreeMap::new();
                for (iname, ispec) in &spec.inputs {
                    let mut items = Vec::new();
                    for (i, r) in ispec.refs.iter().enumerate() {
                        let p = if ispec.list {
                            format!("{}.inputs.{iname}[{i}]", spec.path)
                        } else {
                            format!("{}.inputs.{iname}", spec.path)
                        };
                        let parsed = refs::parse(r, self.loops).map_err(|m| {
                            self.ctx.err_value(&p, format!("task `{}`: {m}", spec.name))
                        })?;
                        if let Ref::Task { task, output } = &parsed
                            && let Some(Entry::Task(t)) = self.w.entries.get(task)
                            && t.scope == TaskScope::Global
                        {
                            match done.get(task) {
                                Some(&id) => items.push(PlanInput {
                                    label: String::new(),
                                    producer: id,
                                    output: output.clone(),
                                }),
                                None => continue 'task,
                            }
                            continue;
                        }
                        for (ai, map) in arm_maps.iter().enumerate() {
                            let arm = &self.w.arms[ai];
                            let mut base = IndexMap::new();
                            base.insert("arm".to_string(), Value::String(arm.name.clone()));
                            let scope = Scope::new()
                                .push(&self.w.params)
                                .push(&arm.params)
                                .push(&base);
                            let nodes: HashMap<String, usize> =
                                map.iter().map(|(k, &v)| (k.clone(), v)).collect();
                            let node = Node {
                                name: spec.name.clone(),
                                spec,
                                lp: None,
                            };
                            for (label, nm, output) in self.resolve(&node, r, &p, &nodes, &scope)? {
                                let label = if label.is_empty() {
                                    arm.name.clone()
                                } else {
                                    format!("{}/{label}", arm.name)
                                };
                                items.push(PlanInput {
                                    label,
                                    producer: map[&nm],
                                    output,
                                });
                            }
                        }
                    }
                    inputs.insert(iname.clone(), items);
                    paths.insert(iname.clone(), format!("{}.inputs.{iname}", spec.path));
                }
                let mut needs = Vec::new();
                for (i, n) in spec.needs.iter().enumerate() {
                    if let Some(&id) = done.get(n) {
                        needs.push(id);
                        continue;
                    }
                    if globals.iter().any(|g| &g.name == n) {
                        continue 'task;
                    }
                    let mut found = false;
                    for map in arm_maps {
                        if let Some(&id) = map.get(n) {
                            needs.push(id);
                            found = true;
                        }
                    }
                    if !found {
                        return Err(self.ctx.err_value(
                            &format!("{}.needs[{i}]", spec.path),
                            format!(
                                "task `{}` needs `{n}`, but there is no task `{n}`",
                                spec.name
                            ),
                        ));
                    }
                }
                let scope = Scope::new().push(&self.w.params);
                let id = self.instantiate(
                    &spec.name,
                    spec,
                    &scope,
                    inputs,
                    &paths,
                    needs,
                    None,
                    spec.name.clone(),
                )?;
                done.insert(spec.name.clone(), id);
                progress = true;
            }
        }
        Ok(())
    }
}

/// Display names: the node name, plus the arm when the instance belongs to some arms only.
fn name_instances(plan: &mut Plan, node_names: &[String]) {
    let arms = plan.arm_names.len();
    let swept = plan.workflow.swept;
    for inst in &mut plan.instances {
        let base = &node_names[inst.id];
        inst.name = if !swept || inst.arms.is_empty() || inst.arms.len() == arms {
            base.clone()
        } else if inst.arms.len() == 1 {
            format!("{base}[{}]", plan.arm_names[inst.arms[0]])
        } else {
            format!(
                "{base}[{} +{}]",
                plan.arm_names[inst.arms[0]],
                inst.arms.len() - 1
            )
        };
    }
}

/// Keeps the instances of the target tasks and their ancestors (ids renumbered).
fn restrict(plan: Plan, targets: &[String], ctx: &Ctx) -> Result<Plan, SpecError> {
    let mut keep = vec![false; plan.instances.len()];
    let mut stack = Vec::new();
    for t in targets {
        let hits: Vec<usize> = plan
            .instances
            .iter()
            .filter(|i| {
                &i.task == t || i.task.split('.').next() == Some(t.as_str()) || &i.name == t
            })
            .map(|i| i.id)
            .collect();
        if hits.is_empty() {
            let names: Vec<&str> = plan.instances.iter().map(|i| i.task.as_str()).collect();
            let mut e = SpecError::new(format!("`--target {t}`: no task `{t}` in the workflow"))
                .in_file(ctx.file, None);
            if let Some(h) = suggest(t, names) {
                e = e.with_help(h);
            }
            return Err(e);
        }
        stack.extend(hits);
    }
    while let Some(i) = stack.pop() {
        if !keep[i] {
            keep[i] = true;
            stack.extend(plan.instances[i].deps.iter().copied());
        }
    }
    let mut remap = vec![usize::MAX; plan.instances.len()];
    let mut instances = Vec::new();
    for inst in plan.instances.into_iter() {
        if keep[inst.id] {
            remap[inst.id] = instances.len();
            instances.push(inst);
        }
    }
    for inst in &mut instances {
        inst.id = remap[inst.id];
        inst.deps = inst.deps.iter().map(|&d| remap[d]).collect();
        for items in inst.inputs.values_mut() {
            for it in items {
                it.producer = remap[it.producer];
            }
        }
    }
    Ok(Plan { instances, ..plan })
}
