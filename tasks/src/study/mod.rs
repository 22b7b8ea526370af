//! Human-preference studies (paper appendix C.2, method-spec §8): people rank two or more
//! methods' edits of the same benchmark samples, blind, for editing success and for
//! consistency (ties allowed); [`stats`] turns the answers into average ranks with bootstrap
//! intervals, pairwise win rates and agreement between annotators.
//!
//! A study lives in the artifact store, outside everything `gc` manages:
//! - `studies/<name>/study.json` — the definition ([`StudyDef`]): its methods (each an `eval`
//!   instance's `report` of some run), the sample (benchmark keys common to every method,
//!   shuffled with the study's seed, the first `samples`), per sample the instruction, the
//!   edit type and the BLAKE3 digests of the source image and of each method's edit;
//! - `studies/<name>/images/<digest>.png` — those images, copied, so the study outlives a
//!   `gc` of the runs it came from;
//! - `studies/<name>/answers/<digest>.json` — one [`AnswerRecord`] per submission, named by the
//!   BLAKE3 of its bytes: written atomically (never half a record after a crash), checked
//!   on every read (a record whose bytes do not match its name is reported, never used). A
//!   later submission for the same annotator and sample replaces the earlier one.
//!
//! Blinding: each annotator sees a sample's methods in an order drawn from
//! (study seed, annotator, sample key) ([`display_order`]), as slots `A`, `B`, `C`, ...;
//! the record keeps the order and its seed.
//!
//! Commands: `cocoflow study new|list|report` ([`extension`]); `cocoflow ui` serves the
//! annotation pages and the results ([`crate::ui`]).

pub mod stats;

use crate::artifacts::eval_report::EvalRecord;
use crate::data::Dataset;
use bytes::Bytes;
use cocoflow_engine::cli::{EXIT_ENVIRONMENT, EXIT_OK, EXIT_USAGE, Extension};
use cocoflow_engine::state::{Journal, RedbJournal, RunRecord};
use cocoflow_engine::store::{Artifact, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "cocoflow-study";
pub const ANSWER_FORMAT: &str = "cocoflow-study-answer";
pub const CRITERIA: [&str; 2] = ["success", "consistency"];
/// Methods are shown as slots `A`..`Z`.
pub const MAX_METHODS: usize = 26;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodDef {
    /// The name shown in results (never to annotators).
    pub label: String,
    pub run: String,
    /// The `eval` instance's name in that run.
    pub instance: String,
    /// Its cache key.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleDef {
    pub key: String,
    pub instruction: String,
    pub edit_type: String,
    /// Digest of the source image (`images/<digest>.png`).
    pub source: String,
    /// Each method's edit, by method label.
    pub edits: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyDef {
    pub format: String,
    pub version: u32,
    pub name: String,
    pub seed: u64,
    pub criteria: Vec<String>,
    pub methods: Vec<MethodDef>,
    pub samples: Vec<SampleDef>,
}

impl StudyDef {
    pub fn method_labels(&self) -> Vec<String> {
        self.methods.iter().map(|m| m.label.clone()).collect()
    }

    pub fn sample(&self, key: &str) -> Option<&SampleDef> {
        self.samples.iter().find(|s| s.key == key)
    }

    /// Whether `digest` is one of this study's source images (the only images the UI serves
    /// by digest; edits go through their blind slot).
    pub fn is_source(&self, digest: &str) -> bool {
        self.samples.iter().any(|s| s.source == digest)
    }
}

/// One submission: an annotator's ranks of every method of one sample, per criterion
/// (1 = best; equal numbers are ties).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub format: String,
    pub study: String,
    pub annotator: String,
    pub sample: String,
    /// Methods in the order the annotator saw them (slot A first).
    pub order: Vec<String>,
    pub order_seed: u64,
    /// criterion → method label → rank.
    pub ranks: BTreeMap<String, BTreeMap<String, f64>>,
    /// Wall-clock time of the submission (ms since the epoch): orders resubmissions.
    pub submitted_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(#[from] cocoflow_engine::store::StoreError),
    #[error("run journal: {0}")]
    Journal(#[from] cocoflow_engine::state::JournalError),
}

pub type Result<T> = std::result::Result<T, StudyError>;

fn invalid(msg: impl Into<String>) -> StudyError {
    StudyError::Invalid(msg.into())
}

/// Study and annotator names: 1–64 characters of `[A-Za-z0-9_.-]` (names become store paths),
/// not starting with a dot.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} `{name}` is not allowed: use 1–64 characters of letters, digits, `_`, `-`, `.` (not starting with `.`)"
        )))
    }
}

