//! `cocoflow graph`: the DAG as indented text or Graphviz DOT.

use super::Plan;
use std::fmt::Write as _;

/// One line per instance in topological (plan) order: `name (kind) <- deps`.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    for inst in &plan.instances {
        let deps: Vec<&str> = inst
            .deps
            .iter()
            .map(|&d| plan.instances[d].name.as_str())
            .collect();
        let _ = write!(out, "{} ({})", inst.name, inst.kind);
        if !deps.is_empty() {
            let _ = write!(out, " <- {}", deps.join(", "));
        }
        out.push('\n');
    }
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT; `state` gives each node's fill (e.g. cached vs to-run).
pub fn dot(plan: &Plan, state: &dyn Fn(usize) -> Option<&'static str>) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white];\n",
        dot_escape(&plan.workflow.name)
    );
    for inst in &plan.instances {
        let fill = match state(inst.id) {
            Some("cached") => ", fillcolor=\"#d9ead3\"",
            Some("run") => ", fillcolor=\"#fff2cc\"",
            _ => "",
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\\n{}\"{fill}];",
            inst.id,
            dot_escape(&inst.name),
            dot_escape(&inst.kind)
        );
    }
    for inst in &plan.instances {
        for (iname, items) in &inst.inputs {
            for it in items {
                let _ = writeln!(
                    out,
                    "  n{} -> n{} [label=\"{}\"];",
                    it.producer,
                    inst.id,
                    dot_escape(iname)
                );
            }
        }
        let data: Vec<usize> = inst.inputs.values().flatten().map(|i| i.producer).collect();
        for &d in &inst.deps {
            if !data.contains(&d) {
                let _ = writeln!(out, "  n{d} -> n{} [style=dashed];", inst.id);
            }
        }
    }
    out.push_str("}\n");
    out
}
