//! Input references: `task.output`, `loop.task.output` (last iteration), `loop[3].task.output`,
//! `loop[*].task.output` (every iteration), `loop.carry_name` (final carried value) and,
//! inside a loop, `carry.name` (this iteration's carried value).

/// Which iterations of a loop a reference selects.
#[derive(Debug, Clone, PartialEq)]
pub enum IterSel {
    Last,
    Index(u32),
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ref {
    /// `task.output`: a sibling in the same loop iteration, else a top-level task.
    Task { task: String, output: String },
    /// `loop[sel].task.output`.
    LoopTask {
        lp: String,
        sel: IterSel,
        task: String,
        output: String,
    },
    /// `loop.name`: the loop's final carried value.
    LoopCarry { lp: String, carry: String },
    /// `carry.name`, inside a loop.
    Carry { name: String },
}

/// Parses a reference. `loops` lists the loop names of the workflow.
pub fn parse(text: &str, loops: &[&str]) -> Result<Ref, String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "`{text}` is not a reference; expected `task.output`"
        ));
    }
    let (head, sel) = match parts[0].find('[') {
        Some(i) => {
            let inner = parts[0][i + 1..]
                .strip_suffix(']')
                .ok_or_else(|| format!("`{text}`: unclosed `[`"))?;
            let sel = match inner {
                "*" => IterSel::All,
                "-1" | "last" => IterSel::Last,
                n => IterSel::Index(n.parse().map_err(|_| {
                    format!("`{text}`: iteration `{n}` is not a number, `*` or `last`")
                })?),
            };
            (&parts[0][..i], Some(sel))
        }
        None => (parts[0], None),
    };
    let is_loop = loops.contains(&head);
    match (parts.len(), is_loop, sel) {
        (2, _, None) if head == "carry" => Ok(Ref::Carry {
            name: parts[1].to_string(),
        }),
        (2, true, None) => Ok(Ref::LoopCarry {
            lp: head.to_string(),
            carry: parts[1].to_string(),
        }),
        (2, false, None) => Ok(Ref::Task {
            task: head.to_string(),
            output: parts[1].to_string(),
        }),
        (3, true, sel) => Ok(Ref::LoopTask {
            lp: head.to_string(),
            sel: sel.unwrap_or(IterSel::Last),
            task: parts[1].to_string(),
            output: parts[2].to_string(),
        }),
        (_, false, Some(_)) => Err(format!(
            "`{text}`: `{head}` is not a loop, so it cannot take `[...]`"
        )),
        (1, ..) => Err(format!("`{text}` names no output; expected `task.output`")),
        _ => Err(format!(
            "`{text}` is not a reference; expected `task.output` or `loop.task.output`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let loops = ["rl"];
        assert_eq!(
            parse("prep.out", &loops),
            Ok(Ref::Task {
                task: "prep".into(),
                output: "out".into()
            })
        );
        assert_eq!(
            parse("carry.ckpt", &loops),
            Ok(Ref::Carry {
                name: "ckpt".into()
            })
        );
        assert_eq!(
            parse("rl.ckpt", &loops),
            Ok(Ref::LoopCarry {
                lp: "rl".into(),
                carry: "ckpt".into()
            })
        );
        assert_eq!(
            parse("rl.ema.ckpt", &loops),
            Ok(Ref::LoopTask {
                lp: "rl".into(),
                sel: IterSel::Last,
                task: "ema".into(),
                output: "ckpt".into()
            })
        );
        assert_eq!(
            parse("rl[2].ema.ckpt", &loops),
            Ok(Ref::LoopTask {
                lp: "rl".into(),
                sel: IterSel::Index(2),
                task: "ema".into(),
                output: "ckpt".into()
            })
        );
        assert_eq!(
            parse("rl[*].eval.metrics", &loops),
            Ok(Ref::LoopTask {
                lp: "rl".into(),
                sel: IterSel::All,
                task: "eval".into(),
                output: "metrics".into()
            })
        );
        assert!(parse("prep", &loops).is_err());
        assert!(parse("prep[1].x", &loops).is_err());
        assert!(parse("a..b", &loops).is_err());
    }
}
