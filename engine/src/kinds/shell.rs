//! `shell`: runs a command under `sh -c` in a fresh working directory and stores the
//! files it declares as outputs.
//!
//! Params: `cmd` (shell text; templating turns each `${param}` in it into a quoted reference
//! to a `COCOFLOW_P_<param>` variable and fills `vars`), `args` (passed as `$1`, `$2`, ...),
//! `env` (extra environment variables), `outputs` (name → relative path; a trailing `/` or a
//! directory makes a tree output), `timeout`; `vars` (set by templating, never written by
//! hand: the values of the templates in `cmd`, exported as environment variables).
//! Inputs: any; each reaches the command as `COCOFLOW_INPUT_<NAME>` (a path; list inputs as
//! `COCOFLOW_INPUT_<NAME>_<i>` plus `_COUNT`). Outputs: as declared, also given to the
//! command as `COCOFLOW_OUTPUT_<NAME>`. GPUs granted arrive as `CUDA_VISIBLE_DEVICES`.

use super::child;
use crate::kind::{Kind, ParamError, TaskCtx, TaskError};
use crate::spec::template::scalar_text;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path};
use std::process::{Command, Stdio};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellParams {
    /// The command, run under `sh -c` in a fresh working directory; `${param}` templates in it
    /// reach it as environment variables (never as shell text).
    pub cmd: String,
    /// Positional arguments (`$1`, `$2`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Value>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Value>,
    /// Output name → path relative to the working directory (a trailing `/`: a directory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Kill the command after this long (`30s`, `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Values of the `${...}` templates in `cmd`, by variable name (`COCOFLOW_P_msg`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

pub struct Shell;

/// `data-set` → `DATA_SET`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn check(p: &ShellParams) -> Result<(), ParamError> {
    for (name, path) in &p.outputs {
        let rel = Path::new(path.trim_end_matches('/'));
        if path.is_empty()
            || rel.is_absolute()
            || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(ParamError {
                path: format!("outputs.{name}"),
                message: format!(
                    "output path `{path}` must be relative to the working directory, without `..`"
                ),
            });
        }
    }
    for k in p.env.keys() {
        if k.is_empty() || k.contains('=') || k.starts_with("COCOFLOW_") {
            return Err(ParamError {
                path: format!("env.{k}"),
                message: format!("`{k}` is not an environment variable a task may set"),
            });
        }
    }
    for (k, v) in &p.vars {
        let name_ok = k
            .strip_prefix(crate::spec::template::VAR_PREFIX)
            .is_some_and(|n| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !name_ok {
            return Err(ParamError {
                path: format!("vars.{k}"),
                message: format!("`{k}` is not a template variable"),
            });
        }
        if v.contains('\0') {
            return Err(ParamError {
                path: format!("vars.{k}"),
                message: "a value passed to a command cannot hold a NUL character".into(),
            });
        }
    }
    if let Some(t) = &p.timeout
        && crate::util::parse_duration(t).is_none()
    {
        return Err(ParamError {
            path: "timeout".into(),
            message: format!("`{t}` is not a duration like `30s` or `5m`"),
        });
    }
    Ok(())
}

impl Kind for Shell {
    type Params = ShellParams;
    const NAME: &'static str = "shell";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str = "runs a shell command; declared files become outputs";

    fn validate(&self, p: &ShellParams) -> Result<(), ParamError> {
        check(p)
    }
    fn outputs(&self, p: &ShellParams) -> Vec<String> {
        p.outputs.keys().cloned().collect()
    }
    fn quoted_params(&self) -> &'static [&'static str] {
        &["cmd"]
    }
}

