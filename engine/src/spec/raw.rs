//! The workflow file as written: serde structs that reject unknown keys. Values that are
//! templated or validated later stay `serde_yaml::Value` here.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::Value as Yaml;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    /// Name shown in plans, run records and reports.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `file://DIR`, `s3://bucket/prefix` or `memory://`.
    #[serde(default)]
    pub store: Option<String>,
    /// Parameter defaults: `${name}` in task params refers to these (and to arm params).
    #[serde(default)]
    pub params: IndexMap<String, Yaml>,
    #[serde(default)]
    pub sweep: Option<RawSweep>,
    /// Resource pools: `gpus: [0, 1]` or `gpus: 2`, `cpus: 8`, `judge: 4`, ...
    #[serde(default)]
    pub resources: IndexMap<String, Yaml>,
    /// Options of the `slurm` executor (partition, account, qos, time, mem, sbatch_args, poll).
    #[serde(default)]
    pub slurm: Option<Yaml>,
    pub tasks: IndexMap<String, RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    #[serde(default)]
    pub description: Option<String>,
    /// Files (relative to the including file) whose arms are added to this sweep.
    #[serde(default)]
    pub include: Option<OneOrMany>,
    /// Cartesian product over named values.
    #[serde(default)]
    pub matrix: Option<IndexMap<String, Vec<Yaml>>>,
    /// Matrix combinations to drop: each entry matches on the keys it names.
    #[serde(default)]
    pub exclude: Vec<IndexMap<String, Yaml>>,
    /// An explicit list of arms.
    #[serde(default)]
    pub arms: Vec<RawArm>,
    /// Repeats: every arm crossed with each value of one param (`seed` unless named), arm
    /// names suffixed `,<param>=<value>`. Only in the workflow's own `sweep`.
    #[serde(default)]
    pub seeds: Option<RawSeeds>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSeeds {
    /// `seeds: [0, 1, 2]`: values of the param `seed`.
    Values(Vec<Yaml>),
    /// `seeds: {param: rl_seed, values: [0, 1, 2]}`.
    Param { param: String, values: Vec<Yaml> },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArm {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: IndexMap<String, Yaml>,
}

/// A task, or a loop (`loop:`) whose body tasks are unrolled per iteration.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, rename = "loop")]
    pub loop_: Option<RawLoop>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    /// `name: task.output`, or a list of references (a list input).
    #[serde(default)]
    pub inputs: IndexMap<String, Yaml>,
    #[serde(default)]
    pub params: Option<Yaml>,
    #[serde(default)]
    pub resources: IndexMap<String, Yaml>,
    /// `3`, or `{count: 3, backoff: 2s, factor: 2, max_backoff: 1m}`.
    #[serde(default)]
    pub retries: Option<Yaml>,
    #[serde(default)]
    pub executor: Option<String>,
    /// This task's `slurm` executor options, over the workflow's `slurm:`.
    #[serde(default)]
    pub slurm: Option<Yaml>,
    /// Stop an attempt after this long (`30m`); it fails and the retry policy applies.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Inside a loop: run on iterations divisible by this (and on the last one).
    #[serde(default)]
    pub every: Option<Yaml>,
    /// `arm` (default): one instance per sweep arm; `global`: one instance that sees all arms.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoop {
    /// Number of iterations (an integer or a `${param}`).
    pub iterations: Yaml,
    /// Values threaded through iterations: `ckpt: {init: pretrain.model, next: ema.ckpt}`.
    #[serde(default)]
    pub carry: IndexMap<String, RawCarry>,
    pub tasks: IndexMap<String, RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCarry {
    pub init: String,
    pub next: String,
}