fn def_location(name: &str) -> String {
    format!("studies/{name}/study.json")
}

pub fn image_location(name: &str, digest: &str) -> String {
    format!("studies/{name}/images/{digest}.png")
}

fn answers_prefix(name: &str) -> String {
    format!("studies/{name}/answers")
}

/// The display order of a sample's methods for an annotator, and its seed.
pub fn display_order(def: &StudyDef, annotator: &str, sample: &str) -> (Vec<String>, u64) {
    let h = blake3::hash(format!("{}\0{annotator}\0{sample}", def.seed).as_bytes());
    let seed = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    let mut order = def.method_labels();
    let mut rng = crate::rng::SplitMix64::new(seed);
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    (order, seed)
}

pub async fn load_def(store: &Store, name: &str) -> Result<Option<StudyDef>> {
    check_name("study name", name)?;
    let loc = def_location(name);
    let Some(b) = store.get_object(&loc).await? else {
        return Ok(None);
    };
    let def: StudyDef = serde_json::from_slice(&b).map_err(|e| {
        invalid(format!(
            "study `{name}`: `{loc}` in `{}` is malformed: {e}",
            store.url()
        ))
    })?;
    if def.format != FORMAT || def.version != 1 || def.name != name {
        return Err(invalid(format!(
            "study `{name}`: `{loc}` in `{}` is not a version-1 `{FORMAT}` definition of study `{name}` (format `{}`, version {}, name `{}`)",
            store.url(),
            def.format,
            def.version,
            def.name
        )));
    }
    if def.methods.len() < 2 || def.methods.len() > MAX_METHODS {
        return Err(invalid(format!(
            "study `{name}`: `{loc}` has {} methods (2 to {MAX_METHODS})",
            def.methods.len()
        )));
    }
    Ok(Some(def))
}