impl Shell {
    /// Does the work (the [`Kind`]'s run function).
    pub fn run(&self, p: ShellParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let workdir = ctx.workdir()?;
        let mut argv: Vec<std::ffi::OsString> =
            vec!["-c".into(), p.cmd.clone().into(), "cocoflow-shell".into()];
        for a in &p.args {
            argv.push(scalar_text(a).into());
        }
        let mut env: Vec<(String, std::ffi::OsString)> = Vec::new();
        for (k, v) in &p.env {
            env.push((k.clone(), scalar_text(v).into()));
        }
        for (k, v) in &p.vars {
            env.push((k.clone(), v.into()));
        }
        let names: Vec<String> = ctx.inputs.keys().cloned().collect();
        for name in names {
            let items = ctx.input_items(&name)?.to_vec();
            let var = format!("COCOFLOW_INPUT_{}", env_name(&name));
            if items.len() == 1 {
                env.push((var.clone(), ctx.item_path(&name, &items[0])?.into()));
            }
            env.push((format!("{var}_COUNT"), items.len().to_string().into()));
            for (i, it) in items.iter().enumerate() {
                env.push((format!("{var}_{i}"), ctx.item_path(&name, it)?.into()));
            }
        }
        for (name, rel) in &p.outputs {
            let full = workdir.join(rel.trim_end_matches('/'));
            let parent = if rel.ends_with('/') {
                full.clone()
            } else {
                full.parent().unwrap_or(&workdir).to_path_buf()
            };
            std::fs::create_dir_all(&parent).map_err(TaskError::io(format!(
                "cannot create `{}`",
                parent.display()
            )))?;
            env.push((format!("COCOFLOW_OUTPUT_{}", env_name(name)), full.into()));
        }
        env.push(("COCOFLOW_TASK".into(), ctx.name.clone().into()));
        env.push(("COCOFLOW_KEY".into(), ctx.key.clone().into()));
        env.push(("COCOFLOW_RUN".into(), ctx.run_id.clone().into()));
        env.push(("COCOFLOW_ATTEMPT".into(), ctx.attempt.to_string().into()));
        env.push((
            "CUDA_VISIBLE_DEVICES".into(),
            ctx.gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
                .into(),
        ));
        let timeout = p.timeout.as_deref().and_then(crate::util::parse_duration);
        let log_path = ctx.log_path.clone();
        let mut log = child::Log::new(&log_path);
        let sh = child::sh();
        let (output, mut proc): (_, Box<dyn child::Proc>) = if sh.starts_with('/') {
            // This process's environment, then the task's variables.
            let mut all: BTreeMap<std::ffi::OsString, std::ffi::OsString> =
                std::env::vars_os().collect();
            for (k, v) in env {
                all.insert(k.into(), v);
            }
            let (rd, wr) = child::output_pipe().map_err(TaskError::io("cannot create a pipe"))?;
            let args: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
            let proc = child::spawn(Path::new(sh), &args, &all, &workdir, &wr)
                .map_err(TaskError::io("cannot start `sh`"))?;
            drop(wr); // closes this process's copy of the pipe's write end
            (rd, Box::new(proc))
        } else {
            let mut cmd = Command::new(sh);
            cmd.args(&argv).current_dir(&workdir).stdin(Stdio::null());
            let output = child::capture(&mut cmd).map_err(TaskError::io("cannot create a pipe"))?;
            cmd.envs(env);
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let proc = cmd.spawn().map_err(TaskError::io("cannot start `sh`"))?;
            drop(cmd); // closes this process's copies of the pipe's write end
            (output, Box::new(proc))
        };
        let ended = child::wait(proc.as_mut(), output, &mut log, timeout, &|| {
            ctx.is_cancelled()
        })
        .map_err(TaskError::io(format!(
            "running the command (log `{}`)",
            log_path.display()
        )))?;
        let status = match ended {
            child::Ended::Exited(st) => st,
            child::Ended::Stopped { timed_out: true } => {
                return Err(TaskError::Failed(format!(
                    "command timed out after {}",
                    p.timeout.unwrap_or_default()
                )));
            }
            child::Ended::Stopped { timed_out: false } => return Err(TaskError::Cancelled),
        };
        if !status.success() {
            let tail = log_tail(&ctx.log_path, 5);
            let how = match (status.code(), status.signal()) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                _ => "failed".to_string(),
            };
            return Err(TaskError::Failed(if tail.is_empty() {
                format!("command {how}")
            } else {
                format!("command {how}; last output:\n{tail}")
            }));
        }
        for (name, rel) in &p.outputs {
            let full = workdir.join(rel.trim_end_matches('/'));
            if full.is_dir() {
                ctx.output_dir(name, &full)?;
            } else if full.is_file() {
                ctx.output_file(name, &full)?;
            } else {
                return Err(TaskError::Failed(format!(
                    "command succeeded but did not create output `{name}` (`{rel}`)"
                )));
            }
        }
        Ok(())
    }
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