/// Every study of a store, by name.
pub async fn list(store: &Store) -> Result<Vec<StudyDef>> {
    let mut out = Vec::new();
    for (loc, _) in store.list("studies").await? {
        if let Some(name) = loc
            .strip_prefix("studies/")
            .and_then(|r| r.strip_suffix("/study.json"))
            && !name.contains('/')
            && let Some(d) = load_def(store, name).await?
        {
            out.push(d);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The answers of a study: the latest valid submission per (annotator, sample), and the
/// locations of records whose bytes do not match their digest (or that do not parse).
pub async fn answers(store: &Store, def: &StudyDef) -> Result<(Vec<AnswerRecord>, Vec<String>)> {
    let mut latest: BTreeMap<(String, String), (AnswerRecord, String)> = BTreeMap::new();
    let mut damaged = Vec::new();
    for (loc, _) in store.list(&answers_prefix(&def.name)).await? {
        let Some(digest) = loc.rsplit('/').next().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        let bytes = match store.get_object(&loc).await {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(_) => {
                damaged.push(loc);
                continue;
            }
        };
        if blake3::hash(&bytes).to_hex().as_str() != digest {
            damaged.push(loc);
            continue;
        }
        let rec: AnswerRecord = match serde_json::from_slice::<AnswerRecord>(&bytes) {
            Ok(r)
                if r.format == ANSWER_FORMAT
                    && r.study == def.name
                    && def.sample(&r.sample).is_some() =>
            {
                r
            }
            _ => {
                damaged.push(loc);
                continue;
            }
        };
        let k = (rec.annotator.clone(), rec.sample.clone());
        let newer = latest
            .get(&k)
            .is_none_or(|(old, d)| (rec.submitted_ms, digest) > (old.submitted_ms, d.as_str()));
        if newer {
            latest.insert(k, (rec, digest.to_string()));
        }
    }
    Ok((latest.into_values().map(|(r, _)| r).collect(), damaged))
}

/// Checks a submission against the study (every method ranked 1..=n for every criterion, the
/// order the one this annotator was shown) and appends it to the store; returns its location.
pub async fn submit(
    store: &Store,
    def: &StudyDef,
    annotator: &str,
    sample: &str,
    ranks: BTreeMap<String, BTreeMap<String, f64>>,
    now_ms: u64,
) -> Result<String> {
    check_name("annotator name", annotator)?;
    if def.sample(sample).is_none() {
        return Err(invalid(format!(
            "study `{}` has no sample `{sample}`",
            def.name
        )));
    }
    let n = def.methods.len() as f64;
    for c in &def.criteria {
        let Some(r) = ranks.get(c) else {
            return Err(invalid(format!("the answer has no ranks for `{c}`")));
        };
        for m in &def.methods {
            match r.get(&m.label) {
                Some(v) if v.fract() == 0.0 && (1.0..=n).contains(v) => {}
                Some(v) => {
                    return Err(invalid(format!(
                        "rank {v} for `{c}` is not a whole number from 1 to {n}"
                    )));
                }
                None => return Err(invalid(format!("`{c}`: a method has no rank"))),
            }
        }
        if r.len() != def.methods.len() {
            return Err(invalid(format!(
                "`{c}`: ranks for methods the study does not have"
            )));
        }
    }
    if ranks.len() != def.criteria.len() {
        return Err(invalid("the answer ranks criteria the study does not have"));
    }
    let (order, order_seed) = display_order(def, annotator, sample);
    let rec = AnswerRecord {
        format: ANSWER_FORMAT.into(),
        study: def.name.clone(),
        annotator: annotator.into(),
        sample: sample.into(),
        order,
        order_seed,
        ranks,
        submitted_ms: now_ms,
    };
    let bytes = serde_json::to_vec_pretty(&rec).expect("serialises");
    let loc = format!(
        "{}/{}.json",
        answers_prefix(&def.name),
        blake3::hash(&bytes).to_hex()
    );
    store.put_object(&loc, Bytes::from(bytes)).await?;
    Ok(loc)
}

/// The answers as [`stats::Answer`]s (one per criterion), edit types from the definition.
pub fn stats_answers(def: &StudyDef, recs: &[AnswerRecord]) -> Vec<stats::Answer> {
    let mut out = Vec::new();
    for r in recs {
        let edit_type = def
            .sample(&r.sample)
            .map(|s| s.edit_type.clone())
            .unwrap_or_default();
        for (criterion, ranks) in &r.ranks {
            out.push(stats::Answer {
                annotator: r.annotator.clone(),
                sample: r.sample.clone(),
                edit_type: edit_type.clone(),
                criterion: criterion.clone(),
                ranks: ranks.clone(),
            });
        }
    }
    out
}

/// Number of bootstrap resamples of the results.
pub const BOOTSTRAP: usize = 2000;

pub fn summarize(def: &StudyDef, recs: &[AnswerRecord]) -> stats::Summary {
    stats::summarize(
        &stats_answers(def, recs),
        &def.method_labels(),
        &def.criteria,
        BOOTSTRAP,
        def.seed,
    )
}

// ---------------------------------------------------------------------------------------
// Defining a study from runs' eval outputs.

/// A method on the command line: `LABEL=RUN:INSTANCE` (or `LABEL=INSTANCE`: the latest run).
#[derive(Debug, Clone, PartialEq)]
pub struct MethodArg {
    pub label: String,
    pub run: Option<String>,
    pub instance: String,
}

pub fn parse_method(s: &str) -> Result<MethodArg> {
    let (label, rest) = s.split_once('=').ok_or_else(|| {
        invalid(format!("--method `{s}`: write LABEL=RUN:INSTANCE (e.g. `ours=20261205-101500-ab12:rl[3].eval[ours]`)"))
    })?;
    check_name("method label", label)?;
    let (run, instance) = match rest.split_once(':') {
        Some((r, i)) if !r.contains('[') => (Some(r.to_string()), i.to_string()),
        _ => (None, rest.to_string()),
    };
    if instance.is_empty() {
        return Err(invalid(format!("--method `{s}`: no instance name")));
    }
    Ok(MethodArg {
        label: label.into(),
        run,
        instance,
    })
}

pub fn open_store(state_dir: &Path, url: &str) -> Result<Store> {
    let base = std::env::current_dir()
        .map_err(|e| invalid(format!("cannot read the current directory: {e}")))?;
    Ok(Store::open(url, &base, &state_dir.join("cache"))?)
}

/// Runs of a state directory (briefly opening the journal).
pub fn journal_runs(
    state_dir: &Path,
) -> Result<Vec<(RunRecord, Vec<cocoflow_engine::state::InstanceRecord>)>> {
    let path = state_dir.join("journal.redb");
    if !RedbJournal::exists(&path) {
        return Err(invalid(format!("no runs yet in `{}`", state_dir.display())));
    }
    let j = RedbJournal::open_waiting(&path, std::time::Duration::from_secs(5))?;
    let mut out = Vec::new();
    for r in j.runs()? {
        let inst = j.instances(&r.id)?;
        out.push((r, inst));
    }
    Ok(out)
}

struct Resolved {
    def: MethodDef,
    records: BTreeMap<String, EvalRecord>,
    /// image key → (digest)
    images: BTreeMap<String, String>,
    bench: Option<Artifact>,
}

async fn resolve_method(
    store: &Store,
    runs: &[(RunRecord, Vec<cocoflow_engine::state::InstanceRecord>)],
    m: &MethodArg,
) -> Result<Resolved> {
    let (run, instances) = match &m.run {
        Some(id) => runs.iter().find(|(r, _)| &r.id == id).ok_or_else(|| {
            invalid(format!(
                "method `{}`: no run `{id}` (`cocoflow runs` lists them)",
                m.label
            ))
        })?,
        None => runs.last().ok_or_else(|| invalid("no runs yet"))?,
    };
    let inst = instances
        .iter()
        .find(|i| i.name == m.instance)
        .ok_or_else(|| {
            invalid(format!(
                "method `{}`: run `{}` has no instance `{}` (`cocoflow status {}` lists them)",
                m.label, run.id, m.instance, run.id
            ))
        })?;
    if inst.kind != "eval" {
        return Err(invalid(format!(
            "method `{}`: `{}` is a `{}` task; a method is an `eval` instance",
            m.label, inst.name, inst.kind
        )));
    }
    let manifest = store.get_result(&inst.key).await?.ok_or_else(|| {
        invalid(format!(
            "method `{}`: `{}` has no result in the store `{}` (state `{}`)",
            m.label,
            inst.name,
            store.url(),
            inst.state
        ))
    })?;
    let report = manifest
        .outputs
        .get("report")
        .filter(|a| a.tree)
        .ok_or_else(|| {
            invalid(format!(
                "method `{}`: `{}` has no `report` directory",
                m.label, inst.name
            ))
        })?;
    let tree = store.read_tree(&report.digest).await?;
    let mut records = BTreeMap::new();
    let mut images = BTreeMap::new();
    for e in &tree.entries {
        if e.path == crate::artifacts::eval_report::RECORDS_FILE {
            let bytes = store.get_blob(&e.digest).await?;
            for (n, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let r: EvalRecord = serde_json::from_str(line).map_err(|err| {
                    invalid(format!(
                        "method `{}`: records.jsonl line {}: {err}",
                        m.label,
                        n + 1
                    ))
                })?;
                records.insert(r.key.clone(), r);
            }
        } else if let Some(k) = e
            .path
            .strip_prefix("images/")
            .and_then(|p| p.strip_suffix(".png"))
        {
            images.insert(k.to_string(), e.digest.clone());
        }
    }
    let bench = match manifest.inputs.get("data").and_then(|v| v.first()) {
        Some(r) => store
            .get_result(&r.key)
            .await?
            .and_then(|pm| pm.outputs.get(&r.output).cloned()),
        None => None,
    };
    Ok(Resolved {
        def: MethodDef {
            label: m.label.clone(),
            run: run.id.clone(),
            instance: inst.name.clone(),
            key: inst.key.clone(),
        },
        records,
        images,
        bench,
    })
}

/// Defines a study: resolves the methods, draws the sample, copies the images, writes the
/// definition. Refuses to replace an existing study of that name.
pub async fn create(
    store: &Store,
    state_dir: &Path,
    name: &str,
    methods: &[MethodArg],
    samples: usize,
    seed: u64,
) -> Result<StudyDef> {
    check_name("study name", name)?;
    if methods.len() < 2 || methods.len() > MAX_METHODS {
        return Err(invalid(format!(
            "a study needs 2 to {MAX_METHODS} methods (--method LABEL=RUN:INSTANCE); got {}",
            methods.len()
        )));
    }
    let mut labels = std::collections::BTreeSet::new();
    for m in methods {
        if !labels.insert(m.label.clone()) {
            return Err(invalid(format!(
                "method label `{}` is given twice",
                m.label
            )));
        }
    }
    if samples == 0 {
        return Err(invalid("--samples must be at least 1"));
    }
    if load_def(store, name).await?.is_some() {
        return Err(invalid(format!(
            "study `{name}` exists already in `{}` (answers are never replaced; choose another name)",
            store.url()
        )));
    }
    let runs = journal_runs(state_dir)?;
    let mut resolved = Vec::new();
    for m in methods {
        resolved.push(resolve_method(store, &runs, m).await?);
    }
    let bench = resolved
        .iter()
        .find_map(|r| r.bench.clone())
        .ok_or_else(|| {
            invalid(
                "no method's eval has a `data` input in the store: the source images are unknown",
            )
        })?;
    let bench_dir: PathBuf = store.artifact_file(&bench).await?;
    let data = Dataset::open(&bench_dir).map_err(|e| {
        invalid(format!(
            "the benchmark of `{}`: {e}",
            resolved[0].def.instance
        ))
    })?;
    let bench_tree = store.read_tree(&bench.digest).await?;
    // Keys every method evaluated (with an image) and the benchmark holds.
    let mut keys: Vec<String> = data
        .records
        .iter()
        .map(|r| r.key.clone())
        .filter(|k| {
            resolved
                .iter()
                .all(|m| m.images.contains_key(k) && m.records.contains_key(k))
        })
        .collect();
    keys.sort();
    if keys.len() < samples {
        return Err(invalid(format!(
            "--samples {samples}: the methods share only {} evaluated benchmark item(s)",
            keys.len()
        )));
    }
    let mut rng = crate::rng::SplitMix64::new(seed);
    for i in (1..keys.len()).rev() {
        let j = rng.below(i + 1);
        keys.swap(i, j);
    }
    keys.truncate(samples);
    let mut out = Vec::new();
    for k in &keys {
        let rec = data
            .records
            .iter()
            .find(|r| &r.key == k)
            .expect("key from records");
        let src = bench_tree
            .entries
            .iter()
            .find(|e| e.path == rec.source)
            .ok_or_else(|| {
                invalid(format!(
                    "benchmark item `{k}`: source `{}` not in the artifact",
                    rec.source
                ))
            })?;
        let mut edits = BTreeMap::new();
        for m in &resolved {
            edits.insert(m.def.label.clone(), m.images[k].clone());
        }
        let first = &resolved[0].records[k];
        out.push(SampleDef {
            key: k.clone(),
            instruction: rec.instruction.clone(),
            edit_type: rec
                .edit_type
                .clone()
                .unwrap_or_else(|| first.edit_type.clone()),
            source: src.digest.clone(),
            edits,
        });
    }
    // Images first, the definition last: a study is visible only once complete.
    for s in &out {
        for d in std::iter::once(&s.source).chain(s.edits.values()) {
            let bytes = store.get_blob(d).await?;
            store.put_object(&image_location(name, d), bytes).await?;
        }
    }
    let def = StudyDef {
        format: FORMAT.into(),
        version: 1,
        name: name.into(),
        seed,
        criteria: CRITERIA.iter().map(|s| s.to_string()).collect(),
        methods: resolved.into_iter().map(|r| r.def).collect(),
        samples: out,
    };
    store
        .put_object(
            &def_location(name),
            Bytes::from(serde_json::to_vec_pretty(&def).expect("serialises")),
        )
        .await?;
    Ok(def)
}

// ---------------------------------------------------------------------------------------
// Exports.

/// The export without the images' digests (they would tell an annotator which slot shows
/// which method): what the dashboard serves.
pub fn export_json_blind(def: &StudyDef, recs: &[AnswerRecord]) -> serde_json::Value {
    let mut v = export_json(def, recs);
    if let Some(samples) = v["study"]["samples"].as_array_mut() {
        for s in samples {
            if let Some(o) = s.as_object_mut() {
                o.remove("edits");
                o.remove("source");
            }
        }
    }
    v
}

pub fn export_json(def: &StudyDef, recs: &[AnswerRecord]) -> serde_json::Value {
    serde_json::json!({
        "study": def,
        "answers": recs,
        "summary": summarize(def, recs),
    })
}

pub fn export_csv(def: &StudyDef, recs: &[AnswerRecord]) -> String {
    stats::to_csv(&stats_answers(def, recs))
}

// ---------------------------------------------------------------------------------------
// `cocoflow study`.

pub fn extension() -> Extension {
    Extension {
        command: command(),
        run: run_cli,
    }
}

fn command() -> clap::Command {
    use clap::{Arg, ArgAction, Command};
    let store = Arg::new("store")
        .long("store")
        .value_name("URL")
        .help("The store holding the study (default: the store of the latest run)");
    Command::new("study")
        .about("Human-preference studies: define one from runs' eval outputs, list them, report the answers")
        .subcommand_required(true)
        .subcommand(
            Command::new("new")
                .about("Define a study: methods are `eval` instances of runs; annotate in `cocoflow ui`")
                .arg(Arg::new("name").required(true))
                .arg(
                    Arg::new("method")
                        .long("method")
                        .value_name("LABEL=RUN:INSTANCE")
                        .action(ArgAction::Append)
                        .required(true)
                        .help("A method: an eval instance of a run (RUN may be left out: the latest run); two or more"),
                )
                .arg(Arg::new("samples").long("samples").default_value("6").value_parser(clap::value_parser!(usize)))
                .arg(Arg::new("seed").long("seed").default_value("0").value_parser(clap::value_parser!(u64)))
                .arg(store.clone()),
        )
        .subcommand(Command::new("list").about("The studies of a store and their answer counts").arg(store.clone()))
        .subcommand(
            Command::new("report")
                .about("Average ranks (95 % bootstrap intervals), win rates, agreement; writes study.md, study.json, answers.csv")
                .arg(Arg::new("name").required(true))
                .arg(Arg::new("out").long("out").value_name("DIR").help("Write the files here (default: print the Markdown)"))
                .arg(store),
        )
}

fn state_dir(m: &clap::ArgMatches) -> PathBuf {
    m.try_get_one::<PathBuf>("state_dir")
        .ok()
        .flatten()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(".cocoflow"))
}

/// The store named by `--store`, else that of the latest run.
pub fn default_store(state: &Path, given: Option<&String>) -> Result<Store> {
    match given {
        Some(url) => open_store(state, url),
        None => {
            let runs = journal_runs(state)?;
            let (r, _) = runs
                .last()
                .ok_or_else(|| invalid("no runs yet: give --store"))?;
            open_store(state, &r.store)
        }
    }
}

fn run_cli(m: &clap::ArgMatches) -> i32 {
    let rt = match crate::net::serve::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let state = state_dir(m);
    let res: Result<i32> = rt.block_on(async {
        match m.subcommand() {
            Some(("new", sub)) => {
                let store = default_store(&state, sub.get_one::<String>("store"))?;
                let methods = sub
                    .get_many::<String>("method")
                    .into_iter()
                    .flatten()
                    .map(|s| parse_method(s))
                    .collect::<Result<Vec<_>>>()?;
                let name = sub.get_one::<String>("name").expect("required");
                let def = create(
                    &store,
                    &state,
                    name,
                    &methods,
                    *sub.get_one::<usize>("samples").expect("default"),
                    *sub.get_one::<u64>("seed").expect("default"),
                )
                .await?;
                println!(
                    "study `{}`: {} methods × {} samples in {}; annotate with `cocoflow ui`",
                    def.name,
                    def.methods.len(),
                    def.samples.len(),
                    store.url()
                );
                Ok(EXIT_OK)
            }
            Some(("list", sub)) => {
                let store = default_store(&state, sub.get_one::<String>("store"))?;
                for d in list(&store).await? {
                    let (recs, damaged) = answers(&store, &d).await?;
                    let annotators: std::collections::BTreeSet<_> =
                        recs.iter().map(|r| &r.annotator).collect();
                    println!(
                        "{}: {} methods ({}), {} samples, {} answers from {} annotator(s){}",
                        d.name,
                        d.methods.len(),
                        d.method_labels().join(", "),
                        d.samples.len(),
                        recs.len(),
                        annotators.len(),
                        if damaged.is_empty() {
                            String::new()
                        } else {
                            format!(", {} damaged record(s) ignored", damaged.len())
                        }
                    );
                }
                Ok(EXIT_OK)
            }
            Some(("report", sub)) => {
                let store = default_store(&state, sub.get_one::<String>("store"))?;
                let name = sub.get_one::<String>("name").expect("required");
                let def = load_def(&store, name)
                    .await?
                    .ok_or_else(|| invalid(format!("no study `{name}` in `{}`", store.url())))?;
                let (recs, damaged) = answers(&store, &def).await?;
                for d in &damaged {
                    eprintln!("warning: answer record `{d}` does not match its digest; ignored");
                }
                let summary = summarize(&def, &recs);
                let md = stats::summary_markdown(&summary, &format!("Study `{}`", def.name));
                match sub.get_one::<String>("out") {
                    None => print!("{md}"),
                    Some(dir) => {
                        let dir = Path::new(dir);
                        let w = |f: &str, b: &[u8]| {
                            std::fs::create_dir_all(dir)
                                .and_then(|_| std::fs::write(dir.join(f), b))
                                .map_err(|e| {
                                    invalid(format!(
                                        "cannot write `{}`: {e}",
                                        dir.join(f).display()
                                    ))
                                })
                        };
                        w("study.md", md.as_bytes())?;
                        w(
                            "study.json",
                            &serde_json::to_vec_pretty(&export_json(&def, &recs))
                                .expect("serialises"),
                        )?;
                        w("answers.csv", export_csv(&def, &recs).as_bytes())?;
                        println!(
                            "wrote study.md, study.json, answers.csv to {}",
                            dir.display()
                        );
                    }
                }
                Ok(EXIT_OK)
            }
            _ => Err(invalid(
                "`cocoflow study` needs a subcommand: new, list or report",
            )),
        }
    });
    match res {
        Ok(c) => c,
        Err(StudyError::Invalid(m)) => {
            eprintln!("error: {m}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ENVIRONMENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> StudyDef {
        let sample = |k: &str, t: &str| SampleDef {
            key: k.into(),
            instruction: format!("do {k}"),
            edit_type: t.into(),
            source: "0".repeat(64),
            edits: ["a", "b", "c"]
                .iter()
                .map(|m| (m.to_string(), format!("{m}{}", "1".repeat(63))))
                .collect(),
        };
        StudyDef {
            format: FORMAT.into(),
            version: 1,
            name: "s".into(),
            seed: 7,
            criteria: CRITERIA.iter().map(|s| s.to_string()).collect(),
            methods: ["a", "b", "c"]
                .iter()
                .map(|m| MethodDef {
                    label: m.to_string(),
                    run: "r".into(),
                    instance: format!("eval[{m}]"),
                    key: "k".into(),
                })
                .collect(),
            samples: vec![sample("x1", "add"), sample("x2", "remove")],
        }
    }

    fn ranks(s: [f64; 3], c: [f64; 3]) -> BTreeMap<String, BTreeMap<String, f64>> {
        let m = |v: [f64; 3]| {
            ["a", "b", "c"]
                .iter()
                .map(|x| x.to_string())
                .zip(v)
                .collect()
        };
        [
            ("success".to_string(), m(s)),
            ("consistency".to_string(), m(c)),
        ]
        .into()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(
            &format!("file://{}", d.path().join("store").display()),
            d.path(),
            &d.path().join("cache"),
        )
        .unwrap();
        (d, s)
    }

    #[test]
    fn names_that_could_leave_the_study_are_refused() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            "x\u{0}",
            &"n".repeat(65),
            "<b>",
        ] {
            assert!(check_name("study name", bad).is_err(), "{bad:?}");
        }
        for ok in ["pref", "alice_2", "a.b-c"] {
            check_name("study name", ok).unwrap();
        }
    }

    #[test]
    fn methods_parse_with_and_without_a_run() {
        assert_eq!(
            parse_method("ours=20261205-101500-ab12:rl[3].eval[x=1,y=2]").unwrap(),
            MethodArg {
                label: "ours".into(),
                run: Some("20261205-101500-ab12".into()),
                instance: "rl[3].eval[x=1,y=2]".into()
            }
        );
        assert_eq!(parse_method("base=eval_base").unwrap().run, None);
        assert!(parse_method("no-equals").is_err());
        assert!(parse_method("../x=eval").is_err());
        assert!(parse_method("a=").is_err());
    }

    #[test]
    fn display_order_is_a_seeded_permutation_per_annotator_and_sample() {
        let d = def();
        let (o, s) = display_order(&d, "alice", "x1");
        assert_eq!(display_order(&d, "alice", "x1"), (o.clone(), s));
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["a", "b", "c"]);
        // Over many annotators every method is shown first sometimes.
        let firsts: std::collections::BTreeSet<String> = (0..60)
            .map(|i| display_order(&d, &format!("p{i}"), "x1").0[0].clone())
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[tokio::test]
    async fn submissions_are_checked_stored_by_digest_and_the_latest_counts() {
        let (_d, st) = store();
        let d = def();
        for (what, r) in [
            ("out of range", ranks([1.0, 2.0, 4.0], [1.0, 1.0, 1.0])),
            ("fractional", ranks([1.5, 2.0, 3.0], [1.0, 1.0, 1.0])),
            ("zero", ranks([0.0, 2.0, 3.0], [1.0, 1.0, 1.0])),
        ] {
            assert!(
                matches!(
                    submit(&st, &d, "alice", "x1", r, 1).await,
                    Err(StudyError::Invalid(_))
                ),
                "{what}"
            );
        }
        let mut one = ranks([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]);
        one.remove("consistency");
        assert!(
            submit(&st, &d, "alice", "x1", one, 1).await.is_err(),
            "a criterion missing"
        );
        let mut extra = ranks([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]);
        extra.get_mut("success").unwrap().insert("z".into(), 1.0);
        assert!(
            submit(&st, &d, "alice", "x1", extra, 1).await.is_err(),
            "an unknown method"
        );
        assert!(
            submit(&st, &d, "alice", "nope", ranks([1.0; 3], [1.0; 3]), 1)
                .await
                .is_err()
        );
        assert!(
            submit(&st, &d, "../alice", "x1", ranks([1.0; 3], [1.0; 3]), 1)
                .await
                .is_err()
        );

        let first = submit(
            &st,
            &d,
            "alice",
            "x1",
            ranks([1.0, 1.0, 3.0], [3.0, 2.0, 1.0]),
            10,
        )
        .await
        .unwrap();
        let later = submit(
            &st,
            &d,
            "alice",
            "x1",
            ranks([3.0, 2.0, 1.0], [1.0, 2.0, 3.0]),
            20,
        )
        .await
        .unwrap();
        submit(
            &st,
            &d,
            "bob",
            "x2",
            ranks([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]),
            15,
        )
        .await
        .unwrap();
        assert_ne!(first, later);
        // The record's name is the BLAKE3 of its bytes.
        let bytes = st.get_object(&later).await.unwrap().unwrap();
        assert!(later.ends_with(&format!("{}.json", blake3::hash(&bytes).to_hex())));
        let (recs, damaged) = answers(&st, &d).await.unwrap();
        assert!(damaged.is_empty());
        assert_eq!(recs.len(), 2);
        let alice = recs.iter().find(|r| r.annotator == "alice").unwrap();
        assert_eq!(
            alice.ranks["success"]["c"], 1.0,
            "the later submission wins"
        );
        assert_eq!(alice.order, display_order(&d, "alice", "x1").0);

        // A record whose bytes no longer match its name is reported and never used.
        let mut tampered: AnswerRecord = serde_json::from_slice(&bytes).unwrap();
        tampered.submitted_ms = 99;
        tampered.ranks = ranks([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]);
        st.put_object(&later, Bytes::from(serde_json::to_vec(&tampered).unwrap()))
            .await
            .unwrap();
        st.put_object(
            &format!("studies/s/answers/{}.json", "e".repeat(64)),
            Bytes::from_static(b"{trunc"),
        )
        .await
        .unwrap();
        let (recs, damaged) = answers(&st, &d).await.unwrap();
        assert_eq!(damaged.len(), 2, "{damaged:?}");
        let alice = recs.iter().find(|r| r.annotator == "alice").unwrap();
        assert_eq!(
            alice.submitted_ms, 10,
            "falls back to the intact earlier record"
        );
        let s = summarize(&d, &recs);
        assert_eq!(s.n_answers, 4);
        let csv = export_csv(&d, &recs);
        assert!(csv.lines().count() > 4, "{csv}");
    }
}
